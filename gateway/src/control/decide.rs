//! The control loop's decisions: a pure state machine, time passed in.
//!
//! Inputs: what the agents say (through [`crate::liveness`]), what Swarm says of its nodes,
//! the results of direct TCP probes, the unhealthy Swarm tasks, whether this gateway is the
//! active one, and the time. Outputs: [`Action`]s for the shell to carry out.
//!
//! Rules (each has a unit test below):
//! 1. A node is **dead** when Swarm reports it `down`, or, with the failure detector
//!    ([`crate::detector`], `Settings::detector`), when the detector finds it dead (no beat, and
//!    several vantage points could not reach it). With the detector, Swarm's `down` of a node
//!    the detector watches counts only once the detector also finds it dead: a lossy link
//!    makes Swarm miss heartbeats while the node is alive. Without the detector, when its agent is gone
//!    (its Will, or silence past `liveness.offline_after`) and a probe sent after the agent
//!    fell silent got no answer. A clean goodbye is not "gone". With the detector, a node whose
//!    agent is gone is `agent_lost` once the detector finds its host answering (`Quiet`).
//!    One exception, the gray failure ([`DeadBy::Frozen`]): a node Swarm reports `down`
//!    whose agent's beats stopped while its host answers (`Quiet`) is dead once a burst of
//!    [`BURST_ROUNDS`] connects sent after Swarm's `down` was answered in full: two
//!    witnesses that need a working userland (the engine's heartbeats to the managers, the
//!    agent's beats) stopped, and the link is shown clean, so neither is a lossy link's doing.
//!    Its kernel answers TCP, but nothing on it works (a Pi's SD card hang, every process
//!    frozen). A burst with losses keeps it `Suspect` (a lossy link), and is repeated.
//! 2. An agent that is gone on a node that answers the probe is `agent_lost`: an event, never
//!    a drain. Probes are repeated every [`PROBE_EVERY`] while the agent stays gone, so a node
//!    that dies later is still caught. Probing starts early, once an agent has been silent for
//!    two sampling intervals, so the result is ready when the agent is declared gone.
//! 3. Only the active gateway announces and acts. A standby keeps all state warm; when it
//!    becomes active it acts on what is dead and not yet handled.
//! 4. A dead node is evacuated (paused, its replicated tasks surged, its pinned services failed
//!    over) unless an operator drained it, or leakmon already drains `max_drained` other nodes:
//!    then a single `mass_failure` event, and nothing more is drained until that count drops.
//! 5. After an evacuation with a surge, the node is settled (surge scaled back, node drained)
//!    as soon as Swarm marks it down, or it comes back, or [`SETTLE_TIMEOUT`] has passed. A
//!    node Swarm had already marked down when it was evacuated (a frozen node: Swarm's own
//!    replacements wait out the restart delay) is surged too, and settled once the surge's
//!    replicas run (Swarm's scale-down then removes the slot pending on the dead node first).
//! 6. A node leakmon drained that is back (agent online and Swarm ready) for
//!    `reactivate_after` without a break is reactivated; a node that dies again within
//!    `cooldown` of its last reactivation is `flapping` and stays drained.
//! 7. A Swarm task's container unhealthy for `unhealthy_after` has its service force-updated,
//!    at most once per `force_update_every` per service.
//! 8. More than half the agents silent at once: this gateway is probably the one cut off; one
//!    `mass_failure` event, and nothing is announced or done until it hears them again. An
//!    agent lost on a host that answers (`agent_lost`) is left out of that count.
//! 9. Every failover and surge is watched to its effect ([`super::confirm`]): a failover
//!    goes only to a standby that is fit (Swarm: ready and active, not drained by leakmon;
//!    its agent online and beating, the detector hearing it: [`Decide::standbys`]), and one
//!    whose task does not run there within its bound, or whose standby stops being fit, moves
//!    on to the next fit standby, or is `failover_impossible` until one is fit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use leakmon_protocol::EventKind;

use super::confirm::{self, Confirm, Standbys, Started};
pub use crate::detector::Status;
pub use crate::liveness::{AgentFact, AgentState};
pub use crate::nodes::UnhealthyTask;

/// How often a node whose agent is gone is probed again.
pub const PROBE_EVERY: Duration = Duration::from_secs(3);
/// A probe unanswered this long is taken as lost.
const PROBE_LOST: Duration = Duration::from_secs(30);
/// A surge made on a node Swarm already listed down is settled no sooner than this after it
/// (by then the shell has reported what it started, so its watch is on).
const TICK_MIN: Duration = Duration::from_millis(200);
/// The longest a surge waits for Swarm to let go of a dead node before it is settled anyway.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A reactivated node is listed active by Swarm within this (the next leader polls), or the
/// reactivation is `unconfirmed` and asked for again.
pub const REACTIVATE_BOUND: Duration = Duration::from_secs(10);
/// A burst ([`Action::Burst`]): this many rounds of connects, one to each probe port, 25 ms
/// apart. A node whose link loses 40 % of its packets one way answers a connect with
/// probability 0.6, so all 20 of one port's answers come back with probability 0.6^20 =
/// 4e-5; a clean link answers every one.
pub const BURST_ROUNDS: u32 = 20;
/// A frozen node's agent fell silent at least this long before Swarm reported it down (Swarm
/// marks a node down after 10 s or more of missed heartbeats).
const FROZEN_SILENCE: Duration = Duration::from_secs(8);
/// A burst is repeated this often while Swarm reports the node down and the burst found
/// losses.
const BURST_EVERY: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub reactivate_after: Duration,
    pub unhealthy_after: Duration,
    pub force_update_every: Duration,
    pub cooldown: Duration,
    /// `None`: fewer than half the Swarm's nodes.
    pub max_drained: Option<usize>,
    pub rebalance: bool,
    /// After the machine starts, how long agents' retained statuses may take to arrive: until
    /// then a node without an agent is neither settled nor reactivated on that account.
    pub grace: Duration,
    /// Deaths come from the failure detector ([`crate::detector`]: beats, then probes from
    /// several vantage points), fed by [`Decide::on_detector`], rather than from this
    /// machine's own probe of a node whose agent is gone (rule 1).
    pub detector: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwarmState {
    Ready,
    Down,
    /// `unknown` or `disconnected`: no verdict from Swarm.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

/// A Swarm node as the manager lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct SwarmNode {
    pub id: String,
    pub hostname: String,
    /// The name of its agent: its `leakmon.node` label, else its hostname
    /// ([`crate::liveness::agent_for`]).
    pub agent: String,
    /// The address Swarm knows it by (probed).
    pub addr: String,
    pub state: SwarmState,
    pub availability: Availability,
    /// Carries leakmon's drain label: leakmon set it to pause/drain.
    pub leakmon_drained: bool,
    /// Carries `leakmon.standby=true`: pinned services fail over to it.
    pub standby: bool,
}

/// Why a node was declared dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadBy {
    /// Swarm marked it down.
    Swarm,
    /// The agent is gone and the probe got no answer.
    Probe,
    /// The failure detector: silent, and unreachable from several vantage points.
    Detector,
    /// A gray failure: Swarm reports it down and its agent is silent, while its host
    /// answers every connect of a burst (a clean link): its userland is stuck.
    Frozen,
}

impl DeadBy {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadBy::Swarm => "swarm reports the node down",
            DeadBy::Probe => "agent gone and no answer to the probe",
            DeadBy::Detector => "no beat, and no vantage point could reach it",
            DeadBy::Frozen => {
                "swarm reports it down and its agent is silent while its host answers every connect: frozen"
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Alive,
    /// The agent is silent or gone; a probe is needed.
    Suspect,
    AgentLost,
    Dead(DeadBy),
}

/// A decision for the shell.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Publish (and record) an event.
    Event {
        kind: EventKind,
        node: Option<String>,
        message: String,
        details: Vec<(&'static str, String)>,
    },
    /// TCP-probe a node; answer with [`Decide::on_probe`].
    Probe { node_id: String, addr: String },
    /// [`BURST_ROUNDS`] rounds of connects to a node, to tell a clean link from a lossy one;
    /// answer with [`Decide::on_burst`].
    Burst { node_id: String, addr: String },
    /// Pause the node (labelled as leakmon's), fail over its pinned services to the least
    /// loaded of `standbys` (fit now), and either surge its replicated services (`surge`,
    /// settled later) or, if Swarm already let go of it, drain it at once. Idempotent: a
    /// repeat finishes what an earlier one left. Answer with [`Decide::on_started`].
    Evacuate {
        node_id: String,
        hostname: String,
        surge: bool,
        standbys: Vec<String>,
    },
    /// Move a service on ([`confirm::Retarget`]), start-first, since the task where it is
    /// pinned may never stop. Answer with [`Decide::on_started`].
    Retarget(confirm::Retarget),
    /// Scale back the surge recorded for the node, then drain it.
    Settle { node_id: String, hostname: String },
    /// Set the node active again and remove leakmon's label.
    Reactivate { node_id: String, hostname: String },
    /// Force-update services whose replicas are unevenly spread.
    Rebalance,
    /// Force-update a service (an unhealthy task), once Swarm confirms the container is a
    /// task of that service on `node_id`, the Swarm node of `node`'s agent; answer a refusal
    /// with [`Decide::on_refused`].
    ForceUpdate {
        service: String,
        node: String,
        node_id: String,
        container_id: String,
    },
}

#[derive(Debug, Clone, Default)]
struct Probe {
    in_flight: bool,
    sent: Option<Instant>,
    /// (answered, when the probe was sent)
    result: Option<(bool, Instant)>,
}

#[derive(Debug, Clone)]
struct Track {
    node: SwarmNode,
    announced: Verdict,
    probe: Probe,
    /// Evacuated by this gateway (or adopted from Swarm's labels) and not back since.
    evacuated: bool,
    evacuated_at: Option<Instant>,
    settle_pending: bool,
    /// Its surge was made after Swarm had let go of it (a frozen node): settled once the
    /// surge's replicas run, not at Swarm's `down`.
    surged_down: bool,
    back_since: Option<Instant>,
    reactivated_at: Option<Instant>,
    flapping: bool,
    /// Held back by `max_drained`.
    held: bool,
    /// Its leakmon pause was taken over from Swarm's labels (once).
    adopted: bool,
    /// A reactivation was asked for since the node last died.
    reactivate_sent: bool,
    /// A reactivation waits for Swarm to list the node active (rule 9).
    reactivate_watch: bool,
    /// Since when Swarm reports it down (while it does).
    down_since: Option<Instant>,
    /// The last burst: (rounds, the most rounds one port answered, when it was sent), and
    /// whether one is in flight.
    burst: Option<(u32, u32, Instant)>,
    burst_sent: Option<Instant>,
}

#[derive(Debug)]
pub struct Decide {
    s: Settings,
    active: bool,
    nodes: BTreeMap<String, Track>,
    agents: Vec<AgentFact>,
    mass_failure: bool,
    /// (container id, reporting agent) -> (task, first seen unhealthy). By reporter too: one
    /// agent's false report must not stand in for (or, refused, block) another's true one.
    unhealthy: BTreeMap<(String, String), (UnhealthyTask, Instant)>,
    /// (container id, reporting agent) Swarm did not confirm as the task it was reported to
    /// be: not asked about again while so reported.
    refused: BTreeSet<(String, String)>,
    forced: BTreeMap<String, Instant>,
    started: Option<Instant>,
    isolation_told: bool,
    /// The failure detector's view, by agent name (with `Settings::detector`).
    detected: BTreeMap<String, Status>,
    /// Failovers and surges watched to their effect.
    confirm: Confirm,
    /// Each beating agent's last beat ([`Decide::on_last_beats`]).
    last_beat: BTreeMap<String, Instant>,
}

fn event(
    kind: EventKind,
    node: Option<&str>,
    message: String,
    details: Vec<(&'static str, String)>,
) -> Action {
    Action::Event {
        kind,
        node: node.map(str::to_owned),
        message,
        details,
    }
}

impl Decide {
    pub fn new(s: Settings) -> Self {
        Decide {
            s,
            active: false,
            nodes: BTreeMap::new(),
            agents: Vec::new(),
            mass_failure: false,
            unhealthy: BTreeMap::new(),
            refused: BTreeSet::new(),
            forced: BTreeMap::new(),
            started: None,
            isolation_told: false,
            detected: BTreeMap::new(),
            confirm: Confirm::new(),
            last_beat: BTreeMap::new(),
        }
    }

    /// This gateway became active (its engine is the Swarm leader) or stopped being so.
    pub fn set_active(&mut self, active: bool, now: Instant) {
        if active && !self.active {
            // Nodes a previous gateway already handled are not announced again; whatever it
            // left unfinished is finished by a repeated (idempotent) evacuation.
            // What was announced while this gateway was last active is forgotten for nodes
            // that are fine now (another gateway announced their return).
            for i in self.ids() {
                let v = self.verdict(&i, now);
                if let Some(t) = self.nodes.get_mut(&i) {
                    match v {
                        Verdict::Dead(_) if t.node.leakmon_drained => t.announced = v,
                        Verdict::Alive => t.announced = v,
                        _ => {}
                    }
                    // A reactivation asked for before may have failed with the leadership
                    // (no quorum during an election): a new term asks once more.
                    t.reactivate_sent = false;
                    // What this gateway evacuated in an earlier term and another gateway has
                    // put back in service since (Swarm lists it active, without leakmon's
                    // mark) is over: a new death of it is evacuated again (found by
                    // bench-control deaf: a deputy standing in a second time did not move
                    // the node's work).
                    if t.node.availability == Availability::Active && !t.node.leakmon_drained {
                        t.evacuated = false;
                        t.settle_pending = false;
                        t.flapping = false;
                    }
                }
            }
        }
        self.active = active;
    }

    /// The Swarm's node list (every poll).
    pub fn on_swarm(&mut self, nodes: Vec<SwarmNode>, now: Instant) {
        let ids: BTreeSet<String> = nodes.iter().map(|n| n.id.clone()).collect();
        self.nodes.retain(|id, _| ids.contains(id));
        for n in nodes {
            let t = self.nodes.entry(n.id.clone()).or_insert_with(|| Track {
                node: n.clone(),
                announced: Verdict::Alive,
                probe: Probe::default(),
                evacuated: false,
                evacuated_at: None,
                settle_pending: false,
                surged_down: false,
                back_since: None,
                reactivated_at: None,
                flapping: false,
                held: false,
                adopted: false,
                reactivate_sent: false,
                reactivate_watch: false,
                down_since: None,
                burst: None,
                burst_sent: None,
            });
            // Adopted, once: leakmon paused it earlier (another gateway, or this one before a
            // restart) and nobody drained it yet; it is settled like our own.
            let paused_by_leakmon = n.leakmon_drained && n.availability == Availability::Pause;
            if paused_by_leakmon && !t.adopted && !t.evacuated {
                t.adopted = true;
                t.settle_pending = true;
                t.evacuated_at = Some(now);
            }
            if !n.leakmon_drained {
                t.adopted = false;
            }
            if n.state == SwarmState::Down {
                t.down_since.get_or_insert(now);
            } else {
                t.down_since = None;
            }
            t.node = n;
        }
    }

    /// Every agent's liveness (every tick).
    pub fn on_agents(&mut self, agents: Vec<AgentFact>) {
        self.agents = agents;
    }

    /// The containers of Swarm tasks that are unhealthy right now.
    pub fn on_unhealthy(&mut self, tasks: Vec<UnhealthyTask>, now: Instant) {
        let keys: BTreeSet<(String, String)> = tasks
            .iter()
            .map(|t| (t.container_id.clone(), t.node.clone()))
            .collect();
        self.unhealthy.retain(|k, _| keys.contains(k));
        self.refused.retain(|k| keys.contains(k));
        for t in tasks {
            self.unhealthy
                .entry((t.container_id.clone(), t.node.clone()))
                .or_insert((t, now));
        }
    }

    /// Swarm did not confirm the container of an [`Action::ForceUpdate`]: nothing was done, so
    /// the service's rate limit is not spent, and the container is not asked about again.
    pub fn on_refused(&mut self, service: &str, container_id: &str, node: &str, asked_at: Instant) {
        if self.forced.get(service) == Some(&asked_at) {
            self.forced.remove(service);
        }
        self.refused
            .insert((container_id.to_owned(), node.to_owned()));
    }

    /// What the shell started for dead node `node_id` (failovers, surges, services left
    /// pinned for want of a standby), to be watched to their effect.
    pub fn on_started(&mut self, node_id: &str, started: Vec<Started>, now: Instant) {
        let host = self
            .nodes
            .get(node_id)
            .map(|t| t.node.hostname.clone())
            .unwrap_or_else(|| node_id.to_owned());
        for s in started {
            self.confirm.on_started(node_id, &host, s, now);
        }
    }

    /// The services whose tasks [`Decide::on_tasks`] should be fed (every poll).
    pub fn watched_services(&self) -> Vec<String> {
        self.confirm.services()
    }

    /// The nodes running a task of a watched service (desired and actual state running), one
    /// entry per task; `None`: Swarm no longer has that service.
    pub fn on_tasks(&mut self, service_id: &str, running_on: Option<Vec<String>>) {
        match running_on {
            // A node declared dead and not back runs nothing, whatever Swarm still lists
            // there (it notices the death seconds later): a service pinned to it is not
            // "running there again".
            Some(on) => {
                let on = on
                    .into_iter()
                    .filter(|n| {
                        !self
                            .nodes
                            .get(n)
                            .is_some_and(|t| matches!(t.announced, Verdict::Dead(_)))
                    })
                    .collect();
                self.confirm.on_tasks(service_id, on)
            }
            None => self.confirm.forget_service(service_id),
        }
    }

    /// The standbys (`leakmon.standby=true`) as fit or not to take a service now: Swarm
    /// reports it ready and active (not paused or drained by anyone), it is not dead, its
    /// agent is online and not silent, and the failure detector hears it (when it watches
    /// it). A standby without an agent is never fit: nothing would tell that it works.
    pub fn standbys(&self, now: Instant) -> Standbys {
        let mut out = Standbys::default();
        for (id, t) in &self.nodes {
            if matches!(self.verdict(id, now), Verdict::Dead(_)) {
                out.dead.insert(id.clone());
            }
            if !t.node.standby {
                continue;
            }
            let host = t.node.hostname.clone();
            let agent = self.agent(&t.node);
            let why = if t.node.state != SwarmState::Ready {
                Some("Swarm does not report it ready")
            } else if t.node.availability != Availability::Active || t.node.leakmon_drained {
                Some("it is not active in Swarm (paused or drained)")
            } else if matches!(self.verdict(id, now), Verdict::Dead(_)) {
                Some("it is dead")
            } else if let Some(a) = agent {
                match self.detected_status(&a.name) {
                    Some(Status::Dead) => Some("it is dead"),
                    Some(Status::Suspect) => Some("its agent's beats stopped"),
                    Some(Status::Quiet) => Some("its agent is silent"),
                    _ if a.state != AgentState::Online => Some("its agent is offline"),
                    _ if a.suspect(now) => Some("its agent is silent"),
                    _ => None,
                }
            } else {
                Some("it has no agent")
            };
            match why {
                None => {
                    out.fit.insert(id.clone(), host);
                }
                Some(w) => {
                    out.unfit.insert(id.clone(), (host, w.to_owned()));
                }
            }
        }
        out
    }

    pub fn on_reactivate_failed(&mut self, node_id: &str) {
        if let Some(t) = self.nodes.get_mut(node_id) {
            t.reactivate_sent = false;
            t.reactivate_watch = false;
        }
    }

    /// What the failure detector thinks of each agent's node, by agent name (every tick).
    pub fn on_detector(&mut self, statuses: impl IntoIterator<Item = (String, Status)>) {
        self.detected = statuses.into_iter().collect();
    }

    /// Each beating agent's last beat, as the detector heard it.
    pub fn on_last_beats(&mut self, beats: impl IntoIterator<Item = (String, Instant)>) {
        self.last_beat = beats.into_iter().collect();
    }

    /// The detector's view of an agent's node, when the detector watches it (it beats).
    fn detected_status(&self, agent: &str) -> Option<Status> {
        self.s
            .detector
            .then(|| self.detected.get(agent).copied())
            .flatten()
    }

    /// The answer to an [`Action::Burst`] sent at `sent`: its rounds, and the most of them
    /// one port answered.
    pub fn on_burst(&mut self, node_id: &str, rounds: u32, answered: u32, sent: Instant) {
        if let Some(t) = self.nodes.get_mut(node_id) {
            t.burst_sent = None;
            t.burst = Some((rounds, answered, sent));
        }
    }

    /// The answer to an [`Action::Probe`] sent at `sent`.
    pub fn on_probe(&mut self, node_id: &str, answered: bool, sent: Instant) {
        if let Some(t) = self.nodes.get_mut(node_id) {
            t.probe.in_flight = false;
            t.probe.result = Some((answered, sent));
        }
    }

    fn ids(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// The node's agent ([`crate::liveness::agent_for`]).
    fn agent(&self, n: &SwarmNode) -> Option<&AgentFact> {
        crate::liveness::agent_for(&self.agents, &n.id, &n.agent)
    }

    fn verdict(&self, id: &str, now: Instant) -> Verdict {
        let Some(t) = self.nodes.get(id) else {
            return Verdict::Alive;
        };
        let agent = self.agent(&t.node);
        let detected = agent.and_then(|a| self.detected_status(&a.name));
        if t.node.state == SwarmState::Down {
            // Swarm marks a node down on missed heartbeats, and a lossy link misses them (at
            // 40 % loss each way Swarm did, three times in five minutes). While the detector
            // hears the node (beats, or its host answering the vantage points) or is still
            // probing it, Swarm's `down` is not a death: Swarm reschedules the replicated
            // tasks by itself; leakmon drains and fails over nothing.
            return match detected {
                // The gray failure: no beat and no heartbeat to the managers, on a clean link.
                // (and the agent fell silent well before Swarm's `down`, as a freeze makes it:
                // Swarm needs 10 s or more of missed heartbeats. An agent killed just before a
                // leader change, whose new leader lists nodes down for a moment, is no freeze:
                // found by a 30-minute chaos run)
                // Its silence counts from its last beat (every 250 ms), else its last message:
                // never from its Will, which the broker sends for a frozen agent seconds after.
                Some(Status::Quiet)
                    if Self::burst_clean(t)
                        && agent.is_some_and(|a| {
                            let last = self.last_beat.get(&a.name).copied().unwrap_or(a.last_seen);
                            t.down_since.is_some_and(|d| {
                                d.saturating_duration_since(last) >= FROZEN_SILENCE
                            })
                        }) =>
                {
                    Verdict::Dead(DeadBy::Frozen)
                }
                Some(Status::Alive | Status::Quiet | Status::Suspect) => Verdict::Suspect,
                Some(Status::Dead) => Verdict::Dead(DeadBy::Detector),
                None => Verdict::Dead(DeadBy::Swarm),
            };
        }
        let Some(a) = agent else {
            return Verdict::Alive;
        };
        let gone = matches!(a.state, AgentState::Lost | AgentState::Stale);
        if let Some(st) = detected {
            return match (st, gone) {
                (Status::Dead, _) => Verdict::Dead(DeadBy::Detector),
                (Status::Suspect, _) => Verdict::Suspect,
                (Status::Quiet, true) => Verdict::AgentLost,
                (_, true) => Verdict::Suspect,
                (_, false) => Verdict::Alive,
            };
        }
        let silent = a.suspect(now);
        if !gone {
            return if silent {
                Verdict::Suspect
            } else {
                Verdict::Alive
            };
        }
        match t.probe.result {
            // Only a probe sent after the agent's last word counts.
            Some((answered, sent)) if sent >= a.last_seen => {
                if answered {
                    Verdict::AgentLost
                } else {
                    Verdict::Dead(DeadBy::Probe)
                }
            }
            _ => Verdict::Suspect,
        }
    }

    /// A burst sent after Swarm reported the node down answered every round on some port.
    fn burst_clean(t: &Track) -> bool {
        match (t.burst, t.down_since) {
            (Some((rounds, answered, sent)), Some(down)) => {
                sent >= down && rounds >= BURST_ROUNDS && answered >= rounds
            }
            _ => false,
        }
    }

    fn drained_besides(&self, id: &str) -> usize {
        self.nodes
            .iter()
            .filter(|(k, t)| k.as_str() != id && (t.node.leakmon_drained || t.evacuated))
            .count()
    }

    fn max_drained(&self) -> usize {
        self.s
            .max_drained
            .unwrap_or_else(|| self.nodes.len().saturating_sub(1) / 2)
    }

    /// More than half the agents silent or gone at once: most likely this gateway is the one
    /// cut off (its broker connection not yet known dead, its engine still believing it
    /// leads). Nothing is announced or done until it hears the fleet again.
    /// Only the agents of the Swarm's own nodes count: Swarm's node list is the fleet, and
    /// the retained `offline` statuses decommissioned hosts leave behind (ghosts) must not
    /// make a healthy gateway think itself cut off.
    /// A silent agent on a host that answers (`agent_lost`, or found quiet by the detector's
    /// vantage points) counts on neither side: its silence is its agent's, no sign that this
    /// gateway is the one cut off.
    fn isolated(&self, now: Instant) -> bool {
        let fleet: Vec<&AgentFact> = self
            .nodes
            .iter()
            .filter(|(id, _)| self.verdict(id, now) != Verdict::AgentLost)
            .filter_map(|(_, t)| self.agent(&t.node))
            .filter(|a| self.detected_status(&a.name) != Some(Status::Quiet))
            .collect();
        let silent = fleet
            .iter()
            .filter(|a| matches!(a.state, AgentState::Lost | AgentState::Stale) || a.suspect(now))
            .count();
        fleet.len() >= 3 && silent * 2 > fleet.len()
    }

    /// Whether most of the Swarm's agents are online as far as this gateway knows (no Will,
    /// goodbye or long silence heard): beats stopping then means this gateway stopped
    /// hearing, not that the agents stopped (a fleet-wide agent restart says goodbye first).
    pub fn most_agents_online(&self) -> bool {
        let fleet: Vec<&AgentFact> = self
            .nodes
            .values()
            .filter_map(|t| self.agent(&t.node))
            .collect();
        let online = fleet
            .iter()
            .filter(|a| a.state == AgentState::Online)
            .count();
        online * 2 > fleet.len()
    }

    /// Whether this gateway hears the fleet (not [`Decide::isolated`]), for the hand-over
    /// ([`super::deputy`]).
    pub fn hears_fleet(&self, now: Instant) -> bool {
        !self.isolated(now)
    }

    /// Advances the machine; returns what to do now.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.started.get_or_insert(now);
        let isolated = self.isolated(now);
        if isolated && self.active && !self.isolation_told {
            self.isolation_told = true;
            out.push(event(
                EventKind::MassFailure,
                None,
                "more than half the agents are silent at once: this gateway may be cut off; nothing is drained until it hears them again".into(),
                vec![("agents", self.agents.len().to_string())],
            ));
        }
        if !isolated {
            self.isolation_told = false;
        }
        for id in self.ids() {
            let v = self.verdict(&id, now);
            self.probe_if_needed(&id, v, now, &mut out);
            if self.active && !isolated {
                self.node_rules(&id, v, now, &mut out);
            }
        }
        if self.active && !isolated {
            self.confirm_rules(now, &mut out);
        }
        if self.active {
            if !self.nodes.values().any(|t| t.held) {
                self.mass_failure = false;
            }
            self.unhealthy_rules(now, &mut out);
        }
        out
    }

    fn probe_if_needed(&mut self, id: &str, v: Verdict, now: Instant, out: &mut Vec<Action>) {
        let Some(t) = self.nodes.get(id) else { return };
        let detected = self
            .agent(&t.node)
            .and_then(|a| self.detected_status(&a.name));
        if let Some(st) = detected {
            // The detector probes this one, from several vantage points. Swarm's `down` of a
            // node whose host answers and whose agent is silent asks whether the link is
            // clean (rule 1's gray failure).
            let in_flight = t
                .burst_sent
                .is_some_and(|s| now.saturating_duration_since(s) < PROBE_LOST);
            let due = match (t.burst, t.down_since) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some((_, _, sent)), Some(down)) => {
                    sent < down || now.saturating_duration_since(sent) >= BURST_EVERY
                }
            };
            let want = st == Status::Quiet && v == Verdict::Suspect;
            if want && due && !in_flight && !t.node.addr.is_empty() {
                let addr = t.node.addr.clone();
                if let Some(t) = self.nodes.get_mut(id) {
                    t.burst_sent = Some(now);
                }
                out.push(Action::Burst {
                    node_id: id.to_owned(),
                    addr,
                });
            }
            return;
        }
        let want = match v {
            Verdict::Suspect => true,
            // Keep probing a node whose agent is gone, in case the node dies later (or, once
            // dead by probe, answers again).
            Verdict::AgentLost | Verdict::Dead(DeadBy::Probe) => true,
            _ => false,
        };
        let due = match (t.probe.sent, v) {
            (None, _) => true,
            (Some(_), Verdict::Suspect) => !matches!(
                (t.probe.result, self.agent(&t.node)),
                (Some((_, sent)), Some(a)) if sent >= a.last_seen
            ),
            (Some(sent), _) => now.saturating_duration_since(sent) >= PROBE_EVERY,
        };
        // A probe never answered (its task lost) does not block the next one forever.
        let in_flight = t.probe.in_flight
            && t.probe
                .sent
                .is_some_and(|s| now.saturating_duration_since(s) < PROBE_LOST);
        if want && due && !in_flight && !t.node.addr.is_empty() {
            let addr = t.node.addr.clone();
            if let Some(t) = self.nodes.get_mut(id) {
                t.probe.in_flight = true;
                t.probe.sent = Some(now);
            }
            out.push(Action::Probe {
                node_id: id.to_owned(),
                addr,
            });
        }
    }

    fn node_rules(&mut self, id: &str, v: Verdict, now: Instant, out: &mut Vec<Action>) {
        let max = self.max_drained();
        let others = self.drained_besides(id);
        let s = self.s.clone();
        let warm = self
            .started
            .is_some_and(|st| now.saturating_duration_since(st) >= s.grace);
        let agent = self.nodes.get(id).and_then(|t| self.agent(&t.node));
        let standbys: Vec<String> = self.standbys(now).fit.into_keys().collect();
        let surging = self.confirm.surging(id);
        // "back" needs the agent online (when the node has one) and, early after a start,
        // the agent's status actually heard.
        let agent_ok = match agent {
            Some(a) => a.state == AgentState::Online,
            None => warm,
        };
        let Some(t) = self.nodes.get_mut(id) else {
            return;
        };
        let host = t.node.hostname.clone();
        let h = Some(host.as_str());
        // Announcements
        match (t.announced, v) {
            (a, Verdict::Dead(by)) if !matches!(a, Verdict::Dead(_)) => {
                out.push(event(
                    EventKind::NodeDown,
                    h,
                    format!("node {host} is down: {}", by.as_str()),
                    vec![
                        ("reason", by.as_str().to_owned()),
                        ("swarm_node_id", id.to_owned()),
                    ],
                ));
                if let Some(r) = t.reactivated_at {
                    if now.saturating_duration_since(r) < s.cooldown && !t.flapping {
                        t.flapping = true;
                        out.push(event(
                            EventKind::Flapping,
                            h,
                            format!(
                                "node {host} died again {} s after it was reactivated; it stays drained until an operator sets it active",
                                now.saturating_duration_since(r).as_secs()
                            ),
                            vec![],
                        ));
                    }
                }
                t.announced = v;
            }
            (Verdict::Dead(_), Verdict::Alive) => {
                self.confirm.node_back(id);
                out.push(event(
                    EventKind::NodeUp,
                    h,
                    format!("node {host} is back"),
                    vec![("swarm_node_id", id.to_owned())],
                ));
                t.announced = v;
            }
            // A dead node that answers again before its agent is back: it is announced up when
            // the agent is (the agent reconnects within seconds; until then it stays dead).
            (Verdict::Dead(_), Verdict::AgentLost) => {}
            (a, Verdict::AgentLost) if a != Verdict::AgentLost => {
                out.push(event(
                    EventKind::AgentLost,
                    h,
                    format!("the agent on {host} is gone but the node answers; nothing is moved"),
                    vec![("swarm_node_id", id.to_owned())],
                ));
                t.announced = v;
            }
            (Verdict::AgentLost, Verdict::Alive) => t.announced = v,
            _ => {}
        }
        if matches!(v, Verdict::Dead(_)) {
            t.reactivate_sent = false;
        }
        // Evacuation
        let operator_drained =
            t.node.availability != Availability::Active && !t.node.leakmon_drained;
        if operator_drained {
            t.held = false;
        }
        if matches!(v, Verdict::Dead(_)) && !t.evacuated && !operator_drained {
            if others >= max {
                if !t.held {
                    t.held = true;
                    if !self.mass_failure {
                        self.mass_failure = true;
                        out.push(event(
                            EventKind::MassFailure,
                            h,
                            format!(
                                "{others} nodes already drained by leakmon (max_drained {max}): {host} is not drained"
                            ),
                            vec![("drained", others.to_string()), ("max_drained", max.to_string())],
                        ));
                    }
                }
            } else {
                t.held = false;
                t.evacuated = true;
                t.evacuated_at = Some(now);
                // Not on a node already drained (a repeat after a takeover must not turn it
                // back to pause), nor on one leakmon already paused that Swarm let go of since
                // (the previous gateway surged it). But once Swarm let go of a node leakmon had
                // not touched (a frozen node): Swarm's own replacements wait out the services'
                // restart delay, the surge's replicas run now.
                let surge = t.node.availability != Availability::Drain
                    && !(t.node.state == SwarmState::Down && t.node.leakmon_drained);
                t.surged_down = surge && t.node.state == SwarmState::Down;
                t.settle_pending = t.settle_pending || surge;
                out.push(Action::Evacuate {
                    node_id: id.to_owned(),
                    hostname: host.clone(),
                    surge,
                    standbys: standbys.iter().filter(|s| *s != id).cloned().collect(),
                });
            }
        }
        if !matches!(v, Verdict::Dead(_)) {
            t.held = false;
        }
        // Settling
        if t.settle_pending {
            let since = t.evacuated_at.unwrap_or(now);
            let waited = now.saturating_duration_since(since);
            // A surge made while Swarm already listed the node down is scaled back once its
            // replicas run: Swarm then removes first the slot it left pending on the dead
            // node (a slot of two tasks sorts last in its scale-down), not a surge replica.
            // (The watch starts with the evacuation's answer, before the next tick.)
            let let_go = if t.surged_down {
                waited >= TICK_MIN && !surging
            } else {
                t.node.state == SwarmState::Down
            };
            if let_go || (v == Verdict::Alive && agent_ok) || waited >= SETTLE_TIMEOUT {
                t.settle_pending = false;
                out.push(Action::Settle {
                    node_id: id.to_owned(),
                    hostname: host.clone(),
                });
            }
        }
        // Reactivation
        let back = v == Verdict::Alive && agent_ok && t.node.state == SwarmState::Ready;
        if back && t.node.leakmon_drained {
            let since = *t.back_since.get_or_insert(now);
            if !t.flapping
                && !t.settle_pending
                && !t.reactivate_sent
                && now.saturating_duration_since(since) >= s.reactivate_after
            {
                t.back_since = None;
                t.reactivated_at = Some(now);
                t.reactivate_sent = true;
                t.reactivate_watch = true;
                t.evacuated = false;
                out.push(Action::Reactivate {
                    node_id: id.to_owned(),
                    hostname: host.clone(),
                });
                if s.rebalance {
                    out.push(Action::Rebalance);
                }
            }
        } else {
            t.back_since = None;
            if back && t.node.availability == Availability::Active {
                // Back and active (leakmon reactivated it, or an operator did): a later death
                // acts again, and a flapping verdict is over.
                t.evacuated = false;
                t.flapping = false;
            }
        }
        // Rule 9: a reactivation is done once Swarm lists the node ready and active without
        // leakmon's label: it takes tasks again. Past the bound it is asked for again.
        if let (true, Some(at)) = (t.reactivate_watch, t.reactivated_at) {
            let elapsed = now.saturating_duration_since(at);
            let after = ("after_ms", elapsed.as_millis().to_string());
            if t.node.availability == Availability::Active
                && !t.node.leakmon_drained
                && t.node.state == SwarmState::Ready
            {
                t.reactivate_watch = false;
                out.push(event(
                    EventKind::Confirmed,
                    h,
                    format!(
                        "node {host} is active in Swarm again, {:.1} s after its reactivation",
                        elapsed.as_secs_f64()
                    ),
                    vec![("action", "reactivate".into()), after],
                ));
            } else if elapsed >= REACTIVATE_BOUND {
                // Said once, not asked again: a refused call is asked again on its own
                // (`on_reactivate_failed`); anything else (a dry run, an operator's change)
                // is not for leakmon to fight.
                t.reactivate_watch = false;
                out.push(event(
                    EventKind::Unconfirmed,
                    h,
                    format!(
                        "node {host} is not active in Swarm {} s after its reactivation",
                        elapsed.as_secs()
                    ),
                    vec![("action", "reactivate".into()), after],
                ));
            }
        }
    }

    /// Rule 9: the watched failovers and surges.
    fn confirm_rules(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.confirm.is_empty() {
            return;
        }
        let standbys = self.standbys(now);
        for o in self.confirm.tick(&standbys, now) {
            out.push(match o {
                confirm::Out::Event {
                    kind,
                    node,
                    message,
                    details,
                } => event(kind, Some(&node), message, details),
                confirm::Out::Retarget(r) => Action::Retarget(r),
            });
        }
    }

    fn unhealthy_rules(&mut self, now: Instant, out: &mut Vec<Action>) {
        let due: Vec<UnhealthyTask> = self
            .unhealthy
            .iter()
            .filter(|(k, (_, since))| {
                now.saturating_duration_since(*since) >= self.s.unhealthy_after
                    && !self.refused.contains(k)
            })
            .map(|(_, (t, _))| t.clone())
            .collect();
        // (a service forced longer ago than the rate limit is free again: forgotten, so the
        // map holds only the services forced within `force_update_every`)
        let every = self.s.force_update_every;
        self.forced
            .retain(|_, at| now.saturating_duration_since(*at) < every);
        for t in due {
            // Only an agent Swarm's node list names speaks for a node ([`Self::agent`]);
            // another's report is shown, never acted on. Of several nodes of one name (a host
            // that left and rejoined), the ready one.
            let Some(node_id) = self
                .nodes
                .values()
                .filter(|n| self.agent(&n.node).is_some_and(|a| a.name == t.node))
                .max_by_key(|n| n.node.state == SwarmState::Ready)
                .map(|n| n.node.id.clone())
            else {
                continue;
            };
            let recent = self
                .forced
                .get(&t.service)
                .is_some_and(|at| now.saturating_duration_since(*at) < self.s.force_update_every);
            if recent {
                continue;
            }
            self.forced.insert(t.service.clone(), now);
            out.push(Action::ForceUpdate {
                service: t.service,
                node: t.node,
                node_id,
                container_id: t.container_id,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn settings() -> Settings {
        Settings {
            reactivate_after: 60 * S,
            unhealthy_after: 30 * S,
            force_update_every: 300 * S,
            cooldown: 600 * S,
            max_drained: None,
            rebalance: false,
            grace: Duration::ZERO,
            detector: false,
        }
    }

    fn node(i: u32) -> SwarmNode {
        SwarmNode {
            id: format!("id{i}"),
            hostname: format!("node{i}"),
            agent: format!("node{i}"),
            addr: format!("10.0.0.{i}"),
            state: SwarmState::Ready,
            availability: Availability::Active,
            leakmon_drained: false,
            standby: false,
        }
    }

    fn agent(i: u32, state: AgentState, last_seen: Instant) -> AgentFact {
        AgentFact {
            name: format!("node{i}"),
            swarm_node_id: Some(format!("id{i}")),
            state,
            last_seen,
            interval: S,
            beat_interval: None,
        }
    }

    /// A five-node fleet, all agents online, this gateway active.
    struct Fleet {
        d: Decide,
        t0: Instant,
        swarm: Vec<SwarmNode>,
        agents: Vec<AgentFact>,
        /// Agents (by index into `agents`) that no longer talk.
        silent: BTreeSet<usize>,
    }

    impl Fleet {
        fn new() -> Fleet {
            Self::with(settings())
        }
        fn with(s: Settings) -> Fleet {
            let t0 = Instant::now();
            let mut f = Fleet {
                d: Decide::new(s),
                t0,
                swarm: (1..=5).map(node).collect(),
                agents: (1..=5).map(|i| agent(i, AgentState::Online, t0)).collect(),
                silent: BTreeSet::new(),
            };
            f.d.set_active(true, t0);
            f.feed(t0);
            f
        }
        fn at(&self, secs: f64) -> Instant {
            self.t0 + Duration::from_secs_f64(secs)
        }
        fn feed(&mut self, now: Instant) {
            self.d.on_swarm(self.swarm.clone(), now);
            self.d.on_agents(self.agents.clone());
        }
        /// Agents that are online keep talking until `secs`.
        fn run_to(&mut self, secs: f64) -> Vec<Action> {
            let now = self.at(secs);
            for (i, a) in self.agents.iter_mut().enumerate() {
                if a.state == AgentState::Online && !self.silent.contains(&i) {
                    a.last_seen = now;
                }
            }
            self.feed(now);
            self.d.tick(now)
        }
        fn agent_mut(&mut self, i: u32) -> &mut AgentFact {
            &mut self.agents[(i - 1) as usize]
        }
        fn swarm_mut(&mut self, i: u32) -> &mut SwarmNode {
            &mut self.swarm[(i - 1) as usize]
        }
        /// Node i's agent falls silent at `secs`.
        fn silence(&mut self, i: u32, secs: f64) {
            let at = self.at(secs);
            self.silent.insert((i - 1) as usize);
            self.agent_mut(i).last_seen = at;
        }
    }

    fn kinds(actions: &[Action]) -> Vec<EventKind> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Event { kind, .. } => Some(*kind),
                _ => None,
            })
            .collect()
    }
    fn probes(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Probe { node_id, .. } => Some(node_id.clone()),
                _ => None,
            })
            .collect()
    }
    fn evacuations(actions: &[Action]) -> Vec<(String, bool)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Evacuate { node_id, surge, .. } => Some((node_id.clone(), *surge)),
                _ => None,
            })
            .collect()
    }
    /// Nothing but (re-)probes.
    fn quiet(actions: &[Action]) -> bool {
        actions.iter().all(|a| matches!(a, Action::Probe { .. }))
    }
    /// Node 2 drained by leakmon earlier (Swarm shows it drained), `reactivate_after` = 5 s,
    /// run to t = 1 s.
    fn node2_drained_by_leakmon() -> Fleet {
        let mut f = Fleet::with(Settings {
            reactivate_after: 5 * S,
            ..settings()
        });
        let s = f.swarm_mut(2);
        s.availability = Availability::Drain;
        s.leakmon_drained = true;
        f.run_to(1.0);
        f
    }

    /// The seconds in `secs` whose tick asks to reactivate a node.
    fn reactivations_at(f: &mut Fleet, secs: std::ops::Range<u32>) -> Vec<u32> {
        secs.filter(|s| {
            has(&f.run_to(f64::from(*s)), |x| {
                matches!(x, Action::Reactivate { .. })
            })
        })
        .collect()
    }

    fn has(actions: &[Action], f: impl Fn(&Action) -> bool) -> bool {
        actions.iter().any(f)
    }

    /// Node 5's cable pulled at t=10: silent, then its Will, then no probe answer.
    fn kill_node5(f: &mut Fleet) -> Vec<Action> {
        f.run_to(10.0);
        f.silence(5, 10.0);
        let a = f.run_to(12.5);
        assert_eq!(probes(&a), ["id5"], "probed once silent for 2 intervals");
        assert!(kinds(&a).is_empty());
        f.d.on_probe("id5", false, f.at(12.5));
        let a = f.run_to(13.0);
        assert!(kinds(&a).is_empty(), "silence alone is not death: {a:?}");
        f.agent_mut(5).state = AgentState::Lost; // the Will
        f.run_to(14.0)
    }

    #[test]
    fn all_well_means_no_actions() {
        let mut f = Fleet::new();
        for s in 1..100 {
            assert!(f.run_to(s as f64).is_empty());
        }
    }

    #[test]
    fn agent_gone_and_no_probe_answer_is_dead_and_evacuated_with_a_surge() {
        let mut f = Fleet::new();
        let a = kill_node5(&mut f);
        assert_eq!(kinds(&a), [EventKind::NodeDown]);
        assert_eq!(evacuations(&a), [("id5".to_owned(), true)]);
        assert!(quiet(&f.run_to(15.0)), "announced and evacuated once");
    }

    /// The retargets asked for: (service, from, fit standbys).
    fn retargets(actions: &[Action]) -> Vec<(String, String, Vec<String>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Retarget(r) => Some((r.service_id.clone(), r.from.clone(), r.to.clone())),
                _ => None,
            })
            .collect()
    }

    fn stranded_db(on: &str) -> Vec<Started> {
        vec![Started::Stranded {
            service_id: "db".into(),
            service: "db".into(),
            pinned_to: on.into(),
        }]
    }

    fn failed_over_db(to: u32) -> Vec<Started> {
        vec![Started::Failover {
            service_id: "db".into(),
            service: "db".into(),
            to_id: format!("id{to}"),
            to_host: format!("node{to}"),
        }]
    }

    fn standbys_of(actions: &[Action]) -> Vec<Vec<String>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Evacuate { standbys, .. } => Some(standbys.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_failover_that_found_no_standby_is_made_when_one_is_fit() {
        // Found by the chaos suite: the standby's engine had just restarted (Swarm: unknown)
        // when the db node died; db stayed pending for the whole outage.
        let mut f = Fleet::new();
        f.swarm_mut(3).standby = true;
        f.swarm_mut(3).state = SwarmState::Other;
        let a = kill_node5(&mut f);
        assert_eq!(evacuations(&a), [("id5".to_owned(), true)]);
        assert_eq!(standbys_of(&a), [Vec::<String>::new()], "node3 is not fit");
        f.d.on_started("id5", stranded_db("id5"), f.at(13.0));
        assert_eq!(f.d.watched_services(), ["db"]);
        assert!(retargets(&f.run_to(15.0)).is_empty(), "no standby yet");
        // a node without the label being ready changes nothing
        f.swarm_mut(4).state = SwarmState::Other;
        f.run_to(16.0);
        f.swarm_mut(4).state = SwarmState::Ready;
        assert!(retargets(&f.run_to(17.0)).is_empty());
        // the standby ready: db is moved there, once
        f.swarm_mut(3).state = SwarmState::Ready;
        assert_eq!(
            retargets(&f.run_to(18.0)),
            [("db".to_owned(), "id5".to_owned(), vec!["id3".to_owned()])]
        );
        assert!(retargets(&f.run_to(18.5)).is_empty(), "once");
        f.d.on_started("id5", failed_over_db(3), f.at(18.5));
        f.d.on_tasks("db", Some(vec![]));
        assert!(kinds(&f.run_to(19.0)).is_empty(), "pending, not confirmed");
        f.d.on_tasks("db", Some(vec!["id3".into()]));
        let a = f.run_to(20.0);
        assert_eq!(kinds(&a), [EventKind::Confirmed], "{a:?}");
        assert!(f.d.watched_services().is_empty(), "done");
    }

    #[test]
    fn a_node_back_before_a_standby_is_ready_fails_nothing_over() {
        let mut f = Fleet::new();
        f.swarm_mut(3).standby = true;
        f.swarm_mut(3).state = SwarmState::Other;
        kill_node5(&mut f);
        f.d.on_started("id5", stranded_db("id5"), f.at(13.0));
        f.silent.clear();
        f.agent_mut(5).state = AgentState::Online;
        f.d.on_probe("id5", true, f.at(15.0));
        assert!(has(&f.run_to(15.5), |a| matches!(
            a,
            Action::Event {
                kind: EventKind::NodeUp,
                ..
            }
        )));
        f.swarm_mut(3).state = SwarmState::Ready;
        assert!(
            retargets(&f.run_to(16.0)).is_empty(),
            "node5 is back: nothing is moved off it"
        );
        f.d.on_tasks("db", Some(vec!["id5".into()]));
        let a = f.run_to(17.0);
        assert_eq!(
            kinds(&a),
            [EventKind::Confirmed],
            "db runs on node5 again: {a:?}"
        );
        assert!(f.d.watched_services().is_empty());
    }

    /// Nodes 3 and 4 are standbys; node 5 (db) dies and db is failed over to node 3.
    fn db_failed_over_to_node3() -> Fleet {
        let mut f = Fleet::new();
        f.swarm_mut(3).standby = true;
        f.swarm_mut(4).standby = true;
        let a = kill_node5(&mut f);
        assert_eq!(standbys_of(&a), [vec!["id3".to_owned(), "id4".to_owned()]]);
        f.d.on_started("id5", failed_over_db(3), f.at(13.0));
        f.d.on_tasks("db", Some(vec![]));
        assert!(kinds(&f.run_to(14.0)).is_empty());
        f
    }

    #[test]
    fn a_failover_whose_standby_dies_moves_on_to_the_next_fit_one() {
        let mut f = db_failed_over_to_node3();
        // node3's agent goes silent (a frozen node): not fit any more, at once
        f.silence(3, 14.0);
        f.agent_mut(3).state = AgentState::Lost;
        let a = f.run_to(14.5);
        assert_eq!(kinds(&a), [EventKind::Unconfirmed], "{a:?}");
        assert_eq!(
            retargets(&a),
            [("db".to_owned(), "id3".to_owned(), vec!["id4".to_owned()])]
        );
        f.d.on_started("id5", failed_over_db(4), f.at(14.5));
        f.d.on_tasks("db", Some(vec!["id4".into()]));
        assert_eq!(kinds(&f.run_to(15.0)), [EventKind::Confirmed]);
    }

    #[test]
    fn a_failover_whose_task_never_runs_moves_on_after_its_bound() {
        let mut f = db_failed_over_to_node3();
        for t in 15..23 {
            let a = f.run_to(f64::from(t));
            assert!(
                kinds(&a).is_empty() && retargets(&a).is_empty(),
                "within the bound at {t}"
            );
        }
        let a = f.run_to(23.0);
        assert_eq!(kinds(&a), [EventKind::Unconfirmed], "{a:?}");
        assert_eq!(
            retargets(&a),
            [("db".to_owned(), "id3".to_owned(), vec!["id4".to_owned()])]
        );
        // node4 does not start it either: node3 was tried lately, so nowhere to go
        f.d.on_started("id5", failed_over_db(4), f.at(23.0));
        f.d.on_tasks("db", Some(vec![]));
        for t in 24..33 {
            let a = f.run_to(f64::from(t));
            assert!(
                kinds(&a).is_empty() && retargets(&a).is_empty(),
                "within the bound at {t}"
            );
        }
        let a = f.run_to(33.5);
        assert_eq!(
            kinds(&a),
            [EventKind::Unconfirmed, EventKind::FailoverImpossible],
            "{a:?}"
        );
        // after TRIED_FOR, node3 is tried again rather than leaving db nowhere
        assert!(retargets(&f.run_to(60.0)).is_empty());
        let a = f.run_to(83.5);
        assert_eq!(
            retargets(&a),
            [("db".to_owned(), "id4".to_owned(), vec!["id3".to_owned()])]
        );
    }

    #[test]
    fn with_no_standby_left_it_is_impossible_until_the_standby_thaws() {
        let mut f = Fleet::new();
        f.swarm_mut(3).standby = true;
        let a = kill_node5(&mut f);
        assert_eq!(standbys_of(&a), [vec!["id3".to_owned()]]);
        f.d.on_started("id5", failed_over_db(3), f.at(13.0));
        f.d.on_tasks("db", Some(vec![]));
        // node3 freezes: its agent falls silent
        f.silence(3, 13.0);
        let a = f.run_to(15.5);
        assert_eq!(
            kinds(&a),
            [EventKind::Unconfirmed, EventKind::FailoverImpossible],
            "{a:?}"
        );
        let why = a.iter().find_map(|x| match x {
            Action::Event {
                kind: EventKind::FailoverImpossible,
                details,
                ..
            } => details.iter().find(|(k, _)| *k == "standbys").cloned(),
            _ => None,
        });
        assert_eq!(
            why.map(|(_, v)| v),
            Some("node3: its agent is silent".to_owned())
        );
        assert!(kinds(&f.run_to(30.0)).is_empty(), "said once");
        // node3 thaws: db is pinned there already; confirmed once its task runs
        f.silent.clear();
        let a = f.run_to(31.0);
        assert!(kinds(&a).is_empty() && retargets(&a).is_empty(), "{a:?}");
        f.d.on_tasks("db", Some(vec!["id3".into()]));
        assert_eq!(kinds(&f.run_to(32.0)), [EventKind::Confirmed]);
    }

    #[test]
    fn a_standby_is_fit_only_while_swarm_its_agent_and_the_detector_say_so() {
        let mut f = with_detector();
        for i in 1..=5 {
            f.swarm_mut(i).standby = true;
        }
        f.swarm_mut(1).availability = Availability::Drain;
        f.swarm_mut(2).state = SwarmState::Other;
        f.run_to(5.0);
        f.silence(3, 5.0);
        detected(&mut f, 4, Status::Suspect);
        f.run_to(10.0);
        let s = f.d.standbys(f.at(10.0));
        assert_eq!(s.fit.keys().collect::<Vec<_>>(), ["id5"]);
        let why = |i: &str| s.unfit.get(i).map(|(_, w)| w.as_str()).unwrap_or("fit");
        assert_eq!(why("id1"), "it is not active in Swarm (paused or drained)");
        assert_eq!(why("id2"), "Swarm does not report it ready");
        assert_eq!(why("id3"), "its agent is silent");
        assert_eq!(why("id4"), "its agent's beats stopped");
    }

    #[test]
    fn watches_are_made_only_by_the_active_gateway() {
        let mut f = db_failed_over_to_node3();
        f.d.set_active(false, f.at(14.0));
        f.silence(3, 14.0);
        for t in 15..40 {
            let a = f.run_to(f64::from(t));
            assert!(quiet(&a), "standby: nothing at {t}: {a:?}");
        }
    }

    #[test]
    fn stale_agent_counts_as_gone() {
        let mut f = Fleet::new();
        f.silence(5, 10.0);
        f.run_to(12.5);
        f.d.on_probe("id5", false, f.at(12.5));
        f.agent_mut(5).state = AgentState::Stale;
        assert_eq!(kinds(&f.run_to(26.0)), [EventKind::NodeDown]);
    }

    #[test]
    fn a_probe_sent_before_the_agent_fell_silent_does_not_count() {
        let mut f = Fleet::new();
        f.d.on_probe("id5", false, f.at(1.0)); // an old failed probe
        f.silence(5, 10.0);
        f.agent_mut(5).state = AgentState::Lost;
        let a = f.run_to(11.0);
        assert!(kinds(&a).is_empty(), "{a:?}");
        assert_eq!(probes(&a), ["id5"], "a fresh probe instead");
    }

    #[test]
    fn agent_gone_on_a_node_that_answers_is_agent_lost_and_never_drained() {
        let mut f = Fleet::new();
        f.silence(3, 10.0);
        f.agent_mut(3).state = AgentState::Lost;
        let a = f.run_to(11.0);
        assert_eq!(probes(&a), ["id3"]);
        f.d.on_probe("id3", true, f.at(11.0));
        let a = f.run_to(11.5);
        assert_eq!(kinds(&a), [EventKind::AgentLost]);
        assert!(evacuations(&a).is_empty());
        // re-probed every PROBE_EVERY, quietly
        let a = f.run_to(14.5);
        assert_eq!(probes(&a), ["id3"]);
        f.d.on_probe("id3", true, f.at(14.5));
        assert!(quiet(&f.run_to(15.0)));
        // ...and when the node dies later, it is caught
        let a = f.run_to(17.6);
        assert_eq!(probes(&a), ["id3"]);
        f.d.on_probe("id3", false, f.at(17.6));
        let a = f.run_to(18.0);
        assert_eq!(kinds(&a), [EventKind::NodeDown]);
        assert_eq!(evacuations(&a).len(), 1);
    }

    #[test]
    fn a_clean_goodbye_is_not_death() {
        let mut f = Fleet::new();
        f.silence(2, 10.0);
        f.agent_mut(2).state = AgentState::Shutdown;
        for s in 11..40 {
            let a = f.run_to(s as f64);
            assert!(kinds(&a).is_empty() && probes(&a).is_empty(), "{a:?}");
        }
    }

    #[test]
    fn swarm_down_alone_is_dead_surged_and_settled_once_the_surge_runs() {
        let mut f = Fleet::new();
        f.run_to(5.0);
        f.swarm_mut(4).state = SwarmState::Down;
        let a = f.run_to(6.0);
        assert_eq!(kinds(&a), [EventKind::NodeDown]);
        // Swarm's own replacements wait out the restart delay: a surge runs now
        assert_eq!(evacuations(&a), [("id4".to_owned(), true)]);
        let settles = |a: &[Action]| has(a, |x| matches!(x, Action::Settle { .. }));
        assert!(
            !settles(&a),
            "not at Swarm's down: the surge is not running yet"
        );
        f.d.on_started(
            "id4",
            vec![Started::Surge {
                service_id: "web".into(),
                service: "web".into(),
                want: 5,
            }],
            f.at(6.0),
        );
        f.d.on_tasks("web", Some(vec!["n1".into(), "n2".into(), "n3".into()]));
        assert!(!settles(&f.run_to(8.0)), "its replicas not all running");
        f.d.on_tasks(
            "web",
            Some(["n1", "n2", "n3", "n5", "n5"].map(String::from).to_vec()),
        );
        // (confirmed in one tick, settled in the next)
        f.run_to(9.0);
        let a = f.run_to(9.25);
        assert!(settles(&a), "settled once they run: {a:?}");
    }

    #[test]
    fn a_surge_without_anything_to_watch_on_a_node_swarm_let_go_is_settled_at_once() {
        let mut f = Fleet::new();
        f.run_to(5.0);
        f.swarm_mut(4).state = SwarmState::Down;
        f.run_to(6.0);
        let a = f.run_to(6.5);
        assert!(has(&a, |x| matches!(x, Action::Settle { .. })), "{a:?}");
    }

    #[test]
    fn partition_gateway_cannot_reach_node_but_agent_talks_is_alive() {
        let mut f = Fleet::new();
        f.d.on_probe("id2", false, f.at(1.0));
        for s in 2..30 {
            assert!(f.run_to(s as f64).is_empty());
        }
    }

    #[test]
    fn surge_is_settled_when_swarm_marks_the_node_down() {
        let mut f = Fleet::new();
        kill_node5(&mut f);
        assert!(quiet(&f.run_to(20.0)));
        f.swarm_mut(5).state = SwarmState::Down;
        f.swarm_mut(5).availability = Availability::Pause;
        f.swarm_mut(5).leakmon_drained = true;
        let a = f.run_to(21.0);
        assert!(
            has(
                &a,
                |x| matches!(x, Action::Settle { node_id, .. } if node_id == "id5")
            ),
            "{a:?}"
        );
        assert!(kinds(&a).is_empty(), "already announced: {a:?}");
        assert!(quiet(&f.run_to(22.0)), "settled once");
    }

    #[test]
    fn surge_is_settled_when_the_node_returns_before_swarm_notices_or_after_a_timeout() {
        let mut f = Fleet::new();
        kill_node5(&mut f);
        f.swarm_mut(5).availability = Availability::Pause;
        f.swarm_mut(5).leakmon_drained = true;
        // back: new birth, answers
        let a5 = f.agent_mut(5);
        a5.state = AgentState::Online;
        f.silent.remove(&4);
        let a = f.run_to(16.0);
        assert_eq!(kinds(&a), [EventKind::NodeUp]);
        assert!(has(&a, |x| matches!(x, Action::Settle { .. })));

        let mut f = Fleet::new();
        kill_node5(&mut f);
        assert!(quiet(&f.run_to(14.0 + 59.0)));
        assert!(has(&f.run_to(14.0 + 60.0), |x| matches!(
            x,
            Action::Settle { .. }
        )));
    }

    #[test]
    fn a_dead_node_answering_before_its_agent_is_back_is_announced_up_with_the_agent() {
        let mut f = Fleet::new();
        kill_node5(&mut f);
        f.swarm_mut(5).availability = Availability::Drain;
        f.swarm_mut(5).leakmon_drained = true;
        // the link is back: the node answers, its agent has not reconnected yet
        let a = f.run_to(17.1);
        assert_eq!(probes(&a), ["id5"]);
        f.d.on_probe("id5", true, f.at(17.1));
        let a = f.run_to(18.0);
        assert!(
            kinds(&a).is_empty(),
            "neither agent_lost nor node_up yet: {a:?}"
        );
        let a5 = f.agent_mut(5);
        a5.state = AgentState::Online;
        f.silent.remove(&4);
        assert_eq!(kinds(&f.run_to(19.0)), [EventKind::NodeUp]);
    }

    #[test]
    fn reactivated_after_being_back_for_the_delay_without_a_break() {
        let mut f = Fleet::new();
        kill_node5(&mut f);
        f.swarm_mut(5).state = SwarmState::Down;
        f.swarm_mut(5).availability = Availability::Drain;
        f.swarm_mut(5).leakmon_drained = true;
        f.run_to(20.0);
        // back at 30
        f.swarm_mut(5).state = SwarmState::Ready;
        let a5 = f.agent_mut(5);
        a5.state = AgentState::Online;
        f.silent.remove(&4);
        assert_eq!(kinds(&f.run_to(30.0)), [EventKind::NodeUp]);
        // a short break at 50 restarts the clock
        f.swarm_mut(5).state = SwarmState::Other;
        assert!(quiet(&f.run_to(50.0)));
        f.swarm_mut(5).state = SwarmState::Ready;
        assert!(quiet(&f.run_to(51.0)));
        assert!(quiet(&f.run_to(110.0)), "59 s back");
        let a = f.run_to(111.0);
        assert!(
            has(
                &a,
                |x| matches!(x, Action::Reactivate { node_id, .. } if node_id == "id5")
            ),
            "{a:?}"
        );
        assert!(!has(&a, |x| matches!(x, Action::Rebalance)));
        f.swarm_mut(5).availability = Availability::Active;
        f.swarm_mut(5).leakmon_drained = false;
        let a = f.run_to(112.0);
        assert_eq!(
            kinds(&a),
            [EventKind::Confirmed],
            "Swarm shows it active: {a:?}"
        );
        assert!(quiet(&f.run_to(113.0)));
    }

    #[test]
    fn a_reactivation_swarm_does_not_show_is_unconfirmed_once() {
        let mut f = node2_drained_by_leakmon();
        assert!(has(&f.run_to(6.0), |x| matches!(
            x,
            Action::Reactivate { .. }
        )));
        for t in 7..16 {
            assert!(kinds(&f.run_to(f64::from(t))).is_empty());
        }
        assert_eq!(kinds(&f.run_to(16.0)), [EventKind::Unconfirmed]);
        for t in 17..60 {
            assert!(kinds(&f.run_to(f64::from(t))).is_empty(), "once");
        }
    }

    #[test]
    fn rebalance_follows_a_reactivation_when_enabled() {
        let mut f = Fleet::with(Settings {
            rebalance: true,
            reactivate_after: 5 * S,
            ..settings()
        });
        f.swarm_mut(2).availability = Availability::Drain;
        f.swarm_mut(2).leakmon_drained = true;
        f.run_to(1.0);
        let a = f.run_to(6.0);
        assert!(has(&a, |x| matches!(x, Action::Reactivate { .. })));
        assert!(has(&a, |x| matches!(x, Action::Rebalance)));
    }

    #[test]
    fn a_node_an_operator_drained_is_never_touched() {
        let mut f = Fleet::with(Settings {
            reactivate_after: 5 * S,
            ..settings()
        });
        f.swarm_mut(2).availability = Availability::Drain;
        for s in 1..100 {
            assert!(f.run_to(s as f64).is_empty());
        }
        // and it dies: announced, nothing to move
        f.swarm_mut(2).state = SwarmState::Down;
        let a = f.run_to(101.0);
        assert_eq!(kinds(&a), [EventKind::NodeDown]);
        assert!(evacuations(&a).is_empty());
    }

    #[test]
    fn flapping_node_stays_drained() {
        let mut f = Fleet::with(Settings {
            reactivate_after: 5 * S,
            ..settings()
        });
        f.swarm_mut(4).state = SwarmState::Down;
        assert_eq!(evacuations(&f.run_to(1.0)).len(), 1);
        f.swarm_mut(4).availability = Availability::Drain;
        f.swarm_mut(4).leakmon_drained = true;
        f.swarm_mut(4).state = SwarmState::Ready;
        f.run_to(2.0);
        let a = f.run_to(7.0);
        assert!(has(&a, |x| matches!(x, Action::Reactivate { .. })));
        f.swarm_mut(4).availability = Availability::Active;
        f.swarm_mut(4).leakmon_drained = false;
        f.run_to(8.0);
        // dies again 2 minutes later
        f.swarm_mut(4).state = SwarmState::Down;
        let a = f.run_to(127.0);
        assert_eq!(kinds(&a), [EventKind::NodeDown, EventKind::Flapping]);
        assert_eq!(evacuations(&a).len(), 1);
        f.swarm_mut(4).availability = Availability::Drain;
        f.swarm_mut(4).leakmon_drained = true;
        f.swarm_mut(4).state = SwarmState::Ready;
        f.run_to(128.0);
        for s in 129..300 {
            assert!(
                !has(&f.run_to(s as f64), |x| matches!(
                    x,
                    Action::Reactivate { .. }
                )),
                "flapping: stays drained"
            );
        }
    }

    #[test]
    fn death_long_after_a_reactivation_is_not_flapping() {
        let mut f = Fleet::with(Settings {
            reactivate_after: 5 * S,
            cooldown: 60 * S,
            ..settings()
        });
        f.swarm_mut(4).availability = Availability::Drain;
        f.swarm_mut(4).leakmon_drained = true;
        f.run_to(1.0);
        assert!(has(&f.run_to(6.0), |x| matches!(
            x,
            Action::Reactivate { .. }
        )));
        f.swarm_mut(4).availability = Availability::Active;
        f.swarm_mut(4).leakmon_drained = false;
        f.run_to(7.0);
        f.swarm_mut(4).state = SwarmState::Down;
        assert_eq!(kinds(&f.run_to(100.0)), [EventKind::NodeDown]);
    }

    #[test]
    fn standby_decides_nothing_and_acts_on_becoming_active() {
        let mut f = Fleet::new();
        f.d.set_active(false, f.at(0.0));
        f.swarm_mut(5).state = SwarmState::Down;
        for s in 1..20 {
            let a = f.run_to(s as f64);
            assert!(kinds(&a).is_empty() && evacuations(&a).is_empty(), "{a:?}");
        }
        f.d.set_active(true, f.at(20.0));
        let a = f.run_to(20.0);
        assert_eq!(kinds(&a), [EventKind::NodeDown]);
        assert_eq!(evacuations(&a).len(), 1);
    }

    #[test]
    fn a_node_put_back_by_another_gateway_is_evacuated_again_in_a_later_term() {
        let mut f = Fleet::new();
        f.run_to(5.0);
        f.silence(5, 5.0);
        f.agent_mut(5).state = AgentState::Lost;
        f.run_to(6.0);
        f.d.on_probe("id5", false, f.at(6.0));
        let a = f.run_to(7.0);
        assert_eq!(evacuations(&a).len(), 1, "{a:?}");
        // another gateway's term: it reactivated node5, which came back
        f.d.set_active(false, f.at(8.0));
        f.silent.clear();
        f.agent_mut(5).state = AgentState::Online;
        f.agent_mut(5).last_seen = f.at(30.0);
        f.run_to(30.0);
        // node5 dies again, and this gateway's term begins at that moment (a deputy standing
        // in as the death happens)
        f.silence(5, 38.0);
        f.agent_mut(5).state = AgentState::Lost;
        f.run_to(39.0);
        f.d.on_probe("id5", false, f.at(39.0));
        f.d.set_active(true, f.at(40.0));
        let mut a = f.run_to(40.0);
        a.extend(f.run_to(41.0));
        assert_eq!(evacuations(&a).len(), 1, "evacuated again: {a:?}");
    }

    #[test]
    fn a_service_swarm_still_lists_on_a_dead_node_is_not_running_there_again() {
        let mut f = Fleet::new();
        f.run_to(5.0);
        f.swarm_mut(4).state = SwarmState::Down;
        let a = f.run_to(6.0);
        assert_eq!(kinds(&a), [EventKind::NodeDown]);
        f.d.on_started(
            "id4",
            vec![Started::Stranded {
                service_id: "db".into(),
                service: "db".into(),
                pinned_to: "id4".into(),
            }],
            f.at(6.0),
        );
        // Swarm has not noticed yet: it lists db's task running on node4
        f.d.on_tasks("db", Some(vec!["id4".into()]));
        let mut a = f.run_to(7.0);
        a.extend(f.run_to(8.0));
        assert!(!kinds(&a).contains(&EventKind::Confirmed), "{a:?}");
    }

    #[test]
    fn standby_keeps_probing_so_a_takeover_is_quick() {
        let mut f = Fleet::new();
        f.d.set_active(false, f.at(0.0));
        f.silence(5, 10.0);
        f.agent_mut(5).state = AgentState::Lost;
        assert_eq!(probes(&f.run_to(11.0)), ["id5"]);
        f.d.on_probe("id5", false, f.at(11.0));
        assert!(quiet(&f.run_to(11.5)));
        f.d.set_active(true, f.at(12.0));
        let a = f.run_to(12.0);
        assert_eq!(kinds(&a), [EventKind::NodeDown]);
    }

    #[test]
    fn leader_change_does_not_reannounce_what_the_old_leader_handled_but_finishes_it() {
        let mut f = Fleet::new();
        f.d.set_active(false, f.at(0.0));
        let s = f.swarm_mut(5);
        s.state = SwarmState::Down;
        s.availability = Availability::Pause;
        s.leakmon_drained = true;
        f.run_to(1.0);
        f.d.set_active(true, f.at(2.0));
        let a = f.run_to(2.0);
        assert!(kinds(&a).is_empty(), "{a:?}");
        assert_eq!(
            evacuations(&a),
            [("id5".to_owned(), false)],
            "repeat: finish it"
        );
        assert!(
            has(&a, |x| matches!(x, Action::Settle { .. })),
            "the pause is settled"
        );
    }

    #[test]
    fn losing_leadership_stops_acting() {
        let mut f = Fleet::new();
        f.run_to(1.0);
        f.d.set_active(false, f.at(2.0));
        f.swarm_mut(1).state = SwarmState::Down;
        assert!(evacuations(&f.run_to(3.0)).is_empty());
    }

    #[test]
    fn several_nodes_at_once_up_to_max_drained_then_one_mass_failure() {
        let mut f = Fleet::new();
        for i in [3, 4, 5] {
            f.swarm_mut(i).state = SwarmState::Down;
        }
        let a = f.run_to(1.0);
        assert_eq!(
            kinds(&a),
            [
                EventKind::NodeDown,
                EventKind::NodeDown,
                EventKind::NodeDown,
                EventKind::MassFailure
            ]
        );
        assert_eq!(evacuations(&a).len(), 2, "fewer than half of 5");
        for i in [3, 4] {
            let s = f.swarm_mut(i);
            s.availability = Availability::Drain;
            s.leakmon_drained = true;
        }
        f.swarm_mut(2).state = SwarmState::Down;
        let a = f.run_to(2.0);
        assert_eq!(kinds(&a), [EventKind::NodeDown], "mass_failure raised once");
        assert!(evacuations(&a).is_empty());
        // node 3 comes back and is reactivated: a held node may now be drained
        f.swarm_mut(3).state = SwarmState::Ready;
        f.run_to(3.0);
        let a = f.run_to(63.0);
        assert!(has(&a, |x| matches!(x, Action::Reactivate { .. })));
        let s = f.swarm_mut(3);
        s.availability = Availability::Active;
        s.leakmon_drained = false;
        let a = f.run_to(64.0);
        assert_eq!(evacuations(&a).len(), 1, "{a:?}");
    }

    #[test]
    fn explicit_max_drained() {
        let mut f = Fleet::with(Settings {
            max_drained: Some(1),
            ..settings()
        });
        f.swarm_mut(4).state = SwarmState::Down;
        f.swarm_mut(5).state = SwarmState::Down;
        let a = f.run_to(1.0);
        assert_eq!(evacuations(&a).len(), 1);
        assert!(kinds(&a).contains(&EventKind::MassFailure));
    }

    #[test]
    fn flapping_agent_before_the_probe_answers_is_nothing() {
        let mut f = Fleet::new();
        f.silence(2, 10.0);
        f.agent_mut(2).state = AgentState::Lost;
        assert_eq!(probes(&f.run_to(11.0)), ["id2"]);
        // the agent is back before the probe result
        let a2 = f.agent_mut(2);
        a2.state = AgentState::Online;
        f.silent.remove(&1);
        f.run_to(11.5);
        f.d.on_probe("id2", false, f.at(11.0));
        for s in 12..30 {
            let a = f.run_to(s as f64);
            assert!(kinds(&a).is_empty(), "{a:?}");
        }
    }

    #[test]
    fn a_late_will_of_an_older_connection_changes_nothing() {
        use crate::liveness::Liveness;
        use leakmon_protocol::{NodeState, OfflineReason, Status};
        let st = |state, seq| Status {
            v: 1,
            node: "node5".into(),
            state,
            seq,
            reason: (state == NodeState::Offline).then_some(OfflineReason::Lost),
            ts: 0,
            identity: None,
        };
        let mut l = Liveness::new(15 * S);
        let mut f = Fleet::new();
        l.on_status("node5", &st(NodeState::Online, 7), f.at(0.0));
        l.on_status("node5", &st(NodeState::Offline, 6), f.at(5.0));
        let n = &l.nodes()["node5"];
        f.agent_mut(5).state = match n.state {
            crate::liveness::State::Online => AgentState::Online,
            _ => AgentState::Lost,
        };
        for s in 5..30 {
            assert!(f.run_to(s as f64).is_empty());
        }
    }

    #[test]
    fn an_agent_claiming_another_nodes_id_cannot_keep_that_node_alive() {
        // node3's credential sends beats and births claiming node5's Swarm id: node5 still dies
        let mut f = Fleet::new();
        f.agent_mut(3).swarm_node_id = Some("id5".into());
        let a = kill_node5(&mut f);
        assert_eq!(kinds(&a), [EventKind::NodeDown], "{a:?}");
    }

    #[test]
    fn a_node_labelled_with_its_agents_name_is_judged_by_that_agent() {
        // node5's agent is configured as "edge-05": the operator labels the node leakmon.node
        let mut f = Fleet::new();
        f.agent_mut(5).name = "edge-05".into();
        f.swarm_mut(5).agent = "edge-05".into();
        let a = kill_node5(&mut f);
        assert_eq!(kinds(&a), [EventKind::NodeDown], "{a:?}");
    }

    #[test]
    fn agents_are_matched_by_hostname_without_a_swarm_id() {
        let mut f = Fleet::new();
        let a = f.agent_mut(5);
        a.swarm_node_id = None;
        f.silence(5, 10.0);
        f.agent_mut(5).state = AgentState::Lost;
        let a = f.run_to(11.0);
        assert_eq!(probes(&a), ["id5"]);
    }

    #[test]
    fn a_node_paused_by_an_earlier_gateway_is_adopted_and_settled_once() {
        let mut f = Fleet::new();
        let s = f.swarm_mut(5);
        s.availability = Availability::Pause;
        s.leakmon_drained = true;
        // it is back (agent online, ready): settled once, not on every poll
        let a = f.run_to(1.0);
        assert_eq!(
            a.iter()
                .filter(|x| matches!(x, Action::Settle { .. }))
                .count(),
            1,
            "{a:?}"
        );
        for s in 2..10 {
            assert!(!has(&f.run_to(s as f64), |x| matches!(
                x,
                Action::Settle { .. }
            )));
        }
    }

    #[test]
    fn reactivation_is_asked_once_even_if_swarm_does_not_follow() {
        // e.g. dry run, or a failed call: no repeat every reactivate_after
        let mut f = node2_drained_by_leakmon();
        assert_eq!(reactivations_at(&mut f, 2..60).len(), 1);
    }

    #[test]
    fn a_reactivation_lost_with_the_leadership_is_asked_again_by_the_next_term() {
        let mut f = node2_drained_by_leakmon();
        assert!(has(&f.run_to(6.0), |x| matches!(
            x,
            Action::Reactivate { .. }
        )));
        // the call failed: Swarm still shows it drained; leadership goes and comes back
        f.d.set_active(false, f.at(7.0));
        f.run_to(7.0);
        f.d.set_active(true, f.at(20.0));
        assert_eq!(
            reactivations_at(&mut f, 20..40).len(),
            1,
            "asked once more, once"
        );
    }

    #[test]
    fn ghosts_of_decommissioned_nodes_do_not_switch_failover_off() {
        // Four retained `offline` statuses of hosts no Swarm node is: shown, never counted.
        let mut f = Fleet::new();
        for g in 0..4 {
            let mut ghost = agent(10 + g, AgentState::Lost, f.t0);
            ghost.swarm_node_id = Some(format!("gone{g}"));
            f.agents.push(ghost);
        }
        f.run_to(10.0);
        let a = kill_node5(&mut f);
        assert!(!kinds(&a).contains(&EventKind::MassFailure), "{a:?}");
        assert_eq!(kinds(&a), [EventKind::NodeDown], "{a:?}");
    }

    #[test]
    fn agents_lost_on_hosts_that_answer_do_not_make_the_gateway_think_itself_cut_off() {
        // node3's and node4's agents are killed; their hosts answer: agent_lost. Their
        // silence is their agents', so node5's death is still handled.
        let mut f = Fleet::new();
        f.run_to(2.0);
        for i in [3, 4] {
            f.silence(i, 2.0);
            f.agent_mut(i).state = AgentState::Lost;
        }
        let a = f.run_to(3.0);
        assert_eq!(probes(&a), ["id3", "id4"]);
        for i in [3, 4] {
            f.d.on_probe(&format!("id{i}"), true, f.at(3.0));
        }
        let a = f.run_to(4.0);
        assert_eq!(kinds(&a), [EventKind::AgentLost, EventKind::AgentLost]);
        let a = kill_node5(&mut f);
        assert_eq!(kinds(&a), [EventKind::NodeDown], "{a:?}");
    }

    #[test]
    fn a_gateway_that_hears_no_agent_acts_on_nothing() {
        // cut off: every agent falls silent together, every probe fails
        let mut f = Fleet::new();
        f.run_to(10.0);
        for i in 1..=5 {
            f.silence(i, 10.0);
        }
        let a = f.run_to(12.5);
        assert_eq!(kinds(&a), [EventKind::MassFailure], "told once: {a:?}");
        for i in 1..=5 {
            f.d.on_probe(&format!("id{i}"), false, f.at(12.5));
            f.agent_mut(i).state = AgentState::Stale;
        }
        for s in 13..40 {
            let a = f.run_to(s as f64);
            assert!(
                kinds(&a).is_empty() && evacuations(&a).is_empty(),
                "{s}: {a:?}"
            );
        }
    }

    #[test]
    fn a_failed_reactivation_is_asked_again_after_another_delay() {
        let mut f = node2_drained_by_leakmon();
        assert!(has(&f.run_to(6.0), |x| matches!(
            x,
            Action::Reactivate { .. }
        )));
        f.d.on_reactivate_failed("id2");
        let at = reactivations_at(&mut f, 7..30);
        assert_eq!(at, [12], "once more, a reactivate_after later");
    }

    #[test]
    fn no_settle_or_reactivation_on_a_missing_agent_during_the_start_grace() {
        let mut f = Fleet::with(Settings {
            grace: 15 * S,
            reactivate_after: 5 * S,
            ..settings()
        });
        f.agents.retain(|a| a.name != "node5"); // its retained status not heard yet
        let s = f.swarm_mut(5);
        s.availability = Availability::Pause;
        s.leakmon_drained = true;
        for s in 1..14 {
            let a = f.run_to(s as f64);
            assert!(
                !has(&a, |x| matches!(
                    x,
                    Action::Settle { .. } | Action::Reactivate { .. }
                )),
                "{s}: {a:?}"
            );
        }
        assert!(has(&f.run_to(16.0), |x| matches!(x, Action::Settle { .. })));
    }

    #[test]
    fn a_node_already_drained_is_not_surged_back_to_pause() {
        let mut f = Fleet::new();
        f.d.set_active(false, f.at(0.0));
        let s = f.swarm_mut(5);
        s.availability = Availability::Drain;
        s.leakmon_drained = true;
        f.silence(5, 0.0);
        f.agent_mut(5).state = AgentState::Lost;
        f.run_to(1.0);
        f.d.on_probe("id5", false, f.at(1.0));
        f.d.set_active(true, f.at(2.0));
        assert_eq!(evacuations(&f.run_to(2.0)), [("id5".to_owned(), false)]);
    }

    #[test]
    fn an_operator_paused_node_is_left_alone() {
        let mut f = Fleet::new();
        f.swarm_mut(2).availability = Availability::Pause;
        f.swarm_mut(2).state = SwarmState::Down;
        let a = f.run_to(1.0);
        assert_eq!(kinds(&a), [EventKind::NodeDown]);
        assert!(evacuations(&a).is_empty());
    }

    #[test]
    fn an_operator_reactivating_a_flapping_node_ends_the_flapping() {
        let mut f = Fleet::with(Settings {
            reactivate_after: 5 * S,
            ..settings()
        });
        // flapping: reactivated, then dead again at once
        f.swarm_mut(4).availability = Availability::Drain;
        f.swarm_mut(4).leakmon_drained = true;
        f.run_to(1.0);
        f.run_to(6.0);
        f.swarm_mut(4).availability = Availability::Active;
        f.swarm_mut(4).leakmon_drained = false;
        f.run_to(7.0);
        f.swarm_mut(4).state = SwarmState::Down;
        assert!(kinds(&f.run_to(8.0)).contains(&EventKind::Flapping));
        // the operator sets it active (the label may stay: it no longer counts)
        f.swarm_mut(4).state = SwarmState::Ready;
        f.swarm_mut(4).availability = Availability::Active;
        f.run_to(9.0);
        // its next death is handled again
        f.swarm_mut(4).state = SwarmState::Down;
        let a = f.run_to(700.0);
        assert_eq!(evacuations(&a).len(), 1, "{a:?}");
        assert!(!kinds(&a).contains(&EventKind::Flapping), "cooldown over");
    }

    #[test]
    fn the_online_agent_wins_over_a_stale_one_with_the_same_node() {
        let mut f = Fleet::new();
        let old = AgentFact {
            name: "old-name".into(),
            swarm_node_id: Some("id3".into()),
            state: AgentState::Lost,
            last_seen: f.at(0.0),
            interval: S,
            beat_interval: None,
        };
        f.agents.insert(0, old);
        for s in 1..20 {
            let a = f.run_to(s as f64);
            assert!(a.is_empty(), "{a:?}");
        }
    }

    #[test]
    fn unhealthy_task_forces_an_update_after_the_delay_rate_limited_per_service() {
        let mut f = Fleet::new();
        let t = |c: &str| UnhealthyTask {
            container_id: c.into(),
            service: "web".into(),
            node: "node2".into(),
        };
        f.d.on_unhealthy(vec![t("c1")], f.at(0.0));
        assert!(quiet(&f.run_to(29.0)));
        let a = f.run_to(30.0);
        assert!(
            has(
                &a,
                |x| matches!(x, Action::ForceUpdate { service, .. } if service == "web")
            ),
            "{a:?}"
        );
        // the replacement is unhealthy too: not before force_update_every
        f.d.on_unhealthy(vec![t("c2")], f.at(31.0));
        assert!(quiet(&f.run_to(100.0)));
        assert_eq!(f.run_to(330.0).len(), 1);
        // healthy again in between resets the clock
        f.d.on_unhealthy(vec![], f.at(331.0));
        f.d.on_unhealthy(vec![t("c3")], f.at(340.0));
        assert!(quiet(&f.run_to(369.0)));
    }

    #[test]
    fn services_forced_long_ago_are_forgotten() {
        // Issue 27: the rate limit's map kept every service ever forced, for ever.
        let mut f = Fleet::new();
        let t = |c: &str, service: &str| UnhealthyTask {
            container_id: c.into(),
            service: service.into(),
            node: "node2".into(),
        };
        let tasks: Vec<UnhealthyTask> = (0..50)
            .map(|i| t(&format!("c{i}"), &format!("svc{i}")))
            .collect();
        f.d.on_unhealthy(tasks, f.at(0.0));
        let a = f.run_to(30.0);
        assert_eq!(a.len(), 50, "{a:?}");
        assert_eq!(f.d.forced.len(), 50);
        f.d.on_unhealthy(vec![], f.at(31.0));
        f.run_to(31.0 + f.d.s.force_update_every.as_secs_f64() + 1.0);
        assert!(f.d.forced.is_empty(), "{:?}", f.d.forced.keys());
    }

    #[test]
    fn only_a_swarm_nodes_agent_asks_and_a_refusal_spends_nothing() {
        let mut f = Fleet::new();
        let t = |c: &str, node: &str| UnhealthyTask {
            container_id: c.into(),
            service: "db".into(),
            node: node.into(),
        };
        // a name no Swarm node has: shown, never acted on
        f.d.on_unhealthy(vec![t("ghost", "intruder")], f.at(0.0));
        assert!(quiet(&f.run_to(100.0)));
        // node2's agent: asked about, with node2's Swarm id for the shell to check the task on
        f.d.on_unhealthy(vec![t("ghost", "intruder"), t("c1", "node2")], f.at(100.0));
        let a = f.run_to(130.0);
        let asked: Vec<_> = a
            .iter()
            .filter_map(|x| match x {
                Action::ForceUpdate {
                    node_id,
                    container_id,
                    ..
                } => Some((node_id.as_str(), container_id.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(asked, [("id2", "c1")]);
        // Swarm does not confirm c1: not asked again, and db's rate limit is not spent
        f.d.on_refused("db", "c1", "node2", f.at(130.0));
        assert!(quiet(&f.run_to(200.0)));
        f.d.on_unhealthy(vec![t("c1", "node2"), t("c2", "node3")], f.at(200.0));
        let a = f.run_to(230.0);
        assert!(
            has(
                &a,
                |x| matches!(x, Action::ForceUpdate { container_id, .. } if container_id == "c2")
            ),
            "{a:?}"
        );
        assert_eq!(a.len(), 1, "{a:?}");
        // node3 reports node2's container c1 (refused for node3); node2's own report of c1
        // is still asked about
        let mut f = Fleet::new();
        f.d.on_unhealthy(vec![t("c1", "node3")], f.at(0.0));
        let a = f.run_to(30.0);
        assert_eq!(a.len(), 1, "{a:?}");
        f.d.on_refused("db", "c1", "node3", f.at(30.0));
        f.d.on_unhealthy(vec![t("c1", "node3"), t("c1", "node2")], f.at(31.0));
        let a = f.run_to(61.0);
        assert!(
            has(
                &a,
                |x| matches!(x, Action::ForceUpdate { node_id, .. } if node_id == "id2")
            ),
            "{a:?}"
        );
    }

    #[test]
    fn unhealthy_tasks_are_left_alone_while_standby() {
        let mut f = Fleet::new();
        f.d.set_active(false, f.at(0.0));
        f.d.on_unhealthy(
            vec![UnhealthyTask {
                container_id: "c".into(),
                service: "s".into(),
                node: "n".into(),
            }],
            f.at(0.0),
        );
        assert!(quiet(&f.run_to(100.0)));
    }

    // --- Rule 1 with the failure detector (`Settings::detector`) ---

    fn with_detector() -> Fleet {
        Fleet::with(Settings {
            detector: true,
            ..settings()
        })
    }

    fn detected(f: &mut Fleet, node: u32, st: Status) {
        let mut all: Vec<(String, Status)> = (1..=5)
            .map(|i| (format!("node{i}"), Status::Alive))
            .collect();
        all[(node - 1) as usize].1 = st;
        f.d.on_detector(all);
    }

    /// Node 5's agent gone (`state`) at t = 10 s, and the detector suspecting its node.
    fn agent5_gone_and_suspect(state: AgentState) -> Fleet {
        let mut f = with_detector();
        f.run_to(10.0);
        f.agent_mut(5).state = state;
        detected(&mut f, 5, Status::Suspect);
        f
    }

    #[test]
    fn detector_dead_is_node_down_at_once_without_waiting_for_the_will() {
        let mut f = with_detector();
        f.run_to(10.0);
        detected(&mut f, 5, Status::Suspect);
        let a = f.run_to(11.0);
        assert!(kinds(&a).is_empty() && probes(&a).is_empty(), "{a:?}");
        // The agent still counts as online (no Will, data interval not over): the detector's
        // verdict is enough.
        detected(&mut f, 5, Status::Dead);
        let a = f.run_to(11.5);
        assert_eq!(kinds(&a), [EventKind::NodeDown]);
        assert_eq!(evacuations(&a), [("id5".to_owned(), true)]);
        let reason = a.iter().find_map(|x| match x {
            Action::Event { details, .. } => details.iter().find(|(k, _)| *k == "reason"),
            _ => None,
        });
        assert_eq!(
            reason.map(|(_, v)| v.as_str()),
            Some(DeadBy::Detector.as_str())
        );
    }

    #[test]
    fn stopped_agents_on_hosts_the_detector_found_quiet_do_not_make_the_gateway_think_itself_cut_off(
    ) {
        // node3's and node4's agents stopped (no Will yet: still "online", but silent for
        // longer than two intervals); the vantage points found their hosts answering.
        let mut f = with_detector();
        let seen = |f: &mut Fleet, node5: Status| {
            let quiet = [3, 4];
            f.d.on_detector((1..=5).map(|i| {
                let st = match i {
                    5 => node5,
                    i if quiet.contains(&i) => Status::Quiet,
                    _ => Status::Alive,
                };
                (format!("node{i}"), st)
            }));
        };
        f.run_to(2.0);
        for i in [3, 4] {
            f.silence(i, 2.0);
        }
        seen(&mut f, Status::Alive);
        f.run_to(10.0);
        f.silence(5, 10.0);
        seen(&mut f, Status::Suspect);
        let a = f.run_to(12.5);
        assert!(kinds(&a).is_empty(), "{a:?}");
        seen(&mut f, Status::Dead);
        let a = f.run_to(13.0);
        assert_eq!(kinds(&a), [EventKind::NodeDown], "{a:?}");
    }

    #[test]
    fn detector_quiet_node_with_its_agent_gone_is_agent_lost_never_drained() {
        let mut f = agent5_gone_and_suspect(AgentState::Lost);
        assert!(kinds(&f.run_to(10.5)).is_empty());
        detected(&mut f, 5, Status::Quiet);
        let a = f.run_to(11.0);
        assert_eq!(kinds(&a), [EventKind::AgentLost]);
        for t in 12..40 {
            assert!(evacuations(&f.run_to(f64::from(t))).is_empty());
        }
    }

    #[test]
    fn detector_suspicions_that_come_and_go_never_drain() {
        let mut f = with_detector();
        for t in 0..200 {
            let st = if t % 3 == 0 {
                Status::Suspect
            } else {
                Status::Alive
            };
            detected(&mut f, 4, st);
            let a = f.run_to(f64::from(t) * 0.5);
            assert!(kinds(&a).is_empty() && evacuations(&a).is_empty(), "{a:?}");
        }
    }

    #[test]
    fn detector_mode_sends_no_probes_of_its_own_for_agents_it_watches() {
        let mut f = agent5_gone_and_suspect(AgentState::Stale);
        for t in 11..30 {
            assert!(probes(&f.run_to(f64::from(t))).is_empty());
        }
    }

    #[test]
    fn an_agent_the_detector_does_not_watch_is_judged_as_without_it() {
        // Node 5's agent sends no beats (an older agent): not a member of the detector.
        let mut f = with_detector();
        let all: Vec<(String, Status)> = (1..=4)
            .map(|i| (format!("node{i}"), Status::Alive))
            .collect();
        f.d.on_detector(all);
        let a = kill_node5(&mut f);
        assert_eq!(kinds(&a), [EventKind::NodeDown]);
    }

    #[test]
    fn swarms_down_of_a_node_the_detector_hears_moves_nothing() {
        // A lossy link: Swarm misses heartbeats and marks the node down, while its beats and
        // the vantage points still get through.
        for heard in [Status::Alive, Status::Quiet, Status::Suspect] {
            let mut f = with_detector();
            f.run_to(10.0);
            detected(&mut f, 4, heard);
            f.swarm_mut(4).state = SwarmState::Down;
            for t in 11..60 {
                let a = f.run_to(f64::from(t));
                assert!(evacuations(&a).is_empty(), "{heard:?}: {a:?}");
                assert!(
                    !kinds(&a).contains(&EventKind::NodeDown),
                    "{heard:?}: {a:?}"
                );
            }
            // It is dead when the detector finds it so.
            detected(&mut f, 4, Status::Dead);
            let a = f.run_to(61.0);
            assert_eq!(kinds(&a), [EventKind::NodeDown], "{heard:?}");
        }
    }

    fn bursts(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Burst { node_id, .. } => Some(node_id.clone()),
                _ => None,
            })
            .collect()
    }

    /// Node 4 frozen at t = 10 s: its beats stop, its host answers the vantage points.
    fn node4_frozen() -> Fleet {
        let mut f = with_detector();
        f.run_to(10.0);
        f.silence(4, 10.0);
        detected(&mut f, 4, Status::Quiet);
        f
    }

    #[test]
    fn a_frozen_agents_silence_counts_from_its_last_beat_not_its_will() {
        // its last beat at 10 s; the broker's Will for it at 17.5 s made it a message later
        // (the shipped agent's keep_alive 5 s); Swarm says down at 22 s
        let mut f = node4_frozen();
        f.d.on_last_beats([("node4".to_owned(), f.at(10.0))]);
        f.run_to(17.0);
        f.agent_mut(4).state = AgentState::Lost;
        f.agent_mut(4).last_seen = f.at(17.5);
        f.run_to(21.0);
        f.swarm_mut(4).state = SwarmState::Down;
        f.run_to(22.0);
        f.d.on_burst("id4", BURST_ROUNDS, BURST_ROUNDS, f.at(22.0));
        let a = f.run_to(22.5);
        assert_eq!(kinds(&a), [EventKind::NodeDown], "{a:?}");
        // an agent that beat until 1 s before Swarm's down is no freeze
        let mut f = node4_frozen();
        f.d.on_last_beats([("node4".to_owned(), f.at(21.0))]);
        f.run_to(21.5);
        f.swarm_mut(4).state = SwarmState::Down;
        f.run_to(22.0);
        f.d.on_burst("id4", BURST_ROUNDS, BURST_ROUNDS, f.at(22.0));
        let mut a = f.run_to(22.5);
        a.extend(f.run_to(23.0));
        assert!(!kinds(&a).contains(&EventKind::NodeDown), "{a:?}");
    }

    #[test]
    fn a_frozen_node_is_dead_once_swarm_says_down_and_a_burst_finds_its_link_clean() {
        let mut f = node4_frozen();
        for t in 11..22 {
            let a = f.run_to(f64::from(t));
            assert!(bursts(&a).is_empty(), "no burst while Swarm says ready");
            assert!(!kinds(&a).contains(&EventKind::NodeDown), "{a:?}");
        }
        // a burst answered in full before Swarm's down does not count
        f.d.on_burst("id4", BURST_ROUNDS, BURST_ROUNDS, f.at(21.5));
        f.swarm_mut(4).state = SwarmState::Down;
        let a = f.run_to(22.0);
        assert_eq!(bursts(&a), ["id4"], "{a:?}");
        assert!(kinds(&a).is_empty(), "{a:?}");
        assert!(bursts(&f.run_to(22.2)).is_empty(), "one in flight");
        f.d.on_burst("id4", BURST_ROUNDS, BURST_ROUNDS, f.at(22.0));
        let a = f.run_to(22.6);
        assert_eq!(kinds(&a), [EventKind::NodeDown], "{a:?}");
        let reason = a.iter().find_map(|x| match x {
            Action::Event { details, .. } => details.iter().find(|(k, _)| *k == "reason"),
            _ => None,
        });
        assert_eq!(
            reason.map(|(_, v)| v.as_str()),
            Some(DeadBy::Frozen.as_str())
        );
        // Swarm let go of it already, its replacements wait out the restart delay: surged
        assert_eq!(evacuations(&a), [("id4".to_owned(), true)]);
        // it thaws: beats again, Swarm ready: back
        f.silent.clear();
        detected(&mut f, 4, Status::Alive);
        f.swarm_mut(4).state = SwarmState::Ready;
        f.swarm_mut(4).availability = Availability::Drain;
        f.swarm_mut(4).leakmon_drained = true;
        let a = f.run_to(40.0);
        assert_eq!(kinds(&a), [EventKind::NodeUp], "{a:?}");
    }

    #[test]
    fn an_agent_killed_just_before_swarm_lists_its_node_down_is_not_frozen() {
        // a leader change: the new leader lists node4 down a moment after its agent died
        let mut f = with_detector();
        f.run_to(10.0);
        f.silence(4, 20.0);
        detected(&mut f, 4, Status::Quiet);
        f.run_to(20.5);
        f.swarm_mut(4).state = SwarmState::Down;
        let a = f.run_to(21.0);
        assert_eq!(bursts(&a), ["id4"]);
        f.d.on_burst("id4", BURST_ROUNDS, BURST_ROUNDS, f.at(21.0));
        for t in 22..40 {
            let a = f.run_to(f64::from(t) / 2.0 + 11.0);
            assert!(!kinds(&a).contains(&EventKind::NodeDown), "{a:?}");
        }
    }

    #[test]
    fn a_lossy_link_swarm_calls_down_is_not_frozen() {
        let mut f = node4_frozen();
        f.swarm_mut(4).state = SwarmState::Down;
        let a = f.run_to(22.0);
        assert_eq!(bursts(&a), ["id4"]);
        // 40 % loss: a third of the connects lost on every port
        f.d.on_burst("id4", BURST_ROUNDS, 13, f.at(22.0));
        for t in 23..25 {
            let a = f.run_to(f64::from(t));
            assert!(kinds(&a).is_empty() && bursts(&a).is_empty(), "{a:?}");
        }
        // asked again every few seconds while it lasts
        assert_eq!(bursts(&f.run_to(25.0)), ["id4"]);
        f.d.on_burst("id4", BURST_ROUNDS, BURST_ROUNDS - 1, f.at(25.0));
        assert!(evacuations(&f.run_to(26.0)).is_empty(), "one lost is loss");
    }

    #[test]
    fn an_engine_frozen_alone_or_an_agent_frozen_alone_moves_nothing() {
        // the engine stuck, the agent beating: Swarm says down, the detector hears it
        let mut f = with_detector();
        f.run_to(10.0);
        detected(&mut f, 4, Status::Alive);
        f.swarm_mut(4).state = SwarmState::Down;
        for t in 11..40 {
            let a = f.run_to(f64::from(t));
            assert!(bursts(&a).is_empty() && kinds(&a).is_empty(), "{a:?}");
        }
        // the agent stuck on a working engine: Swarm says ready; its Will came
        let mut f = node4_frozen();
        f.agent_mut(4).state = AgentState::Lost;
        let a = f.run_to(11.0);
        assert_eq!(kinds(&a), [EventKind::AgentLost]);
        for t in 12..40 {
            let a = f.run_to(f64::from(t));
            assert!(bursts(&a).is_empty() && evacuations(&a).is_empty(), "{a:?}");
        }
    }

    #[test]
    fn detector_mode_still_takes_swarms_down() {
        let mut f = with_detector();
        f.run_to(10.0);
        f.swarm_mut(3).state = SwarmState::Down;
        let a = f.run_to(11.0);
        assert_eq!(kinds(&a), [EventKind::NodeDown]);
    }
}
