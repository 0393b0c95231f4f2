//! Enrolment, the gateway's shell: requests ingest forwards (on the active gateway only) are
//! checked ([`crate::enroll::check`]) against the Swarm's trust root; Swarm says which agent
//! name the proven node id has (its `leakmon.node` label, else its hostname); a request made
//! under that name gets its node key, sealed to the request ([`leakmon_protocol::enroll`]).
//! At most one answer per node every [`EVERY`]; whatever is refused is logged and counted
//! (`leakmon_gateway_rejected_total{reason="enroll_refused"}`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use leakmon_protocol::auth::FleetKey;
use leakmon_protocol::codec::encode;
use leakmon_protocol::enroll::{reply_for, EnrollRequest};
use leakmon_protocol::topics::Topics;
use tokio::sync::{mpsc, watch};

use super::plan::NodeFacts;
use crate::bus::{Bus, Message};
use crate::metrics::Metrics;

/// How often one node's requests are answered at most.
pub const EVERY: Duration = Duration::from_secs(5);
/// Requests waiting for an answer, at most (past it they are dropped: the agents ask again).
pub const QUEUE: usize = 64;

pub struct Enroller {
    pub docker: Docker,
    pub fleet: FleetKey,
    pub bus: Bus,
    pub topics: Topics,
    pub metrics: Arc<Metrics>,
}

impl Enroller {
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<EnrollRequest>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut last: HashMap<String, Instant> = HashMap::new();
        loop {
            let r = tokio::select! {
                r = rx.recv() => match r { Some(r) => r, None => return },
                _ = shutdown.changed() => return,
            };
            let now = Instant::now();
            last.retain(|_, t| now.duration_since(*t) < EVERY);
            if last.contains_key(&r.node) {
                tracing::debug!(node = %r.node, "enrolment request again within 5 s: not answered");
                continue;
            }
            last.insert(r.node.clone(), now);
            match self.answer(&r).await {
                Ok(role) => {
                    tracing::info!(node = %r.node, %role, "node enrolled: its key sent, sealed to its request")
                }
                Err(why) => {
                    self.metrics.rejected(&r.node, "enroll_refused");
                    tracing::warn!(node = %r.node, %why, "enrolment refused");
                }
            }
        }
    }

    async fn answer(&self, r: &EnrollRequest) -> Result<String, String> {
        let swarm = self
            .docker
            .inspect_swarm()
            .await
            .map_err(|e| format!("Swarm's trust root unknown: {e}"))?;
        let root = swarm
            .tls_info
            .and_then(|t| t.trust_root)
            .ok_or("Swarm gave no trust root")?;
        let claim =
            crate::enroll::check(r, &root, leakmon_common::now_ms()).map_err(|e| e.to_string())?;
        let node = self
            .docker
            .inspect_node(&claim.node_id)
            .await
            .map_err(|e| format!("Swarm node {}: {e}", claim.node_id))?;
        let facts = NodeFacts::from_api(&node).ok_or("Swarm node without an id")?;
        if facts.agent_name() != r.node {
            return Err(format!(
                "Swarm node {} is agent {:?}, not {:?} (its leakmon.node label, else its hostname)",
                claim.node_id,
                facts.agent_name(),
                r.node
            ));
        }
        let reply = reply_for(r, &self.fleet.node_key(&r.node)).map_err(|e| e.to_string())?;
        let m = Message {
            topic: self.topics.enroll_reply(&r.node),
            payload: encode(&reply),
            retain: false,
        };
        if !self.bus.publish(m) {
            return Err("MQTT outbox full".into());
        }
        Ok(claim.role)
    }
}
