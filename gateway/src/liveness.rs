//! Which nodes are alive: a pure state machine, time passed in.
//!
//! Rules:
//! - a birth (`online`, seq N) makes a node `online` and N its current seq. Always: MQTT keeps
//!   a topic's order, so a birth with a lower seq after a higher one is an agent whose counters
//!   started over (state directory lost, reinstalled) or a forged `seq` (u64::MAX): either
//!   way, ignoring the real agent's births would silence it;
//! - a death (`offline`: the agent's Will, or its clean goodbye) makes it `offline`, unless its
//!   seq is older than the current birth's (a late Will of an earlier connection);
//! - a node can be forgotten ([`Liveness::forget`]: its retained status was cleared);
//! - a node that sent nothing for `offline_after` becomes `stale`;
//! - before that, a node that sent nothing for two of its sampling intervals (at least 2 s) is
//!   *suspect*: the control loop probes it, and counts it when judging whether this gateway is
//!   the one cut off. Both notions of silence are defined here and nowhere else.
//! - any message from a `stale` node (or one never seen, e.g. the gateway started after its
//!   birth was retained elsewhere) makes it `online` again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use leakmon_protocol::{NodeState, OfflineReason, Status};

/// An agent quiet this many of its sampling intervals is suspect.
const SUSPECT_INTERVALS: u32 = 2;
/// ... and never sooner than this (an agent sampling every 100 ms is not suspect after 200 ms).
const MIN_SUSPECT: Duration = Duration::from_secs(2);

/// How long an agent sampling every `interval` may stay quiet before it is suspect.
pub fn suspect_after(interval: Duration) -> Duration {
    (interval * SUSPECT_INTERVALS).max(MIN_SUSPECT)
}

/// Quiet for longer than `after` (last heard at `last_seen`)?
pub fn silent(last_seen: Instant, now: Instant, after: Duration) -> bool {
    now.saturating_duration_since(last_seen) > after
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Online,
    Offline(OfflineReason),
    Stale,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Online => "online",
            State::Offline(_) => "offline",
            State::Stale => "stale",
        }
    }
}

/// What the gateway knows of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub state: State,
    /// seq of the newest birth seen.
    pub birth_seq: Option<u64>,
    pub last_seen: Instant,
    /// When the current state began.
    pub since: Instant,
}

/// A state change, to record and act on.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub node: String,
    pub from: Option<State>,
    pub to: State,
}

#[derive(Debug)]
pub struct Liveness {
    offline_after: Duration,
    nodes: BTreeMap<String, Node>,
}

impl Liveness {
    pub fn new(offline_after: Duration) -> Self {
        Liveness {
            offline_after,
            nodes: BTreeMap::new(),
        }
    }

    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    fn set(&mut self, node: &str, to: State, now: Instant) -> Option<Transition> {
        let from = match self.nodes.get_mut(node) {
            None => {
                self.nodes.insert(
                    node.to_owned(),
                    Node {
                        state: to,
                        birth_seq: None,
                        last_seen: now,
                        since: now,
                    },
                );
                None
            }
            Some(n) => {
                // Heard from the agent itself; a death (its Will, sent by the broker seconds
                // after a frozen agent's last word, or a goodbye) leaves its last word's time.
                if to == State::Online {
                    n.last_seen = now;
                }
                if n.state == to {
                    return None;
                }
                let from = n.state;
                n.state = to;
                n.since = now;
                Some(from)
            }
        };
        Some(Transition {
            node: node.to_owned(),
            from,
            to,
        })
    }

    /// A status message (birth or death) from `node`.
    pub fn on_status(&mut self, node: &str, s: &Status, now: Instant) -> Option<Transition> {
        let known = self.nodes.get(node).and_then(|n| n.birth_seq);
        match s.state {
            NodeState::Online => {
                let t = self.set(node, State::Online, now);
                if let Some(n) = self.nodes.get_mut(node) {
                    n.birth_seq = Some(s.seq);
                }
                t
            }
            NodeState::Offline => {
                if known.is_some_and(|k| s.seq < k) {
                    return None; // a late death of an older connection
                }
                let reason = s.reason.unwrap_or(OfflineReason::Lost);
                self.set(node, State::Offline(reason), now)
            }
        }
    }

    /// Forgets `node` (its retained status was cleared: a decommissioned host). Whether it
    /// was known.
    pub fn forget(&mut self, node: &str) -> bool {
        self.nodes.remove(node).is_some()
    }

    /// A data message (host, containers, event) from `node`.
    pub fn on_data(&mut self, node: &str, now: Instant) -> Option<Transition> {
        match self.nodes.get_mut(node) {
            Some(n) if n.state == State::Online => {
                n.last_seen = now;
                None
            }
            // Data after a death: the agent is back but its birth has not reached us yet
            // (or was lost); treat the data as proof of life.
            _ => self.set(node, State::Online, now),
        }
    }

    /// Marks nodes silent for longer than `offline_after` as stale.
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let silent: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| {
                n.state == State::Online && silent(n.last_seen, now, self.offline_after)
            })
            .map(|(k, _)| k.clone())
            .collect();
        silent
            .into_iter()
            .filter_map(|node| {
                let n = self.nodes.get_mut(&node)?;
                let from = n.state;
                n.state = State::Stale;
                n.since = now;
                Some(Transition {
                    node,
                    from: Some(from),
                    to: State::Stale,
                })
            })
            .collect()
    }
}

/// An agent's liveness, as the control loop sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    Online,
    /// Its Will arrived: the connection died.
    Lost,
    /// It said goodbye (a clean stop): not a sign of a dead node.
    Shutdown,
    /// Silent past `liveness.offline_after`.
    Stale,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentFact {
    /// The agent's node name (topic level).
    pub name: String,
    pub swarm_node_id: Option<String>,
    pub state: AgentState,
    /// Its last message.
    pub last_seen: Instant,
    /// Its sampling interval.
    pub interval: Duration,
    /// Its liveness beat interval, from its birth; `None`: it sends no beats (an older agent,
    /// or beats turned off), so the failure detector cannot watch it.
    pub beat_interval: Option<Duration>,
}

impl From<State> for AgentState {
    fn from(s: State) -> Self {
        match s {
            State::Online => AgentState::Online,
            State::Offline(OfflineReason::Lost) => AgentState::Lost,
            State::Offline(OfflineReason::Shutdown) => AgentState::Shutdown,
            State::Stale => AgentState::Stale,
        }
    }
}

/// A Swarm node's agent, the one rule the control loop and the decisions share.
///
/// An agent speaks only under its own name: the broker's ACL binds each node's credential to
/// `leakmon/v1/nodes/<name>/`, so the name is the one fact about an agent the broker vouches
/// for. A Swarm node's agent is therefore the agent named `agent_name` (the node's
/// `leakmon.node` label, set by a Swarm manager, else the hostname Swarm lists). The Swarm node
/// id an agent reports is only a claim: it is used to tell apart Swarm nodes of one name (a
/// host that left and rejoined leaves its old entry behind), and an agent claiming another
/// node's id is not that node's agent. It can never bind an agent to a node of another name.
/// Among several (a stale retained status beside a live one), an online one, then the one
/// heard from last.
pub fn agent_for<'a>(
    agents: &'a [AgentFact],
    node_id: &str,
    agent_name: &str,
) -> Option<&'a AgentFact> {
    agents
        .iter()
        .filter(|a| speaks_for(&a.name, a.swarm_node_id.as_deref(), node_id, agent_name))
        .max_by_key(|a| (a.state == AgentState::Online, a.last_seen))
}

/// Whether the agent named `name`, claiming Swarm node id `claim`, speaks for the Swarm node
/// `node_id` whose agent is named `agent_name` ([`agent_for`]).
pub fn speaks_for(name: &str, claim: Option<&str>, node_id: &str, agent_name: &str) -> bool {
    name == agent_name && claim.is_none_or(|id| id == node_id)
}

impl AgentFact {
    /// Online, but quiet long enough to check on ([`suspect_after`]).
    pub fn suspect(&self, now: Instant) -> bool {
        self.state == AgentState::Online
            && silent(self.last_seen, now, suspect_after(self.interval))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(name: &str, claim: Option<&str>, state: AgentState, secs: u64) -> AgentFact {
        AgentFact {
            name: name.into(),
            swarm_node_id: claim.map(Into::into),
            state,
            last_seen: Instant::now() + Duration::from_secs(secs),
            interval: Duration::from_secs(1),
            beat_interval: None,
        }
    }

    #[test]
    fn a_nodes_agent_is_named_by_swarm_and_an_id_claim_only_tells_same_names_apart() {
        use AgentState::*;
        let agents = [
            fact("node5", Some("id5"), Lost, 0),
            // node3's credential can only speak as node3; it claims node5's id
            fact("node3", Some("id5"), Online, 9),
            // a name no Swarm node has, claiming node5's id
            fact("intruder", Some("id5"), Online, 9),
        ];
        let a = agent_for(&agents, "id5", "node5").map(|a| &a.name);
        assert_eq!(
            a.map(String::as_str),
            Some("node5"),
            "only node5 speaks for node5"
        );
        assert!(
            agent_for(&agents, "id3", "node3").is_none(),
            "an agent claiming another node's id is not its own node's agent either"
        );
        assert!(agent_for(&agents, "idX", "intruder").is_none());

        // A host that left and rejoined: two Swarm nodes named edge1; the claim picks the new one.
        let agents = [fact("edge1", Some("new"), Online, 0)];
        assert!(agent_for(&agents, "new", "edge1").is_some());
        assert!(agent_for(&agents, "old", "edge1").is_none());
        // No claim (engine not in a Swarm yet): bound by name alone.
        let agents = [fact("edge1", None, Online, 0)];
        assert!(agent_for(&agents, "new", "edge1").is_some());
        // Among several of one name: an online one, then the one heard from last.
        let agents = [
            fact("edge1", None, Online, 1),
            fact("edge1", None, Lost, 5),
            fact("edge1", None, Online, 3),
        ];
        let a = agent_for(&agents, "x", "edge1").map(|a| a.last_seen);
        assert_eq!(a, Some(agents[2].last_seen));
    }

    fn status(state: NodeState, seq: u64, reason: Option<OfflineReason>) -> Status {
        Status {
            v: 1,
            node: "n".into(),
            state,
            seq,
            reason,
            ts: 0,
            identity: None,
        }
    }
    fn birth(seq: u64) -> Status {
        status(NodeState::Online, seq, None)
    }
    fn will(seq: u64) -> Status {
        status(NodeState::Offline, seq, Some(OfflineReason::Lost))
    }

    const AFTER: Duration = Duration::from_secs(15);

    #[test]
    fn birth_makes_online() {
        let mut l = Liveness::new(AFTER);
        let t0 = Instant::now();
        let t = l.on_status("n", &birth(1), t0).unwrap();
        assert_eq!((t.from, t.to), (None, State::Online));
        assert_eq!(l.nodes()["n"].birth_seq, Some(1));
        assert!(
            l.on_status("n", &birth(1), t0).is_none(),
            "repeat is no change"
        );
    }

    #[test]
    fn will_makes_offline_lost_and_goodbye_offline_shutdown() {
        let mut l = Liveness::new(AFTER);
        let t0 = Instant::now();
        l.on_status("n", &birth(3), t0);
        let t = l.on_status("n", &will(3), t0).unwrap();
        assert_eq!(t.to, State::Offline(OfflineReason::Lost));
        l.on_status("n", &birth(4), t0);
        let t = l
            .on_status(
                "n",
                &status(NodeState::Offline, 4, Some(OfflineReason::Shutdown)),
                t0,
            )
            .unwrap();
        assert_eq!(t.to, State::Offline(OfflineReason::Shutdown));
    }

    #[test]
    fn a_will_leaves_the_time_the_agent_was_last_heard() {
        let mut l = Liveness::new(AFTER);
        let t0 = Instant::now();
        l.on_status("n", &birth(3), t0);
        l.on_data("n", t0 + Duration::from_secs(1));
        // the broker's Will for a frozen agent, seconds after its last word
        l.on_status("n", &will(3), t0 + Duration::from_secs(9));
        assert_eq!(l.nodes()["n"].last_seen, t0 + Duration::from_secs(1));
    }

    #[test]
    fn late_will_of_an_older_connection_is_ignored() {
        let mut l = Liveness::new(AFTER);
        let t0 = Instant::now();
        l.on_status("n", &birth(5), t0);
        assert!(l.on_status("n", &will(4), t0).is_none());
        assert_eq!(l.nodes()["n"].state, State::Online);
    }

    #[test]
    fn a_forged_seq_cannot_silence_the_real_agents_births_and_wills() {
        let mut l = Liveness::new(AFTER);
        let t0 = Instant::now();
        l.on_status("n", &birth(5), t0);
        // forged, or an agent whose state directory was lost
        l.on_status("n", &birth(u64::MAX), t0);
        l.on_status("n", &will(u64::MAX), t0);
        assert_eq!(l.nodes()["n"].state, State::Offline(OfflineReason::Lost));
        // the real agent's next connection counts from where it was
        let t = l.on_status("n", &birth(6), t0).unwrap();
        assert_eq!(t.to, State::Online);
        assert_eq!(l.nodes()["n"].birth_seq, Some(6));
        let t = l.on_status("n", &will(6), t0).unwrap();
        assert_eq!(t.to, State::Offline(OfflineReason::Lost));
        // forgotten: gone from memory
        assert!(l.forget("n"));
        assert!(l.nodes().is_empty());
        assert!(!l.forget("n"));
    }

    #[test]
    fn silence_makes_stale_and_data_revives() {
        let mut l = Liveness::new(AFTER);
        let t0 = Instant::now();
        l.on_status("n", &birth(1), t0);
        assert!(l.on_data("n", t0 + Duration::from_secs(10)).is_none());
        assert!(
            l.tick(t0 + Duration::from_secs(20)).is_empty(),
            "10 s of silence"
        );
        let t = l.tick(t0 + Duration::from_secs(26));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].to, State::Stale);
        assert!(
            l.tick(t0 + Duration::from_secs(40)).is_empty(),
            "stale once"
        );
        let t = l.on_data("n", t0 + Duration::from_secs(41)).unwrap();
        assert_eq!((t.from, t.to), (Some(State::Stale), State::Online));
    }

    #[test]
    fn offline_nodes_do_not_go_stale() {
        let mut l = Liveness::new(AFTER);
        let t0 = Instant::now();
        l.on_status("n", &birth(1), t0);
        l.on_status("n", &will(1), t0);
        assert!(l.tick(t0 + Duration::from_secs(100)).is_empty());
    }

    #[test]
    fn unknown_node_sending_data_is_online() {
        let mut l = Liveness::new(AFTER);
        let t = l.on_data("m", Instant::now()).unwrap();
        assert_eq!((t.from, t.to), (None, State::Online));
    }

    #[test]
    fn several_nodes_independently() {
        let mut l = Liveness::new(AFTER);
        let t0 = Instant::now();
        l.on_status("a", &birth(1), t0);
        l.on_status("b", &birth(1), t0);
        l.on_data("a", t0 + Duration::from_secs(14));
        let t = l.tick(t0 + Duration::from_secs(16));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].node, "b");
    }
}
