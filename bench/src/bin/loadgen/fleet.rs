//! `loadgen fleet`: a fleet of simulated agents, each with an MQTT connection of its own, as
//! real agents behave with the shipped defaults: a retained birth on connect and a retained
//! Will, a liveness beat every BEAT_MS (QoS 0), and every INTERVAL_MS one host report and one
//! containers report of CONTAINERS containers (QoS 1), each node at its own phase of the
//! interval. The reports carry the shape of a real agent's: 4 cores, 2 disks, 2 interfaces,
//! disk I/O, kernel, processes, file handles and the 76 network counters of the default
//! `host.nstat`; containers with Swarm labels, CPU, memory, network and block I/O.
//!
//! Prints one line when done: `FLEET agents=N connected=N reports=N statuses=N beats=N late=N
//! publish_errors=N`, where `late` counts reports sent more than one interval after they were
//! due (the load generator could not keep up: the run then measures less than it says).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use leakmon_protocol::{
    encode, Beat, BufferStats, Container, ContainerBlkio, ContainerCpu, ContainerNet,
    ContainersReport, CoreUsage, CpuUsage, Disk, DiskIo, EngineInfo, EngineState, FileHandles,
    Header, Health, HostReport, Identity, Kernel, Load, Memory, NetCounters, NetIf, NodeState,
    OfflineReason, Processes, Status, Swap, SwarmRole, Temperature,
};
use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS};

use super::now_ms;

pub struct Plan {
    pub port: u16,
    pub agents: usize,
    pub seconds: u64,
    pub interval: Duration,
    pub containers: usize,
    pub beat: Duration,
    /// Node names are `<prefix>-00000`...
    pub prefix: String,
    /// New connections per second while the fleet comes up.
    pub ramp_per_s: u64,
}

#[derive(Default)]
struct Counts {
    connected: AtomicU64,
    reports: AtomicU64,
    statuses: AtomicU64,
    beats: AtomicU64,
    late: AtomicU64,
    errors: AtomicU64,
}

/// The 76 counters of the agent's default `host.nstat`, by file section.
const SNMP: [(&str, &[&str]); 4] = [
    (
        "Ip",
        &[
            "Forwarding",
            "DefaultTTL",
            "InReceives",
            "InHdrErrors",
            "InAddrErrors",
            "ForwDatagrams",
            "InUnknownProtos",
            "InDiscards",
            "InDelivers",
            "OutRequests",
            "OutDiscards",
            "OutNoRoutes",
            "ReasmTimeout",
            "ReasmReqds",
            "ReasmOKs",
            "ReasmFails",
            "FragOKs",
            "FragFails",
            "FragCreates",
        ],
    ),
    (
        "Icmp",
        &[
            "InMsgs",
            "InErrors",
            "InCsumErrors",
            "InDestUnreachs",
            "OutMsgs",
            "OutErrors",
            "OutDestUnreachs",
        ],
    ),
    (
        "Tcp",
        &[
            "RtoAlgorithm",
            "RtoMin",
            "RtoMax",
            "MaxConn",
            "ActiveOpens",
            "PassiveOpens",
            "AttemptFails",
            "EstabResets",
            "CurrEstab",
            "InSegs",
            "OutSegs",
            "RetransSegs",
            "InErrs",
            "OutRsts",
            "InCsumErrors",
        ],
    ),
    (
        "Udp",
        &[
            "InDatagrams",
            "NoPorts",
            "InErrors",
            "OutDatagrams",
            "RcvbufErrors",
            "SndbufErrors",
            "InCsumErrors",
            "IgnoredMulti",
        ],
    ),
];
const NETSTAT: [(&str, &[&str]); 2] = [
    (
        "TcpExt",
        &[
            "SyncookiesSent",
            "SyncookiesRecv",
            "SyncookiesFailed",
            "ListenOverflows",
            "ListenDrops",
            "TCPTimeouts",
            "TCPLostRetransmit",
            "TCPFastRetrans",
            "TCPSlowStartRetrans",
            "TCPBacklogDrop",
            "TCPRcvQDrop",
            "TCPOFOQueue",
            "TCPAbortOnData",
            "TCPAbortOnClose",
            "TCPAbortOnMemory",
            "TCPAbortOnTimeout",
            "TCPMemoryPressures",
            "TCPSackRecovery",
            "TCPRetransFail",
            "TCPSynRetrans",
        ],
    ),
    (
        "IpExt",
        &[
            "InOctets",
            "OutOctets",
            "InNoRoutes",
            "InTruncatedPkts",
            "InBcastPkts",
            "InMcastPkts",
            "InNoECTPkts",
        ],
    ),
];

fn table(sections: &[(&str, &[&str])], seq: u64) -> BTreeMap<String, BTreeMap<String, i64>> {
    sections
        .iter()
        .map(|(s, names)| {
            let row = names
                .iter()
                .enumerate()
                .map(|(i, n)| ((*n).to_owned(), (seq as i64) * (i as i64 + 1)))
                .collect();
            ((*s).to_owned(), row)
        })
        .collect()
}

fn cpu(busy: f64) -> CpuUsage {
    CpuUsage {
        user: busy * 0.7,
        system: busy * 0.3,
        idle: 100.0 - busy,
        ..Default::default()
    }
}

pub fn host_report(header: Header, seq: u64) -> HostReport {
    let node = header.node.clone();
    HostReport {
        header,
        hostname: node,
        uptime_s: 100_000 + seq * 10,
        n_cpus: 4,
        cpu: Some(cpu(12.5)),
        cores: (0..4)
            .map(|i| CoreUsage {
                cpu: format!("cpu{i}"),
                usage: cpu(10.0 + i as f64),
            })
            .collect(),
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
        disks: ["/", "/var/lib/docker"]
            .iter()
            .map(|p| Disk {
                path: (*p).into(),
                device: "mmcblk0p2".into(),
                fstype: "ext4".into(),
                total: 64 << 30,
                used: 20 << 30,
                free: 44 << 30,
                used_percent: 31.25,
                inodes_total: 4_000_000,
                inodes_used: 300_000,
                inodes_free: 3_700_000,
            })
            .collect(),
        net: ["eth0", "wlan0"]
            .iter()
            .map(|i| NetIf {
                interface: (*i).into(),
                bytes_recv: seq * 100_000,
                bytes_sent: seq * 50_000,
                packets_recv: seq * 100,
                packets_sent: seq * 60,
                ..Default::default()
            })
            .collect(),
        temps: vec![Temperature {
            sensor: "cpu_thermal".into(),
            temp: 48.5,
        }],
        diskio: vec![DiskIo {
            name: "mmcblk0".into(),
            reads: seq * 3,
            read_bytes: seq * 12_288,
            writes: seq * 7,
            write_bytes: seq * 28_672,
            ..Default::default()
        }],
        kernel: Some(Kernel {
            boot_time: 1_700_000_000,
            context_switches: seq * 5000,
            interrupts: seq * 3000,
            processes_forked: seq * 4,
            entropy_avail: 256,
        }),
        processes: Some(Processes {
            running: 2,
            sleeping: 180,
            ..Default::default()
        }),
        files: Some(FileHandles {
            allocated: 2048,
            max: 1_000_000,
        }),
        nstat: Some(NetCounters {
            netstat: table(&NETSTAT, seq),
            snmp: table(&SNMP, seq),
            snmp6: BTreeMap::new(),
        }),
        sockets: None,
        conntrack: None,
        interrupts: Vec::new(),
        soft_interrupts: Vec::new(),
        buffer: BufferStats::default(),
        cut: 0,
    }
}

pub fn containers_report(header: Header, seq: u64, n: usize) -> ContainersReport {
    let node = header.node.clone();
    // Ids stay the same from report to report, as a running container's does.
    let node_hash = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        node.hash(&mut h);
        h.finish()
    };
    let containers = (0..n)
        .map(|i| {
            let service = format!("plant_svc{i:02}");
            let labels = [
                ("com.docker.stack.namespace", "plant".to_owned()),
                ("com.docker.swarm.service.name", service.clone()),
                ("com.docker.swarm.task.name", format!("{service}.1.{node}")),
                ("com.docker.swarm.node.id", format!("{node}-id")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            Container {
                id: format!("{node_hash:016x}{i:048x}"),
                name: format!("{service}.1.{node}"),
                image: format!("registry.local/plant/svc{i:02}:1.4.2"),
                state: "running".into(),
                health: Health::Healthy,
                failing_streak: 0,
                restart_count: 0,
                exit_code: None,
                oom_killed: false,
                started_at: Some(1_700_000_000_000),
                swarm_service: Some(service),
                swarm_task: Some(format!("task{i:02}")),
                swarm_node_id: Some(format!("{node}-id")),
                cpu_percent: Some(0.8 + i as f64 / 10.0),
                mem_usage: Some(32 << 20),
                mem_limit: Some(256 << 20),
                labels,
                cpu_time: Some(ContainerCpu {
                    total_ns: seq * 80_000_000,
                    user_ns: seq * 60_000_000,
                    kernel_ns: seq * 20_000_000,
                    ..Default::default()
                }),
                net: Some(ContainerNet {
                    rx_bytes: seq * 4096,
                    rx_packets: seq * 10,
                    tx_bytes: seq * 2048,
                    tx_packets: seq * 8,
                    ..Default::default()
                }),
                blkio: Some(ContainerBlkio {
                    read_bytes: seq * 512,
                    write_bytes: seq * 4096,
                    reads: seq,
                    writes: seq * 2,
                }),
            }
        })
        .collect();
    ContainersReport {
        header,
        engine: EngineState::Ok,
        error: None,
        containers,
        engine_info: Some(EngineInfo {
            images: n as u64 + 3,
            cpus: 4,
            memory_total: 4 << 30,
            goroutines: 120,
            file_descriptors: 80,
            event_listeners: 1,
        }),
        cut: 0,
    }
}

pub(super) fn status(
    node: &str,
    state: NodeState,
    seq: u64,
    beat: Duration,
    interval: Duration,
) -> Status {
    Status {
        v: 1,
        node: node.to_owned(),
        state,
        seq,
        reason: (state == NodeState::Offline).then_some(OfflineReason::Lost),
        ts: now_ms(),
        identity: (state == NodeState::Online).then(|| Identity {
            hostname: node.to_owned(),
            agent_version: "sim".into(),
            arch: "aarch64".into(),
            interval_ms: interval.as_millis() as u64,
            swarm_node_id: None,
            swarm_role: Some(SwarmRole::Worker),
            engine_version: Some("20.10.24".into()),
            engine_name: Some(node.to_owned()),
            beat_interval_ms: Some(beat.as_millis() as u64),
        }),
    }
}

/// One simulated agent until `end`.
async fn agent(
    plan: Arc<Plan>,
    i: usize,
    end: tokio::time::Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
    counts: Arc<Counts>,
) {
    let node = format!("{}-{i:05}", plan.prefix);
    let topic = |c: &str| format!("leakmon/v1/nodes/{node}/{c}");
    // sealed with its node's key, as an agent seals what it sends
    let key = super::bench_fleet().node_key(&node);
    let seal = |c: &str, body: Vec<u8>| key.seal(&topic(c), body);
    let mut opts = MqttOptions::new(node.clone(), "127.0.0.1", plan.port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    opts.set_inflight(100);
    let run = 1 + i as u64;
    let will = status(&node, NodeState::Offline, 1, plan.beat, plan.interval);
    opts.set_last_will(LastWill::new(
        topic("status"),
        seal("status", encode(&will)),
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut el) = AsyncClient::new(opts, 64);
    let counted = counts.clone();
    // The connection: counts its first CONNACK, reconnects on error as the agent does.
    let driver = tokio::spawn(async move {
        let mut up = false;
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) if !up => {
                    up = true;
                    counted.connected.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    });
    let birth = status(&node, NodeState::Online, 1, plan.beat, plan.interval);
    match client
        .publish(
            topic("status"),
            QoS::AtLeastOnce,
            true,
            seal("status", encode(&birth)),
        )
        .await
    {
        Ok(()) => counts.statuses.fetch_add(1, Ordering::Relaxed),
        Err(_) => counts.errors.fetch_add(1, Ordering::Relaxed),
    };
    // Each node at its own phase of the interval, as agents started at different times are.
    let phase = plan.interval.mul_f64((i as f64 * 0.618_033_988_7).fract());
    let start = tokio::time::Instant::now();
    let mut reports = tokio::time::interval_at(start + phase, plan.interval);
    reports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let beat_on = !plan.beat.is_zero();
    let mut beats =
        tokio::time::interval_at(start + plan.beat, plan.beat.max(Duration::from_millis(1)));
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut seq, mut n) = (0u64, 0u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            _ = stop.changed() => break,
            due = reports.tick() => {
                if due.elapsed() > plan.interval {
                    counts.late.fetch_add(1, Ordering::Relaxed);
                }
                let ts = now_ms();
                let header = |seq| Header { v: 1, node: node.clone(), run, seq, ts, mono: None };
                seq += 1;
                let host = seal("host", encode(&host_report(header(seq), seq)));
                seq += 1;
                let cont = seal(
                    "containers",
                    encode(&containers_report(header(seq), seq, plan.containers)),
                );
                for (c, body) in [("host", host), ("containers", cont)] {
                    match client.publish(topic(c), QoS::AtLeastOnce, false, body).await {
                        Ok(()) => counts.reports.fetch_add(1, Ordering::Relaxed),
                        Err(_) => counts.errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
            _ = beats.tick(), if beat_on => {
                n += 1;
                let b = Beat { v: 1, node: node.clone(), run, n, ts: None, mono: None };
                // QoS 0, never queued behind data: dropped when the request queue is full.
                let b = seal("beat", encode(&b));
                match client.try_publish(topic("beat"), QoS::AtMostOnce, false, b) {
                    Ok(()) => counts.beats.fetch_add(1, Ordering::Relaxed),
                    Err(_) => counts.errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
    }
    // A clean goodbye, as a stopping agent: the retained status says so.
    let mut bye = status(&node, NodeState::Offline, 1, plan.beat, plan.interval);
    bye.reason = Some(OfflineReason::Shutdown);
    if client
        .publish(
            topic("status"),
            QoS::AtLeastOnce,
            true,
            seal("status", encode(&bye)),
        )
        .await
        .is_ok()
    {
        counts.statuses.fetch_add(1, Ordering::Relaxed);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    driver.abort();
}

pub fn run(plan: Plan) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleet: no runtime: {e}");
            std::process::exit(1);
        }
    };
    let plan = Arc::new(plan);
    let counts = Arc::new(Counts::default());
    rt.block_on(async {
        let end = tokio::time::Instant::now() + Duration::from_secs(plan.seconds);
        // SIGTERM ends the run early, each agent saying goodbye as at the end.
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::spawn(async move {
                term.recv().await;
                let _ = stop_tx.send(true);
            });
        }
        let gap = Duration::from_secs_f64(1.0 / plan.ramp_per_s.max(1) as f64);
        let mut tasks = Vec::with_capacity(plan.agents);
        for i in 0..plan.agents {
            if *stop.borrow() {
                break;
            }
            tasks.push(tokio::spawn(agent(
                plan.clone(),
                i,
                end,
                stop.clone(),
                counts.clone(),
            )));
            tokio::time::sleep(gap).await;
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "FLEET agents={} connected={} reports={} statuses={} beats={} late={} publish_errors={}",
        plan.agents,
        c(&counts.connected),
        c(&counts.reports),
        c(&counts.statuses),
        c(&counts.beats),
        c(&counts.late),
        c(&counts.errors)
    );
}
