//! Every death handled, every action confirmed by its effect, on the real 5-node Swarm
//! (tests/swarm/rig.sh; 3 managers, 2 workers; an agent on every node, a gateway beside every
//! manager). Frozen nodes are made by `rig.sh freeze`: every process of the node stopped
//! (SIGSTOP), its kernel still answering TCP, as a Raspberry Pi whose SD card hangs.
//!
//! One test, scenarios in order (they share the Swarm):
//! 1. one standby, frozen at the moment `db`'s node dies: `failover_impossible` (no fit
//!    standby) within the confirmation bound, never a failover to the frozen node; `db` runs
//!    there once it thaws;
//! 2. two standbys, the first choice (least loaded) frozen at the death: `db` runs on the
//!    second, confirmed;
//! 3. a whole node frozen (the gray failure): `node_down` once Swarm reports it down, its
//!    pinned `db2` on a standby, confirmed; back and reactivated once it thaws;
//! 4. only a node's engine frozen, its agent beating: Swarm marks it down, leakmon moves
//!    nothing;
//! 5. the active gateway cut from the broker alone (its agent still heard): another gateway
//!    stands in (`gateway_active`, a deputy), a worker's cable pulled then is `node_down` from
//!    the deputy and its pinned `db3` runs on the standby; the deaf gateway acts on nothing
//!    and takes its role back once it hears again; never two gateways acting at once.

use std::time::Duration;

use leakmon_e2e::swarm::*;
use leakmon_e2e::{wait_for, Broker, Daemon, Service, Subscriber};
use serde_json::Value;

/// `confirm.rs`'s bound on a failover: its task runs on the standby within this.
const FAILOVER_BOUND_MS: i64 = 10_000;

struct Fleet {
    _rig: Rig,
    _broker: Broker,
    _influx: Service,
    _agents: Vec<Daemon>,
    gateways: Vec<Daemon>,
    events: Subscriber,
}

impl Fleet {
    fn events(&self) -> Vec<Value> {
        events_of(&self.events)
    }
    fn wait_event(&self, secs: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_event(&self.events, &self.gateways, secs, what, pred)
    }
    /// Like `wait_event`, for events after the first `before`.
    fn wait_since(
        &self,
        before: usize,
        secs: u64,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let pred = |e: &Value| pred(e);
        wait_for(Duration::from_secs(secs), || {
            self.events().into_iter().skip(before).find(|e| pred(e))
        })
        .unwrap_or_else(|| {
            panic!(
                "no {what} event within {secs} s; events since:\n{}\n{}",
                self.events()
                    .iter()
                    .skip(before)
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
                self.logs()
            )
        })
    }
    fn logs(&self) -> String {
        gateway_logs(&self.gateways)
    }
    /// Waits for node n to be back, active, without leakmon's label.
    fn wait_active(&self, n: u32) {
        wait_for(Duration::from_secs(90), || {
            let line = node_line(1, n);
            (line.starts_with("active ready") && line.split_whitespace().count() == 2).then_some(())
        })
        .unwrap_or_else(|| panic!("node{n} active again: {}\n{}", node_line(1, n), self.logs()));
    }
    /// Events of `kind` about service `service`.
    fn of(&self, kind: &str, service: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["kind"] == kind && e["details"]["service"] == service)
            .collect()
    }
}

fn ts(e: &Value) -> i64 {
    e["ts"].as_i64().unwrap_or_default()
}

fn standby(n: u32, on: bool) {
    let (flag, label) = if on {
        ("--label-add", "leakmon.standby=true")
    } else {
        ("--label-rm", "leakmon.standby")
    };
    docker(1, &["node", "update", flag, label, &format!("node{n}")]);
}

fn wait_running(f: &Fleet, service: &str, on: &str, secs: u64) {
    wait_for(Duration::from_secs(secs), || {
        (running_on(1, service) == [on]).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{service} runs on {on}: {:?}\nevents:\n{}\n{}",
            running_on(1, service),
            f.events()
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            f.logs()
        )
    });
}

/// A service pinned to node n with failover on (like `db`), running there.
fn create_pinned(f: &Fleet, name: &str, n: u32) {
    let constraint = format!("node.hostname==node{n}");
    docker(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            name,
            "--label",
            "leakmon.failover=true",
            "--constraint",
            &constraint,
            "leakmon-test/busybox",
            "sleep",
            "100000",
        ],
    );
    wait_running(f, name, &format!("node{n}"), 60);
}

fn setup() -> Fleet {
    let (rig_guard, broker, influx) = fleet_up();
    let events = Subscriber::start(broker.port, "leakmon/v1/gateway/events", false);
    // node5 is the only standby (fleet_up made it node3)
    standby(3, false);
    standby(5, true);
    let agents = start_agents(broker.port);
    // nodes die again here soon after they were reactivated: no `flapping` verdict
    let gateways = start_gateways(broker.port, influx.port, Some("cooldown = \"1s\"\n"));
    wait_gateway_active(&events);
    let f = Fleet {
        _rig: rig_guard,
        _broker: broker,
        _influx: influx,
        _agents: agents,
        gateways,
        events,
    };
    // every agent beating and heard before the first fault
    let leader = leader(1).and_then(|l| node_number(&l)).expect("a leader");
    wait_for(Duration::from_secs(30), || {
        let nodes = api_nodes(leader)?;
        (nodes.matches("\"state\":\"online\"").count() == NODES as usize).then_some(())
    })
    .unwrap_or_else(|| panic!("all agents online\n{}", f.logs()));
    std::thread::sleep(Duration::from_secs(3));
    f
}

fn api_nodes(n: u32) -> Option<String> {
    leakmon_e2e::http_get(&format!("http://{}:9900/api/v1/nodes", addr(n)))
        .ok()
        .map(|(_, b)| b)
}

#[test]
fn failovers_are_confirmed_and_frozen_nodes_are_deaths() {
    let f = setup();

    // --- 1. The only standby frozen as db's node dies: impossible, until it thaws.
    rig(&["freeze", "5"]);
    // the detector hears a frozen node's silence within a second
    std::thread::sleep(Duration::from_millis(1500));
    rig(&["cut", "4"]);
    let down = f.wait_event(30, "node_down node4", |e| {
        e["kind"] == "node_down" && e["node"] == "node4"
    });
    let impossible = f.wait_event(30, "failover_impossible for db", |e| {
        e["kind"] == "failover_impossible" && e["details"]["service"] == "db"
    });
    assert!(
        ts(&impossible) - ts(&down) <= FAILOVER_BOUND_MS,
        "said within the confirmation bound: {down}\n{impossible}"
    );
    assert!(
        impossible["message"]
            .as_str()
            .unwrap_or_default()
            .contains("node5"),
        "names the standby and why: {impossible}"
    );
    assert!(
        f.of("failover", "db").is_empty(),
        "never re-pinned to the frozen standby: {:?}",
        f.of("failover", "db")
    );
    rig(&["thaw", "5"]);
    f.wait_event(30, "failover of db to node5", |e| {
        e["kind"] == "failover" && e["details"]["service"] == "db" && e["details"]["to"] == "node5"
    });
    wait_running(&f, "db", "node5", 30);
    f.wait_event(30, "db confirmed on node5", |e| {
        e["kind"] == "confirmed" && e["details"]["service"] == "db" && e["details"]["on"] == "node5"
    });
    rig(&["restore", "4"]);
    f.wait_active(4);

    // --- 2. Two standbys, the first choice (node4: no tasks since it was drained) frozen at
    // the death of db's node (node5): db goes to node3.
    standby(3, true);
    standby(4, true);
    standby(5, false);
    let before = f.events().len();
    rig(&["freeze", "4"]);
    std::thread::sleep(Duration::from_millis(1500));
    rig(&["cut", "5"]);
    let down = f.wait_event(30, "node_down node5", |e| {
        e["kind"] == "node_down" && e["node"] == "node5"
    });
    let moved = f.wait_event(30, "failover of db to node3", |e| {
        e["kind"] == "failover" && e["details"]["service"] == "db" && e["details"]["to"] == "node3"
    });
    wait_running(&f, "db", "node3", 30);
    let confirmed = f.wait_event(30, "db confirmed on node3", |e| {
        e["kind"] == "confirmed" && e["details"]["service"] == "db" && e["details"]["on"] == "node3"
    });
    assert!(
        ts(&confirmed) - ts(&down) <= 2 * FAILOVER_BOUND_MS,
        "on the second standby within the failover and confirmation bounds: {down}\n{moved}\n{confirmed}"
    );
    assert!(
        f.events()[before..]
            .iter()
            .all(|e| !(e["kind"] == "failover" && e["details"]["to"] == "node4")),
        "never re-pinned to the frozen node4"
    );
    rig(&["thaw", "4"]);
    rig(&["restore", "5"]);
    f.wait_active(5);
    f.wait_active(4);

    // --- 3. A whole node frozen: dead once Swarm reports it down and its link is clean.
    standby(4, false);
    standby(5, true);
    create_pinned(&f, "db2", 4);
    let before = f.events().len();
    rig(&["freeze", "4"]);
    let down = f.wait_since(before, 60, "node_down node4 (frozen)", |e| {
        e["kind"] == "node_down" && e["node"] == "node4"
    });
    assert!(
        down["details"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("frozen"),
        "the gray failure: {down}"
    );
    assert!(
        f.events()[before..]
            .iter()
            .all(|e| !(e["kind"] == "node_down" && e["node"] == "node4")
                || e["details"]["reason"] == down["details"]["reason"]),
        "one node_down"
    );
    f.wait_since(before, 30, "db2 confirmed on a standby", |e| {
        e["kind"] == "confirmed" && e["details"]["service"] == "db2"
    });
    let on = running_on(1, "db2");
    assert!(
        on == ["node3"] || on == ["node5"],
        "db2 on a standby: {on:?}"
    );
    wait_for(Duration::from_secs(30), || {
        let on = running_on(1, "web");
        (on.iter().filter(|n| *n != "node4").count() >= 5).then_some(())
    })
    .unwrap_or_else(|| panic!("web whole on live nodes: {:?}", running_on(1, "web")));
    rig(&["thaw", "4"]);
    f.wait_since(before, 60, "node_up node4", |e| {
        e["kind"] == "node_up" && e["node"] == "node4"
    });
    f.wait_active(4);

    // --- 4. Only node5's engine frozen, its agent beating: Swarm says down, nothing moves.
    let before = f.events().len();
    rig(&["freeze", "5", "engine"]);
    let swarm_down = wait_for(Duration::from_secs(40), || {
        node_line(1, 5).contains(" down").then_some(())
    });
    std::thread::sleep(Duration::from_secs(8));
    let acted: Vec<String> = f.events()[before..]
        .iter()
        .filter(|e| {
            e["node"] == "node5"
                && ["node_down", "drain", "surge", "failover"]
                    .contains(&e["kind"].as_str().unwrap_or_default())
        })
        .map(|e| e.to_string())
        .collect();
    rig(&["thaw", "5", "engine"]);
    assert!(
        swarm_down.is_some(),
        "the fault took: Swarm marked node5 down ({})",
        node_line(1, 5)
    );
    assert!(
        acted.is_empty(),
        "nothing moved for an engine alone: {acted:?}"
    );

    a_deaf_active_gateway_hands_over_and_takes_back(&f);
}

/// Event kinds that are actions on the Swarm (or verdicts that lead to them).
const ACTS: [&str; 9] = [
    "node_down",
    "drain",
    "surge",
    "settle",
    "failover",
    "node_up",
    "reactivate",
    "confirmed",
    "unconfirmed",
];

/// --- 5. The active gateway cut from the broker alone (the others hear the fleet), then a
/// worker's cable pulled. After the others (node3 and node5 standbys, node4 a worker).
fn a_deaf_active_gateway_hands_over_and_takes_back(f: &Fleet) {
    wait_for(Duration::from_secs(60), || {
        node_line(1, 5).starts_with("active ready").then_some(())
    })
    .unwrap_or_else(|| panic!("node5 ready again: {}", node_line(1, 5)));
    create_pinned(f, "db3", 4);
    let l = leader(1).and_then(|l| node_number(&l)).expect("a leader");
    let deaf = format!("gw{l}");
    let before = f.events().len();
    let deafened = leakmon_e2e::now_ms();
    rig(&["deafen", &l.to_string()]);
    let stood_in = f.wait_since(before, 30, "a deputy's gateway_active", |e| {
        e["kind"] == "gateway_active"
            && e["gateway"] != deaf.as_str()
            && e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("standing in")
    });
    let deputy = stood_in["gateway"].as_str().unwrap_or_default().to_owned();
    std::thread::sleep(Duration::from_secs(1));
    let cut = leakmon_e2e::now_ms();
    rig(&["cut", "4"]);
    let down = f.wait_since(
        before,
        30,
        "node_down node4 while the active gateway is deaf",
        |e| e["kind"] == "node_down" && e["node"] == "node4",
    );
    assert_eq!(down["gateway"], deputy.as_str(), "from the deputy: {down}");
    let moved = f.wait_since(before, 30, "db3 confirmed on a standby", |e| {
        e["kind"] == "confirmed" && e["details"]["service"] == "db3"
    });
    let on = running_on(1, "db3");
    assert!(
        on == ["node3"] || on == ["node5"],
        "db3 on a standby: {on:?}"
    );
    eprintln!(
        "deaf gateway {deaf}: deputy {deputy} active after {} ms; node4 cut: node_down after {} ms, db3 confirmed on {on:?} after {} ms",
        ts(&stood_in) - deafened,
        ts(&down) - cut,
        ts(&moved) - cut
    );
    rig(&["hear", &l.to_string()]);
    let heard = leakmon_e2e::now_ms();
    let back = f.wait_since(before, 60, "the deaf gateway active again", |e| {
        e["kind"] == "gateway_active" && e["gateway"] == deaf.as_str() && ts(e) >= heard
    });
    rig(&["restore", "4"]);
    // (node_up from whichever gateway saw it die, or reactivate from one that did not)
    f.wait_since(before, 90, "node4 reactivated", |e| {
        (e["kind"] == "node_up" || e["kind"] == "reactivate") && e["node"] == "node4"
    });
    f.wait_active(4);
    std::thread::sleep(Duration::from_secs(2));
    // never two at once: the deaf one acted on nothing while deaf, the deputy on nothing
    // once the role was back
    let acts = |e: &&Value| ACTS.contains(&e["kind"].as_str().unwrap_or_default());
    let events = f.events();
    let wrong: Vec<String> = events[before..]
        .iter()
        .filter(acts)
        .filter(|e| {
            (e["gateway"] == deaf.as_str() && ts(e) >= deafened && ts(e) < ts(&back))
                || (e["gateway"] == deputy.as_str() && ts(e) >= ts(&back))
                || (e["gateway"] != deaf.as_str() && e["gateway"] != deputy.as_str())
        })
        .map(|e| e.to_string())
        .collect();
    assert!(
        wrong.is_empty(),
        "acted out of turn: {wrong:?}\n{}",
        f.logs()
    );
}
