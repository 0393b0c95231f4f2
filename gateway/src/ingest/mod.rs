//! Ingest: the MQTT shell that subscribes to every agent, checks what arrives ([`decode`]),
//! keeps node state ([`crate::nodes`]), maps messages to points ([`schema`], [`line`]) and hands
//! them to the database writer ([`influx`], with [`buffer`] and [`policy`]).

pub mod buffer;
pub mod decode;
pub mod influx;
pub mod line;
pub mod policy;
pub mod schema;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leakmon_common::backoff::{Backoff, Jitter};
use leakmon_common::mqtt::Connector;
use leakmon_protocol::{Channel, Topics};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::sync::{mpsc, watch};

use crate::control::{Outgoing, Session};
use crate::liveness::Transition;
use crate::metrics::Metrics;
use crate::nodes::Nodes;
use decode::{decode_message, Incoming};
use line::Point;

/// Largest MQTT packet the gateway reads (or `mqtt.max_packet_size`, if larger). Brokers
/// should be set to refuse larger ones (mosquitto: `max_packet_size`).
pub const MAX_INCOMING_PACKET: usize = 16 << 20;

pub use leakmon_common::now_ms;

/// What the ingest shell needs.
pub struct Ingest {
    pub connector: Connector,
    /// Client id, session kind and whether to write: follows the gateway's role.
    pub session: watch::Receiver<Session>,
    /// Events and status the control loop publishes.
    pub outgoing: mpsc::Receiver<Outgoing>,
    /// Whether the broker connection is up (the control loop acts only while it is).
    pub connected: watch::Sender<bool>,
    /// Agent data and liveness for the alert engine.
    pub alerts: Option<mpsc::Sender<crate::alerts::Input>>,
    /// Home Assistant discovery prefix, when discovery is on.
    pub homeassistant: Option<String>,
    /// Moves every liveness tick: the systemd watchdog is fed only while it does.
    pub progress: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub topics: Topics,
    /// MQTT v5-style shared subscription group for the data topics (`$share/<group>/...`).
    pub shared_group: Option<String>,
    pub nodes: Arc<Mutex<Nodes>>,
    pub metrics: Arc<Metrics>,
    /// Lines for the database; `None` without one.
    pub lines: Option<mpsc::Sender<String>>,
    pub shutdown: watch::Receiver<bool>,
}

/// Logs the first rejections of each kind per node, then every 100th.
fn log_reject(count: u64, r: &decode::Reject) {
    if count <= 3 || count % 100 == 0 {
        tracing::warn!(node = r.node.as_deref().unwrap_or("?"), reason = r.reason, count,
            detail = %r.detail, "dropped an agent payload");
    }
}

impl Ingest {
    /// Home Assistant discovery for these nodes (retained), when on and active.
    fn discover(&self, client: &AsyncClient, nodes: &[String]) {
        let Some(prefix) = &self.homeassistant else {
            return;
        };
        if !self.session.borrow().active {
            return;
        }
        for node in nodes {
            for (topic, payload) in crate::homeassistant::configs(&self.topics, prefix, node) {
                if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, true, payload) {
                    tracing::warn!(node = %node, error = %e, "Home Assistant discovery not published");
                }
            }
        }
    }

    fn known_nodes(&self) -> Vec<String> {
        self.nodes
            .lock()
            .map(|n| n.list().into_iter().map(|v| v.node).collect())
            .unwrap_or_default()
    }

    fn subscriptions(&self) -> Vec<String> {
        let mut subs = vec![self.topics.all_nodes(Channel::Status)];
        if let Some(prefix) = &self.homeassistant {
            // Home Assistant announces itself here when it (re)starts.
            subs.push(format!("{prefix}/status"));
        }
        for c in [Channel::Host, Channel::Containers, Channel::Events] {
            let t = self.topics.all_nodes(c);
            subs.push(match &self.shared_group {
                // Every gateway keeps liveness of every node, so status is never shared.
                Some(g) => format!("$share/{g}/{t}"),
                None => t,
            });
        }
        subs
    }

    /// Hands points to the database writer. Only a connection made as the active gateway
    /// writes, and it writes everything it received (and acknowledged), also after the role
    /// has moved on: those messages are not delivered to anyone else.
    async fn emit(&self, points: Vec<Point>, active: bool) {
        let Some(tx) = &self.lines else { return };
        if !active {
            return;
        }
        let mut s = String::new();
        for p in &points {
            p.write_line(&mut s);
        }
        if !s.is_empty() && tx.send(s).await.is_err() {
            tracing::warn!("database writer stopped; points dropped");
        }
    }

    fn alert(&self, i: crate::alerts::Input) {
        if let Some(a) = &self.alerts {
            if a.try_send(i).is_err() {
                tracing::debug!("alert engine busy: a report was not evaluated");
            }
        }
    }

    /// An agent going offline (its Will or silence; not a goodbye) or coming back.
    fn liveness_alert(&self, node: &str, to: crate::liveness::State) {
        use crate::liveness::State;
        use leakmon_protocol::OfflineReason;
        let i = match to {
            State::Online => crate::alerts::Input::Agent(node.to_owned(), true, ""),
            State::Offline(OfflineReason::Lost) => {
                crate::alerts::Input::Agent(node.to_owned(), false, "its Last Will")
            }
            State::Stale => crate::alerts::Input::Agent(node.to_owned(), false, "silent"),
            State::Offline(OfflineReason::Shutdown) => return,
        };
        self.alert(i);
    }

    fn transition_points(&self, nodes: &Nodes, ts: Vec<Transition>, ts_ms: i64) -> Vec<Point> {
        ts.into_iter()
            .map(|t| {
                self.liveness_alert(&t.node, t.to);
                tracing::info!(node = %t.node, from = t.from.map(|s| s.as_str()).unwrap_or("-"),
                    to = t.to.as_str(), "node state changed");
                schema::node_point(&nodes.tags(&t.node), ts_ms, t.to.as_str(), None)
            })
            .collect()
    }

    /// Handles one MQTT publish; returns the points to write.
    fn handle(&self, topic: &str, payload: &[u8]) -> Vec<Point> {
        let ms = now_ms();
        let now = Instant::now();
        let (node, msg) = match decode_message(&self.topics, topic, payload, ms) {
            Ok(v) => v,
            Err(r) => {
                let n = self
                    .metrics
                    .rejected(r.node.as_deref().unwrap_or("?"), r.reason);
                log_reject(n, &r);
                return Vec::new();
            }
        };
        self.metrics.message_in(&node, ms);
        let Ok(mut nodes) = self.nodes.lock() else {
            return Vec::new();
        };
        match msg {
            Incoming::Status(s) => {
                let t = nodes.on_status(&node, &s, now, ms);
                if let Some(t) = &t {
                    self.liveness_alert(&node, t.to);
                }
                let tags = nodes.tags(&node);
                t.map(|t| {
                    tracing::info!(node = %node, seq = s.seq, to = t.to.as_str(), "node status");
                    vec![schema::node_point(&tags, s.ts, t.to.as_str(), Some(&s))]
                })
                .unwrap_or_default()
            }
            Incoming::Host(r) => {
                let t = nodes.on_host(&node, &r, now, ms);
                self.alert(crate::alerts::Input::Host(
                    node.clone(),
                    Box::new(r.clone()),
                ));
                let mut pts = schema::host_points(&nodes.tags(&node), &r);
                pts.extend(self.transition_points(&nodes, t.into_iter().collect(), ms));
                pts
            }
            Incoming::Containers(r) => {
                let t = nodes.on_containers(&node, &r, now, ms);
                self.alert(crate::alerts::Input::Containers(
                    node.clone(),
                    Box::new(r.clone()),
                ));
                let mut pts = schema::container_points(&nodes.tags(&node), &r);
                pts.extend(self.transition_points(&nodes, t.into_iter().collect(), ms));
                pts
            }
            Incoming::Event(e) => {
                let t = nodes.on_data(&node, now, ms);
                let mut pts = vec![schema::event_point(&nodes.tags(&node), &e)];
                pts.extend(self.transition_points(&nodes, t.into_iter().collect(), ms));
                pts
            }
        }
    }

    /// Sends DISCONNECT (and whatever is queued before it), waiting at most a second; messages
    /// still arriving meanwhile are handled (they are acknowledged already).
    async fn disconnect(&self, client: &AsyncClient, el: &mut rumqttc::EventLoop, active: bool) {
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let pts = self.handle(&p.topic, &p.payload);
                        self.emit(pts, active).await;
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }

    pub async fn run(mut self) {
        let s = self.connector.settings();
        let mut backoff = Backoff::new(s.reconnect_min.0, s.reconnect_max.0);
        let mut jitter = Jitter::from_entropy();
        // Silence is noticed within a quarter second of `liveness.offline_after`.
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            let session = self.session.borrow_and_update().clone();
            // The active gateway uses a persistent session: while it is away (a restart, a
            // hand-over to another gateway) the broker keeps its QoS 1 messages.
            let mut opts = self.connector.options(&session.client_id, None);
            opts.set_clean_session(!session.persistent);
            // Read packets well beyond the payload limit, so an oversized payload is counted
            // and dropped; a packet rumqttc refused would break the connection, and the broker
            // would redeliver it to this persistent session forever.
            let out =
                usize::try_from(self.connector.settings().max_packet_size.0).unwrap_or(usize::MAX);
            opts.set_max_packet_size(out.max(MAX_INCOMING_PACKET), out);
            opts.set_inflight(100);
            let (client, mut el) = AsyncClient::new(opts, 64);
            let mut connected = false;
            // Nodes whose Home Assistant discovery went out on this connection.
            let mut announced = std::collections::HashSet::new();
            let ended = loop {
                tokio::select! {
                    ev = el.poll() => match ev {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            backoff.reset();
                            connected = true;
                            self.connected.send_replace(true);
                            for t in self.subscriptions() {
                                if let Err(e) = client.try_subscribe(t.clone(), QoS::AtLeastOnce) {
                                    tracing::warn!(topic = %t, error = %e, "subscribe failed");
                                }
                            }
                            tracing::info!(broker = %self.connector.settings().url,
                                client_id = %session.client_id, active = session.active,
                                "connected; subscribed to agents");
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            if let Some(prefix) = &self.homeassistant {
                                if p.topic == format!("{prefix}/status") {
                                    if p.payload.as_ref() == b"online" {
                                        self.discover(&client, &self.known_nodes());
                                    }
                                    continue;
                                }
                            }
                            let pts = self.handle(&p.topic, &p.payload);
                            self.emit(pts, session.active).await;
                            if let Ok((node, Channel::Status)) = self.topics.parse(&p.topic) {
                                let node = node.to_owned();
                                if !announced.contains(&node) && p.payload.windows(8).any(|w| w == b"\"online\"") {
                                    self.discover(&client, std::slice::from_ref(&node));
                                    announced.insert(node);
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(e) => break Ended::Lost(e.to_string()),
                    },
                    Some(o) = self.outgoing.recv(), if connected => {
                        if let Err(e) = client.try_publish(o.topic.clone(), QoS::AtLeastOnce, o.retain, o.payload) {
                            tracing::warn!(topic = %o.topic, error = %e, "publish failed");
                        }
                    }
                    changed = self.session.changed() => {
                        if changed.is_err() || *self.session.borrow() != session {
                            break Ended::Switch;
                        }
                    }
                    _ = tick.tick() => {
                        self.progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let pts = match self.nodes.lock() {
                            Ok(mut n) => {
                                let t = n.tick(Instant::now());
                                self.transition_points(&n, t, now_ms())
                            }
                            Err(_) => Vec::new(),
                        };
                        self.emit(pts, session.active).await;
                    }
                    _ = self.shutdown.changed() => break Ended::Shutdown,
                }
            };
            self.connected.send_replace(false);
            match ended {
                Ended::Shutdown => {
                    self.disconnect(&client, &mut el, session.active).await;
                    return;
                }
                Ended::Switch => {
                    tracing::info!(
                        active = self.session.borrow().active,
                        "role changed: reconnecting"
                    );
                    self.disconnect(&client, &mut el, session.active).await;
                }
                Ended::Lost(e) => {
                    let d = backoff.next_delay(jitter.next_u64());
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "MQTT connection lost");
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = self.shutdown.changed() => return,
                    }
                }
            }
        }
    }
}

enum Ended {
    Shutdown,
    /// The role changed: reconnect at once with the new client id.
    Switch,
    Lost(String),
}
