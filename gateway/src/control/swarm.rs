//! The Swarm shell: reads the Swarm's state and carries out the decisions of
//! [`super::decide`] through the local manager's API (bollard). The only module that makes
//! write calls to the Swarm API. Placement logic (which constraints pin a service to a node,
//! which standby takes it) is pure and tested here; the calls themselves are tested end to end
//! on a real Swarm (tests/control.rs).

use std::collections::HashMap;

use bollard::models::{
    LocalNodeState, Node, NodeSpecAvailabilityEnum, NodeState, Service, ServiceSpec,
    ServiceSpecUpdateConfigOrderEnum as Order, TaskState,
};
use bollard::query_parameters::{
    ListServicesOptions, ListTasksOptions, UpdateNodeOptions, UpdateServiceOptions,
    UpdateSwarmOptions,
};
use bollard::Docker;
use leakmon_protocol::EventKind;

use super::decide::{Availability, SwarmNode, SwarmState};

/// On a node: leakmon paused/drained it (value: when, ms since the epoch).
pub const LABEL_DRAINED: &str = "leakmon.drained";
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

/// An event the shell reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Ev {
    pub kind: EventKind,
    pub node: Option<String>,
    pub message: String,
    pub details: Vec<(&'static str, String)>,
}

fn ev(kind: EventKind, node: &str, message: String, details: Vec<(&'static str, String)>) -> Ev {
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

    pub fn to_decide(&self) -> SwarmNode {
        SwarmNode {
            id: self.id.clone(),
            hostname: self.hostname.clone(),
            addr: self.addr.clone(),
            state: self.state,
            availability: self.availability,
            // A label left on a node an operator set active again does not count.
            leakmon_drained: self.labels.contains_key(LABEL_DRAINED)
                && self.availability != Availability::Active,
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
/// ready, active, not `dead`; the one running the fewest tasks (then by hostname).
pub fn pick_standby<'a>(
    nodes: &'a [NodeFacts],
    dead: &str,
    tasks_on: &HashMap<String, usize>,
) -> Option<&'a NodeFacts> {
    nodes
        .iter()
        .filter(|n| {
            n.id != dead
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

fn replicas(spec: &ServiceSpec) -> Option<i64> {
    spec.mode.as_ref()?.replicated.as_ref()?.replicas
}

fn set_replicas(spec: &mut ServiceSpec, n: i64) {
    if let Some(r) = spec.mode.as_mut().and_then(|m| m.replicated.as_mut()) {
        r.replicas = Some(n);
    }
}

fn constraints(spec: &ServiceSpec) -> Vec<String> {
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

/// What the leader poll learns from the local engine.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineView {
    Unreachable(String),
    /// Not part of a Swarm.
    NoSwarm,
    Worker,
    /// A manager whose node list could not be read (no quorum, no leader).
    NoQuorum(String),
    Manager {
        self_id: String,
        nodes: Vec<NodeFacts>,
    },
}

/// The Swarm shell on the local engine.
#[derive(Clone)]
pub struct SwarmApi {
    docker: Docker,
    dry_run: bool,
}

fn failed(node: &str, what: &str, e: impl std::fmt::Display) -> Ev {
    tracing::warn!(node, action = what, error = %e, "Swarm API call failed");
    ev(
        EventKind::ActionFailed,
        node,
        format!("{what} failed: {e}"),
        vec![("action", what.to_owned()), ("error", e.to_string())],
    )
}

impl SwarmApi {
    pub fn new(docker: Docker, dry_run: bool) -> Self {
        SwarmApi { docker, dry_run }
    }

    pub async fn view(&self) -> EngineView {
        let info = match self.docker.info().await {
            Ok(i) => i,
            Err(e) => return EngineView::Unreachable(e.to_string()),
        };
        let sw = info.swarm.unwrap_or_default();
        if sw.local_node_state != Some(LocalNodeState::ACTIVE) {
            return EngineView::NoSwarm;
        }
        if sw.control_available != Some(true) {
            return EngineView::Worker;
        }
        match self.docker.list_nodes(None).await {
            Ok(nodes) => EngineView::Manager {
                self_id: sw.node_id.unwrap_or_default(),
                nodes: nodes.iter().filter_map(NodeFacts::from_api).collect(),
            },
            Err(e) => EngineView::NoQuorum(e.to_string()),
        }
    }

    /// Sets a node's availability, adding (`Some`) or removing (`None`) leakmon's label.
    async fn set_node(
        &self,
        id: &str,
        mut availability: NodeSpecAvailabilityEnum,
        label: Option<String>,
    ) -> Result<bool, bollard::errors::Error> {
        let n = self.docker.inspect_node(id).await?;
        let mut spec = n.spec.unwrap_or_default();
        // A drained node is never turned back to pause.
        if availability == NodeSpecAvailabilityEnum::PAUSE
            && spec.availability == Some(NodeSpecAvailabilityEnum::DRAIN)
        {
            availability = NodeSpecAvailabilityEnum::DRAIN;
        }
        let labels = spec.labels.get_or_insert_with(HashMap::new);
        let changed_label = match &label {
            Some(v) => labels.insert(LABEL_DRAINED.into(), v.clone()).is_none(),
            None => labels.remove(LABEL_DRAINED).is_some(),
        };
        if spec.availability == Some(availability) && !changed_label {
            return Ok(false);
        }
        spec.availability = Some(availability);
        if self.dry_run {
            return Ok(true);
        }
        let version = n.version.and_then(|v| v.index).unwrap_or(0) as i64;
        self.docker
            .update_node(id, spec, UpdateNodeOptions { version })
            .await?;
        Ok(true)
    }

    async fn update_service(
        &self,
        s: &Service,
        spec: ServiceSpec,
    ) -> Result<(), bollard::errors::Error> {
        if self.dry_run {
            return Ok(());
        }
        let id = s.id.clone().unwrap_or_default();
        let version = s.version.as_ref().and_then(|v| v.index).unwrap_or(0) as i32;
        self.docker
            .update_service(
                &id,
                spec,
                UpdateServiceOptions {
                    version,
                    ..Default::default()
                },
                None,
            )
            .await?;
        Ok(())
    }

    async fn running_tasks(&self) -> Result<Vec<bollard::models::Task>, bollard::errors::Error> {
        let filters = HashMap::from([("desired-state".to_owned(), vec!["running".to_owned()])]);
        self.docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters),
            }))
            .await
    }

    async fn services(&self) -> Result<Vec<Service>, bollard::errors::Error> {
        self.docker.list_services(None::<ListServicesOptions>).await
    }

    /// Takes a dead node out: pause (labelled), fail over its pinned services, and either
    /// surge its replicated services (settled later) or drain it at once.
    pub async fn evacuate(&self, id: &str, host: &str, surge: bool, now_ms: i64) -> Vec<Ev> {
        let mut out = Vec::new();
        let avail = if surge {
            NodeSpecAvailabilityEnum::PAUSE
        } else {
            NodeSpecAvailabilityEnum::DRAIN
        };
        match self.set_node(id, avail, Some(now_ms.to_string())).await {
            Ok(true) => out.push(ev(
                EventKind::Drain,
                host,
                format!("node {host} set to {avail} by leakmon"),
                vec![
                    ("availability", avail.to_string()),
                    ("swarm_node_id", id.into()),
                ],
            )),
            Ok(false) => {}
            Err(e) => {
                out.push(failed(host, "drain", e));
                return out;
            }
        }
        let (services, tasks, nodes) = match tokio::try_join!(
            self.services(),
            self.running_tasks(),
            self.docker.list_nodes(None)
        ) {
            Ok(v) => v,
            Err(e) => {
                out.push(failed(host, "evacuate", e));
                return out;
            }
        };
        let nodes: Vec<NodeFacts> = nodes.iter().filter_map(NodeFacts::from_api).collect();
        let Some(dead) = nodes.iter().find(|n| n.id == id).cloned() else {
            out.push(failed(
                host,
                "evacuate",
                "the node is no longer in the Swarm",
            ));
            return out;
        };
        let mut tasks_on: HashMap<String, usize> = HashMap::new();
        let mut stranded: HashMap<String, i64> = HashMap::new();
        for t in &tasks {
            let Some(node) = &t.node_id else { continue };
            *tasks_on.entry(node.clone()).or_default() += 1;
            let running = t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING);
            if node == id && running {
                if let Some(sid) = &t.service_id {
                    *stranded.entry(sid.clone()).or_default() += 1;
                }
            }
        }
        for s in &services {
            let Some(mut spec) = s.spec.clone() else {
                continue;
            };
            let name = name_of(s);
            let labels = spec.labels.clone().unwrap_or_default();
            let pins = pinning(&constraints(&spec), &dead, &nodes);
            if !pins.is_empty() {
                if labels.get(LABEL_FAILOVER).map(String::as_str) != Some("true") {
                    out.push(ev(
                        EventKind::FailoverImpossible,
                        host,
                        format!("service {name} is pinned to {host} and has no leakmon.failover=true label: it stays pending"),
                        vec![("service", name.clone())],
                    ));
                    continue;
                }
                let Some(to) = pick_standby(&nodes, id, &tasks_on) else {
                    out.push(ev(
                        EventKind::FailoverImpossible,
                        host,
                        format!("service {name} is pinned to {host} and no healthy node carries leakmon.standby=true"),
                        vec![("service", name.clone())],
                    ));
                    continue;
                };
                let old = constraints(&spec);
                let new = repin(&old, &pins, &to.id);
                let mut labels = labels;
                labels
                    .entry(LABEL_ORIGINAL.into())
                    .or_insert_with(|| serde_json::to_string(&old).unwrap_or_default());
                labels.insert(LABEL_FAILED_OVER_TO.into(), to.hostname.clone());
                // stop-first would wait for the old task on the dead node to stop, that is
                // for Swarm to mark the node down; start-first starts the new task at once.
                // The original order comes back when the node is settled. (Once Swarm has
                // marked the node down, stop-first does not wait: nothing to change.)
                let uc = spec.update_config.get_or_insert_with(Default::default);
                let before = uc.order.map(|o| o.to_string()).unwrap_or_default();
                if surge && uc.order != Some(Order::START_FIRST) {
                    labels.insert(order_label(id), before);
                    uc.order = Some(Order::START_FIRST);
                }
                spec.labels = Some(labels);
                set_constraints(&mut spec, new.clone());
                match self.update_service(s, spec).await {
                    Ok(()) => {
                        *tasks_on.entry(to.id.clone()).or_default() += 1;
                        out.push(ev(
                            EventKind::Failover,
                            host,
                            format!("service {name} re-pinned from {host} to {}", to.hostname),
                            vec![
                                ("service", name),
                                ("from", host.into()),
                                ("to", to.hostname.clone()),
                                ("constraints", new.join(",")),
                            ],
                        ))
                    }
                    Err(e) => out.push(failed(host, "failover", e)),
                }
                continue;
            }
            let sid = s.id.clone().unwrap_or_default();
            let (Some(n), Some(r)) = (stranded.get(&sid), replicas(&spec)) else {
                continue;
            };
            let key = surge_label(id);
            if !surge || labels.contains_key(&key) {
                continue;
            }
            let mut labels = labels;
            labels.insert(key, n.to_string());
            spec.labels = Some(labels);
            set_replicas(&mut spec, r + n);
            match self.update_service(s, spec).await {
                Ok(()) => out.push(ev(
                    EventKind::Surge,
                    host,
                    format!(
                        "service {name}: {n} replicas added on live nodes for the tasks on {host}"
                    ),
                    vec![
                        ("service", name),
                        ("added", n.to_string()),
                        ("replicas", (r + n).to_string()),
                    ],
                )),
                Err(e) => out.push(failed(host, "surge", e)),
            }
        }
        out
    }

    /// Scales back the surge recorded for a node, then drains it.
    pub async fn settle(&self, id: &str, host: &str) -> Vec<Ev> {
        let mut out = Vec::new();
        let key = surge_label(id);
        match self.services().await {
            Ok(services) => {
                for s in &services {
                    let Some(mut spec) = s.spec.clone() else {
                        continue;
                    };
                    let mut labels = spec.labels.clone().unwrap_or_default();
                    let name = name_of(s);
                    if let Some(order) = labels.remove(&order_label(id)) {
                        // the failover is done: its service gets its own update order back
                        spec.update_config
                            .get_or_insert_with(Default::default)
                            .order = match order.as_str() {
                            "stop-first" => Some(Order::STOP_FIRST),
                            "start-first" => Some(Order::START_FIRST),
                            _ => None,
                        };
                        let mut spec = spec.clone();
                        spec.labels = Some(labels.clone());
                        if let Err(e) = self.update_service(s, spec).await {
                            out.push(failed(host, "settle", e));
                        }
                        continue;
                    }
                    let Some(added) = labels.remove(&key) else {
                        continue;
                    };
                    let added: i64 = added.parse().unwrap_or(0);
                    let r = replicas(&spec).unwrap_or(0);
                    let to = (r - added).max(0);
                    set_replicas(&mut spec, to);
                    spec.labels = Some(labels);
                    match self.update_service(s, spec).await {
                        Ok(()) => out.push(ev(
                            EventKind::Settle,
                            host,
                            format!("service {name} scaled back to {to} replicas"),
                            vec![("service", name), ("replicas", to.to_string())],
                        )),
                        Err(e) => out.push(failed(host, "settle", e)),
                    }
                }
            }
            Err(e) => out.push(failed(host, "settle", e)),
        }
        match self.docker.inspect_node(id).await {
            Ok(n)
                if NodeFacts::from_api(&n)
                    .is_some_and(|f| f.labels.contains_key(LABEL_DRAINED)) =>
            {
                let v = n
                    .spec
                    .and_then(|s| s.labels)
                    .and_then(|l| l.get(LABEL_DRAINED).cloned());
                match self.set_node(id, NodeSpecAvailabilityEnum::DRAIN, v).await {
                    Ok(true) => out.push(ev(
                        EventKind::Drain,
                        host,
                        format!("node {host} drained by leakmon"),
                        vec![
                            ("availability", "drain".into()),
                            ("swarm_node_id", id.into()),
                        ],
                    )),
                    Ok(false) => {}
                    Err(e) => out.push(failed(host, "drain", e)),
                }
            }
            Ok(_) => {}
            Err(e) => out.push(failed(host, "drain", e)),
        }
        out
    }

    /// Sets a node leakmon drained active again (never one an operator drained).
    pub async fn reactivate(&self, id: &str, host: &str) -> Vec<Ev> {
        match self.docker.inspect_node(id).await {
            Ok(n)
                if NodeFacts::from_api(&n)
                    .is_some_and(|f| f.labels.contains_key(LABEL_DRAINED)) => {}
            Ok(_) => return Vec::new(),
            Err(e) => return vec![failed(host, "reactivate", e)],
        }
        match self
            .set_node(id, NodeSpecAvailabilityEnum::ACTIVE, None)
            .await
        {
            Ok(false) => Vec::new(),
            Ok(true) => vec![ev(
                EventKind::Reactivate,
                host,
                format!("node {host} is back and set active again"),
                vec![("swarm_node_id", id.into())],
            )],
            Err(e) => vec![failed(host, "reactivate", e)],
        }
    }

    /// Force-updates one service (its tasks are replaced).
    pub async fn force_update(&self, service: &str, node: &str, why: &str) -> Vec<Ev> {
        let s = match self.docker.inspect_service(service, None).await {
            Ok(s) => s,
            Err(e) => return vec![failed(node, "force_update", e)],
        };
        let Some(mut spec) = s.spec.clone() else {
            return Vec::new();
        };
        let t = spec.task_template.get_or_insert_with(Default::default);
        t.force_update = Some(t.force_update.unwrap_or(0) + 1);
        match self.update_service(&s, spec).await {
            Ok(()) => vec![ev(
                EventKind::ForceUpdate,
                node,
                format!("service {service} force-updated: {why}"),
                vec![("service", service.into()), ("reason", why.into())],
            )],
            Err(e) => vec![failed(node, "force_update", e)],
        }
    }

    /// Force-updates replicated services without placement constraints whose running tasks
    /// are unevenly spread over the ready, active nodes.
    pub async fn rebalance(&self, host: &str) -> Vec<Ev> {
        let (services, tasks, nodes) = match tokio::try_join!(
            self.services(),
            self.running_tasks(),
            self.docker.list_nodes(None)
        ) {
            Ok(v) => v,
            Err(e) => return vec![failed(host, "rebalance", e)],
        };
        let eligible: Vec<String> = nodes
            .iter()
            .filter_map(NodeFacts::from_api)
            .filter(|n| n.state == SwarmState::Ready && n.availability == Availability::Active)
            .map(|n| n.id)
            .collect();
        let mut out = Vec::new();
        for s in &services {
            let Some(spec) = &s.spec else { continue };
            if replicas(spec).is_none() || !constraints(spec).is_empty() {
                continue;
            }
            let sid = s.id.as_deref().unwrap_or_default();
            let per: Vec<usize> = eligible
                .iter()
                .map(|n| {
                    tasks
                        .iter()
                        .filter(|t| {
                            t.service_id.as_deref() == Some(sid) && t.node_id.as_ref() == Some(n)
                        })
                        .count()
                })
                .collect();
            if uneven(&per) {
                out.extend(
                    self.force_update(
                        &name_of(s),
                        host,
                        "replicas unevenly spread after a node returned",
                    )
                    .await,
                );
            }
        }
        out
    }

    /// Sets the Swarm's dispatcher heartbeat period if it differs.
    pub async fn ensure_heartbeat(
        &self,
        period: std::time::Duration,
    ) -> Result<bool, bollard::errors::Error> {
        let sw = self.docker.inspect_swarm().await?;
        let mut spec = sw.spec.unwrap_or_default();
        let want = period.as_nanos() as i64;
        let d = spec.dispatcher.get_or_insert_with(Default::default);
        if d.heartbeat_period == Some(want) {
            return Ok(false);
        }
        d.heartbeat_period = Some(want);
        if self.dry_run {
            return Ok(true);
        }
        let version = sw.version.and_then(|v| v.index).unwrap_or(0) as i64;
        self.docker
            .update_swarm(
                spec,
                UpdateSwarmOptions {
                    version,
                    ..Default::default()
                },
            )
            .await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(pick_standby(&all, "x", &load).unwrap().id, "b");
        assert_eq!(
            pick_standby(&all, "b", &load).unwrap().id,
            "a",
            "never the dead one"
        );
        all[0].state = SwarmState::Down;
        assert!(pick_standby(&all, "b", &load).is_none());
        assert_eq!(
            pick_standby(&all[..2], "x", &HashMap::new()).unwrap().id,
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
}
