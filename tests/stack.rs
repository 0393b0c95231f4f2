//! End to end: deploy/stack.yml with the FROM-scratch images of scripts/images, deployed with
//! `docker stack deploy` on a real 5-node Swarm (3 managers, 2 workers; tests/swarm/rig.sh).
//! Every node's agent container publishes its birth with its own engine's Swarm identity, a
//! gateway runs beside every manager and only the one beside the leader is active, and
//! `docker stack rm` makes every agent say goodbye. The gateways' passwords come from Docker
//! secrets (deploy/secrets.yml). Needs the images' tar
//! (`scripts/images --save target/images/leakmon-images.tar`; scripts/test makes it).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use leakmon_e2e::swarm::{self, Rig, MANAGERS, NODES, RIG};
use leakmon_e2e::{run_ok, wait_for, Broker, Subscriber};

const S: fn(u64) -> Duration = Duration::from_secs;

/// The Swarm node id of node n, from its own engine.
fn node_id(n: u32) -> String {
    swarm::docker(n, &["info", "--format", "{{.Swarm.NodeID}}"])
}

/// deploy/stack.yml with deploy/secrets.yml: the gateways' MQTT and InfluxDB passwords are
/// Docker secrets (created here); a gateway that could not read them would exit with a
/// configuration error, and no gateway would turn active.
fn deploy(broker: &Broker) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    // Keys as deploy/stack.yml says: the fleet key a secret; each node's agent enrolls with
    // its engine's Swarm certificate (no key file by hand).
    let fleet = leakmon_e2e::test_fleet().to_text();
    for (name, value) in [
        ("leakmon_mqtt_password", "mqtt-secret"),
        ("leakmon_influxdb_password", "db-secret"),
        ("leakmon_fleet_key", fleet.as_str()),
    ] {
        let file = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::write(&file, value).expect("secret file");
        swarm::rig(&[
            "docker",
            "1",
            "secret",
            "create",
            name,
            file.to_str().expect("path"),
        ]);
        let _ = std::fs::remove_file(&file);
    }
    run_ok(
        Command::new(RIG)
            .args(["docker", "1", "stack", "deploy"])
            .args(["-c", &format!("{dir}/stack.yml")])
            .args(["-c", &format!("{dir}/secrets.yml"), "leakmon"])
            .env(
                "LEAKMON_MQTT_URL",
                format!("mqtt://172.30.0.1:{}", broker.port),
            )
            // The test's broker takes any credentials: the username and the password read
            // from the secret are sent and accepted.
            .env("LEAKMON_INTERVAL", "1s")
            // Each engine's data root is its own (tests/swarm/rig.sh links its certificates
            // next to its socket).
            .env(
                "LEAKMON_SWARM_CERTS",
                "/run/lmsw/{{.Node.Hostname}}/swarm-certificates",
            )
            .env("LEAKMON_KEEP_ALIVE", "2s")
            // The rig's engines have their sockets here, not at /var/run/docker.sock.
            .env(
                "LEAKMON_DOCKER_SOCKET",
                "/run/lmsw/{{.Node.Hostname}}/docker.sock",
            ),
    );
}

#[test]
fn the_stack_runs_an_agent_on_every_node_and_a_gateway_beside_every_manager() {
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/images/leakmon-images.tar");
    assert!(
        images.exists(),
        "{} is missing: run `scripts/images --save target/images/leakmon-images.tar` first \
         (scripts/test does)",
        images.display()
    );
    swarm::rig(&["up"]);
    let _rig = Rig;
    // No registry here: every engine loads the images, as an air-gapped site would.
    for n in 1..=NODES {
        let out = swarm::rig(&[
            "docker",
            &n.to_string(),
            "load",
            "-i",
            images.to_str().expect("path"),
        ]);
        assert!(
            out.contains("leakmon/agent") && out.contains("leakmon/gateway"),
            "{out}"
        );
    }
    let ids: Vec<String> = (1..=NODES).map(node_id).collect();
    // The broker listens on the rig's bridge (and loopback, for the test's subscriber).
    let broker = Broker::start_custom(|_| "listener {port}\nallow_anonymous true".into());
    let status = Subscriber::start(broker.port, "leakmon/v1/nodes/+/status", false);
    let gateway = Subscriber::start(broker.port, "leakmon/v1/gateway/status", false);

    deploy(&broker);

    // Every node's birth, sent by the agent container on that node, about that node.
    for n in 1..=NODES {
        let node = format!("node{n}");
        let birth = status
            .wait_json(&format!("{node}/status"), S(90), |j| j["state"] == "online")
            .unwrap_or_else(|| {
                panic!(
                    "no birth from {node} through the stack; tasks:\n{}",
                    swarm::docker(1, &["service", "ps", "--no-trunc", "leakmon_agent"])
                )
            })
            .json();
        assert_eq!(birth["node"], node.as_str(), "{birth}");
        assert_eq!(birth["hostname"], node.as_str(), "{birth}");
        assert_eq!(
            birth["swarm_node_id"],
            ids[n as usize - 1].as_str(),
            "node{n}'s agent reads another engine: {birth}"
        );
        let role = if n <= MANAGERS { "manager" } else { "worker" };
        assert_eq!(birth["swarm_role"], role, "{birth}");
    }
    // And its host report, read through /host/proc and /host/root.
    let host = Subscriber::start(broker.port, "leakmon/v1/nodes/node5/host", false);
    let report = host
        .wait_json("node5/host", S(30), |j| {
            j["mem"]["total"].as_u64().unwrap_or(0) > 0
        })
        .expect("no host report from node5's agent container")
        .json();
    assert!(
        report["disks"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["path"] == "/")),
        "no root filesystem measured: {report}"
    );

    // The gateway: one task per manager and none on workers; the leader's one is active.
    let managers: Vec<String> = (1..=MANAGERS).map(|n| format!("node{n}")).collect();
    let on = wait_for(S(60), || {
        let mut on = swarm::running_on(1, "leakmon_gateway");
        on.sort();
        (on == managers).then_some(on)
    });
    assert!(
        on.is_some(),
        "gateway tasks not on exactly the managers: {:?}",
        swarm::running_on(1, "leakmon_gateway")
    );
    let leader = swarm::leader(1).expect("a Swarm leader");
    let active = gateway
        .wait_json("gateway/status", S(60), |j| j["role"] == "active")
        .expect("no active gateway through the stack")
        .json();
    assert_eq!(active["hostname"], leader.as_str(), "{active}");
    assert_eq!(active["mode"], "swarm", "{active}");
    std::thread::sleep(S(3));
    let actives: Vec<_> = gateway
        .on("gateway/status")
        .iter()
        .map(|m| m.json())
        .filter(|j| j["role"] == "active")
        .map(|j| j["hostname"].clone())
        .collect();
    assert!(
        actives.iter().all(|h| *h == leader.as_str()),
        "a standby gateway announced itself active: {actives:?}"
    );

    // `docker stack rm`: every agent gets SIGTERM and says goodbye (not a Will).
    swarm::rig(&["docker", "1", "stack", "rm", "leakmon"]);
    for n in 1..=NODES {
        let node = format!("node{n}");
        status
            .wait_json(&format!("{node}/status"), S(60), |j| {
                j["state"] == "offline" && j["reason"] == "shutdown"
            })
            .unwrap_or_else(|| panic!("{node}'s agent did not say goodbye on stack rm"));
    }
}
