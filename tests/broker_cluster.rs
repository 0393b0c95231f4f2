//! leakmon on a clustered broker (issue 16, item 2), on the real 5-node Swarm of
//! tests/swarm/rig.sh: the broker is a 3-node RabbitMQ cluster (scripts/rabbitmq-cluster,
//! quorum queues for persistent sessions), every agent and gateway lists all three nodes, each
//! starting at a different one. The broker node that the active gateway, node4's agent and one
//! manager's agent are connected to is SIGKILLed at the moment node4's link is cut. So node4's
//! Will dies with its broker node, the active gateway and two agents reconnect elsewhere, and:
//! - node4's death is still found (`node_down`), `web` is whole on live nodes and the pinned
//!   `db` runs on the standby;
//! - no other node is declared down, through the reconnect storm and the killed node's return;
//! - no data message is lost: every live node's `(run, seq)` stream, as a subscriber on a
//!   surviving broker node saw it, has no gap; every host report it saw is in InfluxDB; and
//!   node4's buffered samples arrive once its link is back, without a gap either.
//!
//! Speed is not asserted here (docs/benchmarks.md, `bench_control broker-cluster`, measures it).

use std::time::Duration;

use leakmon_e2e::rabbitmq::{with_brokers, RabbitCluster};
use leakmon_e2e::swarm::*;
use leakmon_e2e::{data_seqs, host_reports_stored, seq_gaps, wait_for, Service, Subscriber};

const HOST: &str = "172.30.0.1";

#[test]
fn a_broker_node_dies_with_a_worker_and_nothing_is_lost_or_falsely_declared() {
    let _rig = Rig;
    let ls = rig(&["up", &MANAGERS.to_string(), &(NODES - MANAGERS).to_string()]);
    assert_eq!(ls.matches("Ready").count(), NODES as usize, "{ls}");
    let cluster = RabbitCluster::start("0.0.0.0");
    let influx = Service::influxdb_on("0.0.0.0");
    create_services();
    wait_for(Duration::from_secs(90), || {
        (running_on(1, "web").len() == 5 && running_on(1, "db") == ["node4"]).then_some(())
    })
    .expect("web x5 and db on node4 running");

    // The broker node to kill: the one the gateway beside the Swarm leader starts on.
    let leader = leader(1).and_then(|l| node_number(&l)).expect("a leader");
    let victim = leader as usize;
    let survivor = victim % 3 + 1;
    let events = Subscriber::start(
        cluster.ports[survivor - 1],
        "leakmon/v1/gateway/events",
        false,
    );
    let data = Subscriber::start(cluster.ports[survivor - 1], "leakmon/v1/nodes/+/+", false);
    let gateways = start_gateways_with(|n, _| {
        with_brokers(
            &gateway_config(n, 0, influx.port, false),
            &cluster.url_list(HOST, n as usize),
        )
    });
    let logs = || format!("{}\n{}", gateway_logs(&gateways), cluster.logs());
    wait_event(&events, &gateways, 60, "gateway_active", |e| {
        e["kind"] == "gateway_active" && e["node"] == format!("node{leader}").as_str()
    });
    // The agents start once the active gateway's session is subscribed: the broker keeps for
    // a session only what is published after its subscription, and every message counts here.
    wait_for(Duration::from_secs(30), || {
        gateways[leader as usize - 1]
            .log()
            .lines()
            .any(|l| l.contains("connected; subscribed") && l.contains("active=true"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the active gateway subscribed\n{}", logs()));
    let mut agents = start_agents_with(|n, dir| {
        // node4 on the broker node that dies with it (its Will dies too); the others spread
        let first = if n == 4 {
            victim
        } else {
            (n as usize - 1) % 3 + 1
        };
        with_brokers(&agent_config(n, 0, dir), &cluster.url_list(HOST, first))
    });
    wait_for(Duration::from_secs(60), || {
        let v = api_nodes(leader)?;
        (v.matches("\"state\":\"online\"").count() == NODES as usize).then_some(())
    })
    .unwrap_or_else(|| panic!("all agents online on the active gateway\n{}", logs()));
    // a few samples of every node before the faults
    std::thread::sleep(Duration::from_secs(5));

    cluster.kill(victim);
    rig(&["cut", "4"]);
    wait_event(&events, &gateways, 60, "node_down node4", |e| {
        e["kind"] == "node_down" && e["node"] == "node4"
    });
    wait_for(Duration::from_secs(60), || {
        (running_on(1, "db") == ["node3"]).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "db runs on the standby: {:?}\n{}",
            running_on(1, "db"),
            logs()
        )
    });
    wait_for(Duration::from_secs(60), || {
        let on = running_on(1, "web");
        (on.iter().filter(|n| *n != "node4").count() >= 5).then_some(())
    })
    .unwrap_or_else(|| panic!("web whole on live nodes: {:?}", running_on(1, "web")));

    // The killed broker node comes back (its clients stay where they are), then node4.
    cluster.restart(victim);
    rig(&["restore", "4"]);
    wait_for(Duration::from_secs(90), || {
        let v = api_nodes(leader)?;
        (v.matches("\"state\":\"online\"").count() == NODES as usize).then_some(())
    })
    .unwrap_or_else(|| panic!("every agent online again\n{}", logs()));
    // node4's buffer drains; then the agents stop (goodbye), so that every report a
    // subscriber saw has had its time to reach the database
    std::thread::sleep(Duration::from_secs(10));
    for a in &mut agents {
        a.terminate();
    }

    let evs = events_of(&events);
    let false_downs: Vec<&serde_json::Value> = evs
        .iter()
        .filter(|e| e["kind"] == "node_down" && e["node"] != "node4")
        .collect();
    assert!(
        false_downs.is_empty(),
        "live nodes declared down: {false_downs:?}\n{}",
        logs()
    );

    let seen = data_seqs(&[&data]);
    for n in 1..=NODES {
        let node = format!("node{n}");
        let runs: Vec<_> = seen.iter().filter(|((m, _), _)| *m == node).collect();
        assert!(!runs.is_empty(), "no data message of {node} seen");
        for ((_, run), s) in runs {
            let missing = seq_gaps(s);
            assert!(
                missing.is_empty(),
                "{node} run {run}: seqs {missing:?} missing between {:?} and {:?}\n{}",
                s.first(),
                s.last(),
                logs()
            );
        }
        host_reports_stored(&data, &influx, &node, Duration::from_secs(10)).unwrap_or_else(
            |lost| {
                panic!(
                    "{node}: host reports seen on the broker are not in InfluxDB: {lost:?}\n{}",
                    logs()
                )
            },
        );
    }
}

/// The active gateway's `/api/v1/nodes` body, through the rig.
fn api_nodes(n: u32) -> Option<String> {
    leakmon_e2e::http_get(&format!("http://{}:9900/api/v1/nodes", addr(n)))
        .ok()
        .map(|(_, b)| b)
}
