//! End to end: the real agent against a real mosquitto and the real local dockerd.

use std::collections::{BTreeMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leakmon_e2e::{
    bin, docker, free_port, mosquitto_pub, mosquitto_pub_lines, now_ms, pki, wait_for, Agent,
    Broker, Received, Subscriber,
};
use leakmon_protocol::{
    decode, encode, Beat, ContainersReport, EngineState, EventReport, Health, HostReport,
    NodeState, OfflineReason, ProbeReport, ProbeRequest, Status, SwarmRole,
};

const S: fn(u64) -> Duration = Duration::from_secs;

fn config(broker_url: &str, node: &str, extra: &str) -> String {
    format!(
        "node = \"{node}\"\ninterval = \"1s\"\n{extra}\n[mqtt]\nurl = \"{broker_url}\"\n\
         keep_alive = \"2s\"\nreconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n"
    )
}

fn status(m: &Received, node: &str) -> Status {
    decode(node, &m.payload).expect("a valid status payload")
}

/// A broker, and a subscriber to everything `node` publishes with a persistent session (the
/// broker keeps its messages across the outages the test makes).
fn broker_and_session(node: &str) -> (Broker, Subscriber) {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, &format!("leakmon/v1/nodes/{node}/#"), true);
    (broker, sub)
}

/// Waits up to `limit` for a host sample taken after `ms`.
fn wait_for_host_after(sub: &Subscriber, ms: i64, limit: Duration) -> Option<()> {
    wait_for(limit, || {
        sub.on("host")
            .iter()
            .any(|m| m.json()["ts"].as_i64() > Some(ms))
            .then_some(())
    })
}

/// Some host report showed messages queued in the agent's buffer.
fn assert_reported_a_backlog(sub: &Subscriber) {
    assert!(
        sub.on("host")
            .iter()
            .any(|m| m.json()["buffer"]["queued"].as_u64() > Some(0)),
        "no host report showed queued messages"
    );
}

#[test]
fn birth_is_retained_with_identity_and_reports_are_plausible() {
    let node = "e2e-birth";
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "leakmon/#", false);
    let agent = Agent::start(&config(&broker.url(), node, ""));

    // The second host sample carries CPU usage (a difference of two samples).
    let host = sub
        .wait_json("host", S(20), |v| v["cpu"].is_object())
        .unwrap_or_else(|| panic!("no host report with CPU usage; agent log:\n{}", agent.log()));
    let h: HostReport = decode(node, &host.payload).expect("valid host report");
    assert!(h.n_cpus >= 1);
    assert!(h.uptime_s > 0);
    assert!(h.mem.total > 0 && h.mem.used > 0 && h.mem.used <= h.mem.total);
    assert!((0.0..=100.0).contains(&h.mem.used_percent));
    let cpu = h.cpu.expect("cpu usage");
    let sum = cpu.user
        + cpu.nice
        + cpu.system
        + cpu.idle
        + cpu.iowait
        + cpu.irq
        + cpu.softirq
        + cpu.steal
        + cpu.guest
        + cpu.guest_nice;
    assert!((sum - 100.0).abs() < 0.5, "cpu states sum to {sum}");
    assert!(h.load.load1 >= 0.0);
    assert!(!h.disks.is_empty(), "no filesystems reported");
    assert!(h.disks.iter().all(|d| d.total > 0 && d.used <= d.total));
    // When / is a real filesystem here (not the overlay of a container), it is reported.
    let root_fs = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .rfind(|l| l.split_whitespace().nth(1) == Some("/"))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .unwrap_or_default();
    if ["ext4", "ext3", "xfs", "btrfs"].contains(&root_fs.as_str()) {
        let root = h
            .disks
            .iter()
            .find(|d| d.path == "/")
            .unwrap_or_else(|| panic!("no root filesystem in {:?}", h.disks));
        assert!(root.total > 0 && root.used > 0 && root.used_percent > 0.0);
    }
    assert!(
        h.disks
            .iter()
            .all(|d| !["proc", "sysfs", "tmpfs", "overlay", "cgroup2"].contains(&d.fstype.as_str())),
        "pseudo filesystems reported: {:?}",
        h.disks
    );
    // dockerd is running, so its bridge exists; loopback is ignored by default.
    assert!(
        h.net.iter().any(|n| n.interface == "docker0"),
        "{:?}",
        h.net
    );
    assert!(h.net.iter().all(|n| n.interface != "lo"));
    assert!(
        (h.header.ts - now_ms()).abs() < 10_000,
        "ts is the sample time"
    );
    assert_eq!(h.header.run, 1);

    let c = sub
        .wait_json("containers", S(10), |_| true)
        .expect("a containers report");
    let c: ContainersReport = decode(node, &c.payload).expect("valid containers report");
    assert_eq!(c.engine, EngineState::Ok);

    // A consumer that connects later still learns the node is online, and who it is.
    let late = Subscriber::start(
        broker.port,
        &format!("leakmon/v1/nodes/{node}/status"),
        false,
    );
    let birth = late
        .wait_json("status", S(5), |v| v["state"] == "online")
        .expect("retained birth");
    assert!(birth.retain, "birth must be retained");
    let b = status(&birth, node);
    let id = b.identity.expect("identity in birth");
    assert_eq!(id.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(id.arch, std::env::consts::ARCH);
    assert_eq!(id.interval_ms, 1000);
    assert!(!id.hostname.is_empty());
    let engine = docker::run(&["info", "--format", "{{.ServerVersion}}"]);
    assert_eq!(id.engine_version.as_deref(), Some(engine.as_str()));
    // Swarm identity is checked in birth_names_the_swarm_node_and_role (which may join a
    // Swarm while this test runs, so it is not compared here).
    assert_eq!(id.swarm_role.is_some(), id.swarm_node_id.is_some());
}

/// Leaves the Swarm it joined when dropped, even if the test fails.
struct SwarmGuard(bool);
impl Drop for SwarmGuard {
    fn drop(&mut self) {
        if self.0 {
            let _ = Command::new("docker")
                .args(["swarm", "leave", "--force"])
                .output();
        }
    }
}

#[test]
fn birth_names_the_swarm_node_and_role() {
    let in_swarm = docker::run(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    let _guard = SwarmGuard(in_swarm != "active");
    if in_swarm != "active" {
        docker::run(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    }
    let node_id = docker::run(&["info", "--format", "{{.Swarm.NodeID}}"]);
    let manager = docker::run(&["info", "--format", "{{.Swarm.ControlAvailable}}"]) == "true";
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "leakmon/#", false);
    let node = "e2e-swarm";
    let agent = Agent::start(&config(&broker.url(), node, ""));
    let birth = sub
        .wait_json("status", S(15), |v| v["state"] == "online")
        .unwrap_or_else(|| panic!("no birth; log:\n{}", agent.log()));
    let id = status(&birth, node).identity.expect("identity");
    assert_eq!(id.swarm_node_id.as_deref(), Some(node_id.as_str()));
    assert_eq!(
        id.swarm_role,
        Some(if manager {
            SwarmRole::Manager
        } else {
            SwarmRole::Worker
        })
    );
}

#[test]
fn container_health_appears_and_die_event_arrives_within_a_second() {
    docker::ensure_test_image();
    let node = "e2e-containers";
    let name = format!("e2e-health-{}", std::process::id());
    let container = docker::Container::run(
        &name,
        &[
            "--health-cmd",
            "true",
            "--health-interval",
            "1s",
            "--memory",
            "64m",
            "--label",
            "com.docker.swarm.service.name=e2e-svc",
            docker::TEST_IMAGE,
            "sleep",
            "300",
        ],
    );
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "leakmon/#", false);
    let agent = Agent::start(&config(&broker.url(), node, ""));
    // A second agent reads CPU and memory through the engine's stats endpoint instead of
    // the cgroup files, so both paths are checked against the real engine.
    let via_stats = "e2e-containers-stats";
    let stats_agent = Agent::start(&config(
        &broker.url(),
        via_stats,
        "[docker]\nread_cgroups = false\n",
    ));

    for (node, agent) in [(node, &agent), (via_stats, &stats_agent)] {
        let report = wait_for(S(30), || {
            sub.on("containers").into_iter().find_map(|m| {
                let r: ContainersReport = decode(node, &m.payload).ok()?;
                let c = r.containers.into_iter().find(|c| c.name == name)?;
                (c.health == Health::Healthy && c.cpu_percent.is_some()).then_some(c)
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "{node}: {name} never reported healthy; log:\n{}",
                agent.log()
            )
        });
        assert_eq!(report.state, "running");
        assert_eq!(report.image, docker::TEST_IMAGE);
        assert_eq!(report.id.len(), 64);
        assert_eq!(report.swarm_service.as_deref(), Some("e2e-svc"));
        assert!(report.started_at.is_some());
        assert_eq!(report.mem_limit, Some(64 << 20), "{node}");
        let used = report.mem_usage.unwrap_or(0);
        assert!(used > 0 && used < 64 << 20, "{node}: memory used {used}");
        let cpu = report.cpu_percent.unwrap_or(-1.0);
        assert!((0.0..=100.0 * 64.0).contains(&cpu), "{node}: cpu {cpu}");
        assert!(!report.oom_killed);
    }
    drop(stats_agent);

    let t0 = Instant::now();
    docker::run(&["kill", &name]);
    let die = sub
        .wait_json("events", S(5), |v| {
            v["action"] == "die" && v["container_name"] == name.as_str()
        })
        .expect("a die event");
    let latency = die.at.duration_since(t0);
    let e: EventReport = decode(node, &die.payload).expect("valid event");
    assert_eq!(e.exit_code, Some(137));
    assert_eq!(e.swarm_service.as_deref(), Some("e2e-svc"));
    assert!(
        latency < S(1),
        "die event took {latency:?} from `docker kill` (events must not wait for a tick)"
    );
    assert!(sub
        .on("events")
        .iter()
        .any(|m| m.json()["action"] == "kill" && m.json()["signal"] == "9"));

    // The next sample shows it exited, with its exit code.
    let exited = wait_for(S(10), || {
        sub.on("containers").into_iter().rev().find_map(|m| {
            let r: ContainersReport = decode(node, &m.payload).ok()?;
            r.containers
                .into_iter()
                .find(|c| c.name == name && c.state == "exited")
        })
    })
    .expect("exited state reported");
    assert_eq!(exited.exit_code, Some(137));
    drop(container);
}

/// The engine's own stats of a container (`GET /containers/{id}/stats?stream=false`).
fn engine_stats(name: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args([
            "-sf",
            "--unix-socket",
            "/var/run/docker.sock",
            &format!("http://localhost/containers/{name}/stats?stream=false"),
        ])
        .output()
        .expect("curl");
    assert!(out.status.success(), "engine stats of {name} failed");
    serde_json::from_slice(&out.stdout).expect("stats JSON")
}

/// The block device under the engine's data root, for a throttle rule: cgroup v1 counts a
/// container's block I/O only on devices with a rule (kernel behaviour, seen here: with none,
/// `docker stats` shows 0 B too).
fn data_root_device() -> String {
    let root = docker::run(&["info", "--format", "{{.DockerRootDir}}"]);
    let out = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE", "--target", &root])
        .output()
        .expect("findmnt");
    // a bind mount shows as `/dev/vda[/var/lib/docker]`
    let source = String::from_utf8_lossy(&out.stdout);
    let dev = source
        .trim()
        .split('[')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        dev.starts_with("/dev/"),
        "the engine's data root {root} is not on a block device ({dev:?}): this test needs one \
         to make block I/O the engine and the agent can count"
    );
    dev
}

/// Counters the agent read (cgroup files and the namespace's /proc/<pid>/net/dev, or the
/// stats endpoint) against what the engine itself reports a moment later: the same figures.
/// The workload writes with O_DIRECT, pings the bridge and spins under a CPU limit, then
/// idles, so the counters stop moving before they are compared.
#[test]
fn container_network_block_io_and_cpu_throttling_match_the_engine() {
    docker::ensure_test_image();
    let dev = data_root_device();
    let name = format!("e2e-counters-{}", std::process::id());
    let container = docker::Container::run(
        &name,
        &[
            "--cpus",
            "0.1",
            "--device-write-bps",
            &format!("{dev}:100mb"),
            docker::TEST_IMAGE,
            "sh",
            "-c",
            "dd if=/dev/zero of=/blob bs=1M count=4 oflag=direct; \
         ping -q -c 40 -i 0.05 -s 1000 $(ip route | awk '/default/ {print $3}'); \
         timeout 2 sh -c 'while :; do :; done'; touch /done; exec sleep 600",
        ],
    );
    let done = wait_for(S(30), || {
        Command::new("docker")
            .args(["exec", &name, "test", "-e", "/done"])
            .status()
            .ok()
            .filter(|s| s.success())
    });
    assert!(done.is_some(), "the workload did not finish");
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "leakmon/#", false);
    let via_cgroups = "e2e-counters";
    let via_stats = "e2e-counters-stats";
    let agents = [
        Agent::start(&config(&broker.url(), via_cgroups, "")),
        Agent::start(&config(
            &broker.url(),
            via_stats,
            "[docker]\nread_cgroups = false\n",
        )),
    ];
    for (node, agent) in [via_cgroups, via_stats].iter().zip(&agents) {
        let c = wait_for(S(30), || {
            sub.on("containers").into_iter().find_map(|m| {
                let r: ContainersReport = decode(node, &m.payload).ok()?;
                r.containers
                    .into_iter()
                    .find(|c| c.name == name && c.cpu_time.is_some())
            })
        })
        .unwrap_or_else(|| panic!("{node}: no counters for {name}; log:\n{}", agent.log()));
        let e = engine_stats(&name);
        let (cpu, net, io) = (
            c.cpu_time.expect("cpu"),
            c.net
                .unwrap_or_else(|| panic!("{node}: no network counters")),
            c.blkio
                .unwrap_or_else(|| panic!("{node}: no block I/O counters")),
        );
        // Counters only grow: the agent's reading is at most the engine's later one, and the
        // workload is over, so it is close to it.
        let close = |what: &str, ours: u64, engine: u64| {
            assert!(
                ours <= engine && ours as f64 >= engine as f64 * 0.9,
                "{node}: {what} {ours}, engine {engine}"
            );
        };
        let th = &e["cpu_stats"]["throttling_data"];
        assert!(
            cpu.throttled_periods > 0,
            "{node}: never throttled: {cpu:?}"
        );
        close(
            "throttled periods",
            cpu.throttled_periods,
            th["throttled_periods"].as_u64().unwrap_or(0),
        );
        close("periods", cpu.periods, th["periods"].as_u64().unwrap_or(0));
        close(
            "cpu time",
            cpu.total_ns,
            e["cpu_stats"]["cpu_usage"]["total_usage"]
                .as_u64()
                .unwrap_or(0),
        );
        assert!(cpu.user_ns + cpu.kernel_ns > 0, "{node}: {cpu:?}");
        let sum = |key: &str| {
            e["networks"]
                .as_object()
                .map(|n| n.values().map(|i| i[key].as_u64().unwrap_or(0)).sum())
                .unwrap_or(0)
        };
        assert!(
            net.tx_packets >= 40 && net.rx_packets >= 40,
            "{node}: {net:?}"
        );
        close("rx bytes", net.rx_bytes, sum("rx_bytes"));
        close("tx bytes", net.tx_bytes, sum("tx_bytes"));
        close("tx packets", net.tx_packets, sum("tx_packets"));
        let written: u64 = e["blkio_stats"]["io_service_bytes_recursive"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| {
                x["op"]
                    .as_str()
                    .is_some_and(|o| o.eq_ignore_ascii_case("write"))
            })
            .map(|x| x["value"].as_u64().unwrap_or(0))
            .sum();
        assert!(io.write_bytes >= 4 << 20, "{node}: {io:?}");
        close("written bytes", io.write_bytes, written);
    }
    drop(container);
}

#[test]
fn once_prints_one_host_and_one_containers_report_and_publishes_nothing() {
    // As `telegraf --test`: what the agent would send, on stdout, with no broker at all.
    docker::ensure_test_image();
    let name = format!("e2e-once-{}", std::process::id());
    let container = docker::Container::run(&name, &[docker::TEST_IMAGE, "sleep", "300"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "node = \"e2e-once\"\nstate_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:9\"\n",
            state.display()
        ),
    )
    .expect("config");
    let out = leakmon_e2e::enrolled("leakmon-agent", "node = \"e2e-once\"", &[])
        .args(["--once", "--config"])
        .arg(&cfg)
        .output()
        .expect("leakmon-agent --once");
    drop(container);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["topic"], "leakmon/v1/nodes/e2e-once/host");
    let host = &lines[0]["message"];
    assert_eq!(host["node"], "e2e-once");
    assert!(
        host["cpu"]["idle"].is_number(),
        "CPU from two readings: {host}"
    );
    assert!(
        host["mem"]["total"].as_u64().is_some_and(|t| t > 0),
        "{host}"
    );
    assert_eq!(lines[1]["topic"], "leakmon/v1/nodes/e2e-once/containers");
    let c = &lines[1]["message"];
    assert_eq!(c["engine"], "ok", "{c}");
    assert!(
        c["containers"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["name"] == name.as_str())),
        "{c}"
    );
    assert!(!state.exists(), "--once leaves the state dir alone");
}

#[test]
fn kill_9_publishes_the_will_within_the_keep_alive_bound() {
    let node = "e2e-will";
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "leakmon/+/nodes/+/status", false);
    let mut agent = Agent::start(&config(&broker.url(), node, ""));
    let birth = sub
        .wait_json("status", S(15), |v| v["state"] == "online")
        .expect("birth");
    let seq = status(&birth, node).seq;

    let t0 = Instant::now();
    agent.kill9();
    let will = sub
        .wait_json("status", S(10), |v| v["state"] == "offline")
        .expect("the Will");
    let took = will.at.duration_since(t0);
    let w = status(&will, node);
    assert_eq!(w.reason, Some(OfflineReason::Lost));
    assert_eq!(
        w.seq, seq,
        "the Will carries the seq of its connection's birth"
    );
    // keep_alive is 2 s: the bound is 1.5 x 2 s + 1 s.
    assert!(took < Duration::from_millis(4000), "Will took {took:?}");

    let late = Subscriber::start(broker.port, "leakmon/+/nodes/+/status", false);
    let kept = late
        .wait_json("status", S(5), |_| true)
        .expect("retained status");
    assert!(kept.retain);
    assert_eq!(status(&kept, node).state, NodeState::Offline);

    // A restarted agent is born again with a higher seq, so the old death is stale.
    let agent2 = Agent::start_in(agent.into_dir(), &config(&broker.url(), node, ""));
    let again = sub
        .wait_json("status", S(15), |v| {
            v["state"] == "online" && v["seq"].as_u64() > Some(seq)
        })
        .unwrap_or_else(|| panic!("no second birth; log:\n{}", agent2.log()));
    assert!(status(&again, node).seq > seq);
}

#[test]
fn sigterm_says_goodbye_and_exits_zero() {
    let node = "e2e-bye";
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "leakmon/#", false);
    let mut agent = Agent::start(&config(&broker.url(), node, ""));
    sub.wait_json("host", S(15), |_| true).expect("host report");
    assert_eq!(agent.terminate(), Some(0), "log:\n{}", agent.log());
    let bye = sub
        .wait_json("status", S(5), |v| v["state"] == "offline")
        .expect("goodbye");
    assert_eq!(status(&bye, node).reason, Some(OfflineReason::Shutdown));
    // No Will follows a clean goodbye.
    std::thread::sleep(S(4));
    assert!(!sub
        .on("status")
        .iter()
        .any(|m| m.json()["reason"] == "lost"));
}

/// Data messages (host, containers, events) of one node, by (run, seq), in arrival order.
fn data_seqs(sub: &Subscriber) -> Vec<(u64, u64, i64, String)> {
    data_seqs_of(sub.all())
}

/// The same of messages from several subscribers, merged by arrival.
fn data_seqs_of(mut all: Vec<Received>) -> Vec<(u64, u64, i64, String)> {
    all.sort_by_key(|m| m.at);
    all.into_iter()
        .filter(Received::is_data)
        .map(|m| {
            let v = m.json();
            (
                v["run"].as_u64().unwrap_or(0),
                v["seq"].as_u64().unwrap_or(0),
                v["ts"].as_i64().unwrap_or(0),
                m.topic.rsplit('/').next().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Checks that a run's seqs arrived without gaps, in order, with few duplicates.
fn assert_complete(seqs: &[(u64, u64, i64, String)], run: u64) -> u64 {
    let of_run: Vec<u64> = seqs.iter().filter(|s| s.0 == run).map(|s| s.1).collect();
    assert!(!of_run.is_empty(), "nothing from run {run}");
    let distinct: HashSet<u64> = of_run.iter().copied().collect();
    let max = *distinct.iter().max().unwrap_or(&0);
    let missing: Vec<u64> = (1..=max).filter(|s| !distinct.contains(s)).collect();
    assert!(missing.is_empty(), "run {run}: seqs missing: {missing:?}");
    let dups = of_run.len() - distinct.len();
    assert!(
        dups <= 32,
        "run {run}: {dups} duplicates, more than the in-flight window"
    );
    // First arrivals are in order.
    let mut seen = HashSet::new();
    let firsts: Vec<u64> = of_run.into_iter().filter(|s| seen.insert(*s)).collect();
    assert!(
        firsts.windows(2).all(|w| w[0] < w[1]),
        "run {run}: out of order: {firsts:?}"
    );
    max
}

/// Host sample times must be about one interval apart all the way through.
fn assert_no_sampling_gap(seqs: &[(u64, u64, i64, String)]) {
    let ts: BTreeMap<i64, ()> = seqs
        .iter()
        .filter(|s| s.3 == "host")
        .map(|s| (s.2, ()))
        .collect();
    let ts: Vec<i64> = ts.into_keys().collect();
    let worst = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    assert!(worst < 2_500, "a {worst} ms hole in host samples");
}

#[test]
fn broker_outage_of_30s_loses_nothing() {
    let node = "e2e-outage";
    let (mut broker, sub) = broker_and_session(node);
    let agent = Agent::start(&config(&broker.url(), node, ""));
    wait_for(S(20), || (sub.on("host").len() >= 3).then_some(()))
        .unwrap_or_else(|| panic!("no host reports; log:\n{}", agent.log()));

    broker.stop();
    let stopped_ms = now_ms();
    std::thread::sleep(S(30));
    broker.start_again();
    let restarted_ms = now_ms();

    wait_for_host_after(&sub, restarted_ms + 3000, S(60))
        .unwrap_or_else(|| panic!("no fresh samples after the outage; log:\n{}", agent.log()));

    let seqs = data_seqs(&sub);
    assert_complete(&seqs, 1);
    assert_no_sampling_gap(&seqs);
    let during = seqs
        .iter()
        .filter(|s| s.3 == "host" && s.2 > stopped_ms + 1000 && s.2 < restarted_ms)
        .count();
    assert!(
        during >= 25,
        "only {during} host samples from the 30 s outage"
    );
    // The agent reported its backlog while it had one.
    assert_reported_a_backlog(&sub);
}

#[test]
fn spool_keeps_samples_across_an_agent_restart_while_the_broker_is_down() {
    let node = "e2e-spool";
    let (mut broker, sub) = broker_and_session(node);
    let spool_cfg = "[buffer]\nspool_dir = \"SPOOL\"\n";
    let url = broker.url();
    let start = |dir: tempfile::TempDir| {
        let spool = dir.path().join("spool");
        let cfg = config(
            &url,
            node,
            &spool_cfg.replace("SPOOL", &spool.display().to_string()),
        );
        Agent::start_in(dir, &cfg)
    };
    let agent = start(tempfile::tempdir().expect("tempdir"));
    wait_for(S(20), || (sub.on("host").len() >= 2).then_some(()))
        .unwrap_or_else(|| panic!("no host reports; log:\n{}", agent.log()));

    broker.stop();
    std::thread::sleep(S(5));
    let killed_ms = now_ms();
    // Killed without warning: only what reached the spool survives.
    let dir = agent.into_dir();
    let spool_files = std::fs::read_dir(dir.path().join("spool"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(spool_files > 0, "nothing was spooled");
    let agent = start(dir);
    std::thread::sleep(S(3));
    broker.start_again();
    let restarted_ms = now_ms();

    wait_for(S(60), || {
        sub.on("host")
            .iter()
            .any(|m| m.json()["run"] == 2 && m.json()["ts"].as_i64() > Some(restarted_ms + 2000))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("run 2 never delivered fresh samples; log:\n{}", agent.log()));
    let seqs = data_seqs(&sub);
    assert_complete(&seqs, 1);
    assert_complete(&seqs, 2);
    let last_run1 = seqs
        .iter()
        .filter(|s| s.0 == 1 && s.3 == "host")
        .map(|s| s.2)
        .max()
        .unwrap_or(0);
    assert!(
        last_run1 > killed_ms - 2000,
        "samples of run 1 taken before the kill are missing (last at {}, killed at {killed_ms})",
        last_run1
    );
    assert_no_sampling_gap(
        &seqs
            .iter()
            .filter(|s| s.0 == 2)
            .cloned()
            .collect::<Vec<_>>(),
    );
}

#[test]
fn agent_starts_without_broker_and_without_engine() {
    let node = "e2e-alone";
    // The subscriber's persistent session exists in the broker before the agent's first
    // connection (whenever that is), so nothing the agent flushes at once is missed.
    let mut broker = Broker::start();
    let sub = Subscriber::start(broker.port, "leakmon/#", true);
    broker.stop();
    let url = broker.url();
    let agent = Agent::start(&config(
        &url,
        node,
        "[docker]\nhost = \"unix:///nonexistent/docker.sock\"\n",
    ));
    std::thread::sleep(S(3));
    broker.start_again();
    sub.wait_json("status", S(15), |v| v["state"] == "online")
        .unwrap_or_else(|| panic!("no birth after the broker came; log:\n{}", agent.log()));
    let c = sub
        .wait_json("containers", S(15), |v| v["engine"] == "unavailable")
        .expect("containers report saying the engine is unavailable");
    let c: ContainersReport = decode(node, &c.payload).expect("valid");
    assert!(c.error.is_some());
    sub.wait_json("host", S(10), |v| v["cpu"].is_object())
        .expect("host reports go on");
    // Samples from before the broker came were buffered and arrive too.
    let seqs = data_seqs(&sub);
    assert_complete(&seqs, 1);
}

fn check_config(text: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).expect("write");
    // enrolled as this host (the shipped example names the key's path, not its node)
    let mut cmd = leakmon_e2e::enrolled("leakmon-agent", "", env);
    cmd.arg("--check-config").arg("--config").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run agent");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_exits_2_and_names_the_key() {
    let (code, err) = check_config("interval = \"fast\"\n", &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("`interval`") && err.contains("\"5s\""),
        "{err}"
    );

    let (code, err) = check_config("[mqtt]\nurll = \"mqtt://x\"\n", &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("urll") && err.contains("`url`"), "{err}");

    let (code, err) = check_config("", &[("LEAKMON_AGENT__MQTT__KEEP_ALIVE", "0s")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("mqtt.keep_alive"), "{err}");

    let (code, err) = check_config("[mqtt]\nurl = \"http://broker\"\n", &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("mqtt.url") && err.contains("mqtt://"), "{err}");

    let (code, _) = check_config(include_str!("../config/agent.toml"), &[]);
    assert_eq!(code, Some(0), "the shipped example config is valid");

    let out = Command::new(bin("leakmon-agent"))
        .args(["--check-config", "--config", "/nonexistent/agent.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));

    let out = leakmon_e2e::enrolled(
        "leakmon-agent",
        "",
        &[("LEAKMON_AGENT__NODE", "printed-node")],
    )
    .arg("--print-config")
    .env("LEAKMON_AGENT__NODE", "printed-node")
    .output()
    .expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("node = \"printed-node\""));
}

#[test]
fn tls_with_client_certificate_and_password() {
    let tls_port = free_port();
    let broker = Broker::start_custom(|dir| {
        pki::make(dir, &["server", "edge-tls"]);
        let out = Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(dir.join("passwd"))
            .args(["edge-tls", "s3cret"])
            .output()
            .expect("mosquitto_passwd");
        assert!(out.status.success());
        let d = dir.display();
        format!(
            "per_listener_settings true\n\
             listener {{port}} 127.0.0.1\nallow_anonymous true\n\
             listener {tls_port} 127.0.0.1\nallow_anonymous false\npassword_file {d}/passwd\n\
             cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
             require_certificate true\n"
        )
    });
    let sub = Subscriber::start(broker.port, "leakmon/#", false);
    let d = broker.dir.path().display().to_string();
    let tls = |node: &str, password: &str| {
        format!(
            "node = \"{node}\"\ninterval = \"1s\"\n[docker]\nenabled = false\n[mqtt]\n\
             url = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = \"{d}/ca.pem\"\n\
             client_cert = \"{d}/edge-tls.pem\"\nclient_key = \"{d}/edge-tls.key\"\n\
             username = \"edge-tls\"\npassword = \"{password}\"\n\
             reconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n"
        )
    };
    let good = Agent::start(&tls("edge-tls", "s3cret"));
    sub.wait_json("status", S(15), |v| {
        v["node"] == "edge-tls" && v["state"] == "online"
    })
    .unwrap_or_else(|| panic!("no birth over TLS; log:\n{}", good.log()));
    sub.wait_json("host", S(10), |v| v["node"] == "edge-tls")
        .expect("host reports over TLS");

    // The broker refuses a wrong password, and the agent says so and keeps trying.
    let bad = Agent::start(&tls("edge-bad", "wrong"));
    std::thread::sleep(S(4));
    assert!(
        !sub.all().iter().any(|m| m.json()["node"] == "edge-bad"),
        "a wrong password got through"
    );
    let log = bad.log();
    assert!(log.contains("connection lost"), "{log}");
}

// Liveness: beats and probes.

const MS: fn(u64) -> Duration = Duration::from_millis;

/// The beats received so far, decoded (they must decode: the subscription is the node's own),
/// with their arrival time and retain flag, in arrival order.
fn beats(sub: &Subscriber, node: &str) -> Vec<(Beat, Instant, bool)> {
    sub.on("beat")
        .into_iter()
        .map(|m| {
            let b: Beat =
                decode(node, &m.payload).unwrap_or_else(|e| panic!("bad beat {:?}: {e}", m.json()));
            (b, m.at, m.retain)
        })
        .collect()
}

/// A TCP proxy between an agent and its broker that can hold back the broker's PUBACKs: the
/// agent's publishes reach the broker and its subscribers, their acknowledgements stay here
/// until released. The agent's in-flight window fills and its data waits in the outbox, all
/// while the connection stays up (keep-alives pass).
struct AckHolder {
    port: u16,
    hold: Arc<AtomicBool>,
}

impl AckHolder {
    fn start(broker_port: u16) -> AckHolder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let hold = Arc::new(AtomicBool::new(false));
        let h = hold.clone();
        std::thread::spawn(move || {
            for agent in listener.incoming().flatten() {
                let Ok(broker) = TcpStream::connect(("127.0.0.1", broker_port)) else {
                    continue;
                };
                let (Ok(mut from_agent), Ok(mut to_broker)) =
                    (agent.try_clone(), broker.try_clone())
                else {
                    continue;
                };
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_agent, &mut to_broker);
                    let _ = to_broker.shutdown(std::net::Shutdown::Both);
                });
                let h = h.clone();
                std::thread::spawn(move || relay_holding_pubacks(broker, agent, h));
            }
        });
        AckHolder { port, hold }
    }

    fn hold(&self, on: bool) {
        self.hold.store(on, Ordering::SeqCst);
    }
}

/// Broker -> agent, packet by packet: PUBACKs (type 4) are kept while `hold` is set and sent,
/// in their order, once it is not; everything else passes at once.
fn relay_holding_pubacks(mut from: TcpStream, mut to: TcpStream, hold: Arc<AtomicBool>) {
    let _ = from.set_read_timeout(Some(MS(20)));
    let (mut buf, mut held) = (Vec::new(), Vec::<Vec<u8>>::new());
    let mut chunk = [0u8; 8192];
    loop {
        if !hold.load(Ordering::SeqCst) {
            for p in held.drain(..) {
                if to.write_all(&p).is_err() {
                    return;
                }
            }
        }
        match from.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        }
        while let Some(len) = mqtt_packet_len(&buf) {
            let p: Vec<u8> = buf.drain(..len).collect();
            if p[0] >> 4 == 4 && (hold.load(Ordering::SeqCst) || !held.is_empty()) {
                held.push(p);
            } else if to.write_all(&p).is_err() {
                return;
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// The length of the first whole MQTT packet in `buf` (fixed header: type byte, then the
/// remaining length in 1-4 bytes of 7 bits), if it is all there.
fn mqtt_packet_len(buf: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    for i in 1..5 {
        let b = *buf.get(i)?;
        len += usize::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            let total = 1 + i + len;
            return (buf.len() >= total).then_some(total);
        }
    }
    None
}

#[test]
fn beats_arrive_every_interval_and_are_not_held_back_by_unacknowledged_data() {
    let node = "e2e-beat";
    let broker = Broker::start();
    let proxy = AckHolder::start(broker.port);
    let sub = Subscriber::start(broker.port, &format!("leakmon/v1/nodes/{node}/#"), false);
    // 100 ms samples: with PUBACKs held, the 32-message window is full within about 3 s.
    let agent = Agent::start(
        &config(
            &format!("mqtt://127.0.0.1:{}", proxy.port),
            node,
            "[docker]\nenabled = false\n",
        )
        .replace("interval = \"1s\"", "interval = \"100ms\""),
    );
    let first = wait_for(S(15), || sub.on("beat").first().map(|m| m.at))
        .unwrap_or_else(|| panic!("no beat; log:\n{}", agent.log()));
    std::thread::sleep(S(3));
    let early: Vec<_> = beats(&sub, node)
        .into_iter()
        .filter(|(_, at, _)| at.duration_since(first) <= S(3))
        .collect();
    // Default interval 250 ms: 13 in 3 s; ask for 5 (correctness, not speed).
    assert!(
        early.len() >= 5,
        "{} beats in 3 s; log:\n{}",
        early.len(),
        agent.log()
    );
    assert!(early.iter().all(|(b, _, retained)| b.run == 1 && !retained));
    assert!(
        early.windows(2).all(|w| w[1].0.n > w[0].0.n),
        "n does not grow: {:?}",
        early.iter().map(|b| b.0.n).collect::<Vec<_>>()
    );
    let birth = sub
        .wait_json("status", S(5), |v| v["state"] == "online")
        .expect("birth");
    let id = status(&birth, node).identity.expect("identity");
    assert_eq!(
        id.beat_interval_ms,
        Some(250),
        "the birth names the beat interval"
    );

    // Hold the broker's PUBACKs: the window fills and data waits in the outbox ...
    proxy.hold(true);
    let held_at = Instant::now();
    std::thread::sleep(S(7));
    let during: Vec<Received> = sub.all().into_iter().filter(|m| m.at >= held_at).collect();
    let last_data = during
        .iter()
        .filter(|m| m.is_data())
        .map(|m| m.at)
        .next_back()
        .unwrap_or(held_at);
    assert!(
        Instant::now().duration_since(last_data) >= S(2),
        "data kept flowing with its PUBACKs held: the window never filled"
    );
    // ... while beats go on, one every 250 ms, none refused or held up by the backlog.
    let beats_then: Vec<_> = beats(&sub, node)
        .into_iter()
        .filter(|(_, at, _)| *at > last_data)
        .collect();
    assert!(
        beats_then.len() >= 5,
        "{} beats in the {:?} data was held back; log:\n{}",
        beats_then.len(),
        Instant::now().duration_since(last_data),
        agent.log()
    );
    assert!(
        beats_then.windows(2).all(|w| w[1].0.n == w[0].0.n + 1),
        "beats lost while data waited: {:?}",
        beats_then.iter().map(|b| b.0.n).collect::<Vec<_>>()
    );
    let worst = beats_then
        .windows(2)
        .map(|w| w[1].1.duration_since(w[0].1))
        .max()
        .unwrap_or_default();
    assert!(worst < S(1), "a {worst:?} pause between beats");

    // Released: the backlog goes out, every seq in order, and the samples show it was queued.
    proxy.hold(false);
    let released_ms = now_ms();
    wait_for_host_after(&sub, released_ms + 500, S(30))
        .unwrap_or_else(|| panic!("data did not resume; log:\n{}", agent.log()));
    assert_complete(&data_seqs(&sub), 1);
    assert_reported_a_backlog(&sub);
}

#[test]
fn beats_are_neither_retained_nor_replayed_after_an_outage() {
    let node = "e2e-beat-outage";
    // Persistent: the broker keeps the session (and would queue anything it keeps for it).
    let (mut broker, sub) = broker_and_session(node);
    let mut agent = Agent::start(&config(&broker.url(), node, "[docker]\nenabled = false\n"));
    wait_for(S(15), || (beats(&sub, node).len() >= 4).then_some(()))
        .unwrap_or_else(|| panic!("no beats; log:\n{}", agent.log()));

    broker.stop();
    let seen = sub.all().len();
    let last_n = beats(&sub, node).last().map(|b| b.0.n).unwrap_or(0);
    // 20 beats would be due meanwhile.
    std::thread::sleep(S(5));
    broker.start_again();
    wait_for(S(20), || {
        (sub.all()[seen..]
            .iter()
            .filter(|m| m.topic.ends_with("/beat"))
            .count()
            >= 4)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no beats after the outage; log:\n{}", agent.log()));

    // Nothing of the old connection (a beat kept by the client or the broker) is delivered
    // before the new connection's birth. (The old connection's Will, which the broker
    // publishes around its restart, may come first: that one is the broker's.)
    let after: Vec<Received> = sub.all()[seen..].to_vec();
    let birth = after
        .iter()
        .position(|m| m.topic.ends_with("/status") && m.json()["state"] == "online")
        .expect("a birth after the outage");
    assert!(
        !after[..birth].iter().any(|m| m.topic.ends_with("/beat")),
        "beats before the new birth: {:?}",
        after[..birth]
            .iter()
            .map(|m| (&m.topic, m.json()))
            .collect::<Vec<_>>()
    );
    // No beat was made while disconnected (n goes on where it stopped, give or take one
    // handed to the client as the link died), and none is older than the reconnection.
    let after_beats: Vec<Beat> = after
        .iter()
        .filter(|m| m.topic.ends_with("/beat"))
        .map(|m| decode(node, &m.payload).expect("a beat"))
        .collect();
    let first_n = after_beats[0].n;
    assert!(
        first_n > last_n && first_n <= last_n + 3,
        "last beat before the outage {last_n}, first after {first_n}"
    );
    assert!(after_beats.windows(2).all(|w| w[1].n > w[0].n));
    assert!(
        sub.on("beat").iter().all(|m| !m.retain),
        "a beat was retained"
    );

    // A consumer that subscribes later gets no beat at all from a silent node: none retained.
    agent.kill9();
    std::thread::sleep(MS(500));
    let late = Subscriber::start(broker.port, &format!("leakmon/v1/nodes/{node}/beat"), false);
    std::thread::sleep(MS(1500));
    assert!(
        late.all().is_empty(),
        "a beat was kept by the broker: {:?}",
        late.all().iter().map(|m| m.json()).collect::<Vec<_>>()
    );
}

/// A loopback port where nothing answers: a listener with a backlog of 0 whose accept queue
/// is already full, so the kernel drops every further SYN without a reply, which to a client
/// is exactly a dead host (no RST, no ICMP; the connect just times out). Nothing leaves the
/// machine and no firewall rule is touched. A TEST-NET address is no good here: on this
/// machine 192.0.2.1 is the default gateway (it refuses), and connects to 198.51.100.1 and
/// 203.0.113.1 are accepted by something on the way out.
struct SilentPort {
    port: u16,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl SilentPort {
    fn new() -> SilentPort {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket calls on a descriptor this function creates; `from_raw_fd` takes
        // ownership at once, so it is closed on every path.
        let listener = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let listener = TcpListener::from_raw_fd(fd);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::bind(fd, std::ptr::addr_of!(addr).cast(), len);
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            assert_eq!(libc::listen(fd, 0), 0, "listen");
            listener
        };
        let to = listener.local_addr().expect("listener address");
        // The kernel completes connections into the queue until it is full; then it is silent.
        let mut queued = Vec::new();
        while let Ok(s) = TcpStream::connect_timeout(&to, MS(300)) {
            queued.push(s);
            assert!(queued.len() < 10, "the accept queue never filled");
        }
        let e = TcpStream::connect_timeout(&to, MS(300)).expect_err("the full listener answered");
        assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
        SilentPort {
            port: to.port(),
            _listener: listener,
            _queued: queued,
        }
    }
}

#[test]
fn probe_requests_are_answered_alive_or_silent_and_bad_ones_do_no_harm() {
    let node = "e2e-prober";
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, &format!("leakmon/v1/nodes/{node}/#"), false);
    let agent = Agent::start(&config(&broker.url(), node, "[docker]\nenabled = false\n"));
    // Requests are QoS 0 to the agent: published before it subscribed, they would be lost.
    wait_for(S(15), || {
        agent
            .log()
            .contains("subscribed to probe requests")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the agent did not subscribe; log:\n{}", agent.log()));
    let topic = format!("leakmon/v1/probe/{node}");
    let request = |id: u64, port: u16, window_ms: u32| {
        encode(&ProbeRequest {
            v: 1,
            id,
            gateway: "e2e-gw".into(),
            target: "suspect".into(),
            addr: "127.0.0.1".into(),
            ports: vec![port],
            window_ms,
            every_ms: 100,
            timeout_ms: 300,
        })
    };
    // sealed with the prober's key, as a gateway does
    let seal = |payload: &[u8]| leakmon_e2e::seal(node, &topic, payload);
    let ask = |id: u64, port: u16, window_ms: u32| {
        let t = Instant::now();
        mosquitto_pub(broker.port, &topic, &seal(&request(id, port, window_ms)));
        t
    };
    let reports = || -> Vec<(ProbeReport, Received)> {
        sub.on("probe")
            .into_iter()
            .map(|m| {
                let r: ProbeReport = decode(node, &m.payload)
                    .unwrap_or_else(|e| panic!("bad report {:?}: {e}", m.json()));
                (r, m)
            })
            .collect()
    };
    let report = |id: u64, within: Duration| {
        wait_for(within, || reports().into_iter().find(|(r, _)| r.id == id))
            .unwrap_or_else(|| panic!("no report for probe {id}; log:\n{}", agent.log()))
    };

    // 1. Something listens: alive, reported at the first answer, long before the window ends.
    let listening = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listening.local_addr().expect("address").port();
    let asked = ask(1, port, 5000);
    let (r, m) = report(1, S(8));
    assert_eq!((r.node.as_str(), r.target.as_str()), (node, "suspect"));
    assert!(r.answered >= 1 && r.attempts >= r.answered, "{r:?}");
    assert!(!m.retain);
    let took = m.at.duration_since(asked);
    assert!(
        took < MS(2500),
        "alive reported after {took:?} of a 5 s window"
    );

    // 2. Nothing listens on the port: the connection is refused, which is an answer too.
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    ask(2, closed, 5000);
    let (r, _) = report(2, S(8));
    assert!(r.answered >= 1, "a refusal is an answer: {r:?}");

    // 3. No answer at all: reported once the last attempt has timed out, at the window's end.
    let silent = SilentPort::new();
    let asked = ask(3, silent.port, 1500);
    let (r, m) = report(3, S(8));
    assert_eq!(r.answered, 0, "{r:?}");
    // Rounds every 100 ms whose 300 ms connects end within 1.5 s: 0, 100, ..., 1200 ms.
    assert!(
        (8..=13).contains(&r.attempts),
        "{} attempts in the window",
        r.attempts
    );
    let took = m.at.duration_since(asked);
    assert!(
        took >= MS(1300) && took < S(4),
        "silence reported after {took:?} for a 1.5 s window"
    );

    // 4. Malformed requests (sealed: a gateway's mistakes) are counted and logged; unsealed
    // ones (a stranger's, also a valid request) are ignored and counted; no report, and the
    // agent beats on.
    let n_before = beats(&sub, node).last().map(|b| b.0.n).unwrap_or(0);
    let mut wrong_target: serde_json::Value =
        serde_json::from_slice(&request(90, port, 1000)).expect("json");
    wrong_target["target"] = "a/b".into();
    let mut future: serde_json::Value = wrong_target.clone();
    future["target"] = "suspect".into();
    future["v"] = 2.into();
    for junk in [
        b"{\"v\":1}".to_vec(),
        serde_json::to_vec(&wrong_target).expect("json"),
        serde_json::to_vec(&future).expect("json"),
    ] {
        mosquitto_pub(broker.port, &topic, &seal(&junk));
    }
    for stranger in [
        b"not json".to_vec(),
        vec![0xff; 300],
        request(91, port, 1000),
    ] {
        mosquitto_pub(broker.port, &topic, &stranger);
    }
    wait_for(S(10), || {
        let log = agent.log();
        (log.matches("malformed probe request dropped").count() >= 3
            && log
                .matches("probe request not sealed with this node's key: ignored")
                .count()
                >= 3)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("bad requests not logged; log:\n{}", agent.log()));
    wait_for(S(10), || {
        (beats(&sub, node)
            .iter()
            .filter(|b| b.0.n > n_before)
            .count()
            >= 4)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no beats after the malformed requests; log:\n{}",
            agent.log()
        )
    });
    let ids: Vec<u64> = reports().iter().map(|(r, _)| r.id).collect();
    assert_eq!(
        ids,
        vec![1, 2, 3],
        "one report per valid request, none for the others"
    );

    // 5. At most 8 probes at once: of 10 requests in a burst, 8 are probed, 2 dropped.
    let burst: Vec<Vec<u8>> = (100..110)
        .map(|id| seal(&request(id, silent.port, 3000)))
        .collect();
    mosquitto_pub_lines(broker.port, &topic, &burst);
    wait_for(S(10), || {
        (reports().iter().filter(|(r, _)| r.id >= 100).count() >= 8).then_some(())
    })
    .unwrap_or_else(|| panic!("the burst's probes did not report; log:\n{}", agent.log()));
    std::thread::sleep(MS(500));
    let burst_ids: Vec<u64> = reports()
        .iter()
        .map(|(r, _)| r.id)
        .filter(|id| *id >= 100)
        .collect();
    assert_eq!(burst_ids.len(), 8, "{burst_ids:?}");
    assert!(
        burst_ids.iter().all(|id| *id < 108),
        "the first 8 run: {burst_ids:?}"
    );
    assert_eq!(
        agent.log().matches("too many probes running").count(),
        2,
        "log:\n{}",
        agent.log()
    );
    drop(listening);
}

/// Run in a network and pid namespace of its own, so that only its sockets and traffic are
/// there: opens TCP listeners and connections and UDP sockets (IPv4 and IPv6), sends a
/// datagram to a closed port and two pings, then prints what iproute2 sees (`ss` through
/// netlink, `nstat` from /proc/net) around what the agent (argv[1..]) prints.
const NETNS_SCRIPT: &str = r#"
import socket, subprocess, sys, time
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
keep = []
for fam, addr in [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]:
    l = socket.socket(fam, socket.SOCK_STREAM); l.bind((addr, 0)); l.listen(); keep.append(l)
    c = socket.create_connection(l.getsockname()[:2]); s, _ = l.accept(); keep += [c, s]
    c.sendall(b"x" * 1000); s.recv(1000)
    u = socket.socket(fam, socket.SOCK_DGRAM); u.bind((addr, 0)); keep.append(u)
    u.sendto(b"y", (addr, 9))
l2 = socket.socket(); l2.bind(("127.0.0.1", 0)); l2.listen(); keep.append(l2)
subprocess.run(["busybox", "ping", "-c", "2", "-i", "0.2", "127.0.0.1"], check=True,
               stdout=subprocess.DEVNULL)
time.sleep(0.3)
def section(name, cmd):
    print("==" + name, flush=True)
    subprocess.run(cmd, check=True)
    sys.stdout.flush()
section("tcp", ["ss", "-H", "-tan"]); section("udp", ["ss", "-H", "-uan"])
section("agent", sys.argv[1:])
section("nstat", ["nstat", "-asz", "--json"])
section("tcp", ["ss", "-H", "-tan"]); section("udp", ["ss", "-H", "-uan"])
"#;

#[test]
fn network_counters_and_socket_states_match_iproute2_in_a_namespace_of_our_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "node = \"e2e-netns\"\nstate_dir = \"{}\"\n[host]\nnstat = [\"*\"]\nsockets = true\n\
             [docker]\nenabled = false\n",
            dir.path().join("state").display()
        ),
    )
    .expect("config");
    let script = dir.path().join("netns.py");
    std::fs::write(&script, NETNS_SCRIPT).expect("script");
    let out = leakmon_e2e::enrolled("leakmon-agent", "node = \"e2e-netns\"", &[]);
    let out = Command::new("unshare")
        .envs(out.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .args(["--net", "--pid", "--fork", "--mount-proc", "python3"])
        .arg(&script)
        .arg(bin("leakmon-agent"))
        .args(["--once", "--config"])
        .arg(&cfg)
        .output()
        .expect("unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let sections: Vec<(&str, &str)> = stdout
        .split("==")
        .filter(|s| !s.is_empty())
        .map(|s| s.split_once('\n').unwrap_or((s, "")))
        .collect();
    let names: Vec<&str> = sections.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["tcp", "udp", "agent", "nstat", "tcp", "udp"]);
    assert_eq!(
        (sections[0].1, sections[1].1),
        (sections[4].1, sections[5].1),
        "nothing changed in the namespace while the agent read it"
    );
    let host: serde_json::Value =
        serde_json::from_str(sections[2].1.lines().next().expect("the host report")).expect("JSON");
    let host = &host["message"];

    // sockets: the agent's /proc/net tables against ss's netlink answer
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for line in sections[0].1.lines() {
        let state = line.split_whitespace().next().unwrap_or_default();
        let field = match state {
            "ESTAB" => "tcp_established",
            "SYN-SENT" => "tcp_syn_sent",
            "SYN-RECV" => "tcp_syn_recv",
            "FIN-WAIT-1" => "tcp_fin_wait1",
            "FIN-WAIT-2" => "tcp_fin_wait2",
            "TIME-WAIT" => "tcp_time_wait",
            "UNCONN" => "tcp_close",
            "CLOSE-WAIT" => "tcp_close_wait",
            "LAST-ACK" => "tcp_last_ack",
            "LISTEN" => "tcp_listen",
            "CLOSING" => "tcp_closing",
            other => panic!("ss state {other}"),
        };
        *want.entry(field.to_owned()).or_default() += 1;
    }
    want.insert("udp_socket".into(), sections[1].1.lines().count() as u64);
    assert_eq!(
        (
            want["tcp_listen"],
            want["tcp_established"],
            want["udp_socket"]
        ),
        (3, 4, 2),
        "what the script opened"
    );
    let sockets = host["sockets"].as_object().expect("sockets");
    for (field, n) in sockets {
        let n = n.as_u64().expect("a count");
        assert_eq!(
            n,
            want.get(field).copied().unwrap_or(0),
            "{field}: {sockets:?}"
        );
    }

    // counters: every one iproute2's nstat prints, with the same name and value
    let nstat: serde_json::Value = serde_json::from_str(sections[3].1).expect("nstat JSON");
    let nstat = nstat["kernel"].as_object().expect("nstat's kernel map");
    let mut ours: BTreeMap<String, i64> = BTreeMap::new();
    let c = &host["nstat"];
    for file in ["netstat", "snmp"] {
        for (line, counters) in c[file].as_object().into_iter().flatten() {
            for (name, v) in counters.as_object().into_iter().flatten() {
                ours.insert(format!("{line}{name}"), v.as_i64().expect("int"));
            }
        }
    }
    for (name, v) in c["snmp6"].as_object().into_iter().flatten() {
        ours.insert(name.clone(), v.as_i64().expect("int"));
    }
    assert!(nstat.len() > 200, "{} counters from nstat", nstat.len());
    for (name, v) in nstat {
        assert_eq!(
            ours.get(name).copied(),
            v.as_i64(),
            "{name}: the agent's against nstat's"
        );
    }
    let extra: Vec<&String> = ours.keys().filter(|k| !nstat.contains_key(*k)).collect();
    assert!(
        extra.len() < 10,
        "the agent has {} counters nstat does not show: {extra:?}",
        extra.len()
    );
    for (name, at_least) in [
        ("TcpActiveOpens", 2),
        ("TcpPassiveOpens", 2),
        ("UdpNoPorts", 1),
        ("Udp6NoPorts", 1),
        ("IcmpInEchos", 2),
        ("IcmpOutEchoReps", 2),
    ] {
        assert!(ours[name] >= at_least, "{name}: {}", ours[name]);
    }
}

/// Messages of the agent's birth (`online`) on a subscriber.
fn births(sub: &Subscriber) -> usize {
    sub.on("status")
        .iter()
        .filter(|m| !m.retain && m.json()["state"] == "online")
        .count()
}

/// Waits until `sub` has received one more host report than now: the moment right after a
/// report, when nothing of the agent's is in flight for about an interval.
fn after_next_host_report(sub: &Subscriber) {
    let n = sub.on("host").len();
    wait_for(S(10), || (sub.on("host").len() > n).then_some(())).expect("a host report");
}

#[test]
fn an_agent_fails_over_to_the_next_broker_in_order_and_loses_nothing() {
    // Two independent brokers, as two nodes of a cluster would look to the agent, and a
    // persistent subscriber on each: together they see everything the agent published.
    let node = "e2e-failover";
    let mut a = Broker::start();
    let mut b = Broker::start();
    let filter = format!("leakmon/v1/nodes/{node}/#");
    let sa = Subscriber::start(a.port, &filter, true);
    let sb = Subscriber::start(b.port, &filter, true);
    let agent = Agent::start(&format!(
        "node = \"{node}\"\ninterval = \"1s\"\n[docker]\nenabled = false\n[mqtt]\n\
         url = [\"{}\", \"{}\"]\nkeep_alive = \"2s\"\nreconnect_min = \"200ms\"\n\
         reconnect_max = \"1s\"\n",
        a.url(),
        b.url()
    ));
    wait_for(S(20), || (sa.on("host").len() >= 3).then_some(()))
        .unwrap_or_else(|| panic!("no host reports on the first broker; log:\n{}", agent.log()));
    assert!(
        sb.on("host").is_empty(),
        "the second broker is only for failover"
    );

    // The first broker dies (right after a report, so that none is in flight: one the
    // broker acknowledged and died before passing on is lost with it, whatever the agent).
    after_next_host_report(&sa);
    a.kill();
    let last_on_a = data_seqs(&sa).iter().map(|s| s.1).max().unwrap_or(0);
    wait_for(S(15), || {
        (births(&sb) >= 1 && sb.on("host").len() >= 3).then_some(())
    })
    .unwrap_or_else(|| panic!("no failover to the second broker; log:\n{}", agent.log()));

    // Back, the first broker gets nothing: the agent stays where it works.
    a.start_again();
    std::thread::sleep(S(4));
    let later_on_a: Vec<u64> = data_seqs(&sa)
        .iter()
        .map(|s| s.1)
        .filter(|s| *s > last_on_a)
        .collect();
    assert!(
        later_on_a.is_empty(),
        "published to the first broker while the second worked: {later_on_a:?}"
    );

    // The second dies: the next round starts from the first again.
    after_next_host_report(&sb);
    b.kill();
    let births_on_a = births(&sa);
    wait_for(S(15), || {
        let fresh = data_seqs(&sa).iter().filter(|s| s.1 > last_on_a).count();
        (births(&sa) > births_on_a && fresh >= 3).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no failover back to the first broker; log:\n{}",
            agent.log()
        )
    });

    // Nothing lost, in order, a sample every interval throughout.
    let mut all = sa.all();
    all.extend(sb.all());
    let seqs = data_seqs_of(all);
    let max = assert_complete(&seqs, 1);
    assert!(max >= 9, "{max} reports");
    assert_no_sampling_gap(&seqs);
    let log = agent.log();
    assert!(
        log.contains(&format!("next={}", b.url())),
        "the log names the broker tried next:\n{log}"
    );
}
