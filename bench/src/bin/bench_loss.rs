//! False-positive benchmark on the real 5-node Swarm of tests/swarm/rig.sh (3 managers, 2
//! workers), agents and gateways on the shipped defaults: live nodes whose links lose a share
//! of their packets (10, 20, 30, 40 %; both ways, inbound only, outbound only), the active
//! gateway's own node losing packets, a node whose CPU is saturated, and nodes whose agents
//! are stopped (SIGSTOP) or killed. Every condition lasts MINUTES (default 5). Counted per
//! condition, for leakmon: `node_down`, drains, failovers (its events); for Swarm alone
//! (observed in the same run: leakmon never acted on these nodes, so Swarm's own view is what
//! Swarm alone would do): the times Swarm marked the node down. For both: tasks moved off the
//! node (running there at the start, not running there at the end). Prints a Markdown table.
//! Run as root by scripts/bench-loss.
//!
//!   bench_loss [MINUTES] [SLOTS]      SLOTS: which slots to run, e.g. 4,5,6,7 (default all)

use std::collections::BTreeSet;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use leakmon_e2e::swarm::*;
use leakmon_e2e::{http_get, wait_for, Subscriber};
use serde_json::Value;

/// One fault on one node for the whole slot.
#[derive(Clone, Copy)]
enum Fault {
    Loss(u32, &'static str),
    Cpu,
    AgentStopped,
    AgentKilled,
}

impl Fault {
    fn describe(self) -> String {
        match self {
            Fault::Loss(p, "both") => format!("{p} % loss both ways"),
            Fault::Loss(p, "in") => format!("{p} % loss inbound only"),
            Fault::Loss(p, _) => format!("{p} % loss outbound only"),
            Fault::Cpu => "CPU saturated (4 busy loops in the node; the rig's nodes share the machine's 2 cores)".into(),
            Fault::AgentStopped => "agent stopped (SIGSTOP)".into(),
            Fault::AgentKilled => "agent killed (SIGKILL), not restarted".into(),
        }
    }
}

/// A target: a fixed node, or whichever manager is the leader / not the leader at the start.
#[derive(Clone, Copy)]
enum Target {
    Node(u32),
    Leader,
    Follower,
}

struct Row {
    what: String,
    node: u32,
    leakmon_down: usize,
    drains: usize,
    failovers: usize,
    agent_lost: usize,
    swarm_down: usize,
    moved: usize,
    suspicions: f64,
    refuted: f64,
    others_down: usize,
}

fn metric(n: u32, name: &str) -> f64 {
    http_get(&format!("http://{}:9900/metrics", addr(n)))
        .ok()
        .and_then(|(_, body)| {
            body.lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

/// The detector's counters summed over the three gateways (only the active one counts).
fn detector_counts() -> (f64, f64) {
    (1..=MANAGERS).fold((0.0, 0.0), |(s, r), n| {
        (
            s + metric(n, "leakmon_gateway_detector_suspicions_total"),
            r + metric(n, "leakmon_gateway_detector_refuted_total"),
        )
    })
}

/// Swarm's state of every node ("ready", "down", ...), through any manager that answers.
fn swarm_states() -> Vec<(u32, String)> {
    (1..=MANAGERS)
        .find_map(|via| api(via, "/nodes"))
        .and_then(|v| {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|n| {
                        Some((
                            api_node_number(n)?,
                            n["Status"]["State"].as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn busy_loops(n: u32) -> Vec<Child> {
    (0..4)
        .map(|_| {
            let w = in_node(n);
            Command::new(&w[0])
                .args(&w[1..])
                .args(["sh", "-c", "while :; do :; done"])
                .spawn()
                .expect("busy loop")
        })
        .collect()
}

fn count(events: &[Value], node: &str, kind: &str) -> usize {
    events
        .iter()
        .filter(|e| e["node"] == node && e["kind"] == kind)
        .count()
}

struct Fleet {
    events: Subscriber,
    agents: Vec<leakmon_e2e::Daemon>,
}

impl Fleet {
    fn events_since(&self, seen: usize) -> Vec<Value> {
        self.events.all()[seen..].iter().map(|m| m.json()).collect()
    }

    /// Runs the faults of one slot at once for `slot`, heals them and watches 30 s more (a
    /// verdict in flight at the heal still counts).
    fn slot(&mut self, faults: &[(Target, Fault)], slot: Duration) -> Vec<Row> {
        let leader = leader_of(None).expect("a leader");
        let follower = (1..=MANAGERS).find(|n| *n != leader).expect("a follower");
        let faults: Vec<(u32, Fault)> = faults
            .iter()
            .map(|(t, f)| {
                let n = match t {
                    Target::Node(n) => *n,
                    Target::Leader => leader,
                    Target::Follower => follower,
                };
                (n, *f)
            })
            .collect();
        for (n, f) in &faults {
            eprintln!("  node{n}: {}", f.describe());
        }
        let seen = self.events.all().len();
        let before: Vec<BTreeSet<String>> =
            faults.iter().map(|(n, _)| running_task_ids(*n)).collect();
        let (s0, r0) = detector_counts();
        let mut busy = Vec::new();
        for (n, f) in &faults {
            match f {
                Fault::Loss(p, dir) => {
                    rig(&[
                        "loss",
                        &n.to_string(),
                        &format!("{}", *p as f64 / 100.0),
                        dir,
                    ]);
                }
                Fault::Cpu => busy.extend(busy_loops(*n)),
                Fault::AgentStopped => self.agents[*n as usize - 1].pause(true),
                Fault::AgentKilled => self.agents[*n as usize - 1].kill9(),
            }
        }
        let mut swarm_down = vec![0usize; faults.len()];
        let mut was_down = vec![false; faults.len()];
        let t0 = Instant::now();
        let mut healed = false;
        while t0.elapsed() < slot + Duration::from_secs(30) {
            if !healed && t0.elapsed() >= slot {
                healed = true;
                for c in busy.iter_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                for (n, f) in &faults {
                    match f {
                        Fault::Loss(..) => {
                            rig(&["clear", &n.to_string()]);
                        }
                        Fault::Cpu => {}
                        Fault::AgentStopped => self.agents[*n as usize - 1].pause(false),
                        Fault::AgentKilled => self.agents[*n as usize - 1].spawn(),
                    }
                }
            }
            let states = swarm_states();
            for (i, (n, _)) in faults.iter().enumerate() {
                let down = states.iter().any(|(k, s)| k == n && s == "down");
                if down && !was_down[i] {
                    swarm_down[i] += 1;
                }
                was_down[i] = down;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let after: Vec<BTreeSet<String>> =
            faults.iter().map(|(n, _)| running_task_ids(*n)).collect();
        let (s1, r1) = detector_counts();
        let events = self.events_since(seen);
        let targets: Vec<String> = faults.iter().map(|(n, _)| format!("node{n}")).collect();
        let others_down = events
            .iter()
            .filter(|e| e["kind"] == "node_down")
            .filter(|e| !targets.iter().any(|t| e["node"] == t.as_str()))
            .count();
        let rows = faults
            .iter()
            .enumerate()
            .map(|(i, (n, f))| {
                let node = format!("node{n}");
                Row {
                    what: f.describe(),
                    node: *n,
                    leakmon_down: count(&events, &node, "node_down"),
                    drains: count(&events, &node, "drain"),
                    failovers: events
                        .iter()
                        .filter(|e| {
                            e["kind"] == "failover" && e["details"]["from"] == node.as_str()
                        })
                        .count(),
                    agent_lost: count(&events, &node, "agent_lost"),
                    swarm_down: swarm_down[i],
                    moved: before[i].difference(&after[i]).count(),
                    suspicions: s1 - s0,
                    refuted: r1 - r0,
                    others_down,
                }
            })
            .collect::<Vec<_>>();
        for r in &rows {
            eprintln!(
                "  node{} {}: node_down {} drains {} failovers {} agent_lost {} swarm_down {} moved {} (suspicions {} refuted {}, others down {})",
                r.node, r.what, r.leakmon_down, r.drains, r.failovers, r.agent_lost, r.swarm_down, r.moved, r.suspicions, r.refuted, r.others_down
            );
        }
        // everything back before the next slot: agents online, nodes active
        wait_for(Duration::from_secs(120), || {
            (1..=NODES)
                .all(|n| node_line(1, n).starts_with("active ready"))
                .then_some(())
        })
        .expect("every node active and ready after the slot");
        std::thread::sleep(Duration::from_secs(10));
        rows
    }
}

fn main() {
    let minutes: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5.0);
    let slot = Duration::from_secs_f64(minutes * 60.0);
    let (_rig, broker, influx) = fleet_up();
    let events = Subscriber::start(broker.port, "leakmon/v1/gateway/events", false);
    let agents = start_agents_with(|n, dir| shipped_agent_config(n, broker.port, dir));
    let _gateways =
        start_gateways_with(|n, dir| shipped_gateway_config(n, broker.port, influx.port, dir, ""));
    wait_gateway_active(&events);
    std::thread::sleep(Duration::from_secs(15));
    let mut fleet = Fleet { events, agents };

    use Fault::*;
    use Target::*;
    let mut slots: Vec<Vec<(Target, Fault)>> = [10, 20, 30, 40]
        .into_iter()
        .map(|p| {
            vec![
                (Node(4), Loss(p, "both")),
                (Node(5), Loss(p, "in")),
                (Follower, Loss(p, "out")),
            ]
        })
        .collect();
    slots.push(vec![(Leader, Loss(40, "both"))]);
    slots.push(vec![(Node(4), Cpu)]);
    slots.push(vec![(Node(4), AgentStopped), (Node(5), AgentKilled)]);

    let only: Option<Vec<usize>> = std::env::args()
        .nth(2)
        .map(|a| a.split(',').filter_map(|x| x.trim().parse().ok()).collect());
    let mut rows = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        if only.as_ref().is_some_and(|o| !o.contains(&(i + 1))) {
            continue;
        }
        eprintln!("slot {} of {} ({minutes} min)", i + 1, slots.len());
        rows.extend(fleet.slot(s, slot));
    }

    println!("| condition ({minutes} min each) | node | leakmon `node_down` | drains | failovers | `agent_lost` | Swarm marked it down | tasks moved off it | detector suspicions (refuted) | `node_down` of any other node |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | node{} | {} | {} | {} | {} | {} | {} | {} ({}) | {} |",
            r.what,
            r.node,
            r.leakmon_down,
            r.drains,
            r.failovers,
            r.agent_lost,
            r.swarm_down,
            r.moved,
            r.suspicions,
            r.refuted,
            r.others_down
        );
    }
    println!(
        "\nAgents and gateways on the shipped defaults (config/agent.toml, config/gateway.toml), \
         only names and addresses set. Conditions in the same slot ran at the same time on \
         different nodes (the detector's suspicions are per slot); counted from the start of \
         the slot to 30 s after it ended. Swarm's view polled every second."
    );
}
