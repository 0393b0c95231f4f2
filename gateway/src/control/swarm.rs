//! The Swarm shell: reads the Swarm's state and carries out the decisions of
//! [`super::decide`] through the local manager's API (bollard). The only module that makes
//! write calls to the Swarm API. What to change, and what to report about it, is decided by
//! [`super::plan`] (pure and unit-tested); this module reads, asks the plan, makes its changes
//! in order (or, with `reschedule.dry_run`, only pretends to) and turns the API's errors into
//! `action_failed` events. The calls themselves are tested end to end on a real Swarm
//! (tests/control.rs).

use std::collections::HashMap;

use bollard::models::{LocalNodeState, Node, Service, Task};
use bollard::query_parameters::{
    ListServicesOptions, ListTasksOptions, UpdateNodeOptions, UpdateServiceOptions,
    UpdateSwarmOptions,
};
use bollard::Docker;
use leakmon_protocol::EventKind;

use super::confirm::Started;
use super::plan::{self, ev, Apply, Change, Evacuation, NodeStep, SetNode, Step, TaskFacts};
// The control loop (mod.rs) and leader.rs's tests find these here.
pub use super::plan::{Ev, NodeFacts};

/// What the leader poll learns from the local engine.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineView {
    Unreachable(String),
    /// Not part of a Swarm (`inactive`).
    NoSwarm,
    /// In a Swarm but not a working member yet: `pending` (joining, or rejoining after an
    /// engine restart), `locked` (autolock: waits for `docker swarm unlock`) or `error`.
    NotReady(String),
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
        match sw.local_node_state {
            Some(LocalNodeState::ACTIVE) => {}
            None | Some(LocalNodeState::EMPTY) | Some(LocalNodeState::INACTIVE) => {
                return EngineView::NoSwarm
            }
            Some(other) => {
                let why = sw.error.filter(|e| !e.is_empty());
                return EngineView::NotReady(match why {
                    Some(e) => format!("{other}: {e}"),
                    None => other.to_string(),
                });
            }
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

    /// Writes one change, unless this is a dry run.
    async fn write(&self, change: &Change) -> Result<(), bollard::errors::Error> {
        if self.dry_run {
            return Ok(());
        }
        match change {
            Change::Node { id, version, spec } => {
                self.docker
                    .update_node(id, spec.clone(), UpdateNodeOptions { version: *version })
                    .await
            }
            Change::Service { id, version, spec } => self
                .docker
                .update_service(
                    id,
                    (**spec).clone(),
                    UpdateServiceOptions {
                        version: *version,
                        ..Default::default()
                    },
                    None,
                )
                .await
                .map(|_| ()),
        }
    }

    /// Makes a planned change: its event once made, `action_failed` if the API refuses it.
    /// True when made.
    async fn apply(&self, host: &str, a: &Apply, out: &mut Vec<Ev>) -> bool {
        match self.write(&a.change).await {
            Ok(()) => {
                out.extend(a.done.clone());
                true
            }
            Err(e) => {
                out.push(failed(host, a.action, e));
                false
            }
        }
    }

    /// Sets a node as `set` says, on the node as `read` just found it, or else as it is now.
    /// False when it already was.
    async fn set_node(
        &self,
        id: &str,
        set: &SetNode,
        read: Option<Node>,
    ) -> Result<bool, bollard::errors::Error> {
        let n = match read {
            Some(n) => n,
            None => self.docker.inspect_node(id).await?,
        };
        let Some(change) = set.change(id, &n) else {
            return Ok(false);
        };
        self.write(&change).await?;
        Ok(true)
    }

    /// Carries out a node step: its event if the node changed, `action_failed` if the API
    /// refused. False when it failed.
    async fn node_step(
        &self,
        id: &str,
        host: &str,
        step: NodeStep,
        read: Option<Node>,
        out: &mut Vec<Ev>,
    ) -> bool {
        match self.set_node(id, &step.set, read).await {
            Ok(true) => out.push(step.done),
            Ok(false) => {}
            Err(e) => {
                out.push(failed(host, step.action, e));
                return false;
            }
        }
        true
    }

    /// Updates node `id` with the change `plan` makes of it as it is now (a hand-over label:
    /// [`super::deputy::Op::change`]): `Err` when the plan refuses (its condition no longer
    /// holds) or the Swarm does (another gateway wrote first: the node's version moved).
    pub async fn update_node_with(
        &self,
        id: &str,
        plan: impl FnOnce(&Node) -> Result<Option<Change>, String>,
    ) -> Result<(), String> {
        let node = self
            .docker
            .inspect_node(id)
            .await
            .map_err(|e| e.to_string())?;
        match plan(&node)? {
            None => Ok(()),
            Some(change) => self.write(&change).await.map_err(|e| e.to_string()),
        }
    }

    async fn running_tasks(&self) -> Result<Vec<Task>, bollard::errors::Error> {
        let filters = HashMap::from([("desired-state".to_owned(), vec!["running".to_owned()])]);
        self.docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters),
            }))
            .await
    }

    /// Every task on node `id`, whatever its desired state.
    async fn tasks_on(&self, id: &str) -> Result<Vec<Task>, bollard::errors::Error> {
        let filters = HashMap::from([("node".to_owned(), vec![id.to_owned()])]);
        self.docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters),
            }))
            .await
    }

    async fn services(&self) -> Result<Vec<Service>, bollard::errors::Error> {
        self.docker.list_services(None::<ListServicesOptions>).await
    }

    /// Every service with its tasks counted, for `docker_swarm` points.
    pub async fn tally(&self) -> Result<Vec<plan::ServiceTally>, bollard::errors::Error> {
        let (services, tasks) = tokio::try_join!(
            self.services(),
            self.docker.list_tasks(None::<ListTasksOptions>)
        )?;
        Ok(plan::tally(&services, &tasks))
    }

    /// Services, running tasks and nodes, read together.
    async fn read_all(
        &self,
    ) -> Result<(Vec<Service>, Vec<TaskFacts>, Vec<NodeFacts>), bollard::errors::Error> {
        let (services, tasks, nodes) = tokio::try_join!(
            self.services(),
            self.running_tasks(),
            self.docker.list_nodes(None)
        )?;
        Ok((
            services,
            tasks.iter().map(TaskFacts::from_api).collect(),
            nodes.iter().filter_map(NodeFacts::from_api).collect(),
        ))
    }

    /// Takes a dead node out: pause (labelled), fail over its pinned services to the least
    /// loaded of the fit `standbys`, and either surge its replicated services (settled later)
    /// or drain it at once. Returns the events and what to watch to its effect.
    pub async fn evacuate(
        &self,
        id: &str,
        host: &str,
        surge: bool,
        standbys: &[String],
        now_ms: i64,
    ) -> (Vec<Ev>, Vec<Started>) {
        let mut out = Vec::new();
        let mut started = Vec::new();
        if !self
            .node_step(
                id,
                host,
                plan::evacuate_node(id, host, surge, now_ms),
                None,
                &mut out,
            )
            .await
        {
            return (out, started);
        }
        // Read once the node is paused or drained, so the plan sees the Swarm as that left it.
        let (services, tasks, nodes) = match self.read_all().await {
            Ok(v) => v,
            Err(e) => {
                out.push(failed(host, "evacuate", e));
                return (out, started);
            }
        };
        // A node Swarm already let go of (down: a frozen node) has no task meant to run any
        // more: what ran there is its tasks of any desired state last seen running.
        let let_go = surge
            && nodes
                .iter()
                .any(|n| n.id == id && n.state == super::decide::SwarmState::Down);
        let on_dead = if let_go {
            match self.tasks_on(id).await {
                Ok(t) => Some(t.iter().map(TaskFacts::from_api).collect::<Vec<_>>()),
                Err(e) => {
                    out.push(failed(host, "evacuate", e));
                    return (out, started);
                }
            }
        } else {
            None
        };
        let mut plan = match Evacuation::new(id, host, surge, nodes, &tasks) {
            Ok(p) => match &on_dead {
                Some(t) => p.let_go(t).only(standbys),
                None => p.only(standbys),
            },
            Err(why) => {
                out.push(failed(host, "evacuate", why));
                return (out, started);
            }
        };
        for s in &services {
            let Some(step) = plan.service(s) else {
                continue;
            };
            if let Some(a) = self.step(host, step, &mut out, &mut started).await {
                plan.applied(&a);
            }
        }
        (out, started)
    }

    /// Carries out one service's step: its events, and what to watch (not in a dry run:
    /// nothing was done). The change made, if one was.
    async fn step(
        &self,
        host: &str,
        step: Step,
        out: &mut Vec<Ev>,
        started: &mut Vec<Started>,
    ) -> Option<Apply> {
        match step {
            Step::Report(e) => out.push(e),
            Step::Stranded(e, s) => {
                out.push(e);
                if !self.dry_run {
                    started.push(s);
                }
            }
            Step::Apply(a) => {
                if self.apply(host, &a, out).await {
                    if !self.dry_run {
                        started.extend(a.started.clone());
                    }
                    return Some(a);
                }
            }
        }
        None
    }

    /// Moves service `service_id`, pinned to node `from` now, to the least loaded of the fit
    /// standbys `to`, on behalf of dead node `dead` (`dead_host`).
    pub async fn retarget(
        &self,
        service_id: &str,
        from: &str,
        (dead, dead_host): (&str, &str),
        to: &[String],
    ) -> (Vec<Ev>, Vec<Started>) {
        let mut out = Vec::new();
        let mut started = Vec::new();
        let (services, tasks, nodes) = match self.read_all().await {
            Ok(v) => v,
            Err(e) => {
                out.push(failed(dead_host, "failover", e));
                return (out, started);
            }
        };
        let mut tasks_on: HashMap<String, usize> = HashMap::new();
        for t in &tasks {
            if let Some(n) = &t.node_id {
                *tasks_on.entry(n.clone()).or_default() += 1;
            }
        }
        let step = match services
            .iter()
            .find(|s| s.id.as_deref() == Some(service_id))
        {
            Some(s) => plan::retarget(s, from, (dead, dead_host), &nodes, &tasks_on, to),
            None => Step::Stranded(
                plan::ev(
                    EventKind::Confirmed,
                    dead_host,
                    format!("service {service_id} no longer exists: nothing left to fail over"),
                    vec![
                        ("service", service_id.to_owned()),
                        ("action", "failover".into()),
                    ],
                ),
                Started::Gone {
                    service_id: service_id.to_owned(),
                },
            ),
        };
        self.step(dead_host, step, &mut out, &mut started).await;
        (out, started)
    }

    /// For each of `services`, the nodes running one of its tasks (desired and actual state
    /// running), one entry per task; `None` for a service Swarm no longer lists.
    pub async fn watched_tasks(
        &self,
        services: &[String],
    ) -> Result<Vec<(String, Option<Vec<String>>)>, bollard::errors::Error> {
        let (all, tasks) = tokio::try_join!(self.services(), self.running_tasks())?;
        let tasks: Vec<TaskFacts> = tasks.iter().map(TaskFacts::from_api).collect();
        Ok(services
            .iter()
            .map(|id| {
                let exists = all.iter().any(|s| s.id.as_deref() == Some(id.as_str()));
                let on = exists.then(|| {
                    tasks
                        .iter()
                        .filter(|t| t.running && t.service_id.as_deref() == Some(id.as_str()))
                        .filter_map(|t| t.node_id.clone())
                        .collect()
                });
                (id.clone(), on)
            })
            .collect())
    }

    /// Scales back the surge recorded for a node, then drains it.
    pub async fn settle(&self, id: &str, host: &str) -> Vec<Ev> {
        let mut out = Vec::new();
        match self.services().await {
            Ok(services) => {
                for a in plan::settle_services(id, host, &services) {
                    self.apply(host, &a, &mut out).await;
                }
            }
            Err(e) => out.push(failed(host, "settle", e)),
        }
        // The node as read decides whether to drain it and is what the drain changes.
        match self.docker.inspect_node(id).await {
            Ok(n) => {
                if let Some(step) = plan::settle_node(id, host, &n) {
                    self.node_step(id, host, step, Some(n), &mut out).await;
                }
            }
            Err(e) => out.push(failed(host, "drain", e)),
        }
        out
    }

    /// Sets a node leakmon drained active again (never one an operator drained).
    pub async fn reactivate(&self, id: &str, host: &str) -> Vec<Ev> {
        let n = match self.docker.inspect_node(id).await {
            Ok(n) => n,
            Err(e) => return vec![failed(host, "reactivate", e)],
        };
        let Some(step) = plan::reactivate_node(id, host, &n) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        self.node_step(id, host, step, Some(n), &mut out).await;
        out
    }

    /// Force-updates one service (its tasks are replaced).
    pub async fn force_update(&self, service: &str, node: &str, why: &str) -> Vec<Ev> {
        let s = match self.docker.inspect_service(service, None).await {
            Ok(s) => s,
            Err(e) => return vec![failed(node, "force_update", e)],
        };
        self.force(&s, service, node, why).await
    }

    async fn force(&self, s: &Service, service: &str, node: &str, why: &str) -> Vec<Ev> {
        let mut out = Vec::new();
        if let Some(a) = plan::force_update(service, node, why, s) {
            self.apply(node, &a, &mut out).await;
        }
        out
    }

    /// Force-updates the service of an unhealthy container an agent reported, once Swarm
    /// confirms it ([`plan::confirm_task`]): the container is a task of that service, on
    /// `node_id`, the reporting agent's Swarm node. Otherwise a `refused` event, nothing done.
    pub async fn force_update_task(
        &self,
        service: &str,
        node: &str,
        node_id: &str,
        container_id: &str,
    ) -> Vec<Ev> {
        let s = match self.docker.inspect_service(service, None).await {
            Ok(s) => s,
            Err(e) => return vec![failed(node, "force_update", e)],
        };
        let Some(service_id) = s.id.clone() else {
            return vec![plan::refused(
                service,
                node,
                container_id,
                &plan::Unconfirmed::NoSuchTask,
            )];
        };
        let filters = HashMap::from([
            ("service".to_owned(), vec![service_id]),
            ("desired-state".to_owned(), vec!["running".to_owned()]),
        ]);
        let tasks = match self
            .docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters),
            }))
            .await
        {
            Ok(t) => t,
            Err(e) => return vec![failed(node, "force_update", e)],
        };
        if let Err(why) = plan::confirm_task(&s, &tasks, container_id, node_id) {
            return vec![plan::refused(service, node, container_id, &why)];
        }
        let short = container_id.get(..12).unwrap_or(container_id);
        self.force(
            &s,
            service,
            node,
            &format!("container {short} on {node} unhealthy"),
        )
        .await
    }

    /// Force-updates replicated services without placement constraints whose running tasks
    /// are unevenly spread over the ready, active nodes.
    pub async fn rebalance(&self, host: &str) -> Vec<Ev> {
        let (services, tasks, nodes) = match self.read_all().await {
            Ok(v) => v,
            Err(e) => return vec![failed(host, "rebalance", e)],
        };
        let mut out = Vec::new();
        for name in plan::uneven_services(&services, &tasks, &nodes) {
            out.extend(
                self.force_update(
                    &name,
                    host,
                    "replicas unevenly spread after a node returned",
                )
                .await,
            );
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
