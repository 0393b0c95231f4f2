//! Ingest: what the bus's connection hands every agent message to ([`crate::bus::Handler`]).
//! It checks what arrives ([`decode`]), keeps node state ([`crate::nodes`]), maps messages to
//! points ([`crate::schema`]), hands them to the database writer ([`influx`], with its pure
//! schedule [`writer`] and [`policy`]), feeds the alert engine and announces nodes to Home
//! Assistant. Beats and probe reports come to the failure detector on a connection of their
//! own ([`beats`]).

pub mod beats;
pub mod decode;
pub mod influx;
pub mod policy;
pub mod seen;
pub mod writer;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use leakmon_common::now_ms;
use leakmon_protocol::{Channel, NodeState, Topics};

use crate::bus::{AlertInput, Bus, Handler, Message};
use crate::clocks::Clocks;
use crate::keyring::Keyring;
use crate::liveness::Transition;
use crate::metrics::Metrics;
use crate::nodes::Nodes;
use crate::schema::{self, Point};
use decode::{decode_message, decode_sealed, Incoming};

/// The time a status point is written at. A Will carries the time its connection was opened
/// (it is fixed at CONNECT), earlier than the birth it follows: written at that time, a
/// dead node's last state would read `online`. A Will is written when it arrives.
fn status_time(s: &leakmon_protocol::Status, received_ms: i64) -> i64 {
    if s.reason == Some(leakmon_protocol::OfflineReason::Lost) {
        received_ms.max(s.ts)
    } else {
        s.ts
    }
}

/// What one message gives the database: the agent's own data (host and containers reports:
/// written by the gateway that took the message, in a shared group each gateway its share),
/// and what every gateway sees (statuses, events, the state changes it derives): written by
/// the active gateway alone, so once.
#[derive(Debug, Default)]
struct Points {
    /// Lines, ready to write.
    data: String,
    seen_by_all: Vec<Point>,
    /// A status that decoded, of a node the gateway tracks: (its node, whether online), for
    /// the Home Assistant announcements.
    status: Option<(String, bool)>,
}

impl Points {
    fn seen_by_all(p: Vec<Point>) -> Points {
        Points {
            seen_by_all: p,
            ..Points::default()
        }
    }
}

/// What ingest needs.
pub struct Ingest {
    pub bus: Bus,
    /// Home Assistant discovery prefix, when discovery is on.
    pub homeassistant: Option<String>,
    pub topics: Topics,
    /// MQTT v5-style shared subscription group for the data topics (`$share/<group>/...`).
    pub shared_group: Option<String>,
    pub nodes: Arc<Mutex<Nodes>>,
    pub metrics: Arc<Metrics>,
    /// Each agent's clock ([`crate::clocks`]), learnt from the beats on the detector's
    /// connection (given with the detector: `new`'s `detector_clocks`); samples stamped far
    /// from true time are written at true time.
    pub clocks: Arc<Mutex<Clocks>>,
    /// The failure detector runs, fed beats and probe reports on a connection of its own
    /// ([`beats`], which then counts the beats); this one takes beats only in a shared
    /// group, as signs of life.
    pub detector: bool,
    /// Nodes whose Home Assistant discovery went out on this connection.
    announced: BTreeSet<String>,
    /// Data messages handled, by node and `(run, seq)`: copies are dropped. Only while
    /// active (`seen_active`): emptied when the role changes.
    seen: seen::Seen,
    seen_active: bool,
    /// Until the beat connection has heard every agent's clock once after the gateway started
    /// ([`beats::CLOCK_WARM`]): the first message waits for it (at most
    /// [`CLOCK_WAIT_MAX`]), so that what the broker queued while this gateway was away is
    /// placed at true time too. `None` once warm, or without a detector.
    clocks_warm: Option<tokio::sync::watch::Receiver<bool>>,
    /// Where enrolment requests go (the active gateway's, with a fleet key and a Swarm).
    enroll: Option<tokio::sync::mpsc::Sender<leakmon_protocol::enroll::EnrollRequest>>,
    /// The nodes' keys: a message counts only when its node sealed it ([`decode_sealed`]).
    /// `None`: `auth.insecure`.
    keys: Option<Keyring>,
    /// Which container labels become tags (`influxdb.docker_label_include`, `_exclude`).
    labels: schema::Labels,
}

/// The longest the first message after a start waits for the agents' clocks.
const CLOCK_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(4);

/// Points of a sample placed at true time carry how far off its agent's stamp was, so a
/// dashboard (and an operator) can tell corrected samples from others.
fn with_offset(mut points: Vec<Point>, offset_ms: Option<i64>) -> Vec<Point> {
    if let Some(o) = offset_ms {
        for p in &mut points {
            p.fields
                .push(("clock_offset_ms".into(), schema::line::Value::Int(o)));
        }
    }
    points
}

/// Logs the first rejections of each kind per node, then every 100th.
fn log_reject(count: u64, r: &decode::Reject) {
    if count <= 3 || count % 100 == 0 {
        tracing::warn!(node = r.node.as_deref().unwrap_or("?"), reason = r.reason, count,
            detail = %r.detail, "dropped an agent payload");
    }
}

impl Ingest {
    pub fn new(
        bus: Bus,
        topics: Topics,
        homeassistant: Option<String>,
        shared_group: Option<String>,
        nodes: Arc<Mutex<Nodes>>,
        metrics: Arc<Metrics>,
        detector_clocks: Option<(Arc<Mutex<Clocks>>, tokio::sync::watch::Receiver<bool>)>,
    ) -> Self {
        let (detector_clocks, clocks_warm) = match detector_clocks {
            Some((c, w)) => (Some(c), Some(w)),
            None => (None, None),
        };
        Ingest {
            bus,
            homeassistant,
            topics,
            shared_group,
            nodes,
            metrics,
            detector: detector_clocks.is_some(),
            clocks: detector_clocks.unwrap_or_default(),
            announced: BTreeSet::new(),
            seen: seen::Seen::default(),
            seen_active: false,
            clocks_warm,
            keys: None,
            enroll: None,
            labels: schema::Labels::new(vec!["*".into()], Vec::new()),
        }
    }

    /// Enrolment requests are handed to `tx` (while active).
    pub fn with_enroll(
        mut self,
        tx: tokio::sync::mpsc::Sender<leakmon_protocol::enroll::EnrollRequest>,
    ) -> Self {
        self.enroll = Some(tx);
        self
    }

    /// An enrolment request for `node`: decoded (bounded) and handed on, only by the active
    /// gateway (one answer). It carries no seal: the Swarm certificate in it is the proof.
    fn enroll_request(&self, node: &str, payload: &[u8], active: bool) {
        let Some(tx) = self.enroll.as_ref().filter(|_| active) else {
            return;
        };
        let request = (payload.len() <= leakmon_protocol::enroll::MAX_ENROLL_BYTES)
            .then(|| {
                serde_json::from_slice::<leakmon_protocol::enroll::EnrollRequest>(payload).ok()
            })
            .flatten()
            .filter(|r| r.node == node);
        match request {
            Some(r) => {
                if tx.try_send(r).is_err() {
                    tracing::warn!(%node, "enrolment busy: request dropped (the agent asks again)");
                }
            }
            None => {
                let n = self.metrics.rejected(node, "malformed");
                if n.is_power_of_two() {
                    tracing::warn!(%node, count = n, "malformed enrolment request ignored");
                }
            }
        }
    }

    /// Writes only these container labels as tags.
    pub fn with_labels(mut self, labels: schema::Labels) -> Self {
        self.labels = labels;
        self
    }

    /// Believes only what each node sealed with its key (`None`: `auth.insecure`).
    pub fn with_keys(mut self, keys: Option<Keyring>) -> Self {
        self.keys = keys;
        self
    }

    /// Home Assistant discovery for these nodes (retained), when on and active.
    fn discover(&self, nodes: &[String]) {
        let Some(prefix) = &self.homeassistant else {
            return;
        };
        if !self.bus.active() {
            return;
        }
        let views = self.nodes.lock().map(|n| n.list()).unwrap_or_default();
        for node in nodes {
            let view = views.iter().find(|v| &v.node == node);
            let device = crate::homeassistant::Device {
                node,
                agent_version: view.and_then(|v| v.agent_version.as_deref()),
                interval_ms: view.and_then(|v| v.interval_ms),
            };
            let msgs = crate::homeassistant::configs(&self.topics, prefix, &device);
            self.publish_retained(node, msgs, "discovery");
        }
    }

    /// Removes a forgotten node's Home Assistant entities, when on and active.
    fn undiscover(&self, node: &str) {
        let Some(prefix) = &self.homeassistant else {
            return;
        };
        if self.bus.active() {
            let msgs = crate::homeassistant::removals(prefix, node);
            self.publish_retained(node, msgs, "removal");
        }
    }

    fn publish_retained(&self, node: &str, msgs: Vec<(String, Vec<u8>)>, what: &str) {
        for (topic, payload) in msgs {
            let m = Message {
                topic,
                payload,
                retain: true,
            };
            if !self.bus.publish(m) {
                tracing::warn!(node = %node, what, "MQTT outbox full: a Home Assistant message not published");
            }
        }
    }

    fn known_nodes(&self) -> Vec<String> {
        self.nodes
            .lock()
            .map(|n| n.list().into_iter().map(|v| v.node).collect())
            .unwrap_or_default()
    }

    /// Hands points to the database writer. Only a connection made as the active gateway
    /// writes, and it writes everything it received (and acknowledged), also after the role
    /// has moved on: those messages are not delivered to anyone else. In a shared group every
    /// gateway writes the data of the messages it took (no other gateway gets them), and the
    /// active one alone what all of them see.
    /// `seq`: the number of the message they came from ([`crate::acks`]). Whether lines went
    /// to the writer.
    async fn emit(&self, points: Points, active: bool, seq: u64) -> bool {
        if !self.bus.has_database() {
            return false;
        }
        let mut s = if active || self.shared_group.is_some() {
            points.data
        } else {
            String::new()
        };
        if active {
            for p in &points.seen_by_all {
                p.write_line(&mut s);
            }
        }
        if s.is_empty() {
            return false;
        }
        if !self.bus.write(s, seq).await {
            // (with acknowledgements waiting for durability, such a message is never
            // acknowledged: the broker keeps it)
            tracing::warn!("database writer stopped; points dropped");
        }
        true
    }

    fn alert(&self, i: AlertInput) {
        if !self.bus.alert(i) {
            tracing::debug!("alert engine busy: a report was not evaluated");
        }
    }

    /// An agent going offline (its Will or silence; not a goodbye) or coming back.
    fn liveness_alert(&self, node: &str, to: crate::liveness::State) {
        use crate::liveness::State;
        use leakmon_protocol::OfflineReason;
        let i = match to {
            State::Online => AlertInput::Agent(node.to_owned(), true, ""),
            State::Offline(OfflineReason::Lost) => {
                AlertInput::Agent(node.to_owned(), false, "its Last Will")
            }
            State::Stale => AlertInput::Agent(node.to_owned(), false, "silent"),
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

    /// Places a sample of `node` at true time when its agent's clock is off
    /// ([`crate::clocks`]): `header.ts` set to it, and the offset returned for the points to
    /// carry. With `alert`, also opens or resolves the node's `clock_skew` alert.
    fn clock(&self, node: &str, header: &mut leakmon_protocol::Header, alert: bool) -> Option<i64> {
        let Ok(mut c) = self.clocks.lock() else {
            return None;
        };
        if alert {
            if let Some(change) = c.alert_change(node) {
                tracing::warn!(node = %node, skew_ms = ?change, "agent clock");
                self.alert(AlertInput::Clock(node.to_owned(), change));
            }
        }
        let fix = c.correct(node, header.run, header.ts, header.mono)?;
        self.metrics.clock_corrected();
        header.ts = fix.ts;
        Some(fix.offset_ms)
    }

    /// Whether `payload` is a sample stamped [`crate::clocks::SKEW_BOUND_MS`] or more from now.
    fn stamped_far_off(&self, topic: &str, payload: &[u8]) -> bool {
        let now = now_ms();
        decode_message(&self.topics, topic, payload, now)
            .ok()
            .and_then(|(_, m)| m.header().map(|h| h.ts))
            .is_some_and(|ts| (ts - now).abs() >= crate::clocks::SKEW_BOUND_MS)
    }

    /// Handles one MQTT publish; returns the points to write.
    fn handle(&mut self, topic: &str, payload: &[u8]) -> Points {
        let ms = now_ms();
        let now = Instant::now();
        let (node, msg) = match decode_sealed(&self.topics, self.keys.as_mut(), topic, payload, ms)
        {
            Ok(v) => v,
            Err(r) => {
                let n = self
                    .metrics
                    .rejected(r.node.as_deref().unwrap_or("?"), r.reason);
                log_reject(n, &r);
                return Points::default();
            }
        };
        // Beats and probe reports are for the failure detector, which has a connection of
        // its own (beats.rs). They make no points; in a shared group a beat is liveness data.
        match &msg {
            Incoming::Beat(_) => {
                if !self.detector {
                    self.metrics.beat();
                }
                if self.shared_group.is_none() {
                    return Points::default();
                }
                // In a shared group this gateway gets a share of the node's reports only: its
                // beats (every gateway gets them all) tell that it is alive.
                let Ok(mut nodes) = self.nodes.lock() else {
                    return Points::default();
                };
                if !nodes.knows(&node) {
                    return Points::default();
                }
                let t = nodes.on_data(&node, now, ms);
                return Points::seen_by_all(self.transition_points(
                    &nodes,
                    t.into_iter().collect(),
                    ms,
                ));
            }
            Incoming::Probe(_) => return Points::default(),
            Incoming::Cleared => {
                // Nobody can seal an empty message: with keys, a clear is believed only of a
                // node that is not online (a host gone for good), never of one that speaks.
                let online = self.nodes.lock().map(|n| n.online(&node)).unwrap_or(false);
                if self.keys.is_some() && online {
                    let r = decode::Reject {
                        node: Some(node.clone()),
                        reason: "unauthenticated",
                        detail: "an empty retained status of a node that is online".into(),
                    };
                    log_reject(self.metrics.rejected(&node, r.reason), &r);
                    return Points::default();
                }
                let known = self
                    .nodes
                    .lock()
                    .map(|mut n| n.forget(&node))
                    .unwrap_or(false);
                if let Ok(mut c) = self.clocks.lock() {
                    c.forget(&node);
                }
                self.seen.forget(&node);
                if known {
                    tracing::info!(node = %node, "retained status cleared: node forgotten");
                    self.metrics.forget(&node);
                    self.alert(AlertInput::Forget(node.clone()));
                }
                // also for a node this gateway never knew (it started after the node left):
                // its entities may still be in Home Assistant
                self.undiscover(&node);
                return Points::default();
            }
            _ => {}
        }
        let Ok(mut nodes) = self.nodes.lock() else {
            return Points::default();
        };
        if !nodes.knows(&node) && nodes.count() >= crate::nodes::MAX_NODES {
            self.metrics.too_many_nodes();
            tracing::warn!(node = %leakmon_common::cli::printable(&node),
                max = crate::nodes::MAX_NODES,
                "a message from a new node name dropped: the gateway tracks its maximum of nodes");
            return Points::default();
        }
        // A copy of what this gateway handled already (resent after a reconnect): dropped.
        if let Some(h) = msg.header() {
            let first = self.seen.first_time(&node, h.run, h.seq);
            // With a shared subscription each gateway gets a share of every node's seqs: the
            // gaps are the others' messages.
            let missing = self.seen.take_missing();
            if missing > 0 && self.shared_group.is_none() {
                self.metrics.missing(missing);
                tracing::debug!(node = %node, run = h.run, missing,
                    "data messages of this node never arrived (lost at the agent, by the broker or on the way)");
            }
            if !first {
                self.metrics.duplicate();
                tracing::debug!(node = %node, run = h.run, seq = h.seq, "a copy of a message already handled dropped");
                return Points::default();
            }
        }
        self.metrics.message_in(&node, ms);
        match msg {
            Incoming::Status(s) => {
                let status = Some((node.clone(), s.state == NodeState::Online));
                let t = nodes.on_status(&node, &s, now, ms);
                if let Some(t) = &t {
                    self.liveness_alert(&node, t.to);
                }
                let tags = nodes.tags(&node);
                Points {
                    status,
                    ..Points::seen_by_all(
                        t.map(|t| {
                            tracing::info!(node = %node, seq = s.seq, to = t.to.as_str(), "node status");
                            vec![schema::node_point(
                                &tags,
                                status_time(&s, ms),
                                t.to.as_str(),
                                Some(&s),
                            )]
                        })
                        .unwrap_or_default(),
                    )
                }
            }
            Incoming::Host(mut r) => {
                self.metrics.cut(r.bound());
                let t = nodes.on_host(&node, &r, now, ms);
                let fix = self.clock(&node, &mut r.header, true);
                let mut data = schema::Lines::new(fix);
                schema::host_lines(&mut data, &nodes.tags(&node), &r);
                let seen_by_all = self.transition_points(&nodes, t.into_iter().collect(), ms);
                self.alert(AlertInput::Host(node, r));
                Points {
                    data: data.into_string(),
                    seen_by_all,
                    status: None,
                }
            }
            Incoming::Containers(mut r) => {
                self.metrics.cut(r.bound());
                let t = nodes.on_containers(&node, &r, now, ms);
                let fix = self.clock(&node, &mut r.header, false);
                let mut data = schema::Lines::new(fix);
                schema::container_lines(&mut data, &nodes.tags(&node), &r, &self.labels);
                let seen_by_all = self.transition_points(&nodes, t.into_iter().collect(), ms);
                self.alert(AlertInput::Containers(node, Box::new(r)));
                Points {
                    data: data.into_string(),
                    seen_by_all,
                    status: None,
                }
            }
            // Handled above.
            Incoming::Beat(_) | Incoming::Probe(_) | Incoming::Cleared => Points::default(),
            Incoming::Event(mut e) => {
                self.metrics.cut(e.bound());
                let t = nodes.on_data(&node, now, ms);
                let fix = self.clock(&node, &mut e.header, false);
                let mut pts = with_offset(vec![schema::event_point(&nodes.tags(&node), &e)], fix);
                pts.extend(self.transition_points(&nodes, t.into_iter().collect(), ms));
                Points::seen_by_all(pts)
            }
        }
    }
}

impl Handler for Ingest {
    fn subscriptions(&self) -> Vec<String> {
        // Statuses and events to every gateway: each keeps every node's liveness, and the
        // active one notifies and writes them.
        let mut subs = vec![
            self.topics.all_nodes(Channel::Status),
            self.topics.all_nodes(Channel::Events),
        ];
        if self.shared_group.is_some() {
            // A beat is a sign of life (this gateway sees only its share of the reports),
            // and every gateway needs every node's: never a shared subscription.
            subs.push(self.topics.all_nodes(Channel::Beat));
        }
        if let Some(prefix) = &self.homeassistant {
            // Home Assistant announces itself here when it (re)starts.
            subs.push(format!("{prefix}/status"));
        }
        if self.enroll.is_some() {
            subs.push(self.topics.all_enroll_requests());
        }
        for c in [Channel::Host, Channel::Containers] {
            let t = self.topics.all_nodes(c);
            subs.push(match &self.shared_group {
                Some(g) => format!("$share/{g}/{t}"),
                None => t,
            });
        }
        subs
    }

    fn on_connected(&mut self) {
        self.announced.clear();
    }

    async fn on_publish(&mut self, topic: &str, payload: &[u8], active: bool, seq: u64) -> bool {
        if let Some(node) = self.topics.parse_enroll_request(topic) {
            self.enroll_request(node, payload, active);
            return false;
        }
        // Only a sample stamped far from now waits (queued, or from a wrong clock): reading
        // on keeps the broker's queue for this gateway from filling meanwhile.
        if let Some(warm) = &self.clocks_warm {
            if *warm.borrow() {
                self.clocks_warm = None;
            } else if self.stamped_far_off(topic, payload) {
                let mut warm = warm.clone();
                self.clocks_warm = None;
                let waited = tokio::time::timeout(CLOCK_WAIT_MAX, warm.wait_for(|w| *w)).await;
                if waited.is_err() {
                    tracing::info!(
                        "the agents' clocks not all heard yet: samples of an agent with a wrong clock may keep their stamps"
                    );
                }
            }
        }
        if let Some(prefix) = &self.homeassistant {
            if topic == format!("{prefix}/status") {
                if payload == b"online" {
                    self.discover(&self.known_nodes());
                }
                return false;
            }
        }
        if active != self.seen_active {
            // Only what the active gateway handled (and so wrote) is a copy when it comes
            // again: a standby's handling wrote nothing.
            self.seen = seen::Seen::default();
            self.seen_active = active;
        }
        let mut pts = self.handle(topic, payload);
        let status = pts.status.take();
        let wrote = self.emit(pts, active, seq).await;
        if payload.is_empty() {
            if let Ok((node, Channel::Status)) = self.topics.parse(topic) {
                self.announced.remove(node);
            }
        }
        // Only a status that decoded, of a node the gateway tracks (at most `MAX_NODES`), is
        // announced: a flood of made-up names with garbage that merely contains "online"
        // once made a Home Assistant device (retained) for each, without bound.
        match status {
            // the agent's next birth may bring another version or interval: announce it again
            Some((node, false)) => {
                self.announced.remove(&node);
            }
            Some((node, true)) if !self.announced.contains(&node) => {
                self.discover(std::slice::from_ref(&node));
                self.announced.insert(node);
            }
            _ => {}
        }
        wrote
    }

    async fn on_tick(&mut self, active: bool) {
        let pts = match self.nodes.lock() {
            Ok(mut n) => {
                let t = n.tick(Instant::now());
                self.transition_points(&n, t, now_ms())
            }
            Err(_) => Vec::new(),
        };
        self.emit(Points::seen_by_all(pts), active, 0).await;
    }
}

#[cfg(test)]
mod tests {
    use super::status_time;
    use leakmon_protocol::{NodeState, OfflineReason, Status};

    fn status(state: NodeState, reason: Option<OfflineReason>, ts: i64) -> Status {
        Status {
            v: 1,
            node: "n".into(),
            state,
            seq: 1,
            reason,
            ts,
            identity: None,
        }
    }

    #[test]
    fn a_will_is_written_when_it_arrives_not_when_its_connection_opened() {
        let will = status(NodeState::Offline, Some(OfflineReason::Lost), 1_000);
        assert_eq!(status_time(&will, 9_000), 9_000);
        let bye = status(NodeState::Offline, Some(OfflineReason::Shutdown), 8_000);
        assert_eq!(status_time(&bye, 9_000), 8_000);
        let birth = status(NodeState::Online, None, 5_000);
        assert_eq!(status_time(&birth, 9_000), 5_000);
    }
}
