//! Horizontal gateways beside a Swarm (issue 16, item 4), on the real 5-node Swarm of
//! tests/swarm/rig.sh with mosquitto: a gateway beside each of the 3 managers, all in one
//! `mqtt.shared_group`. Each writes the share of reports the broker hands it, standbys too;
//! one control loop (the gateway beside the Swarm leader) finds node4's death and heals; and
//! over the whole run, with node4's link cut and restored, no agent message is missing, each
//! report was ingested by exactly one gateway, and InfluxDB holds every host report.

use std::collections::BTreeSet;
use std::time::Duration;

use leakmon_e2e::swarm::*;
use leakmon_e2e::{
    assert_reports_split, data_seqs, host_reports_stored, http_get, seq_gaps, wait_for, Subscriber,
};

fn all_online(n: u32) -> Option<()> {
    let (_, body) = http_get(&format!("http://{}:9900/api/v1/nodes", addr(n))).ok()?;
    (body.matches("\"state\":\"online\"").count() == NODES as usize).then_some(())
}

#[test]
fn gateways_beside_every_manager_share_ingest_and_one_of_them_controls() {
    let (_rig, broker, influx) = fleet_up();
    let events = Subscriber::start(broker.port, "leakmon/v1/gateway/events", false);
    let data = Subscriber::start(broker.port, "leakmon/v1/nodes/+/+", false);
    let gateways = start_gateways_with(|n, _| {
        gateway_config(n, broker.port, influx.port, false).replacen(
            "[mqtt]\n",
            "[mqtt]\nshared_group = \"ingest\"\n",
            1,
        )
    });
    let logs = || gateway_logs(&gateways);
    wait_gateway_active(&events);
    let leader = leader(1).and_then(|l| node_number(&l)).expect("a leader");
    // Every gateway's session subscribed before the agents publish: each message counts.
    wait_for(Duration::from_secs(30), || {
        gateways
            .iter()
            .all(|g| g.log().contains("connected; subscribed"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("every gateway subscribed\n{}", logs()));
    let mut agents = start_agents(broker.port);
    wait_for(Duration::from_secs(60), || all_online(leader))
        .unwrap_or_else(|| panic!("all agents online on the active gateway\n{}", logs()));

    // Each gateway writes its share; one is active.
    wait_for(Duration::from_secs(30), || {
        (1..=MANAGERS)
            .all(|n| gateway_metric(n, "leakmon_gateway_points_written_total").unwrap_or(0.0) > 0.0)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("every gateway of the group writes\n{}", logs()));
    for n in 1..=MANAGERS {
        let active = gateway_metric(n, "leakmon_gateway_active").expect("gateway metrics");
        assert_eq!(active, f64::from(u8::from(n == leader)), "gw{n} active");
    }
    // Every gateway's failure detector hears the beats, on its connection of its own (the
    // group's data connections do not count them).
    wait_for(Duration::from_secs(10), || {
        (1..=MANAGERS)
            .all(|n| gateway_metric(n, "leakmon_gateway_beats_total").unwrap_or(0.0) > 0.0)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("every gateway's detector hears beats\n{}", logs()));

    // One control loop: node4's death is found and healed once, by the leader's gateway.
    rig(&["cut", "4"]);
    wait_event(&events, &gateways, 30, "node_down node4", |e| {
        e["kind"] == "node_down" && e["node"] == "node4"
    });
    wait_for(Duration::from_secs(30), || {
        (running_on(1, "db") == ["node3"]).then_some(())
    })
    .unwrap_or_else(|| panic!("db on the standby: {:?}\n{}", running_on(1, "db"), logs()));
    rig(&["restore", "4"]);
    wait_for(Duration::from_secs(90), || all_online(leader))
        .unwrap_or_else(|| panic!("every agent online again\n{}", logs()));
    // node4's buffer drains; then the agents stop (goodbye) and the last lines are flushed
    std::thread::sleep(Duration::from_secs(8));
    for a in &mut agents {
        a.terminate();
    }
    std::thread::sleep(Duration::from_secs(3));

    let evs = events_of(&events);
    let from: BTreeSet<&str> = evs.iter().filter_map(|e| e["gateway"].as_str()).collect();
    assert_eq!(
        from,
        BTreeSet::from([format!("gw{leader}").as_str()]),
        "every event from the one active gateway: {evs:?}"
    );
    let downs = evs.iter().filter(|e| e["kind"] == "node_down").count();
    assert_eq!(downs, 1, "one node_down: {evs:?}");

    // Nothing missing, each report taken by one gateway, every host report stored.
    for ((node, run), s) in data_seqs(&[&data]) {
        let missing = seq_gaps(&s);
        assert!(missing.is_empty(), "{node} run {run}: {missing:?} missing");
    }
    let totals: Vec<u64> = (1..=MANAGERS)
        .map(|n| gateway_metric(n, "leakmon_gateway_messages_total").unwrap_or(0.0) as u64)
        .collect();
    assert_reports_split(&data, &totals);
    for n in 1..=NODES {
        let node = format!("node{n}");
        let (seen, _) = host_reports_stored(&data, &influx, &node, Duration::from_secs(10))
            .unwrap_or_else(|lost| panic!("{node}: host reports not stored: {lost:?}\n{}", logs()));
        assert!(!seen.is_empty(), "no host report of {node}");
    }
}
