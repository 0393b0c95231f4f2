//! What the gateway knows of every node: liveness, identity and the latest health summary.
//! Serves `/api/v1/nodes` and the tags of written points. Pure; times are passed in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use leakmon_protocol::{ContainersReport, EngineState, Health, HostReport, Status};
use serde::Serialize;

use crate::liveness::{AgentFact, Liveness, Transition};
use crate::schema::NodeTags;

/// An unhealthy container of a Swarm task, as an agent reported it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnhealthyTask {
    pub container_id: String,
    pub service: String,
    pub node: String,
}

/// The health summary of a node's last host report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HostSummary {
    pub ts: i64,
    /// 100 - idle.
    pub cpu_busy_percent: Option<f64>,
    pub load1: f64,
    pub mem_used_percent: f64,
    /// The fullest filesystem.
    pub disk_used_percent_max: Option<f64>,
    pub temp_max: Option<f64>,
    pub uptime_s: u64,
    pub buffer_dropped_total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ContainersSummary {
    pub ts: i64,
    pub engine_ok: bool,
    pub total: usize,
    pub running: usize,
    pub unhealthy: Vec<String>,
    pub list: Vec<ContainerLine>,
}

/// One container, as the status table shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerLine {
    #[serde(skip)]
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub state: String,
    pub health: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_usage: Option<u64>,
}

/// One node as `/api/v1/nodes` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    pub node: String,
    pub state: &'static str,
    /// Unix ms of the last message.
    pub last_seen: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm_node_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm_role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beat_interval_ms: Option<u64>,
    /// The Docker engine's name and version (Telegraf's `engine_host`, `server_version`).
    #[serde(skip)]
    pub engine: Option<(String, String)>,
    /// What Swarm says of the node (`ready/active`, `down/drain`, ...), from the gateway's
    /// engine when it is a manager.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm: Option<String>,
    /// The agent name of the Swarm node whose id this agent claims, when that is not its own
    /// name (it speaks for no Swarm node).
    #[serde(skip)]
    pub unbound_claim: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<HostSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<ContainersSummary>,
}

/// The most nodes a gateway tracks: messages from further new names are dropped and counted
/// (`leakmon_gateway_unknown_nodes_dropped_total`), so a flood of made-up names cannot grow
/// memory, series and hooks without bound. Twice the largest fleet measured (10,000 agents).
pub const MAX_NODES: usize = 20_000;

#[derive(Debug)]
pub struct Nodes {
    pub liveness: Liveness,
    views: BTreeMap<String, NodeView>,
}

impl Nodes {
    pub fn new(liveness: Liveness) -> Self {
        Nodes {
            liveness,
            views: BTreeMap::new(),
        }
    }

    fn view(&mut self, node: &str) -> &mut NodeView {
        self.views
            .entry(node.to_owned())
            .or_insert_with(|| NodeView {
                node: node.to_owned(),
                state: "unknown",
                last_seen: 0,
                swarm_node_id: None,
                swarm_role: None,
                hostname: None,
                agent_version: None,
                interval_ms: None,
                beat_interval_ms: None,
                engine: None,
                swarm: None,
                unbound_claim: None,
                host: None,
                containers: None,
            })
    }

    pub fn tags(&self, node: &str) -> NodeTags {
        NodeTags {
            host: node.to_owned(),
            swarm_node_id: self.views.get(node).and_then(|v| v.swarm_node_id.clone()),
            engine: self.views.get(node).and_then(|v| v.engine.clone()),
        }
    }

    pub fn on_status(
        &mut self,
        node: &str,
        s: &Status,
        now: Instant,
        now_ms: i64,
    ) -> Option<Transition> {
        let v = self.view(node);
        v.last_seen = now_ms;
        if let Some(id) = &s.identity {
            v.swarm_node_id = id.swarm_node_id.clone();
            v.swarm_role = id.swarm_role.map(|r| {
                match r {
                    leakmon_protocol::SwarmRole::Manager => "manager",
                    leakmon_protocol::SwarmRole::Worker => "worker",
                }
                .to_owned()
            });
            v.hostname = Some(id.hostname.clone());
            v.agent_version = Some(id.agent_version.clone());
            v.interval_ms = Some(id.interval_ms);
            v.beat_interval_ms = id.beat_interval_ms.filter(|ms| *ms > 0);
            v.engine = id.engine_name.clone().zip(id.engine_version.clone());
        }
        let t = self.liveness.on_status(node, s, now);
        self.sync_state(node);
        t
    }

    pub fn on_host(
        &mut self,
        node: &str,
        r: &HostReport,
        now: Instant,
        now_ms: i64,
    ) -> Option<Transition> {
        let v = self.view(node);
        v.last_seen = now_ms;
        v.host = Some(HostSummary {
            ts: r.header.ts,
            cpu_busy_percent: r.cpu.as_ref().map(|c| (100.0 - c.idle).max(0.0)),
            load1: r.load.load1,
            mem_used_percent: r.mem.used_percent,
            disk_used_percent_max: r.disks.iter().map(|d| d.used_percent).reduce(f64::max),
            temp_max: r.temps.iter().map(|t| t.temp).reduce(f64::max),
            uptime_s: r.uptime_s,
            buffer_dropped_total: r.buffer.dropped_total,
        });
        self.on_data(node, now, now_ms)
    }

    pub fn on_containers(
        &mut self,
        node: &str,
        r: &ContainersReport,
        now: Instant,
        now_ms: i64,
    ) -> Option<Transition> {
        let v = self.view(node);
        v.containers = Some(ContainersSummary {
            ts: r.header.ts,
            engine_ok: r.engine == EngineState::Ok,
            total: r.containers.len(),
            running: r.containers.iter().filter(|c| c.state == "running").count(),
            unhealthy: r
                .containers
                .iter()
                .filter(|c| c.health == Health::Unhealthy)
                .map(|c| c.name.clone())
                .collect(),
            list: r
                .containers
                .iter()
                .map(|c| ContainerLine {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    service: c.swarm_service.clone(),
                    state: c.state.clone(),
                    health: c.health.as_str(),
                    cpu_percent: c.cpu_percent,
                    mem_usage: c.mem_usage,
                })
                .collect(),
        });
        self.on_data(node, now, now_ms)
    }

    pub fn on_data(&mut self, node: &str, now: Instant, now_ms: i64) -> Option<Transition> {
        self.view(node).last_seen = now_ms;
        let t = self.liveness.on_data(node, now);
        self.sync_state(node);
        t
    }

    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let t = self.liveness.tick(now);
        for tr in &t {
            self.sync_state(&tr.node);
        }
        t
    }

    /// Whether `node`'s agent is online (its birth or its data came last).
    pub fn online(&self, node: &str) -> bool {
        self.liveness
            .nodes()
            .get(node)
            .is_some_and(|n| n.state == crate::liveness::State::Online)
    }

    /// Whether `node` is known (has a view).
    pub fn knows(&self, node: &str) -> bool {
        self.views.contains_key(node)
    }

    /// How many nodes are known.
    pub fn count(&self) -> usize {
        self.views.len()
    }

    /// Forgets `node` entirely (its liveness and its view); whether it was known.
    pub fn forget(&mut self, node: &str) -> bool {
        let l = self.liveness.forget(node);
        self.views.remove(node).is_some() || l
    }

    fn sync_state(&mut self, node: &str) {
        let state = self.liveness.nodes().get(node).map(|n| n.state.as_str());
        if let (Some(s), Some(v)) = (state, self.views.get_mut(node)) {
            v.state = s;
        }
    }

    /// Swarm's view of the nodes: (swarm node id, its agent's name, "status/availability"),
    /// bound to agents by [`crate::liveness::speaks_for`]. Returns the agents that claim the
    /// id of a Swarm node of another name, with that node's agent name, newly so since the
    /// last call (for the log: such an agent is shown, never counted).
    pub fn set_swarm(&mut self, nodes: &[(String, String, String)]) -> Vec<(String, String)> {
        let mut newly = Vec::new();
        for v in self.views.values_mut() {
            v.swarm = nodes
                .iter()
                .find(|(id, agent, _)| {
                    crate::liveness::speaks_for(&v.node, v.swarm_node_id.as_deref(), id, agent)
                })
                .map(|(_, _, s)| s.clone());
            let claimed = nodes
                .iter()
                .find(|(id, agent, _)| {
                    v.swarm.is_none()
                        && v.swarm_node_id.as_deref() == Some(id.as_str())
                        && agent != &v.node
                })
                .map(|(_, agent, _)| agent.clone());
            if claimed.is_some() && v.unbound_claim != claimed {
                newly.push((v.node.clone(), claimed.clone().unwrap_or_default()));
            }
            if let Some(c) = &claimed {
                v.swarm = Some(format!("unbound: claims the id of {c}"));
            }
            v.unbound_claim = claimed;
        }
        newly
    }

    /// Every agent's liveness, for the control loop.
    pub fn agent_facts(&self) -> Vec<AgentFact> {
        self.liveness
            .nodes()
            .iter()
            .map(|(name, n)| {
                let v = self.views.get(name);
                AgentFact {
                    name: name.clone(),
                    swarm_node_id: v.and_then(|v| v.swarm_node_id.clone()),
                    state: n.state.into(),
                    last_seen: n.last_seen,
                    // held to what an agent's config allows (100 ms to an hour)
                    interval: Duration::from_millis(
                        v.and_then(|v| v.interval_ms)
                            .unwrap_or(1000)
                            .clamp(100, 3_600_000),
                    ),
                    beat_interval: v
                        .and_then(|v| v.beat_interval_ms)
                        .map(Duration::from_millis),
                }
            })
            .collect()
    }

    /// Unhealthy containers of Swarm tasks on nodes whose agent is online.
    pub fn unhealthy_tasks(&self) -> Vec<UnhealthyTask> {
        self.views
            .values()
            .filter(|v| v.state == "online")
            .filter_map(|v| Some((v, v.containers.as_ref()?)))
            .flat_map(|(v, c)| {
                c.list
                    .iter()
                    .filter(|l| l.health == Health::Unhealthy.as_str())
                    .filter_map(move |l| {
                        Some(UnhealthyTask {
                            container_id: l.id.clone(),
                            service: l.service.clone()?,
                            node: v.node.clone(),
                        })
                    })
            })
            .collect()
    }

    pub fn list(&self) -> Vec<NodeView> {
        self.views.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakmon_protocol::{Identity, NodeState, Status};

    fn birth(node: &str, claim: &str) -> Status {
        Status {
            v: 1,
            node: node.into(),
            state: NodeState::Online,
            seq: 1,
            reason: None,
            ts: 0,
            identity: Some(Identity {
                hostname: node.into(),
                swarm_node_id: Some(claim.into()),
                ..Identity::default()
            }),
        }
    }

    #[test]
    fn an_agent_claiming_another_nodes_id_is_shown_unbound_and_told_once() {
        let mut n = Nodes::new(Liveness::new(Duration::from_secs(15)));
        let now = Instant::now();
        n.on_status("node3", &birth("node3", "id3"), now, 0);
        n.on_status("intruder", &birth("intruder", "id3"), now, 0);
        let swarm = [(
            "id3".to_owned(),
            "node3".to_owned(),
            "ready/active".to_owned(),
        )];
        assert_eq!(
            n.set_swarm(&swarm),
            [("intruder".to_owned(), "node3".to_owned())]
        );
        assert!(n.set_swarm(&swarm).is_empty(), "told once");
        let views = n.list();
        let by = |name: &str| views.iter().find(|v| v.node == name).cloned();
        assert_eq!(
            by("node3").and_then(|v| v.swarm).as_deref(),
            Some("ready/active")
        );
        assert_eq!(
            by("intruder").and_then(|v| v.swarm).as_deref(),
            Some("unbound: claims the id of node3")
        );
        // forgotten: gone from the view and from liveness
        assert!(n.forget("intruder"));
        assert!(!n.knows("intruder"));
        assert_eq!(n.count(), 1);
    }
}
