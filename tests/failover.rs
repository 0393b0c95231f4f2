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
//!    nothing.

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
    docker(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "db2",
            "--label",
            "leakmon.failover=true",
            "--constraint",
            "node.hostname==node4",
            "leakmon-test/busybox",
            "sleep",
            "100000",
        ],
    );
    wait_running(&f, "db2", "node4", 60);
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
}
