//! The collectors and the tasks that drive them: the sampling tick and the engine events.

pub mod cadence;
pub mod cgroup;
pub mod containers;
pub mod host;
pub mod kernel_net;
pub mod kfile;

use std::time::Duration;

use bollard::Docker;
use futures_util::StreamExt;
use leakmon_protocol::{Identity, SwarmRole};
use tokio::sync::{mpsc, watch};

use crate::events;
use crate::publish::{now_ms, Report};
use containers::{ContainerCollector, Engine, Invalidations};
use host::HostCollector;

/// How often the engine's identity (Swarm membership, version) is re-read.
const IDENTITY_EVERY: Duration = Duration::from_secs(60);

/// Fills in what the engine knows about this node; clears it when the engine is away.
pub async fn engine_identity(docker: &Docker, base: &Identity) -> Identity {
    let mut id = base.clone();
    match docker.info().await {
        Ok(info) => {
            id.engine_version = info.server_version;
            id.engine_name = info.name.filter(|n| !n.is_empty());
            if let Some(sw) = info.swarm {
                id.swarm_node_id = sw.node_id.filter(|s| !s.is_empty());
                id.swarm_role = id.swarm_node_id.as_ref().map(|_| {
                    if sw.control_available == Some(true) {
                        SwarmRole::Manager
                    } else {
                        SwarmRole::Worker
                    }
                });
            }
        }
        Err(e) => tracing::debug!(error = %e, "engine info unavailable"),
    }
    id
}

/// Samples the host every `interval`. It runs apart from container sampling, so a slow
/// engine never delays host reports.
pub async fn host_sampler(
    grid: tokio::time::Instant,
    interval: Duration,
    mut host: HostCollector,
    tx: mpsc::Sender<Report>,
) {
    let mut tick = cadence::ticker(grid, interval);
    loop {
        tick.tick().await;
        let report = Box::new(host.sample(now_ms()));
        if tx.send(Report::Host(report)).await.is_err() {
            return;
        }
    }
}

/// Samples the containers every `interval` (or as fast as the engine answers, if slower: a
/// one-shot stats request waits for the engine's next 1 s collection tick), and keeps the
/// engine's identity (Swarm membership, version) current for the birth.
pub async fn container_sampler(
    grid: tokio::time::Instant,
    interval: Duration,
    mut collector: ContainerCollector,
    tx: mpsc::Sender<Report>,
    identity: watch::Sender<Identity>,
    base: Identity,
) {
    let mut tick = cadence::ticker(grid, interval);
    let mut engine_ok: Option<bool> = None;
    let mut identity_at = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let ts = now_ms();
        let result = collector.sample(ts).await;
        let ok = result.is_ok();
        if engine_ok != Some(ok) {
            match &result {
                Ok(_) => tracing::info!("Docker engine answers; reporting containers"),
                Err(e) => {
                    tracing::warn!(error = %e, "Docker engine unavailable; host metrics go on")
                }
            }
        }
        let refresh = engine_ok != Some(ok) || identity_at.elapsed() >= IDENTITY_EVERY;
        engine_ok = Some(ok);
        let engine_info = collector.engine_info();
        let report = Report::Containers {
            ts,
            result,
            engine_info,
        };
        if tx.send(report).await.is_err() {
            return;
        }
        if refresh {
            identity_at = tokio::time::Instant::now();
            let id = match collector.engine().client() {
                Ok(client) => engine_identity(&client, &base).await,
                Err(_) => base.clone(),
            };
            identity.send_if_modified(|cur| {
                let changed = *cur != id;
                *cur = id;
                changed
            });
        }
    }
}

/// Forwards engine events as they happen; reconnects to the event stream when it breaks.
pub async fn event_watcher(mut engine: Engine, tx: mpsc::Sender<Report>, stale: Invalidations) {
    loop {
        let docker = match engine.client() {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "engine not reachable for events");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // events before the stream is up, or while it was down, are unknown: list again
        stale.mark_list();
        let mut stream = events::stream(&docker);
        while let Some(item) = stream.next().await {
            match item {
                Ok(m) => {
                    match m.actor.as_ref().and_then(|a| a.id.as_deref()) {
                        Some(id) => stale.mark(id),
                        None => stale.mark_list(),
                    }
                    if let Some(e) = events::from_message(&m, now_ms()) {
                        tracing::debug!(action = %e.action, container = %e.container_name, "engine event");
                        if tx.send(Report::Event(e)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "engine event stream broke");
                    break;
                }
            }
        }
        stale.mark_list();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
