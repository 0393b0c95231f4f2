//! Control: which gateway is active ([`leader`]), what to do about dead nodes and unhealthy
//! tasks ([`decide`], pure), and doing it on the Swarm ([`swarm`]). This module is the thin
//! async shell around them: it polls the local engine, probes nodes, feeds the machine and
//! carries out its actions, publishing every decision as an event.

pub mod confirm;
pub mod decide;
pub mod deputy;
pub mod enroll;
pub mod leader;
pub mod plan;
pub mod swarm;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leakmon_protocol::{
    encode, EventKind, GatewayEvent, GatewayRole, GatewayStatus, ProbeRequest, Topics,
    PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, watch};

use crate::bus::{AlertInput, Bus, Message, Session};
use crate::config::{Config, LeaderMode};
use crate::detector::{self, Detector, Member};
use crate::keyring::Keyring;
use crate::metrics::Metrics;
use crate::nodes::Nodes;
use crate::schema;
use decide::{Action, Decide, Settings};
use leader::Role;
use swarm::{EngineView, Ev, SwarmApi};

/// How often the decision machine runs.
const TICK: Duration = Duration::from_millis(250);
/// How often the active gateway writes `docker_swarm` (Telegraf's default interval).
const SWARM_METRICS_EVERY: Duration = Duration::from_secs(10);
/// How often the failure detector runs: its deadlines (a suspicion, a round's end) are met
/// within this, which adds to the detection time.
const DETECT_TICK: Duration = Duration::from_millis(25);
/// With the failure detector, how long the broker connection must have been up before the
/// gateway acts: long enough for the agents' queued messages to arrive and for one beat
/// interval's worth of suspicion (1 s) to be probed.
const HEARD_WITH_DETECTOR: Duration = Duration::from_secs(2);

/// Everything the control loop needs from the rest of the gateway.
pub struct Control {
    pub name: String,
    pub hostname: String,
    pub cfg: Config,
    pub topics: Topics,
    pub nodes: Arc<Mutex<Nodes>>,
    pub metrics: Arc<Metrics>,
    /// Events go out over MQTT, to the alert engine and to the database.
    pub bus: Bus,
    /// The session the bus's connection uses: set from the role.
    pub session: watch::Sender<Session>,
    /// The failure detector (fed beats and reports by ingest), when it runs.
    pub detector: Option<Arc<Mutex<Detector>>>,
    /// The nodes' keys: a probe request is sealed with its vantage point's (`None`:
    /// `auth.insecure`).
    pub keys: Option<Keyring>,
}

/// The running loop's state.
struct Loop {
    c: Control,
    api: Option<SwarmApi>,
    decide: Option<Decide>,
    role: Role,
    /// `leader.mode`, settled to `swarm` once the engine showed one ([`leader::settle_mode`]).
    mode: LeaderMode,
    self_id: Option<String>,
    probes: mpsc::Sender<(String, bool, Instant)>,
    /// Bursts' answers: (node id, rounds, the most rounds one port answered, sent).
    bursts: mpsc::Sender<(String, u32, u32, Instant)>,
    /// Since when the broker connection has been up.
    mqtt_since: Option<Instant>,
    /// The time of the last event, in ms: see [`event_time`].
    last_event_ms: std::cell::Cell<i64>,
    /// Standing in for a deaf gateway, or standing down when deaf ([`deputy`]).
    deputy: deputy::Deputy,
}

/// An event's time: now, but always after the previous event's. InfluxDB keeps one point per
/// series and time, so three events of one kind and node in the same millisecond (a surge of
/// three services) would otherwise leave one point.
fn event_time(last_ms: i64, now_ms: i64) -> i64 {
    now_ms.max(last_ms.saturating_add(1))
}

impl Control {
    /// Asks the engine once (so the bus connects in the right role), then returns the loop
    /// to run.
    pub async fn start(
        self,
        shutdown: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> {
        let cfg = &self.cfg;
        let socket = leakmon_common::docker::socket_path(&cfg.docker.host);
        let api = if cfg.leader.mode == LeaderMode::Standalone
            || leader::no_engine(cfg.leader.mode, socket)
        {
            tracing::info!(mode = ?cfg.leader.mode, docker = %cfg.docker.host,
                "standalone: always active, no Swarm to act on");
            None
        } else {
            match leakmon_common::docker::connect(&cfg.docker.host, cfg.docker.timeout.0) {
                Ok(d) => Some(SwarmApi::new(d, cfg.reschedule.dry_run)),
                Err(e) => {
                    tracing::warn!(docker = %cfg.docker.host, error = %e, "cannot use the Docker engine: standby");
                    None
                }
            }
        };
        let decide = cfg.reschedule.enabled.then(|| {
            let r = &cfg.reschedule;
            Decide::new(Settings {
                reactivate_after: r.reactivate_after.0,
                unhealthy_after: r.unhealthy_after.0,
                force_update_every: r.force_update_every.0,
                cooldown: r.cooldown.0,
                max_drained: r.max_drained,
                rebalance: r.rebalance,
                grace: cfg.liveness.offline_after.0,
                detector: self.detector.is_some(),
            })
        });
        let standalone = api.is_none()
            && (cfg.leader.mode == LeaderMode::Standalone
                || leader::no_engine(cfg.leader.mode, socket));
        let role = if standalone {
            Role::standalone()
        } else {
            Role::standby("starting")
        };
        let (probes, probe_rx) = mpsc::channel(256);
        let (bursts, burst_rx) = mpsc::channel(64);
        let mode = cfg.leader.mode;
        let name = self.name.clone();
        let mut l = Loop {
            c: self,
            api,
            decide,
            role: Role::standby("starting"),
            mode,
            self_id: None,
            probes,
            bursts,
            mqtt_since: None,
            last_event_ms: std::cell::Cell::new(0),
            deputy: deputy::Deputy::new(&name),
        };
        if standalone {
            l.set_role(role);
        } else {
            l.poll().await;
        }
        l.run(probe_rx, burst_rx, shutdown)
    }
}

pub fn own_client_id(cfg: &Config) -> String {
    cfg.mqtt.client_id.clone().unwrap_or_default()
}

/// The MQTT session a gateway in `role` uses. Without a shared group, the active gateway takes
/// over the one persistent session every active gateway uses (`leader.session_id`: what the
/// broker queued while no gateway was active comes to the next), and a standby listens on a
/// clean session of its own. In a shared group every gateway ingests its share whatever its
/// role, on a persistent session of its own: the broker keeps the share it hands a gateway
/// that is away (mosquitto 2 does, measured) until it comes back; only the control loop,
/// notifications and the gateway's own points follow the role.
pub fn session_for(cfg: &Config, role: &Role) -> Session {
    if cfg.mqtt.shared_group.is_some() {
        return Session {
            active: role.active,
            client_id: own_client_id(cfg),
            persistent: true,
        };
    }
    Session {
        active: role.active,
        client_id: if role.swarm_active() && !role.deputy {
            cfg.leader.session_id.clone().unwrap_or_default()
        } else {
            own_client_id(cfg)
        },
        persistent: role.active && !role.deputy,
    }
}

impl Loop {
    fn emit(&self, e: Ev) {
        let dry_run = self.c.cfg.reschedule.dry_run
            && !matches!(e.kind, EventKind::GatewayActive | EventKind::ActionFailed);
        let ev = GatewayEvent {
            v: PROTOCOL_VERSION,
            kind: e.kind,
            node: e.node,
            ts: {
                let ts = event_time(self.last_event_ms.get(), leakmon_common::now_ms());
                self.last_event_ms.set(ts);
                ts
            },
            gateway: self.c.name.clone(),
            dry_run,
            message: e.message,
            details: e
                .details
                .into_iter()
                .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
                .collect(),
        };
        tracing::info!(
            kind = ev.kind.as_str(),
            node = ev.node.as_deref().unwrap_or("-"),
            dry_run = ev.dry_run,
            "{}",
            ev.message
        );
        self.c.metrics.event();
        let out = Message {
            topic: self.c.topics.gateway_events(),
            payload: encode(&ev),
            retain: false,
        };
        // A decision's event is never refused by the outbox (it makes room instead).
        self.c.bus.publish_decision(out);
        if !self.c.bus.alert(AlertInput::Event(Box::new(ev.clone()))) {
            tracing::warn!(
                kind = ev.kind.as_str(),
                "alert engine busy: event not evaluated"
            );
        }
        if self.c.bus.has_database() {
            let mut s = String::new();
            schema::gateway_event_point(&ev).write_line(&mut s);
            if !self.c.bus.try_write(s) {
                tracing::warn!(
                    kind = ev.kind.as_str(),
                    "database writer busy: event point dropped"
                );
            }
        }
    }

    /// Telegraf's `docker_swarm` points, from the active gateway beside the leader (so once
    /// per Swarm). Read in a task of its own: a slow Swarm API (an election) must not hold up
    /// the control loop.
    fn swarm_metrics(&self) {
        let Some(api) = self.api.clone() else { return };
        if !self.role.swarm_active() || !self.c.bus.has_database() {
            return;
        }
        let (bus, host) = (self.c.bus.clone(), self.c.hostname.clone());
        tokio::spawn(async move {
            let ts = leakmon_common::now_ms();
            match api.tally().await {
                Ok(services) => {
                    let mut s = String::new();
                    for t in &services {
                        schema::swarm_point(
                            &host, ts, &t.id, &t.name, t.mode, t.running, t.desired,
                        )
                        .write_line(&mut s);
                    }
                    if !s.is_empty() && !bus.try_write(s) {
                        tracing::debug!("database writer busy: docker_swarm points dropped");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot read services for docker_swarm"),
            }
        });
    }

    fn set_role(&mut self, role: Role) {
        if role == self.role {
            return;
        }
        let became_active = role.active && !self.role.active;
        if role.active {
            tracing::info!(mode = role.mode, reason = %role.reason, "this gateway is active");
        } else {
            tracing::warn!(reason = %role.reason, "this gateway is on standby");
        }
        let session = session_for(&self.c.cfg, &role);
        self.c.session.send_if_modified(|s| {
            let changed = *s != session;
            *s = session;
            changed
        });
        self.c.metrics.set_active(role.active);
        self.role = role;
        if became_active {
            // The retained status names the gateway that became active last. (One that steps
            // down does not publish: coming back from a cut, it would overwrite its
            // successor's record.)
            let since = leakmon_common::now_ms();
            let st = GatewayStatus {
                v: PROTOCOL_VERSION,
                gateway: self.c.name.clone(),
                role: GatewayRole::Active,
                hostname: self.c.hostname.clone(),
                swarm_node_id: self.self_id.clone(),
                mode: self.role.mode.to_owned(),
                since,
                gateway_version: env!("CARGO_PKG_VERSION").to_owned(),
            };
            if !self.c.bus.publish(Message {
                topic: self.c.topics.gateway_status(),
                payload: encode(&st),
                retain: true,
            }) {
                tracing::warn!("MQTT outbox full: gateway status not published");
            }
            self.emit(Ev {
                kind: EventKind::GatewayActive,
                node: Some(self.c.hostname.clone()),
                message: format!(
                    "gateway {} on {} is active ({})",
                    self.c.name, self.c.hostname, self.role.reason
                ),
                details: vec![
                    ("mode", self.role.mode.to_owned()),
                    // a deputy stands in for the deaf gateway beside the leader
                    (
                        "role",
                        if self.role.deputy { "deputy" } else { "active" }.to_owned(),
                    ),
                ],
            });
        }
    }

    /// Asks the local engine who leads and what its nodes are.
    async fn poll(&mut self) {
        let Some(api) = self.api.clone() else {
            return;
        };
        let view = api.view().await;
        let mode = leader::settle_mode(self.mode, &view);
        if mode != self.mode {
            tracing::info!(from = ?self.mode, to = ?mode, "the local engine is in a Swarm: following its leader from now on");
            self.mode = mode;
        }
        let mut role = leader::role(self.mode, &view);
        if let EngineView::Manager { self_id, nodes } = &view {
            role = self.hand_over(&api, self_id, nodes, role).await;
            self.self_id = Some(self_id.clone());
            let swarm: Vec<(String, String, String)> = nodes
                .iter()
                .map(|n| (n.id.clone(), n.agent_name().to_owned(), n.describe()))
                .collect();
            let unbound = match self.c.nodes.lock() {
                Ok(mut v) => v.set_swarm(&swarm),
                Err(_) => Vec::new(),
            };
            for (agent, claimed) in unbound {
                tracing::warn!(
                    agent = %leakmon_common::cli::printable(&agent),
                    claimed = %claimed,
                    "this agent claims the Swarm node id of {claimed}, whose agent name is {claimed}: it speaks for no Swarm node; if it runs there, label the node: docker node update --label-add leakmon.node=<agent name> <node>"
                );
            }
            self.set_members(nodes);
            if let Some(d) = &mut self.decide {
                d.on_swarm(
                    nodes.iter().map(|n| n.to_decide()).collect(),
                    Instant::now(),
                );
            }
        }
        let became_swarm_active = role.swarm_active() && !self.role.swarm_active();
        self.set_role(role);
        if became_swarm_active {
            if let Some(h) = self.c.cfg.reschedule.swarm_heartbeat {
                match api.ensure_heartbeat(h.0).await {
                    Ok(true) => tracing::info!(period = ?h.0, "Swarm dispatcher heartbeat set"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot set the Swarm dispatcher heartbeat")
                    }
                }
            }
        }
    }

    /// The hand-over's part of a poll ([`deputy`]): its label write, if any, and the role
    /// this gateway plays now.
    async fn hand_over(
        &mut self,
        api: &SwarmApi,
        self_id: &str,
        nodes: &[swarm::NodeFacts],
        swarm: Role,
    ) -> Role {
        let now = Instant::now();
        let labels: Vec<(String, std::collections::HashMap<String, String>)> = nodes
            .iter()
            .map(|n| (n.id.clone(), n.labels.clone()))
            .collect();
        let view = deputy::View {
            self_id,
            leader: nodes.iter().find(|n| n.leader).map(|n| n.id.as_str()),
            swarm_active: swarm.swarm_active(),
            nodes: &labels,
        };
        let op = self.deputy.on_poll(view, now);
        // A dry run writes nothing to the Swarm, labels included: no hand-over.
        if let Some(op) = op.filter(|_| !self.c.cfg.reschedule.dry_run) {
            let sent = Instant::now();
            let res = api
                .update_node_with(op.node(), |n| op.change(op.node(), n))
                .await;
            match &res {
                Ok(()) => tracing::info!(op = ?op, "hand-over label written"),
                Err(e) => tracing::info!(op = ?op, error = %e, "hand-over label not written"),
            }
            self.deputy.on_done(&op, res.is_ok(), sent);
        }
        self.deputy.role(swarm, Instant::now())
    }

    /// Swarm's node list is the detector's fleet: each node whose agent beats, under its
    /// agent's name (the agent `decide` judges it by), probed at Swarm's address for it.
    fn set_members(&self, nodes: &[swarm::NodeFacts]) {
        let Some(det) = &self.c.detector else { return };
        let agents = self
            .c
            .nodes
            .lock()
            .map(|n| n.agent_facts())
            .unwrap_or_default();
        // Only nodes whose agent beats: the others are judged as without the detector.
        let members: Vec<Member> = nodes
            .iter()
            .filter_map(|n| {
                let a = crate::liveness::agent_for(&agents, &n.id, n.agent_name())?;
                Some(Member {
                    name: a.name.clone(),
                    addr: n.addr.clone(),
                    beat_interval: a.beat_interval?,
                })
            })
            .collect();
        if let Ok(mut d) = det.lock() {
            d.set_members(&members, Instant::now());
        }
    }

    /// Runs the failure detector (on the active gateway only: one set of probes per
    /// suspicion), sends its probe requests, and runs the decisions at once on a verdict.
    async fn detect(&mut self) {
        if !self.role.swarm_active() {
            return;
        }
        let Some(det) = self.c.detector.clone() else {
            return;
        };
        let outs = match det.lock() {
            Ok(mut d) => d.tick(Instant::now()),
            Err(_) => return,
        };
        let mut verdict = false;
        for o in outs {
            match o {
                detector::Out::Probe {
                    id,
                    prober,
                    target,
                    addr,
                    window,
                    every,
                    timeout,
                } => {
                    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
                    let req = ProbeRequest {
                        v: PROTOCOL_VERSION,
                        id,
                        gateway: self.c.name.clone(),
                        target,
                        addr,
                        ports: self.c.cfg.reschedule.probe_ports.clone(),
                        window_ms: ms(window),
                        every_ms: ms(every),
                        timeout_ms: ms(timeout),
                    };
                    let topic = self.c.topics.probe_request(&prober);
                    let payload = match self.c.keys.as_mut() {
                        Some(k) => k.seal(&prober, &topic, encode(&req)),
                        None => encode(&req),
                    };
                    let m = Message {
                        topic,
                        payload,
                        retain: false,
                    };
                    if !self.c.bus.publish(m) {
                        tracing::warn!(prober = %prober, "MQTT outbox full: probe request not sent");
                    }
                }
                detector::Out::Suspect { node } => {
                    verdict = true;
                    self.c.metrics.detector(crate::metrics::Verdict::Suspect);
                    tracing::info!(node = %node, "detector: silent, probing from vantage points");
                }
                detector::Out::Dead { node, why } => {
                    verdict = true;
                    self.c.metrics.detector(crate::metrics::Verdict::Dead);
                    tracing::warn!(node = %node, "detector: dead ({why})");
                }
                detector::Out::Alive { node, how } => {
                    verdict = true;
                    if how != detector::Refuted::Resumed {
                        self.c.metrics.detector(crate::metrics::Verdict::Refuted);
                    }
                    tracing::info!(node = %node, how = ?how, "detector: alive");
                }
                detector::Out::NoVerdict { node, why } => {
                    tracing::debug!(node = %node, why = ?why, "detector: no verdict yet");
                }
                detector::Out::Health(h) => {
                    self.c.metrics.set_detector_health(u64::from(h.score));
                    tracing::info!(
                        score = h.score,
                        isolated = h.isolated,
                        timeouts_x = h.multiplier(),
                        "detector: local health"
                    );
                }
            }
        }
        if verdict {
            self.tick().await;
        }
    }

    fn probe(&self, node_id: String, addr: String) {
        let ports = self.c.cfg.reschedule.probe_ports.clone();
        let timeout = self.c.cfg.reschedule.probe_timeout.0;
        let tx = self.probes.clone();
        let sent = Instant::now();
        tokio::spawn(async move {
            let answered = probe(&addr, &ports, timeout).await;
            tracing::debug!(node_id = %node_id, addr = %addr, answered, "probe");
            let _ = tx.send((node_id, answered, sent)).await;
        });
    }

    /// [`decide::BURST_ROUNDS`] rounds of connects to a node (25 ms apart, one to each probe
    /// port): whether its link is clean.
    fn burst(&self, node_id: String, addr: String) {
        let ports = self.c.cfg.reschedule.probe_ports.clone();
        let tx = self.bursts.clone();
        let sent = Instant::now();
        tokio::spawn(async move {
            let (rounds, answered) = burst(&addr, &ports).await;
            tracing::info!(node_id = %node_id, addr = %addr, rounds, answered, "burst: is the link clean");
            let _ = tx.send((node_id, rounds, answered, sent)).await;
        });
    }

    /// The tasks of the services watched to their effect (every poll, on the active gateway).
    async fn watch_tasks(&mut self) {
        let (Some(api), Some(d)) = (self.api.clone(), &self.decide) else {
            return;
        };
        let services = d.watched_services();
        if services.is_empty() || !self.role.swarm_active() {
            return;
        }
        match api.watched_tasks(&services).await {
            Ok(v) => {
                if let Some(d) = &mut self.decide {
                    for (id, on) in v {
                        d.on_tasks(&id, on);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the watched services' tasks"),
        }
    }

    async fn act(&mut self, a: Action, now: Instant) {
        let Some(api) = self.api.clone() else { return };
        let now_ms = leakmon_common::now_ms();
        let evs = match a {
            Action::Event {
                kind,
                node,
                message,
                details,
            } => vec![Ev {
                kind,
                node,
                message,
                details,
            }],
            Action::Probe { node_id, addr } => {
                self.probe(node_id, addr);
                Vec::new()
            }
            Action::Burst { node_id, addr } => {
                self.burst(node_id, addr);
                Vec::new()
            }
            Action::Evacuate {
                node_id,
                hostname,
                surge,
                standbys,
            } => {
                let (evs, started) = api
                    .evacuate(&node_id, &hostname, surge, &standbys, now_ms)
                    .await;
                if let Some(d) = &mut self.decide {
                    d.on_started(&node_id, started, now);
                }
                evs
            }
            Action::Retarget(r) => {
                let (evs, started) = api
                    .retarget(&r.service_id, &r.from, (&r.dead_id, &r.dead_host), &r.to)
                    .await;
                if let Some(d) = &mut self.decide {
                    d.on_started(&r.dead_id, started, now);
                }
                evs
            }
            Action::Settle { node_id, hostname } => api.settle(&node_id, &hostname).await,
            Action::Reactivate { node_id, hostname } => {
                let evs = api.reactivate(&node_id, &hostname).await;
                if evs.iter().any(|e| e.kind == EventKind::ActionFailed) {
                    if let Some(d) = &mut self.decide {
                        d.on_reactivate_failed(&node_id);
                    }
                }
                evs
            }
            Action::Rebalance => api.rebalance(&self.c.hostname).await,
            Action::ForceUpdate {
                service,
                node,
                node_id,
                container_id,
            } => {
                let evs = api
                    .force_update_task(&service, &node, &node_id, &container_id)
                    .await;
                if evs.iter().any(|e| e.kind == EventKind::Refused) {
                    if let Some(d) = &mut self.decide {
                        d.on_refused(&service, &container_id, &node, now);
                    }
                }
                evs
            }
        };
        for e in evs {
            self.emit(e);
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        // Agent silence means something only while this gateway hears the broker: decide
        // (and act) only after the connection has been up a while: `liveness.offline_after`
        // without the detector; with it, [`HEARD_WITH_DETECTOR`], because its verdicts rest on
        // fresh probe reports, not on silence alone (a broker restart must not blind the
        // gateway for 15 s more).
        let up = self.c.bus.connected();
        match (up, self.mqtt_since) {
            (true, None) => self.mqtt_since = Some(now),
            (false, Some(_)) => self.mqtt_since = None,
            _ => {}
        }
        let settle = match self.c.detector {
            Some(_) => HEARD_WITH_DETECTOR.min(self.c.cfg.liveness.offline_after.0),
            None => self.c.cfg.liveness.offline_after.0,
        };
        let heard = self
            .mqtt_since
            .is_some_and(|t| now.saturating_duration_since(t) >= settle);
        // A deputy acts only while its lease is valid; the leader's gateway only while it
        // is not marked deaf and no deputy's lease may be in use ([`deputy`]).
        let can_act = self.role.swarm_active() && heard && self.deputy.may_act(now);
        let Some(d) = &mut self.decide else { return };
        d.set_active(can_act, now);
        let (agents, unhealthy) = match self.c.nodes.lock() {
            Ok(n) => (n.agent_facts(), n.unhealthy_tasks()),
            Err(_) => return,
        };
        d.on_agents(agents);
        if let Some(det) = &self.c.detector {
            if let Ok(det) = det.lock() {
                d.on_detector(det.statuses().map(|(m, st)| (m.to_owned(), st)));
                d.on_last_beats(det.last_beats().map(|(m, t)| (m.to_owned(), t)));
            }
        }
        // The detector (ticked on the active gateway only) hears beats every 250 ms: the
        // quick sign that the active gateway has gone deaf; reports every sampling interval
        // (5 s shipped) are the slow one.
        // (Only while most agents are online as far as it knows: agents that said goodbye
        // or whose Wills it heard stopped beating; a gateway that heard that is not deaf.)
        let beats_lost = self.role.swarm_active()
            && d.most_agents_online()
            && self
                .c
                .detector
                .as_ref()
                .and_then(|det| det.lock().ok().map(|det| det.isolated()))
                .unwrap_or(false);
        self.deputy
            .on_hearing(up && !beats_lost && d.hears_fleet(now), now);
        d.on_unhealthy(unhealthy, now);
        let actions = d.tick(now);
        for a in actions {
            self.act(a, now).await;
        }
    }

    async fn run(
        mut self,
        mut probes: mpsc::Receiver<(String, bool, Instant)>,
        mut bursts: mpsc::Receiver<(String, u32, u32, Instant)>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut poll = tokio::time::interval(self.c.cfg.leader.poll_interval.0);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut detect = tokio::time::interval(DETECT_TICK);
        detect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut services = tokio::time::interval(SWARM_METRICS_EVERY);
        services.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = poll.tick() => {
                    self.poll().await;
                    self.watch_tasks().await;
                }
                _ = services.tick() => self.swarm_metrics(),
                _ = tick.tick() => self.tick().await,
                _ = detect.tick(), if self.c.detector.is_some() => self.detect().await,
                Some((id, answered, sent)) = probes.recv() => {
                    if let Some(d) = &mut self.decide {
                        d.on_probe(&id, answered, sent);
                    }
                }
                Some((id, rounds, answered, sent)) = bursts.recv() => {
                    if let Some(d) = &mut self.decide {
                        d.on_burst(&id, rounds, answered, sent);
                    }
                    // a verdict may follow at once
                    self.tick().await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// [`decide::BURST_ROUNDS`] rounds, 25 ms apart, each a connect to every port (time limit
/// 250 ms: a clean link answers in milliseconds); returns the rounds and the most rounds one
/// port answered.
pub async fn burst(addr: &str, ports: &[u16]) -> (u32, u32) {
    use leakmon_common::tcp::{attempt, Outcome};
    let mut answered = vec![0u32; ports.len()];
    let mut every = tokio::time::interval(Duration::from_millis(25));
    let mut rounds = Vec::new();
    for _ in 0..decide::BURST_ROUNDS {
        every.tick().await;
        let round = ports.iter().map(|&p| {
            let addr = addr.to_owned();
            async move {
                attempt((addr.as_str(), p), Duration::from_millis(250)).await == Outcome::Answered
            }
        });
        rounds.push(tokio::spawn(futures_util::future::join_all(round)));
    }
    let mut n = 0;
    for r in rounds {
        if let Ok(res) = r.await {
            n += 1;
            for (i, a) in res.into_iter().enumerate() {
                if a {
                    answered[i] += 1;
                }
            }
        }
    }
    (n, answered.into_iter().max().unwrap_or(0))
}

/// A node answers when any port connects, refuses or resets the connection within `timeout`
/// (the same rule as the agents' prober: `leakmon_common::tcp::outcome`).
pub async fn probe(addr: &str, ports: &[u16], timeout: Duration) -> bool {
    use leakmon_common::tcp::{attempt, Outcome};
    let tries = ports.iter().map(|&p| {
        let addr = addr.to_owned();
        async move { attempt((addr.as_str(), p), timeout).await == Outcome::Answered }
    });
    futures_util::future::join_all(tries)
        .await
        .into_iter()
        .any(|a| a)
}

#[cfg(test)]
mod tests {
    use super::{event_time, leader::Role, session_for};
    use crate::config::Config;

    fn swarm_active() -> Role {
        let mut r = Role::standby("x");
        r.active = true;
        r
    }

    #[test]
    fn the_active_gateway_takes_the_shared_session_and_a_standby_listens_on_its_own() {
        let mut cfg = Config::default();
        cfg.mqtt.client_id = Some("leakmon-gateway-gw1".into());
        cfg.leader.session_id = Some("leakmon-gateway-active".into());
        let active = session_for(&cfg, &swarm_active());
        assert_eq!(
            (active.client_id.as_str(), active.persistent, active.active),
            ("leakmon-gateway-active", true, true)
        );
        let standby = session_for(&cfg, &Role::standby("x"));
        assert_eq!(
            (
                standby.client_id.as_str(),
                standby.persistent,
                standby.active
            ),
            ("leakmon-gateway-gw1", false, false)
        );
        assert!(!active.same_connection(&standby));
    }

    #[test]
    fn in_a_shared_group_every_role_keeps_its_own_persistent_session() {
        let mut cfg = Config::default();
        cfg.mqtt.client_id = Some("leakmon-gateway-gw1".into());
        cfg.mqtt.shared_group = Some("ingest".into());
        let active = session_for(&cfg, &swarm_active());
        let standby = session_for(&cfg, &Role::standby("x"));
        for s in [&active, &standby] {
            assert_eq!(
                (s.client_id.as_str(), s.persistent),
                ("leakmon-gateway-gw1", true)
            );
        }
        assert!((active.active, standby.active) == (true, false));
        // a change of role alone keeps the connection (and what the broker queued for it)
        assert!(active.same_connection(&standby));
    }

    #[test]
    fn events_in_one_millisecond_get_distinct_times() {
        let mut last = 0;
        let times: Vec<i64> = [1_000, 1_000, 1_000, 1_002, 999]
            .into_iter()
            .map(|now| {
                last = event_time(last, now);
                last
            })
            .collect();
        assert_eq!(times, [1_000, 1_001, 1_002, 1_003, 1_004]);
    }
}
