//! What to change on the Swarm, and what to report about it: the pure core of
//! [`super::swarm`]. Nodes, services and tasks as the Swarm API returned them come in; the
//! changes to make (a node's or a service's whole new spec, with the version it was read at),
//! the events to emit when they are made and the action to name when the API refuses them go
//! out. No I/O, no clock (`now_ms` is passed in), no tokio: the shell reads, asks, and writes.
//!
//! Placement rules live here too: which constraints pin a service to a node, which standby
//! takes it, when replicas are unevenly spread. Services are bollard's plain model structs
//! (their whole spec goes back to the API); nodes and tasks are reduced to [`NodeFacts`] and
//! [`TaskFacts`].

use std::collections::{BTreeSet, HashMap};

use bollard::models::{
    Node, NodeSpecAvailabilityEnum, NodeState, Service, ServiceSpec,
    ServiceSpecUpdateConfigOrderEnum as Order, Task, TaskState,
};
use leakmon_protocol::EventKind;

use super::confirm::Started;
use super::decide::{Availability, SwarmNode, SwarmState};

/// On a node: leakmon paused/drained it (value: when, ms since the epoch).
pub const LABEL_DRAINED: &str = "leakmon.drained";
/// On a node: the name of its agent, when it is not the node's hostname. Only a Swarm manager
/// can set it, so it binds an agent's name to a Swarm node as firmly as the hostname does.
pub const LABEL_AGENT: &str = "leakmon.node";
/// On a node: it may take pinned services of a dead node.
pub const LABEL_STANDBY: &str = "leakmon.standby";
/// On a service: it may be re-pinned to a standby node when its node dies.
pub const LABEL_FAILOVER: &str = "leakmon.failover";
/// On a service: its placement constraints before leakmon's first failover (JSON array).
pub const LABEL_ORIGINAL: &str = "leakmon.failover.original";
/// On a service: the node it was failed over to.
pub const LABEL_FAILED_OVER_TO: &str = "leakmon.failover.node";

/// On a service: its update order before a failover from node `<id>` made it `start-first`
/// (restored when that node is settled).
pub fn order_label(node_id: &str) -> String {
    format!("leakmon.failover.order.{node_id}")
}

/// On a service: replicas leakmon added for the tasks stranded on node `<id>`.
pub fn surge_label(node_id: &str) -> String {
    format!("leakmon.surge.{node_id}")
}

/// `failover_impossible`'s `reason`: the service has no `leakmon.failover=true` label.
pub const NO_FAILOVER_LABEL: &str = "no_failover_label";
/// `failover_impossible`'s `reason`: no standby is ready (the failover is made when one is).
pub const NO_STANDBY: &str = "no_standby";

/// An event the shell reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Ev {
    pub kind: EventKind,
    pub node: Option<String>,
    pub message: String,
    pub details: Vec<(&'static str, String)>,
}

pub fn ev(
    kind: EventKind,
    node: &str,
    message: String,
    details: Vec<(&'static str, String)>,
) -> Ev {
    Ev {
        kind,
        node: Some(node.to_owned()),
        message,
        details,
    }
}

/// One node with what placement needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub id: String,
    pub hostname: String,
    pub labels: HashMap<String, String>,
    pub state: SwarmState,
    pub availability: Availability,
    pub addr: String,
    pub leader: bool,
    /// A manager, and whether Raft reaches it (as the answering manager sees it).
    pub manager: bool,
    pub reachable: bool,
}

impl NodeFacts {
    pub fn from_api(n: &Node) -> Option<NodeFacts> {
        let id = n.id.clone()?;
        let spec = n.spec.clone().unwrap_or_default();
        let status = n.status.clone().unwrap_or_default();
        Some(NodeFacts {
            hostname: n
                .description
                .as_ref()
                .and_then(|d| d.hostname.clone())
                .unwrap_or_else(|| id.clone()),
            id,
            labels: spec.labels.unwrap_or_default(),
            state: match status.state {
                Some(NodeState::READY) => SwarmState::Ready,
                Some(NodeState::DOWN) => SwarmState::Down,
                _ => SwarmState::Other,
            },
            availability: match spec.availability {
                Some(NodeSpecAvailabilityEnum::PAUSE) => Availability::Pause,
                Some(NodeSpecAvailabilityEnum::DRAIN) => Availability::Drain,
                _ => Availability::Active,
            },
            // A manager may report 0.0.0.0 as its node address; its Raft address has the IP.
            addr: match status.addr.as_deref() {
                None | Some("") | Some("0.0.0.0") => n
                    .manager_status
                    .as_ref()
                    .and_then(|m| m.addr.as_deref())
                    .and_then(|a| {
                        a.parse::<std::net::SocketAddr>()
                            .map(|s| s.ip().to_string())
                            .ok()
                            .or_else(|| a.rsplit_once(':').map(|(h, _)| h.to_owned()))
                    })
                    .unwrap_or_default(),
                Some(a) => a.to_owned(),
            },
            leader: n
                .manager_status
                .as_ref()
                .and_then(|m| m.leader)
                .unwrap_or(false),
            manager: n.manager_status.is_some(),
            reachable: n
                .manager_status
                .as_ref()
                .and_then(|m| m.reachability)
                .is_some_and(|r| r == bollard::models::Reachability::REACHABLE),
        })
    }

    /// `status/availability` as `docker node ls` shows them, e.g. `ready/active`.
    pub fn describe(&self) -> String {
        let state = match self.state {
            SwarmState::Ready => "ready",
            SwarmState::Down => "down",
            SwarmState::Other => "unknown",
        };
        let avail = match self.availability {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        };
        format!("{state}/{avail}")
    }

    /// The name of this node's agent ([`crate::liveness::agent_for`]): its `leakmon.node`
    /// label, else its hostname.
    pub fn agent_name(&self) -> &str {
        self.labels
            .get(LABEL_AGENT)
            .map(String::as_str)
            .filter(|l| !l.is_empty())
            .unwrap_or(&self.hostname)
    }

    pub fn to_decide(&self) -> SwarmNode {
        SwarmNode {
            id: self.id.clone(),
            hostname: self.hostname.clone(),
            agent: self.agent_name().to_owned(),
            addr: self.addr.clone(),
            state: self.state,
            availability: self.availability,
            // A label left on a node an operator set active again does not count.
            leakmon_drained: self.labels.contains_key(LABEL_DRAINED)
                && self.availability != Availability::Active,
            standby: self.labels.get(LABEL_STANDBY).map(String::as_str) == Some("true"),
        }
    }
}

/// One task (the shell lists those whose desired state is `running`) with what placement
/// needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFacts {
    pub service_id: Option<String>,
    pub node_id: Option<String>,
    /// Actually running, not only meant to be (a task still starting is not stranded).
    pub running: bool,
}

impl TaskFacts {
    pub fn from_api(t: &Task) -> TaskFacts {
        TaskFacts {
            service_id: t.service_id.clone(),
            node_id: t.node_id.clone(),
            running: t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING),
        }
    }
}

/// `key==value` (or `key != value`) of a placement constraint.
fn parse_constraint(c: &str) -> Option<(&str, bool, &str)> {
    let (k, eq, v) = match c.split_once("==") {
        Some((k, v)) => (k, true, v),
        None => {
            let (k, v) = c.split_once("!=")?;
            (k, false, v)
        }
    };
    Some((k.trim(), eq, v.trim()))
}

/// Indices of the constraints that pin a service to `node`: `node.id==`, `node.hostname==`,
/// or `node.labels.K==V` where `node` is the only node carrying `K=V`.
pub fn pinning(constraints: &[String], node: &NodeFacts, all: &[NodeFacts]) -> Vec<usize> {
    constraints
        .iter()
        .enumerate()
        .filter(|(_, c)| match parse_constraint(c) {
            Some(("node.id", true, v)) => v == node.id,
            Some(("node.hostname", true, v)) => v == node.hostname,
            Some((k, true, v)) => match k.strip_prefix("node.labels.") {
                Some(label) => {
                    node.labels.get(label).map(String::as_str) == Some(v)
                        && all
                            .iter()
                            .filter(|n| n.labels.get(label).map(String::as_str) == Some(v))
                            .count()
                            == 1
                }
                None => false,
            },
            _ => false,
        })
        .map(|(i, _)| i)
        .collect()
}

/// The constraints with the pinning ones replaced by `node.id==<to>`.
pub fn repin(constraints: &[String], pins: &[usize], to: &str) -> Vec<String> {
    let mut out: Vec<String> = constraints
        .iter()
        .enumerate()
        .filter(|(i, _)| !pins.contains(i))
        .map(|(_, c)| c.clone())
        .collect();
    out.push(format!("node.id=={to}"));
    out
}

/// The standby node to take a dead node's pinned service: labelled `leakmon.standby=true`,
/// ready, active, not `dead`, and among `fit` (the standbys `decide` finds fit: agent beating,
/// heard by the detector; `None`: no such restriction); the one running the fewest tasks
/// (then by hostname).
pub fn pick_standby<'a>(
    nodes: &'a [NodeFacts],
    dead: &str,
    tasks_on: &HashMap<String, usize>,
    fit: Option<&BTreeSet<String>>,
) -> Option<&'a NodeFacts> {
    nodes
        .iter()
        .filter(|n| {
            n.id != dead
                && fit.is_none_or(|f| f.contains(&n.id))
                && n.labels.get(LABEL_STANDBY).map(String::as_str) == Some("true")
                && n.state == SwarmState::Ready
                && n.availability == Availability::Active
        })
        .min_by_key(|n| {
            (
                tasks_on.get(&n.id).copied().unwrap_or(0),
                n.hostname.clone(),
            )
        })
}

/// True when a service's running tasks differ by more than one between eligible nodes.
pub fn uneven(per_node: &[usize]) -> bool {
    match (per_node.iter().min(), per_node.iter().max()) {
        (Some(lo), Some(hi)) => hi - lo > 1,
        _ => false,
    }
}

/// A replicated service's replicas (`None` for global services and jobs).
pub fn replicas(spec: &ServiceSpec) -> Option<i64> {
    spec.mode.as_ref()?.replicated.as_ref()?.replicas
}

/// A service's tasks as Telegraf's `docker_swarm` counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTally {
    pub id: String,
    pub name: String,
    /// `replicated`, `global`, `replicated_job` or `global_job`.
    pub mode: &'static str,
    /// Tasks whose actual state is `running`, Swarm-wide.
    pub running: u64,
    /// Replicated: the spec's replicas; global: tasks not meant to shut down; jobs: none.
    pub desired: Option<u64>,
}

/// Telegraf's `docker_swarm` over all services and all tasks (any desired state).
pub fn tally(services: &[Service], tasks: &[Task]) -> Vec<ServiceTally> {
    let mut running: HashMap<&str, u64> = HashMap::new();
    let mut not_shutdown: HashMap<&str, u64> = HashMap::new();
    for t in tasks {
        let Some(sid) = t.service_id.as_deref() else {
            continue;
        };
        if t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING) {
            *running.entry(sid).or_default() += 1;
        }
        if t.desired_state != Some(TaskState::SHUTDOWN) {
            *not_shutdown.entry(sid).or_default() += 1;
        }
    }
    services
        .iter()
        .filter_map(|s| {
            let id = s.id.as_deref()?;
            let spec = s.spec.as_ref()?;
            let mode = spec.mode.as_ref()?;
            let n = |m: &HashMap<&str, u64>| m.get(id).copied().unwrap_or(0);
            let (mode, desired) = if let Some(r) = &mode.replicated {
                (
                    "replicated",
                    r.replicas.map(|r| u64::try_from(r).unwrap_or(0)),
                )
            } else if mode.global.is_some() {
                ("global", Some(n(&not_shutdown)))
            } else if mode.replicated_job.is_some() {
                ("replicated_job", None)
            } else if mode.global_job.is_some() {
                ("global_job", None)
            } else {
                return None;
            };
            Some(ServiceTally {
                id: id.to_owned(),
                name: spec.name.clone().unwrap_or_default(),
                mode,
                running: n(&running),
                desired,
            })
        })
        .collect()
}

fn set_replicas(spec: &mut ServiceSpec, n: i64) {
    if let Some(r) = spec.mode.as_mut().and_then(|m| m.replicated.as_mut()) {
        r.replicas = Some(n);
    }
}

/// A service's placement constraints.
pub fn constraints(spec: &ServiceSpec) -> Vec<String> {
    spec.task_template
        .as_ref()
        .and_then(|t| t.placement.as_ref())
        .and_then(|p| p.constraints.clone())
        .unwrap_or_default()
}

fn set_constraints(spec: &mut ServiceSpec, c: Vec<String>) {
    let t = spec.task_template.get_or_insert_with(Default::default);
    t.placement.get_or_insert_with(Default::default).constraints = Some(c);
}

fn name_of(s: &Service) -> String {
    s.spec
        .as_ref()
        .and_then(|s| s.name.clone())
        .or_else(|| s.id.clone())
        .unwrap_or_default()
}

/// A write to the Swarm API: an object's whole new spec and the version it was read at, so
/// Swarm refuses it if someone changed the object since.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Node {
        id: String,
        version: i64,
        spec: bollard::models::NodeSpec,
    },
    Service {
        id: String,
        version: i32,
        /// Boxed: a service's spec is far larger than a node's.
        spec: Box<ServiceSpec>,
    },
}

/// `s` with `spec` instead of its own.
fn update(s: &Service, spec: ServiceSpec) -> Change {
    Change::Service {
        id: s.id.clone().unwrap_or_default(),
        version: s.version.as_ref().and_then(|v| v.index).unwrap_or(0) as i32,
        spec: Box::new(spec),
    }
}

/// A change and what to report about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Apply {
    pub change: Change,
    /// Emitted once the change is made.
    pub done: Option<Ev>,
    /// The action an `action_failed` event names if the API refuses the change.
    pub action: &'static str,
    /// The node the change gives a task to (a failover's standby): once the change is made,
    /// it counts toward that node's load for the next standby picked.
    pub adds_task_on: Option<String>,
    /// What to watch to its effect once the change is made (a failover, a surge).
    pub started: Option<Started>,
}

/// What to do about one service.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to change; only this to report (a failover that cannot be made).
    Report(Ev),
    /// A failover that cannot be made now for want of a standby: reported, and watched so it
    /// is made once one is fit.
    Stranded(Ev, Started),
    Apply(Apply),
}

/// A node's availability and leakmon's mark on it. Applied by the shell to the node as read
/// just before ([`SetNode::change`]), so labels an operator set meanwhile are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct SetNode {
    pub availability: NodeSpecAvailabilityEnum,
    /// The `leakmon.drained` label: set to this value (`Some`) or removed (`None`).
    pub mark: Option<String>,
}

impl SetNode {
    /// The update to make on `current` (node `id`), or `None` when it is already so.
    pub fn change(&self, id: &str, current: &Node) -> Option<Change> {
        let mut spec = current.spec.clone().unwrap_or_default();
        let mut availability = self.availability;
        // A drained node is never turned back to pause.
        if availability == NodeSpecAvailabilityEnum::PAUSE
            && spec.availability == Some(NodeSpecAvailabilityEnum::DRAIN)
        {
            availability = NodeSpecAvailabilityEnum::DRAIN;
        }
        let labels = spec.labels.get_or_insert_with(HashMap::new);
        let changed_label = match &self.mark {
            Some(v) => labels.insert(LABEL_DRAINED.into(), v.clone()).is_none(),
            None => labels.remove(LABEL_DRAINED).is_some(),
        };
        if spec.availability == Some(availability) && !changed_label {
            return None;
        }
        spec.availability = Some(availability);
        Some(Change::Node {
            id: id.to_owned(),
            version: current.version.as_ref().and_then(|v| v.index).unwrap_or(0) as i64,
            spec,
        })
    }
}

/// A change to a node, what to report once it is made and the action named if it fails.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStep {
    pub set: SetNode,
    pub done: Ev,
    pub action: &'static str,
}

/// The value of leakmon's mark on a node, if leakmon drained (or paused) it.
fn leakmon_mark(n: &Node) -> Option<String> {
    // A node without an id is none of ours to change (`NodeFacts` skips it too).
    n.id.as_ref()?;
    n.spec
        .as_ref()?
        .labels
        .as_ref()?
        .get(LABEL_DRAINED)
        .cloned()
}

/// The first step of an evacuation: the dead node is paused when its tasks are to be surged
/// (it is drained once the surge is settled), else drained at once; either way marked as
/// leakmon's, at `now_ms`. If this fails, nothing else is done.
pub fn evacuate_node(id: &str, host: &str, surge: bool, now_ms: i64) -> NodeStep {
    let availability = if surge {
        NodeSpecAvailabilityEnum::PAUSE
    } else {
        NodeSpecAvailabilityEnum::DRAIN
    };
    NodeStep {
        set: SetNode {
            availability,
            mark: Some(now_ms.to_string()),
        },
        done: ev(
            EventKind::Drain,
            host,
            format!("node {host} set to {availability} by leakmon"),
            vec![
                ("availability", availability.to_string()),
                ("swarm_node_id", id.into()),
            ],
        ),
        action: "drain",
    }
}

/// The rest of an evacuation, once the node is paused or drained: service by service, fail
/// over the ones pinned to the dead node and surge the replicated ones it ran. Fed the
/// outcome of each change made ([`Evacuation::applied`]), since a standby's load counts the
/// failovers already made to it.
#[derive(Debug, Clone)]
pub struct Evacuation {
    id: String,
    host: String,
    surge: bool,
    dead: NodeFacts,
    nodes: Vec<NodeFacts>,
    /// Tasks meant to run, per node.
    tasks_on: HashMap<String, usize>,
    /// Tasks running on the dead node, per service.
    stranded: HashMap<String, i64>,
    /// The standbys `decide` finds fit (`None`: every one Swarm reports ready and active).
    fit: Option<BTreeSet<String>>,
}

impl Evacuation {
    /// The Swarm as read after the node was paused or drained (so the read sees that). `Err`
    /// with the reason when the node is no longer in the Swarm.
    pub fn new(
        id: &str,
        host: &str,
        surge: bool,
        nodes: Vec<NodeFacts>,
        tasks: &[TaskFacts],
    ) -> Result<Evacuation, &'static str> {
        let Some(dead) = nodes.iter().find(|n| n.id == id).cloned() else {
            return Err("the node is no longer in the Swarm");
        };
        let mut tasks_on: HashMap<String, usize> = HashMap::new();
        let mut stranded: HashMap<String, i64> = HashMap::new();
        for t in tasks {
            let Some(node) = &t.node_id else { continue };
            *tasks_on.entry(node.clone()).or_default() += 1;
            if node == id && t.running {
                if let Some(sid) = &t.service_id {
                    *stranded.entry(sid.clone()).or_default() += 1;
                }
            }
        }
        Ok(Evacuation {
            id: id.to_owned(),
            host: host.to_owned(),
            surge,
            dead,
            nodes,
            tasks_on,
            stranded,
            fit: None,
        })
    }

    /// The dead node's tasks of any desired state (Swarm let go of the node: it shut them
    /// down in its books and scheduled replacements, which wait out the restart delay): those
    /// last seen running are the ones to surge for.
    pub fn let_go(mut self, on_dead: &[TaskFacts]) -> Self {
        let mut stranded: HashMap<String, i64> = HashMap::new();
        for t in on_dead {
            if t.running && t.node_id.as_deref() == Some(self.id.as_str()) {
                if let Some(sid) = &t.service_id {
                    *stranded.entry(sid.clone()).or_default() += 1;
                }
            }
        }
        self.stranded = stranded;
        self
    }

    /// Only these standbys may take a pinned service (those `decide` finds fit).
    pub fn only(mut self, fit: &[String]) -> Self {
        self.fit = Some(fit.iter().cloned().collect());
        self
    }

    /// What to do about service `s` (`None`: nothing).
    pub fn service(&self, s: &Service) -> Option<Step> {
        let spec = s.spec.clone()?;
        let pins = pinning(&constraints(&spec), &self.dead, &self.nodes);
        if !pins.is_empty() {
            return Some(self.failover(s, spec, &pins));
        }
        self.surge(s, spec).map(Step::Apply)
    }

    /// Records that `a` was made.
    pub fn applied(&mut self, a: &Apply) {
        if let Some(node) = &a.adds_task_on {
            *self.tasks_on.entry(node.clone()).or_default() += 1;
        }
    }

    /// A service pinned to the dead node: re-pinned to a standby if it allows it.
    fn failover(&self, s: &Service, mut spec: ServiceSpec, pins: &[usize]) -> Step {
        let (id, host) = (self.id.as_str(), self.host.as_str());
        let name = name_of(s);
        let mut labels = spec.labels.clone().unwrap_or_default();
        if labels.get(LABEL_FAILOVER).map(String::as_str) != Some("true") {
            return Step::Report(ev(
                EventKind::FailoverImpossible,
                host,
                format!("service {name} is pinned to {host} and has no leakmon.failover=true label: it stays pending"),
                vec![("service", name), ("reason", NO_FAILOVER_LABEL.into())],
            ));
        }
        let Some(to) = pick_standby(&self.nodes, id, &self.tasks_on, self.fit.as_ref()) else {
            let why = self.unfit_standbys();
            return Step::Stranded(
                ev(
                    EventKind::FailoverImpossible,
                    host,
                    format!("service {name} is pinned to {host} and no standby is fit ({why}): it fails over as soon as one is"),
                    vec![
                        ("service", name.clone()),
                        ("reason", NO_STANDBY.into()),
                        ("standbys", why),
                    ],
                ),
                Started::Stranded {
                    service_id: s.id.clone().unwrap_or_default(),
                    service: name,
                    pinned_to: id.to_owned(),
                },
            );
        };
        // stop-first would wait for the old task on the dead node to stop, that is for Swarm
        // to mark the node down; start-first starts the new task at once. The original order
        // comes back when the node is settled. (Once Swarm has marked the node down, which is
        // when an evacuation comes without a surge, stop-first does not wait: nothing to
        // change.)
        let uc = spec.update_config.get_or_insert_with(Default::default);
        let before = uc.order.map(|o| o.to_string()).unwrap_or_default();
        if self.surge && uc.order != Some(Order::START_FIRST) {
            labels.insert(order_label(id), before);
            uc.order = Some(Order::START_FIRST);
        }
        repin_to(s, spec, labels, pins, to, host, host)
    }

    /// Each standby other than the dead node that cannot take a service, and why (for
    /// `failover_impossible`).
    fn unfit_standbys(&self) -> String {
        let why: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| {
                n.id != self.id && n.labels.get(LABEL_STANDBY).map(String::as_str) == Some("true")
            })
            .map(|n| {
                let reason = if n.state != SwarmState::Ready {
                    "Swarm does not report it ready"
                } else if n.availability != Availability::Active {
                    "not active in Swarm"
                } else if self.fit.as_ref().is_some_and(|f| !f.contains(&n.id)) {
                    "its agent is silent or the detector does not hear it"
                } else {
                    "fit"
                };
                format!("{}: {reason}", n.hostname)
            })
            .collect();
        if why.is_empty() {
            "no node carries leakmon.standby=true".into()
        } else {
            why.join("; ")
        }
    }

    /// A replicated service with tasks running on the dead node: as many replicas added, and
    /// recorded in a label so settling takes them away again (and a second evacuation of the
    /// same node adds none).
    fn surge(&self, s: &Service, mut spec: ServiceSpec) -> Option<Apply> {
        let host = self.host.as_str();
        let sid = s.id.clone().unwrap_or_default();
        let (Some(&n), Some(r)) = (self.stranded.get(&sid), replicas(&spec)) else {
            return None;
        };
        let key = surge_label(&self.id);
        let mut labels = spec.labels.clone().unwrap_or_default();
        if !self.surge || labels.contains_key(&key) {
            return None;
        }
        let name = name_of(s);
        labels.insert(key, n.to_string());
        spec.labels = Some(labels);
        set_replicas(&mut spec, r + n);
        Some(Apply {
            change: update(s, spec),
            done: Some(ev(
                EventKind::Surge,
                host,
                format!("service {name}: {n} replicas added on live nodes for the tasks on {host}"),
                vec![
                    ("service", name.clone()),
                    ("added", n.to_string()),
                    ("replicas", (r + n).to_string()),
                ],
            )),
            action: "surge",
            adds_task_on: None,
            started: Some(Started::Surge {
                service_id: sid,
                service: name,
                want: u64::try_from(r).unwrap_or(0),
            }),
        })
    }
}

/// Moving a failed-over (or stranded) service on: service `s` is pinned to node `from` now
/// (the dead node `dead`, or a standby that did not start it); it is re-pinned to the least
/// loaded of the standbys in `to` that Swarm reports ready and active, start-first (the task
/// where it is pinned may never stop: a frozen node). `tasks_on`: tasks meant to run, per
/// node. [`Started::Gone`] when it is no longer pinned to `from` (an operator moved it).
pub fn retarget(
    s: &Service,
    from: &str,
    (dead, dead_host): (&str, &str),
    nodes: &[NodeFacts],
    tasks_on: &HashMap<String, usize>,
    to: &[String],
) -> Step {
    let service_id = s.id.clone().unwrap_or_default();
    let name = name_of(s);
    let gone = Step::Stranded(
        ev(
            EventKind::Confirmed,
            dead_host,
            format!(
                "service {name} is no longer pinned where leakmon put it: left to the operator"
            ),
            vec![("service", name.clone()), ("action", "failover".into())],
        ),
        Started::Gone {
            service_id: service_id.clone(),
        },
    );
    let (Some(mut spec), Some(pinned)) = (s.spec.clone(), nodes.iter().find(|n| n.id == from))
    else {
        return gone;
    };
    let pins = pinning(&constraints(&spec), pinned, nodes);
    if pins.is_empty() {
        return gone;
    }
    let fit: BTreeSet<String> = to.iter().filter(|n| *n != from).cloned().collect();
    let from_host = pinned.hostname.clone();
    let Some(target) = pick_standby(nodes, dead, tasks_on, Some(&fit)) else {
        return Step::Stranded(
            ev(
                EventKind::FailoverImpossible,
                dead_host,
                format!("service {name}: no standby Swarm reports ready and active is fit to take it; it stays pinned to {from_host}"),
                vec![("service", name.clone()), ("reason", super::confirm::NO_ELIGIBLE_STANDBY.into())],
            ),
            Started::Stranded {
                service_id,
                service: name,
                pinned_to: from.to_owned(),
            },
        );
    };
    let mut labels = spec.labels.clone().unwrap_or_default();
    let uc = spec.update_config.get_or_insert_with(Default::default);
    if uc.order != Some(Order::START_FIRST) {
        // Settling the dead node gives the service its own order back.
        labels
            .entry(order_label(dead))
            .or_insert_with(|| uc.order.map(|o| o.to_string()).unwrap_or_default());
        uc.order = Some(Order::START_FIRST);
    }
    repin_to(s, spec, labels, &pins, target, dead_host, &from_host)
}

/// Re-pins service `s` (its `spec`, with the `labels` it is to carry) from its pinning
/// constraints `pins` to standby `to`: its original constraints kept in a label, the standby
/// named in another, and the `failover` event (about node `event_node`, from `from_host`) to
/// emit once made, with the failover to watch.
fn repin_to(
    s: &Service,
    mut spec: ServiceSpec,
    mut labels: HashMap<String, String>,
    pins: &[usize],
    to: &NodeFacts,
    event_node: &str,
    from_host: &str,
) -> Step {
    let name = name_of(s);
    let old = constraints(&spec);
    let new = repin(&old, pins, &to.id);
    labels
        .entry(LABEL_ORIGINAL.into())
        .or_insert_with(|| serde_json::to_string(&old).unwrap_or_default());
    labels.insert(LABEL_FAILED_OVER_TO.into(), to.hostname.clone());
    spec.labels = Some(labels);
    set_constraints(&mut spec, new.clone());
    Step::Apply(Apply {
        change: update(s, spec),
        done: Some(ev(
            EventKind::Failover,
            event_node,
            format!(
                "service {name} re-pinned from {from_host} to {}",
                to.hostname
            ),
            vec![
                ("service", name.clone()),
                ("from", from_host.into()),
                ("to", to.hostname.clone()),
                ("constraints", new.join(",")),
                ("state", "pending".into()),
            ],
        )),
        action: "failover",
        adds_task_on: Some(to.id.clone()),
        started: Some(Started::Failover {
            service_id: s.id.clone().unwrap_or_default(),
            service: name,
            to_id: to.id.clone(),
            to_host: to.hostname.clone(),
        }),
    })
}

/// Settling node `id`, first its services: each failed over from it gets its own update order
/// back, each surged for it is scaled back by the replicas added. (A service is one or the
/// other: failover takes the pinned ones, surge the rest.)
pub fn settle_services(id: &str, host: &str, services: &[Service]) -> Vec<Apply> {
    services
        .iter()
        .filter_map(|s| settle_service(id, host, s))
        .collect()
}

fn settle_service(id: &str, host: &str, s: &Service) -> Option<Apply> {
    let mut spec = s.spec.clone()?;
    let mut labels = spec.labels.clone().unwrap_or_default();
    if let Some(order) = labels.remove(&order_label(id)) {
        spec.update_config
            .get_or_insert_with(Default::default)
            .order = match order.as_str() {
            "stop-first" => Some(Order::STOP_FIRST),
            "start-first" => Some(Order::START_FIRST),
            _ => None,
        };
        spec.labels = Some(labels);
        return Some(Apply {
            change: update(s, spec),
            done: None,
            action: "settle",
            adds_task_on: None,
            started: None,
        });
    }
    let added = labels.remove(&surge_label(id))?;
    // A label someone mangled takes nothing away rather than too much.
    let added: i64 = added.parse().unwrap_or(0);
    let to = (replicas(&spec).unwrap_or(0) - added).max(0);
    set_replicas(&mut spec, to);
    spec.labels = Some(labels);
    let name = name_of(s);
    Some(Apply {
        change: update(s, spec),
        done: Some(ev(
            EventKind::Settle,
            host,
            format!("service {name} scaled back to {to} replicas"),
            vec![("service", name), ("replicas", to.to_string())],
        )),
        action: "settle",
        adds_task_on: None,
        started: None,
    })
}

/// Settling node `id`, then the node: drained, keeping leakmon's mark, if leakmon marked it
/// (`current` as read before settling); never a node an operator paused or drained.
pub fn settle_node(id: &str, host: &str, current: &Node) -> Option<NodeStep> {
    let mark = leakmon_mark(current)?;
    Some(NodeStep {
        set: SetNode {
            availability: NodeSpecAvailabilityEnum::DRAIN,
            mark: Some(mark),
        },
        done: ev(
            EventKind::Drain,
            host,
            format!("node {host} drained by leakmon"),
            vec![
                ("availability", "drain".into()),
                ("swarm_node_id", id.into()),
            ],
        ),
        action: "drain",
    })
}

/// A node leakmon marked (`current`) set active again, its mark removed; `None` for a node
/// leakmon did not mark, which an operator may have drained.
pub fn reactivate_node(id: &str, host: &str, current: &Node) -> Option<NodeStep> {
    leakmon_mark(current)?;
    Some(NodeStep {
        set: SetNode {
            availability: NodeSpecAvailabilityEnum::ACTIVE,
            mark: None,
        },
        done: ev(
            EventKind::Reactivate,
            host,
            format!("node {host} is back and set active again"),
            vec![("swarm_node_id", id.into())],
        ),
        action: "reactivate",
    })
}

/// Service `s` (named `service`) force-updated, so Swarm replaces its tasks; `node` is the
/// node the event is about. `None` for a service without a spec.
pub fn force_update(service: &str, node: &str, why: &str, s: &Service) -> Option<Apply> {
    let mut spec = s.spec.clone()?;
    let t = spec.task_template.get_or_insert_with(Default::default);
    t.force_update = Some(t.force_update.unwrap_or(0) + 1);
    Some(Apply {
        change: update(s, spec),
        done: Some(ev(
            EventKind::ForceUpdate,
            node,
            format!("service {service} force-updated: {why}"),
            vec![("service", service.into()), ("reason", why.into())],
        )),
        action: "force_update",
        adds_task_on: None,
        started: None,
    })
}

/// Why Swarm does not confirm an unhealthy container as the task an agent reported it to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unconfirmed {
    /// No task of the service that Swarm means to run is in that container: a plain
    /// container wearing Swarm's labels, or a task already being replaced.
    NoSuchTask,
    /// The task runs on another node than the reporting agent's.
    OtherNode(String),
}

impl Unconfirmed {
    pub fn as_str(&self) -> &'static str {
        match self {
            Unconfirmed::NoSuchTask => "no_such_task",
            Unconfirmed::OtherNode(_) => "other_node",
        }
    }
}

/// Whether Swarm confirms what an agent reported: a task of service `s` (among `tasks`, those
/// Swarm means to run) runs in container `container_id`, on node `node_id` (the Swarm node of
/// the reporting agent). Labels on a container prove nothing: anyone who can run a container
/// can set them.
pub fn confirm_task(
    s: &Service,
    tasks: &[Task],
    container_id: &str,
    node_id: &str,
) -> Result<(), Unconfirmed> {
    let task = tasks
        .iter()
        .filter(|t| t.service_id.is_some() && t.service_id == s.id)
        .find(|t| {
            t.status
                .as_ref()
                .and_then(|st| st.container_status.as_ref())
                .and_then(|c| c.container_id.as_deref())
                == Some(container_id)
        })
        .ok_or(Unconfirmed::NoSuchTask)?;
    match task.node_id.as_deref() {
        Some(n) if n == node_id => Ok(()),
        other => Err(Unconfirmed::OtherNode(other.unwrap_or_default().to_owned())),
    }
}

/// The event of a refused force-update: what was reported, and why Swarm does not confirm it.
pub fn refused(service: &str, node: &str, container_id: &str, why: &Unconfirmed) -> Ev {
    let short = container_id.get(..12).unwrap_or(container_id);
    let message = match why {
        Unconfirmed::NoSuchTask => format!(
            "{node} reported container {short} of service {service} unhealthy, but Swarm runs no task of {service} in it: nothing done"
        ),
        Unconfirmed::OtherNode(n) => format!(
            "{node} reported container {short} of service {service} unhealthy, but Swarm runs that task on node {n}: nothing done"
        ),
    };
    ev(
        EventKind::Refused,
        node,
        message,
        vec![
            ("service", service.into()),
            ("container_id", container_id.into()),
            ("reason", why.as_str().into()),
        ],
    )
}

/// Names of the replicated services without placement constraints whose tasks are unevenly
/// spread over the ready, active nodes (to be force-updated, which spreads them again).
pub fn uneven_services(
    services: &[Service],
    tasks: &[TaskFacts],
    nodes: &[NodeFacts],
) -> Vec<String> {
    let eligible: Vec<&str> = nodes
        .iter()
        .filter(|n| n.state == SwarmState::Ready && n.availability == Availability::Active)
        .map(|n| n.id.as_str())
        .collect();
    services
        .iter()
        .filter(|s| {
            let Some(spec) = &s.spec else { return false };
            if replicas(spec).is_none() || !constraints(spec).is_empty() {
                return false;
            }
            let sid = s.id.as_deref().unwrap_or_default();
            let per: Vec<usize> = eligible
                .iter()
                .map(|n| {
                    tasks
                        .iter()
                        .filter(|t| {
                            t.service_id.as_deref() == Some(sid) && t.node_id.as_deref() == Some(n)
                        })
                        .count()
                })
                .collect();
            uneven(&per)
        })
        .map(name_of)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        NodeSpec, ObjectVersion, ServiceSpecMode, ServiceSpecModeReplicated,
        ServiceSpecUpdateConfig, TaskSpec, TaskSpecPlacement,
    };

    fn n(id: &str, host: &str, labels: &[(&str, &str)]) -> NodeFacts {
        NodeFacts {
            id: id.into(),
            hostname: host.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state: SwarmState::Ready,
            availability: Availability::Active,
            addr: String::new(),
            leader: false,
            manager: false,
            reachable: false,
        }
    }

    fn c(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A service at version 7; `replicas: None` makes it global.
    fn svc(
        id: &str,
        replicas: Option<i64>,
        constraints: &[&str],
        labels: &[(&str, &str)],
    ) -> Service {
        Service {
            id: Some(id.into()),
            version: Some(ObjectVersion { index: Some(7) }),
            spec: Some(ServiceSpec {
                name: Some(format!("{id}-name")),
                labels: Some(map(labels)),
                mode: Some(match replicas {
                    Some(r) => ServiceSpecMode {
                        replicated: Some(ServiceSpecModeReplicated { replicas: Some(r) }),
                        ..Default::default()
                    },
                    None => ServiceSpecMode {
                        global: Some(HashMap::new()),
                        ..Default::default()
                    },
                }),
                task_template: Some(TaskSpec {
                    placement: Some(TaskSpecPlacement {
                        constraints: Some(c(constraints)),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn task(service: &str, node: &str, running: bool) -> TaskFacts {
        TaskFacts {
            service_id: Some(service.into()),
            node_id: Some(node.into()),
            running,
        }
    }

    /// The API's node `id` with this availability and labels, at version 3.
    fn api_node(id: &str, availability: NodeSpecAvailabilityEnum, labels: &[(&str, &str)]) -> Node {
        Node {
            id: Some(id.into()),
            version: Some(ObjectVersion { index: Some(3) }),
            spec: Some(NodeSpec {
                availability: Some(availability),
                labels: Some(map(labels)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The spec of a service change (panics on anything else: a test's expectation).
    fn service_spec(step: &Step) -> &ServiceSpec {
        match step {
            Step::Apply(a) => apply_spec(a),
            other => panic!("not a change: {other:?}"),
        }
    }

    fn apply_spec(a: &Apply) -> &ServiceSpec {
        match &a.change {
            Change::Service { spec, .. } => spec,
            other => panic!("not a service change: {other:?}"),
        }
    }

    fn node_spec(change: &Change) -> &NodeSpec {
        match change {
            Change::Node { spec, .. } => spec,
            other => panic!("not a node change: {other:?}"),
        }
    }

    fn order(spec: &ServiceSpec) -> Option<Order> {
        spec.update_config.as_ref().and_then(|u| u.order)
    }

    /// Workers w1 (dead, node1), w2 (node2) and two standbys, s1 (node3) and s2 (node4).
    fn fleet() -> Vec<NodeFacts> {
        vec![
            n("w1", "node1", &[]),
            n("w2", "node2", &[]),
            n("s1", "node3", &[(LABEL_STANDBY, "true")]),
            n("s2", "node4", &[(LABEL_STANDBY, "true")]),
        ]
    }

    #[test]
    fn pinned_by_id_hostname_or_a_label_only_that_node_has() {
        let all = vec![
            n("a", "node1", &[("db", "primary"), ("zone", "x")]),
            n("b", "node2", &[("zone", "x")]),
        ];
        let dead = &all[0];
        assert_eq!(pinning(&c(&["node.id==a"]), dead, &all), [0]);
        assert_eq!(pinning(&c(&["node.hostname == node1"]), dead, &all), [0]);
        assert_eq!(
            pinning(
                &c(&["node.platform.os==linux", "node.labels.db==primary"]),
                dead,
                &all
            ),
            [1]
        );
        assert!(
            pinning(&c(&["node.labels.zone==x"]), dead, &all).is_empty(),
            "shared label"
        );
        assert!(pinning(&c(&["node.hostname!=node1"]), dead, &all).is_empty());
        assert!(pinning(&c(&["node.hostname==node2"]), dead, &all).is_empty());
        assert!(pinning(&c(&["node.role==manager"]), dead, &all).is_empty());
    }

    #[test]
    fn repin_keeps_other_constraints() {
        let old = c(&["node.platform.os==linux", "node.hostname==node1"]);
        assert_eq!(
            repin(&old, &[1], "b"),
            c(&["node.platform.os==linux", "node.id==b"])
        );
    }

    #[test]
    fn standby_is_the_least_loaded_healthy_labelled_node() {
        let mut all = vec![
            n("a", "node1", &[(LABEL_STANDBY, "true")]),
            n("b", "node2", &[(LABEL_STANDBY, "true")]),
            n("c", "node3", &[(LABEL_STANDBY, "true")]),
            n("d", "node4", &[]),
        ];
        all[2].availability = Availability::Drain;
        let load = HashMap::from([("a".to_owned(), 3), ("b".to_owned(), 1)]);
        assert_eq!(pick_standby(&all, "x", &load, None).unwrap().id, "b");
        assert_eq!(
            pick_standby(&all, "b", &load, None).unwrap().id,
            "a",
            "never the dead one"
        );
        let only_a = BTreeSet::from(["a".to_owned()]);
        assert_eq!(
            pick_standby(&all, "x", &load, Some(&only_a)).unwrap().id,
            "a",
            "b is not fit (its agent is silent): the more loaded a it is"
        );
        assert!(pick_standby(&all, "x", &load, Some(&BTreeSet::new())).is_none());
        all[0].state = SwarmState::Down;
        assert!(pick_standby(&all, "b", &load, None).is_none());
        assert!(
            pick_standby(&all, "x", &load, Some(&only_a)).is_none(),
            "fit to decide, but Swarm says down"
        );
        assert_eq!(
            pick_standby(&all[..2], "x", &HashMap::new(), None)
                .unwrap()
                .id,
            "b",
            "a is down"
        );
    }

    #[test]
    fn unevenness() {
        assert!(!uneven(&[2, 1, 1]));
        assert!(uneven(&[3, 1, 0]));
        assert!(!uneven(&[]));
    }

    #[test]
    fn a_dead_worker_is_paused_and_its_replicated_tasks_surged_with_a_label() {
        let step = evacuate_node("w1", "node1", true, 1_000);
        assert_eq!(
            step.set,
            SetNode {
                availability: NodeSpecAvailabilityEnum::PAUSE,
                mark: Some("1000".into())
            }
        );
        assert_eq!(step.done.kind, EventKind::Drain);
        assert_eq!(step.action, "drain");
        let change = step
            .set
            .change(
                "w1",
                &api_node("w1", NodeSpecAvailabilityEnum::ACTIVE, &[("zone", "x")]),
            )
            .expect("an active node changes");
        let Change::Node { id, version, spec } = &change else {
            panic!("{change:?}")
        };
        assert_eq!((id.as_str(), *version), ("w1", 3));
        assert_eq!(spec.availability, Some(NodeSpecAvailabilityEnum::PAUSE));
        assert_eq!(
            spec.labels,
            Some(map(&[("zone", "x"), (LABEL_DRAINED, "1000")])),
            "an operator's labels are kept"
        );

        let tasks = [
            task("web", "w1", true),
            task("web", "w1", true),
            task("web", "w2", true),
        ];
        let plan = Evacuation::new("w1", "node1", true, fleet(), &tasks).unwrap();
        let web = svc("web", Some(3), &[], &[("team", "a")]);
        let step = plan.service(&web).expect("surged");
        let Step::Apply(a) = &step else {
            panic!("{step:?}")
        };
        let Change::Service { id, version, .. } = &a.change else {
            panic!("{a:?}")
        };
        assert_eq!((id.as_str(), *version), ("web", 7));
        let spec = service_spec(&step);
        assert_eq!(replicas(spec), Some(5));
        assert_eq!(
            spec.labels,
            Some(map(&[("team", "a"), ("leakmon.surge.w1", "2")]))
        );
        assert_eq!(a.action, "surge");
        assert_eq!(a.adds_task_on, None);
        let done = a.done.as_ref().unwrap();
        assert_eq!(done.kind, EventKind::Surge);
        assert_eq!(done.node.as_deref(), Some("node1"));
        assert_eq!(
            done.details,
            [
                ("service", "web-name".to_owned()),
                ("added", "2".to_owned()),
                ("replicas", "5".to_owned())
            ]
        );

        let surged = svc("web", Some(5), &[], &[("leakmon.surge.w1", "2")]);
        assert_eq!(plan.service(&surged), None, "surged once only");
    }

    #[test]
    fn a_node_swarm_let_go_of_is_surged_for_what_it_last_ran() {
        // Swarm marked w1 down: its web task is no longer meant to run (not in the running
        // list), its replacement waits out the restart delay elsewhere
        let running = [task("web", "w2", true), task("web", "w3", false)];
        let plan = Evacuation::new("w1", "node1", true, fleet(), &running).unwrap();
        let web = svc("web", Some(3), &[], &[]);
        assert_eq!(plan.service(&web), None, "nothing meant to run on w1");
        // the node's own tasks, any desired state: one last seen running, one long shut down
        let on_w1 = [task("web", "w1", true), task("web", "w1", false)];
        let plan = Evacuation::new("w1", "node1", true, fleet(), &running)
            .unwrap()
            .let_go(&on_w1);
        let step = plan.service(&web).expect("surged");
        assert_eq!(replicas(service_spec(&step)), Some(4));
    }

    #[test]
    fn without_a_surge_the_node_is_drained_and_nothing_scaled() {
        let step = evacuate_node("w1", "node1", false, 1_000);
        assert_eq!(step.set.availability, NodeSpecAvailabilityEnum::DRAIN);
        assert_eq!(step.done.details[0], ("availability", "drain".to_owned()));
        let tasks = [task("web", "w1", true)];
        let plan = Evacuation::new("w1", "node1", false, fleet(), &tasks).unwrap();
        assert_eq!(plan.service(&svc("web", Some(3), &[], &[])), None);
    }

    #[test]
    fn services_are_counted_as_telegraf_docker_swarm_counts_them() {
        let services: Vec<Service> = serde_json::from_value(serde_json::json!([
            {"ID": "s1", "Spec": {"Name": "web", "Mode": {"Replicated": {"Replicas": 3}}}},
            {"ID": "s2", "Spec": {"Name": "agent", "Mode": {"Global": {}}}},
            {"ID": "s3", "Spec": {"Name": "backup", "Mode": {"ReplicatedJob": {}}}}
        ]))
        .expect("services");
        let task = |svc: &str, desired: &str, state: &str| serde_json::json!({"ServiceID": svc, "DesiredState": desired, "Status": {"State": state}});
        let tasks: Vec<Task> = serde_json::from_value(serde_json::json!([
            task("s1", "running", "running"),
            task("s1", "running", "running"),
            task("s1", "running", "preparing"),
            task("s1", "shutdown", "failed"),
            task("s2", "running", "running"),
            task("s2", "running", "running"),
            task("s2", "shutdown", "shutdown"),
            task("s3", "complete", "complete")
        ]))
        .expect("tasks");
        let t = tally(&services, &tasks);
        let row = |name: &str| t.iter().find(|x| x.name == name).cloned().expect(name);
        assert_eq!(
            (row("web").mode, row("web").running, row("web").desired),
            ("replicated", 2, Some(3))
        );
        assert_eq!(
            (
                row("agent").mode,
                row("agent").running,
                row("agent").desired
            ),
            ("global", 2, Some(2)),
            "global: tasks not meant to shut down"
        );
        assert_eq!(
            (
                row("backup").mode,
                row("backup").running,
                row("backup").desired
            ),
            ("replicated_job", 0, None)
        );
    }

    #[test]
    fn an_evacuation_fails_over_only_to_a_fit_standby_and_strands_otherwise() {
        let tasks = [task("db", "w1", true)];
        let db = svc(
            "db",
            Some(1),
            &["node.hostname==node1"],
            &[(LABEL_FAILOVER, "true")],
        );
        // s1 is the less loaded, but not fit: s2 takes db
        let plan = Evacuation::new("w1", "node1", true, fleet(), &tasks)
            .unwrap()
            .only(&["s2".to_owned()]);
        let Some(Step::Apply(a)) = plan.service(&db) else {
            panic!("db fails over")
        };
        assert_eq!(
            a.started,
            Some(Started::Failover {
                service_id: "db".into(),
                service: "db-name".into(),
                to_id: "s2".into(),
                to_host: "node4".into(),
            })
        );
        // none fit: stranded, watched, and the event says why for each standby
        let plan = Evacuation::new("w1", "node1", true, fleet(), &tasks)
            .unwrap()
            .only(&[]);
        let Some(Step::Stranded(e, st)) = plan.service(&db) else {
            panic!("db is stranded")
        };
        assert_eq!(e.kind, EventKind::FailoverImpossible);
        assert!(
            e.message.contains("node3: its agent is silent")
                && e.message.contains("node4: its agent is silent"),
            "{}",
            e.message
        );
        assert_eq!(
            st,
            Started::Stranded {
                service_id: "db".into(),
                service: "db-name".into(),
                pinned_to: "w1".into(),
            }
        );
    }

    #[test]
    fn a_retarget_moves_a_service_off_a_failed_standby_start_first() {
        // db failed over from w1 to s1, which never started it
        let mut db = svc(
            "db",
            Some(1),
            &["node.platform.os==linux", "node.id==s1"],
            &[(LABEL_FAILOVER, "true")],
        );
        if let Some(spec) = db.spec.as_mut() {
            spec.update_config = Some(ServiceSpecUpdateConfig {
                order: Some(Order::STOP_FIRST),
                ..Default::default()
            });
        }
        let load = HashMap::new();
        let to = ["s1".to_owned(), "s2".to_owned()];
        let step = retarget(&db, "s1", ("w1", "node1"), &fleet(), &load, &to);
        let spec = service_spec(&step);
        assert_eq!(
            constraints(spec),
            ["node.platform.os==linux", "node.id==s2"],
            "never back to where it failed"
        );
        assert_eq!(order(spec), Some(Order::START_FIRST));
        assert_eq!(
            spec.labels.as_ref().and_then(|l| l.get(&order_label("w1"))),
            Some(&"stop-first".to_owned()),
            "settling the dead node restores the order"
        );
        let Step::Apply(a) = &step else { panic!() };
        let done = a.done.as_ref().unwrap();
        assert_eq!(done.node.as_deref(), Some("node1"), "the dead node's event");
        assert!(done.details.contains(&("from", "node3".to_owned())));
        assert!(done.details.contains(&("to", "node4".to_owned())));
        // nothing fit in Swarm's view: stranded where it is
        let step = retarget(
            &db,
            "s1",
            ("w1", "node1"),
            &fleet(),
            &load,
            &["s1".to_owned()],
        );
        assert!(matches!(
            step,
            Step::Stranded(_, Started::Stranded { ref pinned_to, .. }) if pinned_to == "s1"
        ));
        // an operator pinned it elsewhere meanwhile: no longer ours
        let moved = svc("db", Some(1), &["node.id==w2"], &[(LABEL_FAILOVER, "true")]);
        let step = retarget(&moved, "s1", ("w1", "node1"), &fleet(), &load, &to);
        assert!(matches!(step, Step::Stranded(_, Started::Gone { .. })));
    }

    #[test]
    fn a_surge_is_watched_for_the_replicas_it_had() {
        let tasks = [task("web", "w1", true), task("web", "w2", true)];
        let plan = Evacuation::new("w1", "node1", true, fleet(), &tasks).unwrap();
        let Some(Step::Apply(a)) = plan.service(&svc("web", Some(2), &[], &[])) else {
            panic!("web is surged")
        };
        assert_eq!(
            a.started,
            Some(Started::Surge {
                service_id: "web".into(),
                service: "web-name".into(),
                want: 2,
            })
        );
    }

    #[test]
    fn a_pinned_failover_service_goes_to_the_least_loaded_standby_start_first() {
        // s1 runs one task, s2 none
        let tasks = [task("other", "s1", true)];
        let mut plan = Evacuation::new("w1", "node1", true, fleet(), &tasks).unwrap();
        let mut db = svc(
            "db",
            Some(1),
            &["node.platform.os==linux", "node.hostname==node1"],
            &[(LABEL_FAILOVER, "true")],
        );
        if let Some(spec) = db.spec.as_mut() {
            spec.update_config = Some(ServiceSpecUpdateConfig {
                order: Some(Order::STOP_FIRST),
                ..Default::default()
            });
        }
        let step = plan.service(&db).expect("failed over");
        let spec = service_spec(&step);
        assert_eq!(
            constraints(spec),
            c(&["node.platform.os==linux", "node.id==s2"]),
            "the other constraints are kept"
        );
        assert_eq!(order(spec), Some(Order::START_FIRST));
        let labels = spec.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(LABEL_ORIGINAL).map(String::as_str),
            Some(r#"["node.platform.os==linux","node.hostname==node1"]"#)
        );
        assert_eq!(
            labels.get(LABEL_FAILED_OVER_TO).map(String::as_str),
            Some("node4")
        );
        assert_eq!(
            labels.get("leakmon.failover.order.w1").map(String::as_str),
            Some("stop-first")
        );
        let Step::Apply(a) = &step else {
            panic!("{step:?}")
        };
        assert_eq!(a.action, "failover");
        assert_eq!(a.adds_task_on.as_deref(), Some("s2"));
        let done = a.done.as_ref().unwrap();
        assert_eq!(done.kind, EventKind::Failover);
        assert_eq!(
            done.details,
            [
                ("service", "db-name".to_owned()),
                ("from", "node1".to_owned()),
                ("to", "node4".to_owned()),
                (
                    "constraints",
                    "node.platform.os==linux,node.id==s2".to_owned()
                ),
                ("state", "pending".to_owned())
            ]
        );

        // A failover that failed does not load its standby; one made does, so the next
        // pinned service goes to s1 (one task each, then by hostname).
        let cache = svc(
            "cache",
            Some(1),
            &["node.id==w1"],
            &[(LABEL_FAILOVER, "true")],
        );
        assert_eq!(
            constraints(service_spec(&plan.service(&cache).unwrap()))[0],
            "node.id==s2"
        );
        plan.applied(a);
        assert_eq!(
            constraints(service_spec(&plan.service(&cache).unwrap()))[0],
            "node.id==s1"
        );
    }

    #[test]
    fn a_failover_keeps_start_first_and_without_a_surge_the_order() {
        let db = svc("db", Some(1), &["node.id==w1"], &[(LABEL_FAILOVER, "true")]);
        let plan = Evacuation::new("w1", "node1", false, fleet(), &[]).unwrap();
        let step = plan.service(&db).unwrap();
        let spec = service_spec(&step);
        assert_eq!(
            order(spec),
            None,
            "Swarm marked the node down: stop-first does not wait"
        );
        assert!(!spec
            .labels
            .clone()
            .unwrap_or_default()
            .contains_key("leakmon.failover.order.w1"));

        let mut db = db;
        if let Some(spec) = db.spec.as_mut() {
            spec.update_config = Some(ServiceSpecUpdateConfig {
                order: Some(Order::START_FIRST),
                ..Default::default()
            });
        }
        let plan = Evacuation::new("w1", "node1", true, fleet(), &[]).unwrap();
        let step = plan.service(&db).unwrap();
        let spec = service_spec(&step);
        assert_eq!(order(spec), Some(Order::START_FIRST));
        assert!(
            !spec
                .labels
                .clone()
                .unwrap_or_default()
                .contains_key("leakmon.failover.order.w1"),
            "nothing to restore"
        );
    }

    #[test]
    fn a_pinned_service_without_standby_or_failover_label_is_reported_not_moved() {
        let mut nodes = fleet();
        nodes[2].availability = Availability::Drain;
        nodes[3].state = SwarmState::Down;
        let plan = Evacuation::new("w1", "node1", true, nodes, &[]).unwrap();
        let db = svc(
            "db",
            Some(1),
            &["node.hostname==node1"],
            &[(LABEL_FAILOVER, "true")],
        );
        let Some(Step::Stranded(e, _)) = plan.service(&db) else {
            panic!("no standby: a report, and watched")
        };
        assert_eq!(e.kind, EventKind::FailoverImpossible);
        assert!(e.message.contains("no standby is fit"), "{}", e.message);
        assert_eq!(
            e.details,
            [
                ("service", "db-name".to_owned()),
                ("reason", NO_STANDBY.to_owned()),
                (
                    "standbys",
                    "node3: not active in Swarm; node4: Swarm does not report it ready".to_owned()
                )
            ]
        );

        let plan = Evacuation::new("w1", "node1", true, fleet(), &[]).unwrap();
        let db = svc("db", Some(1), &["node.hostname==node1"], &[]);
        let Some(Step::Report(e)) = plan.service(&db) else {
            panic!("no label: a report")
        };
        assert_eq!(e.kind, EventKind::FailoverImpossible);
        assert!(e.message.contains("leakmon.failover=true"), "{}", e.message);
    }

    #[test]
    fn services_without_running_tasks_on_the_dead_node_and_global_ones_are_untouched() {
        let tasks = [
            task("web", "w2", true),
            task("starting", "w1", false),
            task("agent", "w1", true),
        ];
        let plan = Evacuation::new("w1", "node1", true, fleet(), &tasks).unwrap();
        assert_eq!(plan.service(&svc("web", Some(2), &[], &[])), None);
        assert_eq!(plan.service(&svc("starting", Some(1), &[], &[])), None);
        assert_eq!(plan.service(&svc("agent", None, &[], &[])), None, "global");
        assert_eq!(
            plan.service(&Service {
                id: Some("bare".into()),
                ..Default::default()
            }),
            None,
            "no spec"
        );
    }

    #[test]
    fn a_node_gone_from_the_swarm_cannot_be_evacuated() {
        assert_eq!(
            Evacuation::new("gone", "node9", true, fleet(), &[]).err(),
            Some("the node is no longer in the Swarm")
        );
    }

    #[test]
    fn a_drained_node_is_never_paused_and_unchanged_is_no_change() {
        // Whether to evacuate a node an operator drained is decide's rule (never); here only
        // what the change would be: drain is kept.
        let operator = api_node("w1", NodeSpecAvailabilityEnum::DRAIN, &[]);
        let pause = evacuate_node("w1", "node1", true, 5).set;
        let change = pause.change("w1", &operator).unwrap();
        assert_eq!(
            node_spec(&change).availability,
            Some(NodeSpecAvailabilityEnum::DRAIN)
        );
        // leakmon's own drain, asked again: nothing to write, nothing to report
        let ours = api_node(
            "w1",
            NodeSpecAvailabilityEnum::DRAIN,
            &[(LABEL_DRAINED, "5")],
        );
        assert_eq!(
            evacuate_node("w1", "node1", false, 9)
                .set
                .change("w1", &ours),
            None
        );
        assert_eq!(pause.change("w1", &ours), None);
        // and an operator's drain is neither settled nor reactivated
        assert_eq!(settle_node("w1", "node1", &operator), None);
        assert_eq!(reactivate_node("w1", "node1", &operator), None);
    }

    #[test]
    fn settling_scales_back_the_surge_restores_the_order_and_drains_keeping_the_mark() {
        let services = [
            svc(
                "web",
                Some(5),
                &[],
                &[("leakmon.surge.w1", "2"), ("team", "a")],
            ),
            svc(
                "db",
                Some(1),
                &["node.id==s2"],
                &[("leakmon.failover.order.w1", "stop-first")],
            ),
            svc("other", Some(3), &[], &[("leakmon.surge.w2", "1")]),
            svc("mangled", Some(1), &[], &[("leakmon.surge.w1", "x")]),
        ];
        let plan = settle_services("w1", "node1", &services);
        assert_eq!(plan.len(), 3, "{plan:?}");
        let web = apply_spec(&plan[0]).clone();
        assert_eq!(replicas(&web), Some(3));
        assert_eq!(web.labels, Some(map(&[("team", "a")])));
        assert_eq!(
            plan[0].done.as_ref().map(|e| e.kind),
            Some(EventKind::Settle)
        );
        let db = apply_spec(&plan[1]).clone();
        assert_eq!(order(&db), Some(Order::STOP_FIRST));
        assert_eq!(db.labels, Some(HashMap::new()));
        assert_eq!(plan[1].done, None);
        let mangled = apply_spec(&plan[2]).clone();
        assert_eq!(replicas(&mangled), Some(1), "nothing taken away");

        let paused = api_node(
            "w1",
            NodeSpecAvailabilityEnum::PAUSE,
            &[(LABEL_DRAINED, "5")],
        );
        let step = settle_node("w1", "node1", &paused).unwrap();
        let spec = node_spec(&step.set.change("w1", &paused).unwrap()).clone();
        assert_eq!(spec.availability, Some(NodeSpecAvailabilityEnum::DRAIN));
        assert_eq!(spec.labels, Some(map(&[(LABEL_DRAINED, "5")])));
        assert_eq!(step.done.kind, EventKind::Drain);
    }

    #[test]
    fn reactivating_sets_active_and_removes_the_mark() {
        let ours = api_node(
            "w1",
            NodeSpecAvailabilityEnum::DRAIN,
            &[(LABEL_DRAINED, "5")],
        );
        let step = reactivate_node("w1", "node1", &ours).unwrap();
        let spec = node_spec(&step.set.change("w1", &ours).unwrap()).clone();
        assert_eq!(spec.availability, Some(NodeSpecAvailabilityEnum::ACTIVE));
        assert_eq!(spec.labels, Some(HashMap::new()));
        assert_eq!(
            (step.done.kind, step.action),
            (EventKind::Reactivate, "reactivate")
        );
    }

    #[test]
    fn a_force_update_needs_swarm_to_confirm_the_task_and_its_node() {
        use bollard::models::{ContainerStatus, TaskStatus};
        let s = Service {
            id: Some("svc-db".into()),
            ..Default::default()
        };
        let task = |service: &str, node: &str, container: &str| Task {
            service_id: Some(service.into()),
            node_id: Some(node.into()),
            status: Some(TaskStatus {
                container_status: Some(ContainerStatus {
                    container_id: Some(container.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let tasks = [
            task("svc-db", "id1", "c-db"),
            task("svc-web", "id3", "c-web"),
        ];
        assert_eq!(confirm_task(&s, &tasks, "c-db", "id1"), Ok(()));
        // `docker run --label com.docker.swarm.service.name=db`: no task runs in it
        assert_eq!(
            confirm_task(&s, &tasks, "c-fake", "id3"),
            Err(Unconfirmed::NoSuchTask)
        );
        // another service's task reported as db's
        assert_eq!(
            confirm_task(&s, &tasks, "c-web", "id3"),
            Err(Unconfirmed::NoSuchTask)
        );
        // db's real container, reported by another node
        assert_eq!(
            confirm_task(&s, &tasks, "c-db", "id3"),
            Err(Unconfirmed::OtherNode("id1".into()))
        );
        let e = refused("db", "node3", "c-db", &Unconfirmed::OtherNode("id1".into()));
        assert_eq!(e.kind, EventKind::Refused);
        assert!(e.details.contains(&("reason", "other_node".into())));
    }

    #[test]
    fn rebalance_force_updates_unevenly_spread_unconstrained_replicated_services() {
        let mut nodes = fleet();
        nodes[3].availability = Availability::Drain;
        let tasks = [
            task("web", "w1", true),
            task("web", "w1", true),
            task("web", "w1", true),
            task("even", "w1", true),
            task("even", "w2", true),
            task("even", "s1", true),
            // tasks on a drained node do not count
            task("even", "s2", true),
            task("even", "s2", true),
            task("pinned", "w1", true),
            task("pinned", "w1", true),
        ];
        let services = [
            svc("web", Some(3), &[], &[]),
            svc("even", Some(5), &[], &[]),
            svc("pinned", Some(2), &["node.role==worker"], &[]),
            svc("global", None, &[], &[]),
        ];
        assert_eq!(uneven_services(&services, &tasks, &nodes), ["web-name"]);

        let a = force_update("web-name", "node1", "why", &services[0]).unwrap();
        let spec = apply_spec(&a).clone();
        assert_eq!(spec.task_template.and_then(|t| t.force_update), Some(1));
        assert_eq!(a.done.map(|e| e.kind), Some(EventKind::ForceUpdate));
    }
}
