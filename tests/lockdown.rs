//! End to end: the locked-down broker of config/mosquitto/ (TLS only, one credential per
//! node, an ACL keeping every node in its own topics), made by scripts/broker-credentials and
//! run by a real mosquitto, with real agents, the real gateway and a real InfluxDB. The fleet
//! works through it, and a node cannot publish as another: the broker refuses the topic, and
//! the gateway drops a payload whose node differs from its topic. The liveness traffic passes
//! the same ACL: beats and probe reports on the node's own topics, probe requests written by
//! the gateway only and read by the node they are for only.

use std::process::Command;
use std::time::Duration;

use leakmon_e2e::lockdown::*;
use leakmon_e2e::{wait_for, Agent, Gateway, Service};
use leakmon_protocol::{decode, encode, Beat, ProbeReport, ProbeRequest};

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn a_node_cannot_publish_as_another() {
    let broker = LockedBroker::start(&["node-a", "node-b"]);
    let db = Service::influxdb();
    let gw = Gateway::start(&format!(
        "name = \"gw-lockdown\"\n{}reconnect_max = \"1s\"\n\
         [influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"leakmon\"\nflush_interval = \"500ms\"\n\
         [liveness]\noffline_after = \"4s\"\n",
        broker.client_section("gateway"),
        db.url()
    ));
    let watched = broker.dir.path().join("watch.log");
    let _watch = Killed(broker.watch(&watched));
    let a = Agent::start(&agent_config(&broker, "node-a", "node-a"));
    let b = Agent::start(&agent_config(&broker, "node-b", "node-b"));

    // The fleet works through TLS, the credentials and the ACL: both nodes online at the
    // gateway (birth, on each node's own status topic) and their samples in InfluxDB.
    wait_for(S(30), || {
        let nodes = gw.get("/api/v1/nodes");
        (nodes.contains("\"node-a\"") && nodes.contains("\"node-b\"")).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "nodes not seen through the locked-down broker: {}\ngateway:\n{}\nbroker:\n{}\nagent a:\n{}",
            gw.get("/api/v1/nodes"),
            gw.log(),
            broker.log(),
            a.log()
        )
    });
    for n in ["node-a", "node-b"] {
        wait_for(S(30), || {
            (influx_count(
                &db,
                &format!("SELECT count(used_percent) FROM mem WHERE host = '{n}'"),
            ) > 0)
                .then_some(())
        })
        .unwrap_or_else(|| panic!("no mem points of {n}; gateway log:\n{}", gw.log()));
    }
    // The gateway may write its own topics (its retained status).
    wait_for(S(20), || {
        std::fs::read_to_string(&watched)
            .unwrap_or_default()
            .contains("leakmon/v1/gateway/status ")
            .then_some(())
    })
    .expect("the gateway's status did not pass the ACL");

    // 1. node-a's credential publishing on node-b's topic: the broker refuses (MQTT 5 says so).
    let sample = wait_for(S(20), || {
        std::fs::read_to_string(&watched)
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("leakmon/v1/nodes/node-b/host ")
                    .map(str::to_owned)
            })
    })
    .expect("a host message of node-b seen by the telemetry user");
    let mut forged: serde_json::Value = serde_json::from_str(&sample).expect("host JSON");
    forged["mem"]["used_percent"] = 99.25.into();
    if let Some(o) = forged.as_object_mut() {
        o.remove("mac");
    }
    let forged = forged.to_string();
    let pa = broker.password("node-a");
    let (code, err) = broker.publish("node-a", &pa, true, "leakmon/v1/nodes/node-b/host", &forged);
    assert!(
        err.contains("Not authorized"),
        "the broker did not refuse node-a on node-b's topic (exit {code}): {err}"
    );
    // The telemetry user may read but not write.
    let pt = broker.password("telemetry");
    let (_, err) = broker.publish(
        "telemetry",
        &pt,
        true,
        "leakmon/v1/nodes/node-b/host",
        &forged,
    );
    assert!(
        err.contains("Not authorized"),
        "telemetry could write: {err}"
    );

    // 2. A real agent holding node-a's credential but configured as another node: the broker
    // drops all it sends, its Will included; nobody ever hears of "node-c".
    let c = Agent::start(&agent_config(&broker, "node-c", "node-a"));
    wait_for(S(20), || c.log().contains("birth published").then_some(()))
        .unwrap_or_else(|| panic!("the spoofing agent never connected:\n{}", c.log()));

    // 3. node-a on its own topic with a payload that names node-b (sealed with node-a's own
    // key: a compromised node-a): the broker lets it through (the topic is node-a's), and the
    // gateway drops it and counts it.
    let own = "leakmon/v1/nodes/node-a/host";
    let sealed = leakmon_e2e::seal("node-a", own, forged.as_bytes());
    let sealed = String::from_utf8(sealed).expect("JSON is UTF-8");
    let (code, err) = broker.publish("node-a", &pa, true, own, &sealed);
    assert!(
        code == 0 && !err.contains("Not authorized"),
        "own topic refused: {err}"
    );
    wait_for(S(20), || {
        gw.get("/metrics")
            .contains("leakmon_gateway_rejected_total{node=\"node-a\",reason=\"node_mismatch\"}")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no node_mismatch counted:\n{}", gw.get("/metrics")));

    // 4. No credential, a wrong password, or plain TCP: the connection itself is refused.
    let (code, _) = broker.publish("node-a", "wrong", true, "leakmon/v1/nodes/node-a/host", "x");
    assert_ne!(code, 0, "a wrong password was accepted");
    let (code, _) = broker.publish("node-a", &pa, false, "leakmon/v1/nodes/node-a/host", "x");
    assert_ne!(code, 0, "a plain-TCP connection was accepted");
    let out = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &broker.port.to_string()])
        .arg("--cafile")
        .arg(broker.ca())
        .args(["-t", "leakmon/v1/nodes/node-a/host", "-m", "x"])
        .output()
        .expect("mosquitto_pub");
    assert!(!out.status.success(), "an anonymous client was accepted");

    // Let the spoofer run several sample intervals, then kill it (its Will is due too).
    std::thread::sleep(S(4));
    drop(c);
    std::thread::sleep(S(4));
    let seen = std::fs::read_to_string(&watched).unwrap_or_default();
    assert!(
        !seen.contains("nodes/node-c/"),
        "a message as node-c got through the broker:\n{seen}"
    );
    assert!(
        !seen
            .lines()
            .any(|l| l.starts_with("leakmon/v1/nodes/node-b/") && l.contains("99.25")),
        "the forged sample reached a subscriber on node-b's topic:\n{seen}"
    );
    assert!(
        !gw.get("/api/v1/nodes").contains("node-c"),
        "the gateway heard of node-c"
    );
    assert_eq!(
        influx_count(
            &db,
            "SELECT count(used_percent) FROM mem WHERE used_percent = 99.25"
        ),
        0,
        "the forged sample was written"
    );
    assert_eq!(
        influx_count(
            &db,
            "SELECT count(used_percent) FROM mem WHERE host = 'node-c'"
        ),
        0,
        "node-c's samples were written"
    );
    // The real nodes kept flowing all along.
    let nodes = gw.get("/api/v1/nodes");
    assert!(
        nodes.contains("\"node-a\"") && nodes.contains("\"node-b\""),
        "{nodes}"
    );
    drop((a, b));
}

#[test]
fn liveness_passes_the_acl_and_a_node_reads_only_its_own_probe_requests() {
    let broker = LockedBroker::start(&["node-a", "node-b"]);
    let dir = broker.dir.path().to_owned();
    let watched = dir.join("watch.log");
    let _watch = Killed(broker.watch(&watched));
    let a = Agent::start(&agent_config(&broker, "node-a", "node-a"));

    // 1. node-a's beats pass (its own nodes/ subtree), as the telemetry user sees them.
    let beats = wait_for(S(30), || {
        let b = payloads(&watched, "leakmon/v1/nodes/node-a/beat");
        (b.len() >= 3).then_some(b)
    })
    .unwrap_or_else(|| {
        panic!(
            "no beats through the locked-down broker\nbroker:\n{}\nagent:\n{}",
            broker.log(),
            a.log()
        )
    });
    let ns: Vec<u64> = beats
        .iter()
        .map(|p| decode::<Beat>("node-a", p.as_bytes()).expect("a beat").n)
        .collect();
    assert!(ns.windows(2).all(|w| w[1] > w[0]), "{ns:?}");

    // 2. The gateway's credential asks node-a to probe; node-a reads its own probe topic,
    // probes, and its report passes on its own topic.
    wait_for(S(20), || {
        a.log()
            .contains("subscribed to probe requests")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("node-a did not subscribe:\n{}", a.log()));
    let request = |id: u64| {
        String::from_utf8(encode(&ProbeRequest {
            v: 1,
            id,
            gateway: "gw-lockdown".into(),
            target: "node-b".into(),
            // Something that answers: the broker's own port.
            addr: "127.0.0.1".into(),
            ports: vec![broker.port],
            window_ms: 3000,
            every_ms: 100,
            timeout_ms: 300,
        }))
        .expect("JSON is UTF-8")
    };
    let pg = broker.password("gateway");
    // sealed with node-a's key, as the gateway seals a request for it (node-a ignores others)
    let sealed = leakmon_e2e::seal("node-a", "leakmon/v1/probe/node-a", request(77).as_bytes());
    let (code, err) = broker.publish(
        "gateway",
        &pg,
        true,
        "leakmon/v1/probe/node-a",
        &String::from_utf8(sealed).expect("JSON is UTF-8"),
    );
    assert!(
        code == 0 && !err.contains("Not authorized"),
        "the gateway may not write probe requests (exit {code}): {err}"
    );
    let report = wait_for(S(15), || {
        payloads(&watched, "leakmon/v1/nodes/node-a/probe")
            .iter()
            .filter_map(|p| decode::<ProbeReport>("node-a", p.as_bytes()).ok())
            .find(|r| r.id == 77)
    })
    .unwrap_or_else(|| {
        panic!(
            "no probe report from node-a:\n{}\nbroker:\n{}",
            a.log(),
            broker.log()
        )
    });
    assert_eq!(report.target, "node-b");
    assert!(report.answered >= 1, "{report:?}");

    // 3. node-a's credential cannot read node-b's probe topic. mosquitto 2.0 grants the
    // subscription (its SUBACK says QoS 0) and then delivers nothing; node-b's own credential
    // gets the same request.
    let (spy_file, own_file) = (dir.join("spy.log"), dir.join("own.log"));
    let pa = broker.password("node-a");
    let pb = broker.password("node-b");
    let _spy = Killed(broker.subscribe("node-a", &pa, "leakmon/v1/probe/node-b", &spy_file));
    let _own = Killed(broker.subscribe("node-b", &pb, "leakmon/v1/probe/node-b", &own_file));
    // Both subscribed when the broker's log shows their SUBSCRIBEs (it runs with -v).
    wait_for(S(10), || {
        (broker
            .log()
            .matches("leakmon/v1/probe/node-b (QoS 0)")
            .count()
            >= 2)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the subscribers did not subscribe:\n{}", broker.log()));
    let (code, err) = broker.publish(
        "gateway",
        &pg,
        true,
        "leakmon/v1/probe/node-b",
        &request(78),
    );
    assert!(code == 0 && !err.contains("Not authorized"), "{err}");
    wait_for(S(10), || {
        payloads(&own_file, "leakmon/v1/probe/node-b")
            .iter()
            .any(|p| p.contains("\"id\":78"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("node-b did not get its request:\n{}", broker.log()));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let spied = std::fs::read_to_string(&spy_file).unwrap_or_default();
    assert!(
        spied.is_empty(),
        "node-a read node-b's probe request: {spied}"
    );

    // 4. No node may write probe requests: not for another node, not for itself (the broker
    // tells an MQTT 5 client "not authorized", and nobody receives them).
    for topic in ["leakmon/v1/probe/node-b", "leakmon/v1/probe/node-a"] {
        let (code, err) = broker.publish("node-a", &pa, true, topic, "{\"forged\":true}");
        assert!(
            err.contains("Not authorized"),
            "node-a could write {topic} (exit {code}): {err}"
        );
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    for file in [&watched, &own_file, &spy_file] {
        let seen = std::fs::read_to_string(file).unwrap_or_default();
        assert!(
            !seen.contains("forged"),
            "a forged request got through: {seen}"
        );
    }
    assert!(
        !a.log().contains("malformed probe request"),
        "the forged request reached node-a's agent:\n{}",
        a.log()
    );
    drop(a);
}
