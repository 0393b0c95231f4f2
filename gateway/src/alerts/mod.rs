//! Alerts: the pure engine ([`rules`]) fed by agent data, liveness and gateway events, and the
//! hooks it notifies ([`hooks`]: MQTT `<prefix>/v1/alerts`, webhooks, commands). Only the
//! active gateway notifies; a standby keeps the engine's clocks running.

pub mod alertmanager;
pub mod hooks;
pub mod rules;

use std::time::Duration;

use leakmon_protocol::{Alert, PROTOCOL_VERSION};
use tokio::sync::{mpsc, watch};

use crate::bus::{AlertInput as Input, Bus};
use rules::{Engine, Note};

pub struct Alerts {
    pub engine: Engine,
    pub hooks: hooks::Hooks,
    pub gateway: String,
    /// Only the active gateway notifies.
    pub bus: Bus,
}

impl Alerts {
    fn to_alert(&self, n: Note, now: i64) -> Alert {
        Alert {
            v: PROTOCOL_VERSION,
            alert: n.alert,
            state: n.state,
            severity: n.severity,
            node: n.node,
            subject: n.subject,
            value: n.value,
            threshold: n.threshold,
            started: n.started,
            ts: now,
            summary: n.summary,
            source: n.source.to_owned(),
            gateway: self.gateway.clone(),
            repeat: n.repeat,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Input>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let notes = tokio::select! {
                Some(i) = rx.recv() => {
                    let now = leakmon_common::now_ms();
                    match i {
                        Input::Host(node, r) => self.engine.on_host(&node, &r, now),
                        Input::Containers(node, r) => self.engine.on_containers(&node, &r, now),
                        Input::Agent(node, online, why) => {
                            self.engine.on_agent(&node, online, why, now)
                        }
                        Input::Event(e) => self.engine.on_event(&e, now),
                        Input::Forget(node) => self.engine.forget(&node),
                        Input::Clock(node, skew) => self.engine.on_clock(&node, skew, now),
                    }
                }
                _ = tick.tick() => self.engine.tick(leakmon_common::now_ms()),
                _ = shutdown.changed() => {
                    self.hooks.flush();
                    return;
                }
            };
            if notes.is_empty() {
                continue;
            }
            let now = leakmon_common::now_ms();
            let active = self.bus.active();
            for n in notes {
                let a = self.to_alert(n, now);
                // what fires is known on every gateway (Alertmanager hears it from the active one)
                self.hooks.track(&a);
                if !active {
                    continue;
                }
                tracing::info!(alert = %a.alert, state = ?a.state, severity = a.severity.as_str(),
                    node = %a.node, "{}", a.summary);
                self.hooks.notify(&a);
            }
        }
    }
}
