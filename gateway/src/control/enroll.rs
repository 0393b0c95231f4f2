//! Enrolment, the gateway's shell: requests ingest forwards (on the active gateway only) are
//! checked ([`crate::enroll::check`]) against the Swarm's trust root; Swarm says which agent
//! name the proven node id has (its `leakmon.node` label, else its hostname); a request made
//! under that name gets its node key, sealed to the request ([`leakmon_protocol::enroll`]).
//! At most one answer per node every [`EVERY`], [`PER_SECOND`] checks a second in all, the
//! trust root asked again after [`ROOT_TTL`]; whatever is refused is logged and counted
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
/// Requests checked per second at most, whatever their names (each costs a signature check
/// and a question to Swarm): a flood of made-up names waits, it does not load the engine.
pub const PER_SECOND: u32 = 20;
/// How long the Swarm's trust root is kept before it is asked again (a CA rotation).
pub const ROOT_TTL: Duration = Duration::from_secs(60);
/// Requests waiting for an answer, at most (past it they are dropped: the agents ask again).
pub const QUEUE: usize = 64;

/// Which requests are checked, and when (pure, time passed in): one per node every
/// [`EVERY`], at most [`PER_SECOND`] a second in all (the rest wait their turn).
#[derive(Debug, Default)]
pub struct Gate {
    last: HashMap<String, Instant>,
    /// The current second's start and how many it has taken.
    second: Option<(Instant, u32)>,
}

impl Gate {
    /// `None`: `node` was answered less than [`EVERY`] ago (not again); else how long to wait
    /// before checking it.
    pub fn admit(&mut self, node: &str, now: Instant) -> Option<Duration> {
        self.last
            .retain(|_, t| now.saturating_duration_since(*t) < EVERY);
        if self.last.contains_key(node) {
            return None;
        }
        let (start, taken) = match self.second {
            Some((start, taken))
                if now.saturating_duration_since(start) < Duration::from_secs(1) =>
            {
                (start, taken)
            }
            _ => (now, 0),
        };
        let (start, taken) = if taken >= PER_SECOND {
            (start + Duration::from_secs(1), 0)
        } else {
            (start, taken)
        };
        self.second = Some((start, taken + 1));
        self.last.insert(node.to_owned(), now);
        Some(start.saturating_duration_since(now))
    }
}

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
        let mut gate = Gate::default();
        let mut root: Option<(String, Instant)> = None;
        loop {
            let r = tokio::select! {
                r = rx.recv() => match r { Some(r) => r, None => return },
                _ = shutdown.changed() => return,
            };
            let Some(wait) = gate.admit(&r.node, Instant::now()) else {
                tracing::debug!(node = %r.node, "enrolment request again within 5 s: not answered");
                continue;
            };
            // (the queue behind is bounded: ingest drops what does not fit)
            tokio::time::sleep(wait).await;
            let now = Instant::now();
            let fresh = root
                .as_ref()
                .filter(|(_, at)| now.duration_since(*at) < ROOT_TTL)
                .map(|(pem, _)| pem.clone());
            let trust = match fresh {
                Some(pem) => Ok(pem),
                None => self.trust_root().await.inspect(|pem| {
                    root = Some((pem.clone(), now));
                }),
            };
            let answer = match trust {
                Ok(pem) => self.answer(&r, &pem).await,
                Err(e) => Err(e),
            };
            match answer {
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

    /// The Swarm's trust root (PEM), as this manager's engine gives it.
    async fn trust_root(&self) -> Result<String, String> {
        let swarm = self
            .docker
            .inspect_swarm()
            .await
            .map_err(|e| format!("Swarm's trust root unknown: {e}"))?;
        swarm
            .tls_info
            .and_then(|t| t.trust_root)
            .ok_or_else(|| "Swarm gave no trust root".to_owned())
    }

    async fn answer(&self, r: &EnrollRequest, root: &str) -> Result<String, String> {
        let claim =
            crate::enroll::check(r, root, leakmon_common::now_ms()).map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_answer_per_node_every_5_s_and_20_checks_a_second_in_all() {
        let t0 = Instant::now();
        let mut g = Gate::default();
        assert_eq!(g.admit("a", t0), Some(Duration::ZERO));
        assert_eq!(g.admit("a", t0 + Duration::from_secs(4)), None);
        assert_eq!(
            g.admit("a", t0 + Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
        // a flood of names in one second: 20 now, the rest wait for the next second
        let mut g = Gate::default();
        let waits: Vec<Duration> = (0..45)
            .map(|i| g.admit(&format!("n{i}"), t0).expect("a new name"))
            .collect();
        assert!(waits[..20].iter().all(|w| w.is_zero()));
        assert!(waits[20..40].iter().all(|w| *w == Duration::from_secs(1)));
        assert!(waits[40..].iter().all(|w| *w == Duration::from_secs(2)));
    }
}
