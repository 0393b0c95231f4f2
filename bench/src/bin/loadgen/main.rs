//! Load generator for the ingest benchmark (scripts/bench-gateway).
//!
//! `loadgen mqtt PORT AGENTS SECONDS [CONNECTIONS] [RATE]`: publishes host reports for AGENTS
//! simulated nodes through the broker on 127.0.0.1:PORT (QoS 1) for SECONDS, RATE reports per
//! agent per second (0, the default: as fast as the broker takes them); prints
//! `messages=N points=N` (11 points per report).
//!
//! `loadgen direct URL DB AGENTS SECONDS`: writes the same points as line protocol straight
//! to InfluxDB 1.x (`/write?db=`, batches of 5000 lines, the gateway's batch size); prints
//! `points=N`.
//!
//! `loadgen probe PORT URL DB COUNT INTERVAL_MS`: end-to-end latency. Publishes COUNT host
//! reports of node `probe` through the broker, each stamped with the time it is made, and polls
//! InfluxDB (every 5 ms) until that report's point answers a query; prints one
//! `latency_ms=N` line per report (sample time to query-visible), one every INTERVAL_MS.
//! `... INTERVAL_MS vm` asks VictoriaMetrics instead (`/api/v1/export`; DB unused).
//!
//! `loadgen watch PORT URL DB SECONDS INTERVAL_MS [vm]`: the same latency, for a database that
//! may be far behind: a report every INTERVAL_MS for SECONDS whatever the database does, all
//! of them polled at once (see [`watch`]).
//!
//! `loadgen fleet PORT AGENTS SECONDS [INTERVAL_MS] [CONTAINERS] [BEAT_MS] [PREFIX]`: a fleet
//! of simulated agents, one MQTT connection each (see `fleet.rs`); defaults 10000 ms, 20
//! containers, 250 ms beats (the agent's defaults), node names `fleet-00000`...
//!
//! `loadgen replay PORT AGENTS SECONDS [INTERVAL_MS] [CONTAINERS] [BEAT_MS] [PREFIX] [REPORTS]`:
//! the same fleet, arguments and MQTT traffic as `fleet` (the broker and the gateway cannot tell
//! them apart), for a fraction of its CPU: each agent's reports are encoded once as templates
//! whose `seq` and `ts` are written in place, and a few threads write hand-made MQTT frames to
//! non-blocking sockets (see `replay.rs`). REPORTS=0 (default 1): births, beats and Wills only.
//! Prints the same `FLEET ...` line as `fleet`.
//!
//! `loadgen fleet-key FILE`: writes the benchmarks' fleet key (mode 600) for the gateway's
//! `auth.fleet_key_file`; `loadgen node-key NODE FILE` the key of NODE derived from it, for an
//! agent's `auth.key_file`. Every message above is sealed with its node's key, derived from it,
//! as an agent seals it (the gateway believes nothing else).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod fleet;
mod replay;

use leakmon_protocol::auth::FleetKey;
use leakmon_protocol::{
    encode, BufferStats, CpuUsage, Disk, Header, HostReport, Load, Memory, NetIf, Swap, Temperature,
};

/// The fleet key of every benchmark: public (a benchmark proves nothing about secrecy), the
/// same cost as any other key.
pub fn bench_fleet() -> FleetKey {
    FleetKey::from_bytes(*b"leakmon benchmark key, public!!!")
}

/// `payload` as `node`'s agent sends it on `topic`: sealed with its key.
pub fn sealed(node: &str, topic: &str, payload: Vec<u8>) -> Vec<u8> {
    bench_fleet().node_key(node).seal(topic, payload)
}

/// Points the gateway makes of one report below: cpu, mem, swap, system, 2 disk, 2 net,
/// 2 temp, leakmon_agent.
pub const POINTS_PER_REPORT: u64 = 11;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn report(node: &str, seq: u64, ts: i64) -> HostReport {
    HostReport {
        header: Header {
            v: 1,
            node: node.to_owned(),
            run: 1,
            seq,
            ts,
            mono: None,
        },
        hostname: node.to_owned(),
        uptime_s: 1000 + seq,
        n_cpus: 4,
        cpu: Some(CpuUsage {
            user: 10.0,
            system: 5.0,
            idle: 85.0,
            ..Default::default()
        }),
        load: Load {
            load1: 0.5,
            load5: 0.4,
            load15: 0.3,
        },
        mem: Memory {
            total: 4 << 30,
            available: 3 << 30,
            used: 1 << 30,
            free: 2 << 30,
            buffers: 1 << 20,
            cached: 1 << 29,
            used_percent: 25.0,
            available_percent: 75.0,
        },
        swap: Swap::default(),
        disks: ["/", "/data"]
            .iter()
            .map(|p| Disk {
                path: (*p).into(),
                device: "/dev/sda1".into(),
                fstype: "ext4".into(),
                total: 100 << 30,
                used: 40 << 30,
                free: 60 << 30,
                used_percent: 40.0,
                inodes_total: 1000,
                inodes_used: 100,
                inodes_free: 900,
            })
            .collect(),
        net: ["eth0", "wlan0"]
            .iter()
            .map(|i| NetIf {
                interface: (*i).into(),
                bytes_recv: seq * 1000,
                bytes_sent: seq * 500,
                ..Default::default()
            })
            .collect(),
        temps: ["cpu-thermal", "gpu-thermal"]
            .iter()
            .map(|s| Temperature {
                sensor: (*s).into(),
                temp: 48.5,
            })
            .collect(),
        // (no per-CPU or diskio rows: the benchmark's 11 points a report stay comparable)
        cores: vec![],
        diskio: vec![],
        kernel: None,
        processes: None,
        files: None,
        nstat: None,
        sockets: None,
        conntrack: None,
        interrupts: Vec::new(),
        soft_interrupts: Vec::new(),
        buffer: BufferStats::default(),
        cut: 0,
    }
}

fn mqtt(port: u16, agents: usize, seconds: u64, conns: usize, rate: f64) {
    let sent = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            let sent = sent.clone();
            std::thread::spawn(move || {
                let mut opts = rumqttc::MqttOptions::new(format!("loadgen-{c}"), "127.0.0.1", port);
                opts.set_max_packet_size(1 << 20, 1 << 20);
                opts.set_inflight(200);
                let (client, mut conn) = rumqttc::Client::new(opts, 1000);
                std::thread::spawn(move || for _ in conn.iter() {});
                let mut seq = 0u64;
                // Each connection speaks for its share of the simulated agents; timestamps
                // step by 1 ms per report so no two reports of a node share a point.
                let mine: Vec<(String, leakmon_protocol::auth::NodeKey)> = (0..agents)
                    .filter(|a| a % conns == c)
                    .map(|a| {
                        let node = format!("sim-{a:04}");
                        let key = bench_fleet().node_key(&node);
                        (node, key)
                    })
                    .collect();
                let base = now_ms() - 3_600_000;
                let start = Instant::now();
                while Instant::now() < end {
                    if rate > 0.0 {
                        let due = start + Duration::from_secs_f64(seq as f64 / rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    seq += 1;
                    for (node, key) in &mine {
                        let r = report(node, seq, base + seq as i64);
                        let topic = format!("leakmon/v1/nodes/{node}/host");
                        let body = key.seal(&topic, encode(&r));
                        if client
                            .publish(topic, rumqttc::QoS::AtLeastOnce, false, body)
                            .is_err()
                        {
                            return;
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // Let the connection send what is still queued before saying goodbye.
                std::thread::sleep(Duration::from_secs(2));
                let _ = client.disconnect();
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let n = sent.load(Ordering::Relaxed);
    println!("messages={n} points={}", n * POINTS_PER_REPORT);
}

/// The line protocol the gateway writes for one report (same names, same shapes).
fn lines(r: &HostReport, out: &mut String) {
    use std::fmt::Write as _;
    let (h, ts) = (&r.header.node, r.header.ts);
    let _ = writeln!(out, "cpu,cpu=cpu-total,host={h} usage_user=10,usage_nice=0,usage_system=5,usage_idle=85,usage_iowait=0,usage_irq=0,usage_softirq=0,usage_steal=0,usage_guest=0,usage_guest_nice=0 {ts}");
    let _ = writeln!(out, "mem,host={h} total=4294967296i,available=3221225472i,used=1073741824i,free=2147483648i,buffered=1048576i,cached=536870912i,used_percent=25,available_percent=75,swap_total=0i,swap_free=0i {ts}");
    let _ = writeln!(
        out,
        "swap,host={h} total=0i,used=0i,free=0i,used_percent=0 {ts}"
    );
    let _ = writeln!(
        out,
        "system,host={h} load1=0.5,load5=0.4,load15=0.3,n_cpus=4i,uptime={}i {ts}",
        r.uptime_s
    );
    for d in &r.disks {
        let _ = writeln!(out, "disk,device=sda1,fstype=ext4,host={h},path={} total=107374182400i,used=42949672960i,free=64424509440i,used_percent=40,inodes_total=1000i,inodes_used=100i,inodes_free=900i {ts}", d.path);
    }
    for n in &r.net {
        let _ = writeln!(out, "net,host={h},interface={} bytes_recv={}i,bytes_sent={}i,packets_recv=0i,packets_sent=0i,err_in=0i,err_out=0i,drop_in=0i,drop_out=0i {ts}", n.interface, n.bytes_recv, n.bytes_sent);
    }
    for t in &r.temps {
        let _ = writeln!(out, "temp,host={h},sensor={} temp=48.5 {ts}", t.sensor);
    }
    let _ = writeln!(out, "leakmon_agent,host={h} run=1i,seq={}i,queued=0i,queued_bytes=0i,spooled_bytes=0i,dropped_total=0i {ts}", r.header.seq);
}

fn post(addr: &str, path: &str, body: &[u8]) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok(resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

fn direct(url: &str, db: &str, agents: usize, seconds: u64) {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let path = format!("/write?db={db}&precision=ms");
    let end = Instant::now() + Duration::from_secs(seconds);
    let base = now_ms() - 7_200_000;
    let mut points = 0u64;
    let mut seq = 0u64;
    let mut batch = String::new();
    let mut in_batch = 0u64;
    while Instant::now() < end {
        seq += 1;
        for a in 0..agents {
            let node = format!("direct-{a:04}");
            lines(&report(&node, seq, base + seq as i64), &mut batch);
            in_batch += POINTS_PER_REPORT;
            if in_batch >= 5000 {
                match post(addr, &path, batch.as_bytes()) {
                    Ok(204) => points += in_batch,
                    Ok(code) => eprintln!("direct write answered {code}"),
                    Err(e) => eprintln!("direct write failed: {e}"),
                }
                batch.clear();
                in_batch = 0;
            }
        }
    }
    println!("points={points}");
}

/// GET on InfluxDB 1.x; the body.
fn get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok(resp)
}

fn probe(port: u16, url: &str, db: &str, count: u64, interval: Duration, vm: bool) {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut opts = rumqttc::MqttOptions::new("loadgen-probe", "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = rumqttc::Client::new(opts, 100);
    std::thread::spawn(move || for _ in conn.iter() {});
    for seq in 1..=count {
        let next = Instant::now() + interval;
        let ts = now_ms();
        let r = report("probe", seq, ts);
        let topic = "leakmon/v1/nodes/probe/host";
        if client
            .publish(
                topic,
                rumqttc::QoS::AtLeastOnce,
                false,
                sealed("probe", topic, encode(&r)),
            )
            .is_err()
        {
            eprintln!("probe: broker connection lost");
            return;
        }
        let q = if vm {
            let at = format!("{}.{:03}", ts / 1000, ts % 1000);
            format!("/api/v1/export?match[]=mem_used_percent%7Bhost%3D%22probe%22%7D&start={at}&end={at}")
        } else {
            format!(
                "/query?db={db}&q=SELECT%20count(used_percent)%20FROM%20mem%20WHERE%20host%3D%27probe%27%20AND%20time%3D{ts}ms"
            )
        };
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            if get(addr, &q).is_ok_and(|b| b.contains("\"values\"")) {
                println!("latency_ms={}", now_ms() - ts);
                break;
            }
            if Instant::now() > give_up {
                println!("latency_ms=timeout");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let _ = client.disconnect();
}

/// The sample times (ms) of node `probe`'s `mem` points from `since` on, as the database
/// answers them now.
fn probe_times(addr: &str, db: &str, since: i64, vm: bool) -> Vec<i64> {
    let q = if vm {
        format!(
            "/api/v1/export?match[]=mem_used_percent%7Bhost%3D%22probe%22%7D&start={}.{:03}",
            since / 1000,
            since % 1000
        )
    } else {
        format!("/query?db={db}&epoch=ms&q=SELECT%20used_percent%20FROM%20mem%20WHERE%20host%3D%27probe%27%20AND%20time%3E%3D{since}ms")
    };
    let Ok(resp) = get(addr, &q) else {
        return Vec::new();
    };
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let mut out = Vec::new();
    for line in body.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if vm {
            if let Some(ts) = v["timestamps"].as_array() {
                out.extend(ts.iter().filter_map(|t| t.as_i64()));
            }
        } else if let Some(rows) = v["results"][0]["series"][0]["values"].as_array() {
            out.extend(rows.iter().filter_map(|r| r[0].as_i64()));
        }
    }
    out
}

/// `watch`: a probe node publishes a host report every `interval` for `seconds`, stamped
/// with the time it is made, while the database is polled (every 20 ms, one range query) for
/// all of them at once; prints `latency_ms=N` per report as it becomes visible, and
/// `latency_ms=timeout` for those not visible 30 s after the last was published. Unlike
/// `probe`, a slow database does not slow the probe down.
fn watch(port: u16, url: &str, db: &str, seconds: u64, interval: Duration, vm: bool) {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut opts = rumqttc::MqttOptions::new("loadgen-probe", "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = rumqttc::Client::new(opts, 100);
    std::thread::spawn(move || for _ in conn.iter() {});
    let start = Instant::now();
    let stop_publishing = start + Duration::from_secs(seconds);
    let mut pending: std::collections::BTreeSet<i64> = Default::default();
    let mut first = None;
    let (mut seq, mut next) = (0u64, start);
    let mut give_up = None;
    loop {
        let now = Instant::now();
        if now >= next && now < stop_publishing {
            seq += 1;
            let ts = now_ms();
            let body = sealed(
                "probe",
                "leakmon/v1/nodes/probe/host",
                encode(&report("probe", seq, ts)),
            );
            if client
                .publish(
                    "leakmon/v1/nodes/probe/host",
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    body,
                )
                .is_err()
            {
                eprintln!("probe: broker connection lost");
                break;
            }
            pending.insert(ts);
            first.get_or_insert(ts);
            next += interval;
        }
        if now >= stop_publishing && give_up.is_none() {
            give_up = Some(now + Duration::from_secs(30));
        }
        if let Some(since) = first {
            let seen = now_ms();
            for t in probe_times(addr, db, since, vm) {
                if pending.remove(&t) {
                    println!("latency_ms={}", seen - t);
                }
            }
        }
        if give_up.is_some_and(|g| now >= g) || (now >= stop_publishing && pending.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in &pending {
        println!("latency_ms=timeout");
    }
    let _ = client.disconnect();
}

/// Writes a key file (mode 600), or exits 1 saying why.
fn write_key(path: &str, text: &str) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = written {
        eprintln!("loadgen: cannot write the key file {path}: {e}");
        std::process::exit(1);
    }
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: u64| a.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    match a.first().map(String::as_str) {
        Some("mqtt") => mqtt(
            num(1, 1883) as u16,
            num(2, 1000) as usize,
            num(3, 30),
            num(4, 4) as usize,
            a.get(5).and_then(|v| v.parse().ok()).unwrap_or(0.0),
        ),
        Some("direct") if a.len() >= 3 => direct(&a[1], &a[2], num(3, 1000) as usize, num(4, 30)),
        Some("probe") if a.len() >= 4 => probe(
            num(1, 1883) as u16,
            &a[2],
            &a[3],
            num(4, 100),
            Duration::from_millis(num(5, 200)),
            a.get(6).is_some_and(|v| v == "vm"),
        ),
        Some("watch") if a.len() >= 4 => watch(
            num(1, 1883) as u16,
            &a[2],
            &a[3],
            num(4, 60),
            Duration::from_millis(num(5, 500)),
            a.get(6).is_some_and(|v| v == "vm"),
        ),
        Some(kind @ ("fleet" | "replay")) => {
            let plan = fleet::Plan {
                port: num(1, 1883) as u16,
                agents: num(2, 1000) as usize,
                seconds: num(3, 60),
                interval: Duration::from_millis(num(4, 10_000)),
                containers: num(5, 20) as usize,
                beat: Duration::from_millis(num(6, 250)),
                prefix: a.get(7).cloned().unwrap_or_else(|| "fleet".into()),
                ramp_per_s: 1000,
            };
            if kind == "fleet" {
                fleet::run(plan)
            } else {
                replay::run(plan, num(8, 1) != 0)
            }
        }
        Some("fleet-key") if a.len() >= 2 => write_key(&a[1], &bench_fleet().to_text()),
        Some("node-key") if a.len() >= 3 => {
            write_key(&a[2], &bench_fleet().node_key(&a[1]).to_text())
        }
        _ => {
            eprintln!("usage: loadgen mqtt PORT AGENTS SECONDS [CONNECTIONS] | loadgen direct URL DB AGENTS SECONDS | loadgen probe PORT URL DB COUNT INTERVAL_MS [vm] | loadgen watch PORT URL DB SECONDS INTERVAL_MS [vm] | loadgen fleet PORT AGENTS SECONDS [INTERVAL_MS] [CONTAINERS] [BEAT_MS] [PREFIX] | loadgen replay PORT AGENTS SECONDS [INTERVAL_MS] [CONTAINERS] [BEAT_MS] [PREFIX] [REPORTS] | loadgen fleet-key FILE | loadgen node-key NODE FILE");
            std::process::exit(2);
        }
    }
}
