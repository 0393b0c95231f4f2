//! Driving the multi-node Swarm rig (tests/swarm/rig.sh) from Rust: nodes, services and
//! the project's daemons inside nodes. Used by the control suite and the control benchmark.

use std::process::Command;

pub const RIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/swarm/rig.sh");
pub const NODES: u32 = 5;
pub const MANAGERS: u32 = 3;

pub fn rig(args: &[&str]) -> String {
    crate::run_ok(Command::new(RIG).args(args))
}

/// `docker` against a manager that is up (`via`), output or "" on failure.
pub fn docker(via: u32, args: &[&str]) -> String {
    let out = Command::new(RIG)
        .arg("docker")
        .arg(via.to_string())
        .args(args)
        .output()
        .expect("run rig.sh");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Tears the rig down even when the test fails.
pub struct Rig;
impl Drop for Rig {
    fn drop(&mut self) {
        let _ = Command::new(RIG).arg("down").output();
    }
}

pub fn addr(n: u32) -> String {
    format!("172.30.0.{}", 10 + n)
}

/// Where node n's engine keeps its Swarm node certificate and key (tests/swarm/rig.sh's
/// `--data-root`).
pub fn certificates(n: u32) -> std::path::PathBuf {
    let root =
        std::env::var("LEAKMON_SWARM_ROOT").unwrap_or_else(|_| "/var/lib/leakmon-swarm".into());
    std::path::PathBuf::from(root).join(format!("n{n}/data/swarm/certificates"))
}

/// Runs a binary inside node n: its network namespace and its hostname.
pub fn in_node(n: u32) -> Vec<String> {
    let pid = std::fs::read_to_string(format!("/run/lmsw/n{n}/docker.pid")).expect("dockerd pid");
    vec![
        "nsenter".into(),
        format!("--net=/var/run/netns/lmn{n}"),
        format!("--uts=/proc/{}/ns/uts", pid.trim()),
        "--".into(),
    ]
}

pub fn agent_config(n: u32, broker: u16, dir: &std::path::Path) -> String {
    format!(
        "node = \"node{n}\"\ninterval = \"1s\"\nstate_dir = \"{}\"\n\
         [mqtt]\nurl = \"mqtt://172.30.0.1:{broker}\"\nkeep_alive = \"2s\"\nreconnect_max = \"2s\"\n\
         [docker]\nhost = \"unix:///run/lmsw/n{n}/docker.sock\"\n",
        dir.join("state").display()
    )
}

pub fn gateway_config(n: u32, broker: u16, influx: u16, dry_run: bool) -> String {
    format!(
        "name = \"gw{n}\"\n\
         [mqtt]\nurl = \"mqtt://172.30.0.2:{broker}\"\nkeep_alive = \"2s\"\nreconnect_max = \"2s\"\n\
         [influxdb]\nurl = \"http://172.30.0.1:{influx}\"\nflush_interval = \"500ms\"\n\
         [http]\nlisten = \"0.0.0.0:9900\"\n\
         [liveness]\noffline_after = \"3s\"\n\
         [docker]\nhost = \"unix:///run/lmsw/n{n}/docker.sock\"\n\
         [leader]\nmode = \"swarm\"\n\
         [broker]\nembedded = \"never\"\n\
         [reschedule]\ndry_run = {dry_run}\nprobe_timeout = \"500ms\"\nreactivate_after = \"5s\"\n\
         unhealthy_after = \"3s\"\nforce_update_every = \"10m\"\n"
    )
}

/// An agent's config as shipped (`config/agent.toml`): only its node name, the broker's and
/// the engine's addresses, a state directory and the spool under it (as the shipped config
/// has it) set. For benchmarks that claim the defaults.
pub fn shipped_agent_config(n: u32, broker: u16, dir: &std::path::Path) -> String {
    format!(
        "node = \"node{n}\"\nstate_dir = \"{}\"\n\
         [mqtt]\nurl = \"mqtt://172.30.0.1:{broker}\"\n\
         [docker]\nhost = \"unix:///run/lmsw/n{n}/docker.sock\"\n\
         [buffer]\nspool_dir = \"{}\"\n",
        dir.join("state").display(),
        dir.join("spool").display()
    )
}

/// A gateway's config as shipped (`config/gateway.toml`): only its name, the addresses of
/// the broker, the database, the engine and its HTTP API, and its spool (in `dir`, as the
/// shipped config has one: acknowledgements once durable) set; `extra` is appended as is.
pub fn shipped_gateway_config(
    n: u32,
    broker: u16,
    influx: u16,
    dir: &std::path::Path,
    extra: &str,
) -> String {
    format!(
        "name = \"gw{n}\"\n\
         [mqtt]\nurl = \"mqtt://172.30.0.2:{broker}\"\n\
         [influxdb]\nurl = \"http://172.30.0.1:{influx}\"\nspool_dir = \"{}\"\n\
         [http]\nlisten = \"0.0.0.0:9900\"\n\
         [docker]\nhost = \"unix:///run/lmsw/n{n}/docker.sock\"\n{extra}",
        dir.join("spool").display()
    )
}

/// A metric of the gateway beside manager `n`, from its `/metrics` (HTTP API on port 9900).
pub fn gateway_metric(n: u32, name: &str) -> Option<f64> {
    let (_, body) = crate::http_get(&format!("http://{}:9900/metrics", addr(n))).ok()?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// `Availability State label`, through a live manager.
pub fn node_line(via: u32, n: u32) -> String {
    docker(
        via,
        &[
            "node",
            "inspect",
            &format!("node{n}"),
            "--format",
            "{{.Spec.Availability}} {{.Status.State}} {{index .Spec.Labels \"leakmon.drained\"}}",
        ],
    )
}

/// What Swarm and node n's engine say of node n, for a failing assertion: the node's status
/// as `via` (a manager) lists it, the engine's own view of its Swarm membership, and the
/// last warnings and errors of its dockerd.
pub fn node_diagnosis(via: u32, n: u32) -> String {
    let listed = docker(
        via,
        &[
            "node",
            "inspect",
            &format!("node{n}"),
            "--format",
            "{{json .Status}} {{json .ManagerStatus}}",
        ],
    );
    let own = docker(n, &["info", "--format", "{{json .Swarm}}"]);
    let log = std::fs::read_to_string(format!("/run/lmsw/n{n}/dockerd.log")).unwrap_or_default();
    let tail: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("level=warn") || l.contains("level=error"))
        .rev()
        .take(30)
        .collect();
    format!(
        "node{n} as node{via} lists it: {}\nnode{n}'s engine: {}\nnode{n}'s dockerd (last warnings):\n{}",
        listed.trim(),
        own.trim(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// The rig's number of a node named `nodeN` (a hostname, an event's `node`).
pub fn node_number(name: &str) -> Option<u32> {
    name.strip_prefix("node")?.parse().ok()
}

/// The rig's number of a node object of the Docker API (`/nodes`), by its hostname.
pub fn api_node_number(n: &serde_json::Value) -> Option<u32> {
    node_number(n["Description"]["Hostname"].as_str()?)
}

/// The number of the manager whose engine is the Swarm leader, through the API of the first
/// manager but `not` that answers.
pub fn leader_of(not: Option<u32>) -> Option<u32> {
    (1..=MANAGERS).filter(|n| Some(*n) != not).find_map(|via| {
        let nodes = api(via, "/nodes")?;
        nodes
            .as_array()?
            .iter()
            .find(|n| n["ManagerStatus"]["Leader"] == true)
            .and_then(api_node_number)
    })
}

/// The rig up (3 managers, 2 workers), a broker and InfluxDB on the bridge, `web` and `db`
/// running ([`create_services`]). The [`Rig`] guard tears it down.
pub fn fleet_up() -> (Rig, crate::Broker, crate::Service) {
    let guard = Rig;
    let ls = rig(&["up", &MANAGERS.to_string(), &(NODES - MANAGERS).to_string()]);
    assert_eq!(ls.matches("Ready").count(), NODES as usize, "{ls}");
    let broker =
        crate::Broker::start_custom(|_| "listener {port} 0.0.0.0\nallow_anonymous true".into());
    let influx = crate::Service::influxdb_on("0.0.0.0");
    create_services();
    crate::wait_for(std::time::Duration::from_secs(90), || {
        (running_on(1, "web").len() == 5 && running_on(1, "db") == ["node4"]).then_some(())
    })
    .expect("web x5 and db on node4 running");
    (guard, broker, influx)
}

/// Waits (30 s) for a `gateway_active` event on `events` (a subscriber to the gateway events).
pub fn wait_gateway_active(events: &crate::Subscriber) {
    crate::wait_for(std::time::Duration::from_secs(30), || {
        events
            .all()
            .iter()
            .any(|m| m.json()["kind"] == "gateway_active")
            .then_some(())
    })
    .expect("a gateway becomes active");
}

/// Node n's Swarm id, as manager 1 lists it.
pub fn node_id(n: u32) -> String {
    docker(
        1,
        &[
            "node",
            "inspect",
            &format!("node{n}"),
            "--format",
            "{{.ID}}",
        ],
    )
}

/// Hostname of the Swarm leader, as manager `via` sees it.
pub fn leader(via: u32) -> Option<String> {
    docker(
        via,
        &[
            "node",
            "ls",
            "--filter",
            "role=manager",
            "--format",
            "{{.Hostname}} {{.ManagerStatus}}",
        ],
    )
    .lines()
    .find_map(|l| l.strip_suffix(" Leader").map(str::to_owned))
}

/// Nodes of the running tasks of a service.
pub fn running_on(via: u32, service: &str) -> Vec<String> {
    docker(
        via,
        &[
            "service",
            "ps",
            service,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}} {{.CurrentState}}",
        ],
    )
    .lines()
    .filter(|l| l.contains("Running"))
    .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
    .collect()
}

pub fn replicas(via: u32, service: &str) -> String {
    docker(
        via,
        &[
            "service",
            "inspect",
            service,
            "--format",
            "{{.Spec.Mode.Replicated.Replicas}}",
        ],
    )
}

/// POST `body` (JSON) to node n's Docker API: the status code and the body's text.
pub fn api_post(n: u32, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s =
        std::os::unix::net::UnixStream::connect(format!("/run/lmsw/n{n}/docker.sock")).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .ok()?;
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.trim().to_owned()))
}

/// GET on node n's Docker API (HTTP/1.0 over its unix socket, no CLI process): the JSON body.
/// Fast enough to poll every few milliseconds in the benchmark.
pub fn api(n: u32, path: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s =
        std::os::unix::net::UnixStream::connect(format!("/run/lmsw/n{n}/docker.sock")).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_str(body).ok()
}

/// Hostnames of the nodes running tasks of `service` (desired running, state running), read
/// from the API of manager `via`.
pub fn running_tasks(via: u32, service: &str) -> Option<Vec<String>> {
    let nodes = api(via, "/nodes")?;
    let host = |id: &str| {
        nodes
            .as_array()?
            .iter()
            .find(|n| n["ID"] == id)
            .and_then(|n| n["Description"]["Hostname"].as_str().map(str::to_owned))
    };
    let filter = format!("{{\"service\":[\"{service}\"],\"desired-state\":[\"running\"]}}");
    let tasks = api(
        via,
        &format!("/tasks?filters={}", crate::urlencode(&filter)),
    )?;
    Some(
        tasks
            .as_array()?
            .iter()
            .filter(|t| t["Status"]["State"] == "running")
            .filter_map(|t| host(t["NodeID"].as_str()?))
            .collect(),
    )
}

/// Ids of the tasks (any service) desired running and running on node n, through the API of
/// the first manager that answers.
pub fn running_task_ids(n: u32) -> std::collections::BTreeSet<String> {
    let Some(id) = (1..=MANAGERS).find_map(|via| {
        api(via, &format!("/nodes/node{n}")).and_then(|v| v["ID"].as_str().map(str::to_owned))
    }) else {
        return Default::default();
    };
    let filter = format!("{{\"node\":[\"{id}\"],\"desired-state\":[\"running\"]}}");
    (1..=MANAGERS)
        .find_map(|via| {
            api(
                via,
                &format!("/tasks?filters={}", crate::urlencode(&filter)),
            )
        })
        .and_then(|t| {
            t.as_array().map(|a| {
                a.iter()
                    .filter(|t| t["Status"]["State"] == "running")
                    .filter_map(|t| t["ID"].as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Node3 is the standby; `web` (5 replicas, spread) and `db` (pinned to node4, failover label).
pub fn create_services() {
    docker(
        1,
        &[
            "node",
            "update",
            "--label-add",
            "leakmon.standby=true",
            "node3",
        ],
    );
    create_service(&[
        "--name",
        "web",
        "--replicas",
        "5",
        "--placement-pref",
        "spread=node.id",
    ]);
    create_db();
}

/// `db`: one replica pinned to node4 that may fail over.
pub fn create_db() {
    create_service(&[
        "--name",
        "db",
        "--label",
        "leakmon.failover=true",
        "--constraint",
        "node.hostname==node4",
    ]);
}

fn create_service(args: &[&str]) {
    let mut a = vec!["docker", "1", "service", "create", "--detach"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["leakmon-test/busybox", "sleep", "100000"]);
    rig(&a);
}

/// An agent on every node.
pub fn start_agents(broker: u16) -> Vec<crate::Daemon> {
    start_agents_with(|n, dir| agent_config(n, broker, dir))
}

/// An agent on every node, each with the config `cfg(node, its directory)` gives.
pub fn start_agents_with(cfg: impl Fn(u32, &std::path::Path) -> String) -> Vec<crate::Daemon> {
    (1..=NODES)
        .map(|n| {
            let dir = tempfile::tempdir().expect("tempdir");
            let cfg = cfg(n, dir.path());
            crate::Daemon::start_wrapped("leakmon-agent", dir, &cfg, in_node(n))
        })
        .collect()
}

/// A gateway beside every manager; `extra` is appended to the `[reschedule]` section.
pub fn start_gateways(broker: u16, influx: u16, extra: Option<&str>) -> Vec<crate::Daemon> {
    start_gateways_with(|n, _| {
        let mut cfg = gateway_config(n, broker, influx, false);
        cfg.push_str(extra.unwrap_or_default());
        cfg
    })
}

/// A gateway beside every manager, each with the config `cfg(node, its directory)` gives.
pub fn start_gateways_with(cfg: impl Fn(u32, &std::path::Path) -> String) -> Vec<crate::Daemon> {
    (1..=MANAGERS)
        .map(|n| {
            let dir = tempfile::tempdir().expect("tempdir");
            let cfg = cfg(n, dir.path());
            crate::Daemon::start_wrapped("leakmon-gateway", dir, &cfg, in_node(n))
        })
        .collect()
}

/// The last 40 INFO/WARN/ERROR lines of each gateway's log, for a failing assertion.
pub fn gateway_logs(gateways: &[crate::Daemon]) -> String {
    gateways
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let log = g.log();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(" INFO ") || l.contains(" WARN ") || l.contains(" ERROR "))
                .rev()
                .take(40)
                .collect();
            format!(
                "--- gw{} (last lines) ---\n{}",
                i + 1,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The gateway events `events` has received, as JSON.
pub fn events_of(events: &crate::Subscriber) -> Vec<serde_json::Value> {
    events.all().iter().map(|m| m.json()).collect()
}

/// Waits `secs` for an event matching `pred`; panics naming `what`, with every event so far
/// and the gateways' logs.
pub fn wait_event(
    events: &crate::Subscriber,
    gateways: &[crate::Daemon],
    secs: u64,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    crate::wait_for(std::time::Duration::from_secs(secs), || {
        events_of(events).into_iter().find(|e| pred(e))
    })
    .unwrap_or_else(|| {
        panic!(
            "no {what} event within {secs} s; events:\n{}\n{}",
            events_of(events)
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            gateway_logs(gateways)
        )
    })
}
