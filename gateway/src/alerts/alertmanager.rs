//! Alerts to a Prometheus Alertmanager, as Prometheus sends them: every alert still firing is
//! posted again every `resend` to `<url>/api/v2/alerts` with an `endsAt` four resends ahead (so
//! Alertmanager resolves it by itself if leakmon stops sending: a dead gateway leaves no alert
//! firing forever), a resolved one once with `endsAt` = when it resolved. Grouping, silences,
//! inhibition and routing are then Alertmanager's.
//!
//! Identity: an alert's labels are `alertname` (the rule or event), `node`, `subject` (a disk,
//! a container, a service: when there is one), `severity` and `source`. The gateway that sent
//! it is an annotation, not a label: after a hand-over the next active gateway re-sends the
//! same alert, and Alertmanager must see one alert, not two.
//!
//! [`Pending`] is pure (time passed in); [`deliver`] is the shell, one task per Alertmanager.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leakmon_protocol::{Alert, AlertState};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::alerts::rules::make_room;
use crate::bus::Bus;
use crate::config::AlertmanagerConfig;

/// A firing alert says it holds until this many resends from now.
const HOLD_RESENDS: u32 = 4;

type Key = (String, String, Option<String>);

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    alert: Alert,
    /// Set when resolved (ms).
    ended: Option<i64>,
}

/// What Alertmanager should hear: the alerts firing (sent again every `resend`) and those
/// resolved or one-off since the last successful post.
#[derive(Debug)]
pub struct Pending {
    resend: i64,
    firing: BTreeMap<Key, Entry>,
    once: VecDeque<Entry>,
    /// Entries of `once` dropped to keep it bounded.
    dropped: u64,
    last_post: Option<i64>,
    changed: bool,
}

/// Resolved and one-off alerts kept for the next post, at most.
pub const MAX_ONCE: usize = 1_000;

/// An event alert with nothing to resolve it (all but `node_down` and `agent_lost`, which
/// `node_up` resolves): posted once, to end by itself.
fn one_off(a: &Alert) -> bool {
    a.source == "event" && !crate::alerts::rules::PAIRED_EVENTS.contains(&a.alert.as_str())
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// RFC 3339 with milliseconds, UTC, as Alertmanager's API takes it.
fn time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0));
    humantime::format_rfc3339_millis(
        t.min(SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799)),
    )
    .to_string()
}

impl Pending {
    pub fn new(resend: Duration) -> Self {
        Pending {
            resend: ms(resend).max(1),
            firing: BTreeMap::new(),
            once: VecDeque::new(),
            dropped: 0,
            last_post: None,
            changed: false,
        }
    }

    /// An alert the engine made (on every gateway, active or not: the next active one must
    /// know what is firing).
    pub fn on_alert(&mut self, a: &Alert) {
        let key = (a.alert.clone(), a.node.clone(), a.subject.clone());
        match a.state {
            AlertState::Firing if one_off(a) => self.once.push_back(Entry {
                alert: a.clone(),
                ended: None,
            }),
            AlertState::Firing => {
                self.firing.insert(
                    key,
                    Entry {
                        alert: a.clone(),
                        ended: None,
                    },
                );
            }
            AlertState::Resolved => {
                let mut e = self.firing.remove(&key).unwrap_or(Entry {
                    alert: a.clone(),
                    ended: None,
                });
                e.alert.summary = a.summary.clone();
                e.ended = Some(a.ts);
                self.once.push_back(e);
            }
        }
        self.bound_once();
        self.changed = true;
    }

    /// Resolved and one-off alerts wait for the next successful post, which never comes on a
    /// standby (only the active gateway posts) or while Alertmanager refuses: at most
    /// [`MAX_ONCE`] wait, made room for as in the webhook queues ([`make_room`]).
    fn bound_once(&mut self) {
        if make_room(&mut self.once, MAX_ONCE, |e| e.alert.alert.as_str()).is_none() {
            return;
        }
        self.dropped += 1;
        if self.dropped.is_power_of_two() {
            tracing::warn!(
                dropped = self.dropped,
                "Alertmanager: resolved or one-off alerts dropped, more waited than can be kept (standby, or Alertmanager refusing)"
            );
        }
    }

    /// Whether a post is due at `now`: something changed, or firing alerts wait for their
    /// resend.
    pub fn due(&self, now: i64) -> bool {
        self.changed
            || (!self.firing.is_empty()
                && self
                    .last_post
                    .is_none_or(|t| now.saturating_sub(t) >= self.resend))
    }

    /// When the next resend is due, if anything fires.
    pub fn next_resend(&self, now: i64) -> Option<i64> {
        if self.firing.is_empty() {
            return None;
        }
        Some(
            self.last_post
                .map_or(now, |t| t.saturating_add(self.resend)),
        )
    }

    /// The body to post at `now` (`/api/v2/alerts`: a list of postable alerts).
    pub fn body(&self, now: i64, gateway: &str) -> Value {
        let hold = now.saturating_add(self.resend.saturating_mul(i64::from(HOLD_RESENDS)));
        let list: Vec<Value> = self
            .firing
            .values()
            .chain(&self.once)
            .map(|e| {
                let a = &e.alert;
                let mut labels = json!({
                    "alertname": a.alert,
                    "node": a.node,
                    "severity": a.severity.as_str(),
                    "source": a.source,
                });
                if let Some(s) = &a.subject {
                    labels["subject"] = json!(s);
                }
                let mut annotations = json!({ "summary": a.summary, "gateway": gateway });
                if let Some(v) = a.value {
                    annotations["value"] = json!(format!("{v}"));
                }
                if let Some(t) = a.threshold {
                    annotations["threshold"] = json!(format!("{t}"));
                }
                json!({
                    "labels": labels,
                    "annotations": annotations,
                    "startsAt": time(a.started),
                    "endsAt": time(e.ended.unwrap_or(hold)),
                })
            })
            .collect();
        Value::Array(list)
    }

    /// The post made at `now` succeeded: resolved and one-off alerts are told.
    pub fn posted(&mut self, now: i64) {
        self.once.clear();
        self.last_post = Some(now);
        self.changed = false;
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.firing.is_empty() && self.once.is_empty()
    }
}

/// One Alertmanager: its pending alerts and the task that posts them.
pub struct Sink {
    pub pending: Arc<Mutex<Pending>>,
    pub wake: Arc<Notify>,
}

impl Sink {
    pub fn start(cfg: AlertmanagerConfig, bus: Bus, gateway: String) -> Sink {
        let pending = Arc::new(Mutex::new(Pending::new(cfg.resend.0)));
        let wake = Arc::new(Notify::new());
        tokio::spawn(deliver(cfg, bus, gateway, pending.clone(), wake.clone()));
        Sink { pending, wake }
    }

    pub fn on_alert(&self, a: &Alert) {
        if let Ok(mut p) = self.pending.lock() {
            p.on_alert(a);
        }
        self.wake.notify_one();
    }
}

/// Posts what is due, while this gateway is active; a failed post is tried again after a
/// backoff (at most the resend period), nothing dropped meanwhile.
async fn deliver(
    cfg: AlertmanagerConfig,
    bus: Bus,
    gateway: String,
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
) {
    let url = format!("{}/api/v2/alerts", cfg.url.trim_end_matches('/'));
    let shown = leakmon_common::config::redact_url(&cfg.url, true);
    let client = match reqwest::Client::builder().timeout(cfg.timeout.0).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(url = %shown, error = %e, "Alertmanager client cannot be built; alerts are not sent to it");
            return;
        }
    };
    let mut retry: Option<Duration> = None;
    loop {
        let now = leakmon_common::now_ms();
        let (due, next) = match pending.lock() {
            Ok(p) => (p.due(now), p.next_resend(now)),
            Err(_) => return,
        };
        if due && bus.active() {
            let body = match pending.lock() {
                Ok(p) => p.body(now, &gateway),
                Err(_) => return,
            };
            let mut req = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.to_string());
            for (k, v) in &cfg.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    retry = None;
                    if let Ok(mut p) = pending.lock() {
                        p.posted(now);
                    }
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    tracing::warn!(url = %shown, status, error = %text.trim(), "Alertmanager refused the alerts; trying again");
                    retry = Some(
                        retry
                            .map_or(Duration::from_secs(1), |d| d * 2)
                            .min(cfg.resend.0),
                    );
                }
                Err(e) => {
                    tracing::warn!(url = %shown, error = %e, "Alertmanager unreachable; trying again");
                    retry = Some(
                        retry
                            .map_or(Duration::from_secs(1), |d| d * 2)
                            .min(cfg.resend.0),
                    );
                }
            }
        }
        // Sleep until the next resend, a retry, or a new alert; standby: look again each
        // second (a hand-over makes this gateway the one to send).
        let now = leakmon_common::now_ms();
        let mut wait = next
            .map(|t| Duration::from_millis(u64::try_from(t.saturating_sub(now)).unwrap_or(0)))
            .unwrap_or(Duration::from_secs(3600));
        if let Some(r) = retry {
            wait = wait.min(r);
        }
        if !bus.active() {
            wait = wait.min(Duration::from_secs(1));
        }
        tokio::select! {
            _ = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
            _ = wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakmon_protocol::Severity;

    fn alert(name: &str, state: AlertState, ts: i64) -> Alert {
        Alert {
            v: 1,
            alert: name.into(),
            state,
            severity: Severity::Critical,
            node: "edge-01".into(),
            subject: Some("/data".into()),
            value: Some(97.5),
            threshold: Some(90.0),
            started: 1_000,
            ts,
            summary: format!("{name} on edge-01"),
            source: "rule".into(),
            gateway: "gw1".into(),
            repeat: false,
        }
    }

    #[test]
    fn what_waits_for_a_post_that_never_comes_is_bounded_and_keeps_deaths() {
        // a standby never posts: one-off and resolved alerts must not pile up for ever
        let mut p = Pending::new(Duration::from_secs(60));
        p.on_alert(&Alert {
            source: "event".into(),
            ..alert("mass_failure", AlertState::Firing, 1_000)
        });
        for i in 0..5_000 {
            p.on_alert(&Alert {
                source: "event".into(),
                ..alert("force_update", AlertState::Firing, 2_000 + i)
            });
        }
        assert_eq!(p.once.len(), MAX_ONCE);
        assert_eq!(p.once[0].alert.alert, "mass_failure");
        assert_eq!(p.dropped, 4_001);
    }

    #[test]
    fn firing_alerts_are_resent_and_hold_four_resends_ahead() {
        let mut p = Pending::new(Duration::from_secs(60));
        assert!(!p.due(0));
        p.on_alert(&alert("disk_full", AlertState::Firing, 2_000));
        assert!(p.due(2_000));
        let b = p.body(2_000, "gw1");
        assert_eq!(b[0]["labels"]["alertname"], "disk_full");
        assert_eq!(b[0]["labels"]["node"], "edge-01");
        assert_eq!(b[0]["labels"]["subject"], "/data");
        assert_eq!(b[0]["labels"]["severity"], "critical");
        assert!(
            b[0]["labels"].get("gateway").is_none(),
            "one alert across gateways"
        );
        assert_eq!(b[0]["annotations"]["gateway"], "gw1");
        assert_eq!(b[0]["annotations"]["value"], "97.5");
        assert_eq!(b[0]["startsAt"], "1970-01-01T00:00:01.000Z");
        assert_eq!(b[0]["endsAt"], "1970-01-01T00:04:02.000Z", "now + 4 x 60 s");
        p.posted(2_000);
        assert!(!p.due(61_999));
        assert!(p.due(62_000), "resent after a minute");
        assert_eq!(p.next_resend(2_000), Some(62_000));
    }

    #[test]
    fn a_resolved_alert_is_sent_once_with_its_end() {
        let mut p = Pending::new(Duration::from_secs(60));
        p.on_alert(&alert("disk_full", AlertState::Firing, 2_000));
        p.posted(2_000);
        p.on_alert(&alert("disk_full", AlertState::Resolved, 30_000));
        assert!(p.due(30_000));
        let b = p.body(30_000, "gw1");
        assert_eq!(b.as_array().map(Vec::len), Some(1));
        assert_eq!(b[0]["endsAt"], "1970-01-01T00:00:30.000Z");
        p.posted(30_000);
        assert!(p.is_empty());
        assert!(!p.due(1_000_000));
    }

    #[test]
    fn a_failed_post_keeps_everything_for_the_next() {
        let mut p = Pending::new(Duration::from_secs(60));
        p.on_alert(&alert("disk_full", AlertState::Firing, 2_000));
        p.on_alert(&alert("disk_full", AlertState::Resolved, 3_000));
        // not posted: still due, the resolution still in the body
        assert!(p.due(4_000));
        assert_eq!(
            p.body(4_000, "gw1")[0]["endsAt"],
            "1970-01-01T00:00:03.000Z"
        );
    }

    #[test]
    fn one_off_events_are_sent_once_and_end_by_themselves() {
        let mut p = Pending::new(Duration::from_secs(10));
        let mut a = alert("failover", AlertState::Firing, 5_000);
        a.source = "event".into();
        p.on_alert(&a);
        let b = p.body(5_000, "gw1");
        assert_eq!(b[0]["endsAt"], "1970-01-01T00:00:45.000Z");
        p.posted(5_000);
        assert!(p.is_empty() && !p.due(100_000), "never resent");
        // node_down is resolved by node_up: kept firing
        let mut d = alert("node_down", AlertState::Firing, 6_000);
        d.source = "event".into();
        p.on_alert(&d);
        p.posted(6_000);
        assert!(p.due(16_000));
    }
}
