//! `leakmon-gateway`: ingests every agent's MQTT data into InfluxDB, keeps node liveness, and
//! serves its state over HTTP.
//!
//! Module map, in layers (each imports only from below; `layering.rs` checks it):
//! - leaves: `config` (keys and checks), `metrics` (counters), `liveness` (online, suspect,
//!   stale; pure), `schema` (points and line protocol; pure), `homeassistant` (discovery);
//! - `nodes`: the per-node view (pure);
//! - `bus`: the one MQTT session and the channels the tasks send through;
//! - the tasks: `ingest` (the bus's handler: decode, points, the InfluxDB writer), `control`
//!   (leadership, decisions, Swarm changes), `alerts` (rules and hooks), `broker` (embedded),
//!   `http` (endpoints);
//! - the client subcommands `status` and `events`.

mod acks;
mod alerts;
mod broker;
mod bus;
mod clocks;
mod config;
mod control;
mod detector;
mod enroll;
mod events;
mod homeassistant;
mod http;
mod ingest;
mod keyring;
mod keys;
#[cfg(test)]
mod layering;
mod liveness;
mod metrics;
mod nodes;
mod outbox;
mod schema;
mod scrub;
mod status;
mod wire;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use leakmon_protocol::Topics;
use tokio::sync::{mpsc, watch};

use config::{Checked, Config};

use leakmon_common::cli;

const NAME: &str = "leakmon-gateway";
const USAGE: &str = "\
leakmon-gateway: agents' MQTT data into InfluxDB, node liveness, HTTP API

Usage: leakmon-gateway [--config PATH] [--check-config | --print-config | --version]
       leakmon-gateway status [--config PATH | --url URL] [--watch [SECONDS]] [--json]
       leakmon-gateway events [--config PATH] [--url MQTT_URL] [--json]
       leakmon-gateway keys new [--out FILE] | keys node NAME [--config PATH]

  --config PATH    config file (default /etc/leakmon/gateway.toml; optional at that path)
  --check-config   validate the config and exit (0 valid, 2 invalid)
  --print-config   print the effective config (file + environment) and exit
  --version        print the version and exit
  --help           print this help and exit (`status --help` and the others: theirs)

Every key can be set by environment: influxdb.url -> LEAKMON_GATEWAY__INFLUXDB__URL.
Log level: LEAKMON_LOG (e.g. debug, info, warn; default info).";

fn main() -> ExitCode {
    // OsString, not String: a non-UTF-8 argument is the parser's error to report, not a panic.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    // A subcommand is the first word; everything after it is the subcommand's.
    let rest = || argv.iter().skip(1).cloned().collect::<Vec<_>>();
    match argv.first().and_then(|a| a.to_str()) {
        Some("events") => {
            return subcommand(events::parse, rest(), |a| async { events::run(a).await })
        }
        Some("keys") => {
            return match keys::parse(rest()) {
                Ok(a) => match keys::run(a) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("leakmon-gateway keys: {e}");
                        ExitCode::from(2)
                    }
                },
                Err(stop) => ExitCode::from(stop.finish()),
            };
        }
        Some("status") => {
            // where to ask is settled first: a config that cannot tell is exit 2, like any
            // configuration error
            let a = match status::parse(rest()) {
                Ok(a) => a,
                Err(stop) => return ExitCode::from(stop.finish()),
            };
            let a = match status::resolve(a) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("leakmon-gateway status: {e}");
                    return ExitCode::from(2);
                }
            };
            return subcommand(
                move |_| Ok(a),
                Vec::new(),
                |a| async {
                    match status::run(a).await {
                        0 => Ok(()),
                        _ => Err("the gateway's HTTP API did not answer".to_owned()),
                    }
                },
            );
        }
        _ => {}
    }
    let stage = cli::Stage {
        name: NAME,
        usage: USAGE,
        default_path: config::DEFAULT_PATH,
        env_prefix: config::ENV_PREFIX,
        load: &|path, required| Config::load(path, required)?.check(&cli::hostname()),
        print: &|c: &Checked| leakmon_common::config::to_toml(&c.cfg.redacted()),
        ok: &|c: &Checked| format!("configuration OK (gateway {})", c.name),
        switches: &[],
    };
    let checked = match cli::configure(&stage, argv) {
        Ok((c, _)) => c,
        Err(code) => return ExitCode::from(code),
    };
    cli::init_logging(NAME);
    cli::run_async(NAME, None, run(checked))
}

/// A client subcommand (`status`, `events`): its own arguments (`--help` answered with exit 0,
/// a wrong one exits 2), then its future on the runtime, with TLS ready.
fn subcommand<A, F>(
    parse: impl FnOnce(Vec<std::ffi::OsString>) -> Result<A, leakmon_common::args::Stop>,
    args: Vec<std::ffi::OsString>,
    run: impl FnOnce(A) -> F,
) -> ExitCode
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let a = match parse(args) {
        Ok(a) => a,
        Err(stop) => return ExitCode::from(stop.finish()),
    };
    cli::run_async(NAME, None, async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        run(a).await
    })
}

async fn run(c: Checked) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Checked {
        cfg,
        name,
        mqtt,
        http,
        offline_after,
        fleet_keys,
    } = c;
    let fleet_list: Vec<_> = fleet_keys
        .iter()
        .flat_map(|(current, previous)| std::iter::once(current.clone()).chain(previous.clone()))
        .collect();
    let keys = fleet_keys.map(|(current, previous)| keyring::Keyring::new(current, previous));
    if keys.is_none() {
        tracing::error!(
            "auth.insecure = true: unsealed messages are believed, so any client that can \
             publish on the broker can speak for any node, report it dead or alive, and move \
             its work; /healthz says so too"
        );
    }
    // Only a plain listener can be embedded; a TLS url always means a real broker.
    // With several brokers listed, a real cluster is meant: `auto` never takes the first's
    // port for an embedded broker the others would not know.
    let several = mqtt.endpoints.len() > 1;
    if several && cfg.broker.embedded == config::Embedded::Auto {
        tracing::info!("several brokers in mqtt.url: no embedded broker (broker.embedded = auto)");
    } else if !mqtt.primary().tls {
        let ep = mqtt.primary();
        let guard = keys.as_ref().map(|_| broker::Guard {
            fleet: fleet_list.clone(),
            own: [cfg.mqtt.client_id.clone(), cfg.leader.session_id.clone()]
                .into_iter()
                .flatten()
                .collect(),
            topics: cfg.mqtt.topic_prefix.clone(),
            discovery: cfg.homeassistant.discovery_prefix.clone(),
        });
        broker::maybe_start(cfg.broker.embedded, &ep.host, ep.port, guard)
            .context("broker.embedded")?;
    }
    let metrics = Arc::new(metrics::Metrics::default());
    let nodes = Arc::new(Mutex::new(nodes::Nodes::new(liveness::Liveness::new(
        offline_after,
    ))));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let lines = if cfg.influxdb.url.is_empty() {
        tracing::info!("no influxdb.url: metrics are kept in memory for the HTTP API only");
        None
    } else {
        let i = &cfg.influxdb;
        let spool = match &i.spool_dir {
            Some(dir) => Some(
                leakmon_common::spool::Spool::open(dir, i.spool_max_bytes.0)
                    .with_context(|| format!("cannot open the spool in {}", dir.display()))?,
            ),
            None => None,
        };
        let buffer = leakmon_common::buffer::Buffer::new(
            usize::try_from(i.max_buffer_bytes.0).unwrap_or(usize::MAX),
            spool,
        );
        let (tx, rx) = mpsc::channel(1024);
        // With a spool, messages are acknowledged once durable (acks.rs).
        let (durable, durable_writer) = match i.spool_dir {
            Some(_) => {
                let (d, w) = acks::link();
                (Some(d), Some(w))
            }
            None => (None, None),
        };
        let writer = ingest::influx::run(
            ingest::influx::Target::new(i),
            ingest::influx::WriterConfig {
                batch_size: i.batch_size,
                flush_interval: i.flush_interval.0,
                timeout: i.timeout.0,
                max_retry_delay: i.max_retry_delay.0,
                concurrency: i.concurrency,
            },
            buffer,
            rx,
            metrics.clone(),
            durable_writer,
        );
        tasks.push(tokio::spawn(writer));
        Some((tx, durable))
    };
    let (lines, durable) = match lines {
        Some((tx, d)) => (Some(tx), d),
        None => (None, None),
    };

    if let Some(addr) = http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("http.listen: cannot listen on {addr}"))?;
        tracing::info!(%addr, "HTTP API on http://{addr}/api/v1/nodes");
        tokio::spawn(http::serve(
            listener,
            http::AppState {
                nodes: nodes.clone(),
                metrics: metrics.clone(),
                insecure: keys.is_none(),
            },
            shutdown_rx.clone(),
        ));
    }

    tracing::info!(gateway = %name, broker = %cfg.mqtt.url, influxdb = %cfg.influxdb.url, "leakmon-gateway starting");
    let topics = Topics::new(&cfg.mqtt.topic_prefix)?;
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (alerts_tx, alerts_rx) = if cfg.alerts.enabled {
        let (tx, rx) = mpsc::channel(1024);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let bus::Wiring {
        bus,
        connection,
        session,
    } = bus::wire(bus::Parts {
        connector: mqtt.clone(),
        session: control::session_for(&cfg, &control::leader::Role::standby("starting")),
        lines,
        durable,
        alerts: alerts_tx,
        progress: progress.clone(),
        shutdown: shutdown_rx.clone(),
        metrics: metrics.clone(),
        state_dir: cfg.state_dir.clone(),
    });
    // The failure detector runs beside a Swarm (it probes Swarm's nodes) when rescheduling is on.
    let detector = (cfg.liveness.detector && cfg.reschedule.enabled).then(|| {
        let seed = leakmon_common::backoff::Jitter::from_entropy().next_u64();
        let d = detector::Detector::new(detector::Params::default(), seed);
        // What its parameters promise, for the operator (docs/operations.md explains it).
        let p = detector::promise(d.params(), 0.3, std::time::Duration::from_millis(20));
        tracing::info!(
            dead_within_ms = p.detection_time_max.map_or(0, |t| t.as_millis() as u64),
            false_dead_per_hour_at_30pct_loss = p.p_false_dead_per_hour,
            "failure detector on: beats, then probes from several vantage points"
        );
        Arc::new(Mutex::new(d))
    });
    let control = control::Control {
        name: name.clone(),
        hostname: cli::hostname(),
        cfg: cfg.clone(),
        topics: topics.clone(),
        nodes: nodes.clone(),
        metrics: metrics.clone(),
        bus: bus.clone(),
        session,
        detector: detector.clone(),
        keys: keys.clone(),
    }
    .start(shutdown_rx.clone())
    .await;
    tasks.push(tokio::spawn(control));
    if let Some(rx) = alerts_rx {
        let a = &cfg.alerts;
        let engine = alerts::rules::Engine::new(
            a.rules(),
            (!a.repeat_after.0.is_zero()).then_some(a.repeat_after.0),
            &a.events,
        );
        let hooks = alerts::hooks::Hooks::start(
            topics.alerts(),
            bus.clone(),
            &a.webhook,
            &a.exec,
            cfg.state_dir.as_deref(),
            &a.alertmanager,
            &name,
        );
        let task = alerts::Alerts {
            engine,
            hooks,
            gateway: name.clone(),
            bus: bus.clone(),
        };
        // awaited at shutdown: it saves the webhook queues last
        tasks.push(tokio::spawn(task.run(rx, shutdown_rx.clone())));
    }
    // Each agent's clock: written by the beat connection, read by ingest (one short lock per
    // beat and per report).
    let clocks = Arc::new(Mutex::new(clocks::Clocks::new()));
    let (warm, warm_rx) = tokio::sync::watch::channel(false);
    // Enrolment: with the fleet key and a Swarm engine, agents get their keys by proving
    // their Swarm node (control::enroll). The enroller's bus handle is made only when it runs:
    // a bus handle holds the writer's sender, and the writer ends (spooling what it holds) only
    // once every handle is gone.
    let engine = (cfg.leader.mode != config::LeaderMode::Standalone)
        .then(|| leakmon_common::docker::connect(&cfg.docker.host, cfg.docker.timeout.0).ok())
        .flatten();
    let enroll = match (fleet_list.first(), engine) {
        (Some(fleet), Some(docker)) => {
            let (tx, rx) = tokio::sync::mpsc::channel(control::enroll::QUEUE);
            let enroller = control::enroll::Enroller {
                docker,
                fleet: fleet.clone(),
                bus: bus.clone(),
                topics: topics.clone(),
                metrics: metrics.clone(),
            };
            tokio::spawn(enroller.run(rx, shutdown_rx.clone()));
            Some(tx)
        }
        _ => None,
    };
    let mut ingest = ingest::Ingest::new(
        bus,
        topics.clone(),
        cfg.homeassistant
            .enabled
            .then(|| cfg.homeassistant.discovery_prefix.clone()),
        cfg.mqtt.shared_group.clone(),
        nodes,
        metrics.clone(),
        detector.is_some().then(|| (clocks.clone(), warm_rx)),
    )
    .with_keys(keys.clone())
    .with_labels(schema::Labels::new(
        cfg.influxdb.docker_label_include.clone(),
        cfg.influxdb.docker_label_exclude.clone(),
    ));
    if let Some(tx) = enroll {
        ingest = ingest.with_enroll(tx);
    }
    let ingest = tokio::spawn(connection.run(ingest));
    if let Some(detector) = detector {
        let beats = ingest::beats::Beats {
            connector: mqtt,
            client_id: ingest::beats::client_id(&control::own_client_id(&cfg)),
            topics: topics.clone(),
            detector,
            clocks,
            warm,
            metrics,
            keys,
        };
        tokio::spawn(beats.run(shutdown_rx.clone()));
    }
    // systemd (Type=notify): ready once the role is known and ingest runs.
    let notify = Arc::new(leakmon_common::notify::Notify::from_env());
    notify.ready();
    if let Some(every) = leakmon_common::notify::watchdog_every() {
        tokio::spawn(cli::watchdog(
            notify.clone(),
            every,
            std::time::Duration::from_secs(1),
            progress,
        ));
    }

    cli::wait_for_signal().await.context("signal handlers")?;
    tracing::info!("shutting down");
    notify.stopping();
    let _ = shutdown_tx.send(true);
    // Ingest ends first, dropping its sender; the writer then spools what it holds and ends.
    let _ = ingest.await;
    for t in tasks {
        let _ = t.await;
    }
    tracing::info!("stopped");
    Ok(())
}
