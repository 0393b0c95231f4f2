//! `leakmon-agent`: host and container health of one node, published over MQTT.
//!
//! Thin binary: flags, config, logging, then [`run`] wires the collectors to the publisher.
//! Module map: `config` (keys and checks), `collect` (host from /proc and /sys, containers and
//! identity from Docker), `events` (engine events), `state` (counters kept on disk),
//! `session` (one connection's in-flight window and shutdown, pure), `publish` (the MQTT
//! shell, with the outbox: the store-and-forward buffer of `leakmon-common`; and the liveness
//! beats), `probe` (probes of suspect nodes for the gateway: schedule and count pure, sockets
//! in a thin shell).

mod collect;
mod config;
mod enroll;
mod events;
mod probe;
mod publish;
mod resend;
mod session;
mod state;

use std::process::ExitCode;

use anyhow::Context;
use leakmon_protocol::{Identity, Topics};
use tokio::sync::{mpsc, watch};

use config::{Checked, Config};

use leakmon_common::cli;

const NAME: &str = "leakmon-agent";
const USAGE: &str = "\
leakmon-agent: host and container health over MQTT

Usage: leakmon-agent [--config PATH] [--once | --check-config | --print-config | --version]

  --config PATH    config file (default /etc/leakmon/agent.toml; optional at that path)
  --once           sample this node once (host and containers, over about a second: CPU
                   needs two readings) and print the two reports as JSON lines, one per
                   report ({\"topic\": ..., \"message\": ...}); publishes nothing, changes nothing
  --check-config   validate the config and exit (0 valid, 2 invalid)
  --print-config   print the effective config (file + environment) and exit
  --version        print the version and exit
  --help           print this help and exit

Every key can be set by environment: mqtt.url -> LEAKMON_AGENT__MQTT__URL.
Log level: LEAKMON_LOG (e.g. debug, info, warn; default info).";

/// The static (musl) builds' allocator. musl's own (mallocng) hands a group of slots back to
/// the kernel as soon as it is empty: the few-KiB buffers of each sample (the reports, their
/// copies kept for resending) cost an `mmap`, page faults and a `munmap` every second, and its
/// hardened paths are several times slower. dlmalloc keeps what it freed for the next sample
/// and trims only above 2 MiB free (ARCHITECTURE.md, "Dependencies").
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() -> ExitCode {
    let stage = cli::Stage {
        name: NAME,
        usage: USAGE,
        default_path: config::DEFAULT_PATH,
        env_prefix: config::ENV_PREFIX,
        load: &|path, required| Config::load(path, required)?.check(&cli::hostname()),
        print: &|c: &Checked| leakmon_common::config::to_toml(&c.cfg.redacted()),
        ok: &|c: &Checked| format!("configuration OK (node {})", c.node),
        switches: &["once"],
    };
    let (checked, switches) = match cli::configure(&stage, std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(code) => return ExitCode::from(code),
    };
    cli::init_logging(NAME);
    if switches.contains(&"once") {
        return cli::run_async(NAME, Some(1), once(checked));
    }
    cli::run_async(NAME, Some(1), run(checked))
}

/// `--once`: one host and one containers report, as they would be published, on stdout.
/// Nothing is published and the state dir is not touched (`run` is 0).
async fn once(c: Checked) -> anyhow::Result<()> {
    use std::io::Write as _;
    let Checked { cfg, node, key, .. } = c;
    let topics = Topics::new(&cfg.mqtt.topic_prefix)?;
    let mut host = collect::host::HostCollector::new(cfg.host.clone());
    let mut containers = cfg.docker.enabled.then(|| {
        collect::containers::ContainerCollector::new(
            collect::containers::Engine::new(cfg.docker.clone()),
            cfg.docker.stats_concurrency,
            cfg.docker.read_cgroups.then(|| {
                collect::cgroup::CgroupReader::new(&cfg.host.sys_root, &cfg.host.proc_root)
            }),
            collect::containers::Invalidations::default(),
        )
    });
    // CPU percentages come from two readings: a first one, then the one reported.
    host.sample(publish::now_ms());
    if let Some(c) = containers.as_mut() {
        let _ = c.sample(publish::now_ms()).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let mut reports = vec![publish::Report::Host(Box::new(
        host.sample(publish::now_ms()),
    ))];
    if let Some(c) = containers.as_mut() {
        let ts = publish::now_ms();
        let result = c.sample(ts).await;
        reports.push(publish::Report::Containers {
            ts,
            result,
            engine_info: c.engine_info(),
        });
    }
    let mut enc = publish::Encoder::new(topics, node, 0)
        .with_max_payload(cfg.mqtt.max_packet_size.0)
        .with_key(key);
    let mut out = std::io::stdout().lock();
    for r in reports {
        let Some(m) = enc.report(r, Default::default()) else {
            continue;
        };
        // the payload as published (already JSON, fields in their order)
        let payload = String::from_utf8_lossy(&m.payload);
        let topic = serde_json::to_string(&m.topic).context("topic")?;
        writeln!(out, "{{\"topic\":{topic},\"message\":{payload}}}").context("stdout")?;
    }
    Ok(())
}

async fn run(c: Checked) -> anyhow::Result<()> {
    let Checked {
        mut cfg,
        node,
        interval,
        mqtt,
        beat_interval,
        mut key,
        enroll,
    } = c;
    // systemd (Type=notify): ready at once while enrolling, which may wait for a gateway.
    let notify = std::sync::Arc::new(leakmon_common::notify::Notify::from_env());
    if let Some(e) = &enroll {
        notify.ready();
        notify.status("enrolling: asking the gateways for this node's key");
        let topics = Topics::new(&cfg.mqtt.topic_prefix)?;
        let k = enroll::enroll(&mqtt, &topics, &node, e, &notify).await?;
        cfg.mqtt
            .client_id
            .get_or_insert(config::default_client_id(&node, Some(&k)));
        key = Some(k);
    }
    let state = state::State::open(&cfg.state_dir, publish::now_ms());
    let spool = match &cfg.buffer.spool_dir {
        Some(dir) => Some(
            leakmon_common::spool::Spool::open(dir, cfg.buffer.spool_max_bytes.0)
                .with_context(|| format!("cannot open the spool in {}", dir.display()))?,
        ),
        None => None,
    };
    // Offline until the first connection: with a spool, what is sampled meanwhile is on disk.
    let outbox = publish::Outbox::new(
        usize::try_from(cfg.buffer.max_bytes.0).unwrap_or(usize::MAX),
        spool,
    )
    .starting_offline();
    let topics = Topics::new(&cfg.mqtt.topic_prefix)?;
    let host = collect::host::HostCollector::new(cfg.host.clone());

    let base = Identity {
        hostname: cli::hostname(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        arch: std::env::consts::ARCH.into(),
        interval_ms: interval.as_millis() as u64,
        beat_interval_ms: beat_interval.map(|b| b.as_millis() as u64),
        ..Default::default()
    };
    let stale = collect::containers::Invalidations::default();
    let engine = cfg
        .docker
        .enabled
        .then(|| collect::containers::Engine::new(cfg.docker.clone()));
    let first_identity = match engine.clone().map(|mut e| e.client()) {
        Some(Ok(d)) => collect::engine_identity(&d, &base).await,
        _ => base.clone(),
    };
    let (identity_tx, identity_rx) = watch::channel(first_identity);
    let (tx, rx) = mpsc::channel(64);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();

    tracing::info!(
        node = %node,
        run = state.run(),
        broker = %cfg.mqtt.url,
        interval_ms = interval.as_millis() as u64,
        docker = cfg.docker.enabled,
        spool = cfg.buffer.spool_dir.is_some(),
        beat_interval_ms = beat_interval.map_or(0, |b| b.as_millis() as u64),
        probe = cfg.liveness.probe,
        sealed = key.is_some(),
        "leakmon-agent starting"
    );
    if key.is_none() {
        tracing::warn!(
            "auth.insecure = true: messages are sent unsealed and any client of the broker can \
             speak for this node or have it probe; a gateway with auth on ignores them"
        );
    }
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    // The instant the samplers' ticks and the beats are counted from (collect::cadence::ticker); the
    // samplers' first tick.
    let grid = tokio::time::Instant::now();
    let prober = cfg
        .liveness
        .probe
        .then(|| probe::Prober::new(&topics, &node, key.clone()));
    let publisher = publish::Publisher {
        connector: mqtt,
        client_id: cfg.mqtt.client_id.clone().unwrap_or_default(),
        encoder: publish::Encoder::new(topics, node, state.run())
            .with_max_payload(cfg.mqtt.max_packet_size.0)
            .with_key(key),
        state,
        outbox,
        reports: rx,
        identity: identity_rx,
        shutdown: shutdown_rx,
        ready: Some(ready_tx),
        progress: progress.clone(),
        beat_interval,
        grid,
        prober,
        resend: resend::Resend::new(cfg.buffer.resend_window.0, resend::MAX_BYTES),
    };
    let publisher = tokio::spawn(publisher.run());
    let _ = ready_rx.await;
    // systemd (Type=notify): ready once the first connection attempt is over, either way.
    notify.ready();
    if let Some(every) = leakmon_common::notify::watchdog_every() {
        tokio::spawn(cli::watchdog(notify.clone(), every, interval, progress));
    }

    let watcher = engine
        .clone()
        .map(|e| tokio::spawn(collect::event_watcher(e, tx.clone(), stale.clone())));
    let collectors = engine.map(|e| {
        collect::containers::ContainerCollector::new(
            e,
            cfg.docker.stats_concurrency,
            cfg.docker.read_cgroups.then(|| {
                collect::cgroup::CgroupReader::new(&cfg.host.sys_root, &cfg.host.proc_root)
            }),
            stale,
        )
    });
    let mut tasks = vec![tokio::spawn(collect::host_sampler(
        grid,
        interval,
        host,
        tx.clone(),
    ))];
    if let Some(w) = watcher {
        tasks.push(w);
    }
    if let Some(c) = collectors {
        tasks.push(tokio::spawn(collect::container_sampler(
            grid,
            interval,
            c,
            tx,
            identity_tx,
            base,
        )));
    }

    cli::wait_for_signal().await.context("signal handlers")?;
    tracing::info!("shutting down: delivering what is queued and saying goodbye");
    notify.stopping();
    for t in &tasks {
        t.abort();
    }
    let _ = shutdown_tx.send(true);
    publisher.await.context("publisher task")?;
    tracing::info!("stopped");
    Ok(())
}
