//! The failure detector's own connection to the broker: beats and probe reports (QoS 0) on a
//! clean session of its own, so they never wait behind the agents' data.
//!
//! On the main connection ([`crate::bus`]) the active gateway acknowledges data only once it is
//! durable ([`crate::acks`]): when the database falls behind, the broker holds that
//! connection's window closed and queues everything for it, beats too, and drops what exceeds
//! its queue (measured: at 10,000 simulated agents with reports, not one beat a second reached
//! the gateway). A beat that waits is worse than one lost: the detector times arrivals. Here
//! nothing is ever held back: a publish is handed to the detector as it is read.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use leakmon_common::mqtt::{Connector, Reconnect};
use leakmon_protocol::{Channel, Topics};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::sync::watch;

use super::decode::{decode_sealed, Incoming};
use crate::clocks::Clocks;
use crate::detector::Detector;
use crate::keyring::Keyring;
use crate::metrics::Metrics;

/// Everything the beat connection needs.
pub struct Beats {
    pub connector: Connector,
    /// Its client id (the gateway's own with `-liveness`; empty: the broker names it).
    pub client_id: String,
    pub topics: Topics,
    pub detector: Arc<Mutex<Detector>>,
    /// Each agent's clock, learnt from its beats ([`crate::clocks`]); ingest reads it.
    pub clocks: Arc<Mutex<Clocks>>,
    /// Set once this connection has been up for [`CLOCK_WARM`] after the start: every agent
    /// beating each second has sent its clock by then (ingest waits for it).
    pub warm: watch::Sender<bool>,
    pub metrics: Arc<Metrics>,
    /// The nodes' keys (`None`: `auth.insecure`): only sealed beats and reports count.
    pub keys: Option<Keyring>,
}

/// How long the first connection must have been up before every agent's clock is known: an
/// agent sends its clock readings with every 4th beat (once a second at the default beat
/// interval, 250 ms).
pub const CLOCK_WARM: std::time::Duration = std::time::Duration::from_millis(2_500);

/// The beat connection's client id for a gateway whose own is `own`.
pub fn client_id(own: &str) -> String {
    if own.is_empty() {
        String::new()
    } else {
        format!("{own}-liveness")
    }
}

impl Beats {
    /// The topic filters: every node's beats and probe reports.
    pub fn subscriptions(&self) -> [String; 2] {
        [
            self.topics.all_nodes(Channel::Beat),
            self.topics.all_nodes(Channel::Probe),
        ]
    }

    /// Hands one publish to the detector; malformed ones are counted and logged as ingest's.
    fn on_publish(&mut self, topic: &str, payload: &[u8], now: Instant) {
        let now_ms = leakmon_common::now_ms();
        let (node, msg) =
            match decode_sealed(&self.topics, self.keys.as_mut(), topic, payload, now_ms) {
                Ok(v) => v,
                Err(r) => {
                    let n = self
                        .metrics
                        .rejected(r.node.as_deref().unwrap_or("?"), r.reason);
                    super::log_reject(n, &r);
                    return;
                }
            };
        if let Incoming::Beat(b) = &msg {
            if let Ok(mut c) = self.clocks.lock() {
                c.on_beat(&node, b.run, b.ts, b.mono, now_ms);
            }
        }
        let Ok(mut d) = self.detector.lock() else {
            return;
        };
        match msg {
            Incoming::Beat(_) => {
                self.metrics.beat();
                d.on_beat(&node, now);
            }
            Incoming::Probe(r) => d.on_report(&node, r.id, &r.target, r.attempts, r.answered, now),
            _ => {}
        }
    }

    /// Runs until shutdown: connects (the addresses of `mqtt.url` in turn), subscribes, and
    /// hands every publish to the detector.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut reconnect =
            Reconnect::new(&self.connector, leakmon_common::mqtt::GATEWAY_RECONNECT_MAX);
        loop {
            let broker = reconnect.current();
            let opts = crate::bus::reader_options(&self.connector, broker, &self.client_id);
            let (client, mut el) = AsyncClient::new(opts, 8);
            let mut accepted_at: Option<tokio::time::Instant> = None;
            let error = loop {
                let warm_at = accepted_at
                    .filter(|_| !*self.warm.borrow())
                    .map(|t| t + CLOCK_WARM);
                tokio::select! {
                    _ = tokio::time::sleep_until(warm_at.unwrap_or_else(tokio::time::Instant::now)), if warm_at.is_some() => {
                        self.warm.send_replace(true);
                    }
                    ev = el.poll() => match ev {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            reconnect.accepted();
                            accepted_at = Some(tokio::time::Instant::now());
                            for t in self.subscriptions() {
                                if let Err(e) = client.try_subscribe(t.clone(), QoS::AtMostOnce) {
                                    tracing::warn!(topic = %t, error = %e, "subscribe failed");
                                }
                            }
                            tracing::info!(broker = %self.connector.url(broker),
                                client_id = %self.client_id, "liveness connection up; subscribed to beats");
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            self.on_publish(&p.topic, &p.payload, Instant::now());
                        }
                        Ok(_) => {}
                        Err(e) => break e.to_string(),
                    },
                    _ = shutdown.changed() => {
                        let _ = client.try_disconnect();
                        return;
                    }
                }
            };
            let d = reconnect.ended(accepted_at.map(|t| t.elapsed()));
            tracing::warn!(broker = %self.connector.url(broker), error = %error,
                retry_in_ms = d.as_millis() as u64, "liveness connection lost");
            if crate::scrub::oversized(&error) {
                let own = format!("{}-scrub", self.client_id);
                let filters = self.subscriptions();
                crate::bus::scrub_broker(&self.connector, broker, &own, true, &filters).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_own_client_id_never_collides_with_another_gateways() {
        assert_eq!(client_id("gw-a"), "gw-a-liveness");
        assert_eq!(client_id(""), "", "no id of its own: the broker names it");
    }
}
