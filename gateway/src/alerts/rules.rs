//! The alert engine: pure, time passed in. Threshold rules over agent data, agents going
//! offline, and gateway events in; firing and resolved notifications out, each once per
//! `(rule, node, subject)`, with reminders after `repeat_after`.
//!
//! A threshold rule fires when its value stays above `above` for `for`, and resolves when it
//! stays at or below `clear_below` (default: `above`) for `for`: one noisy sample neither
//! fires nor resolves an alert.

use std::collections::BTreeMap;
use std::time::Duration;

use leakmon_protocol::{
    AlertState, ContainersReport, EventKind, GatewayEvent, Health, HostReport, Severity,
};

use crate::config::{Metric, Rule};

/// What the engine says.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub alert: String,
    pub state: AlertState,
    pub severity: Severity,
    pub node: String,
    pub subject: Option<String>,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    /// When the condition began, in the caller's ms.
    pub started: i64,
    pub summary: String,
    pub source: &'static str,
    pub repeat: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Pending {
        since: i64,
    },
    Firing {
        since: i64,
        sent: i64,
    },
    /// Firing, below the clear level since `below`.
    Clearing {
        since: i64,
        sent: i64,
        below: i64,
    },
}

type Key = (String, String, Option<String>);

#[derive(Debug)]
pub struct Engine {
    rules: Vec<Rule>,
    repeat_after: Option<Duration>,
    /// Gateway event kinds that alert, with their severity.
    events: BTreeMap<EventKind, Severity>,
    state: BTreeMap<Key, (Phase, f64)>,
    /// Open alerts from events and liveness: key -> (started, last sent, severity, summary).
    open: BTreeMap<Key, (i64, i64, Severity, String)>,
    /// (node, container) -> restart counts seen, with their time.
    restarts: BTreeMap<(String, String), Vec<(i64, u64)>>,
    dropped: BTreeMap<String, u64>,
}

/// Event alerts that a later event (`node_up`) resolves; every other event alert is a
/// one-off notification.
pub const PAIRED_EVENTS: [&str; 2] = ["node_down", "agent_lost"];

/// Alerts a full queue never drops for others (webhooks, Alertmanager): a node's death and a
/// mass failure are what an operator must hear, and one report could otherwise raise hundreds
/// of critical alerts that push them out.
pub const VITAL: [&str; 2] = ["node_down", "mass_failure"];

/// Keeps a queue of alerts (`name` gives each one's alert name) bounded: over `cap` it drops
/// its oldest alert that is not [`VITAL`]; with only vital ones it holds up to four times
/// `cap` of them before the oldest goes. Returns what was dropped. One rule for the webhook
/// queues and for what waits for Alertmanager.
pub fn make_room<T>(
    q: &mut std::collections::VecDeque<T>,
    cap: usize,
    name: impl Fn(&T) -> &str,
) -> Option<T> {
    if q.len() <= cap {
        return None;
    }
    match q.iter().position(|a| !VITAL.contains(&name(a))) {
        Some(i) => q.remove(i),
        None if q.len() > cap.saturating_mul(4) => q.pop_front(),
        None => None,
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The severity of an alerting gateway event.
pub fn event_severity(kind: EventKind) -> Severity {
    match kind {
        EventKind::NodeDown | EventKind::MassFailure | EventKind::FailoverImpossible => {
            Severity::Critical
        }
        EventKind::AgentLost
        | EventKind::Flapping
        | EventKind::ActionFailed
        | EventKind::Failover
        | EventKind::Unconfirmed
        | EventKind::Drain
        | EventKind::ForceUpdate => Severity::Warning,
        _ => Severity::Info,
    }
}

impl Engine {
    pub fn new(rules: Vec<Rule>, repeat_after: Option<Duration>, events: &[EventKind]) -> Self {
        Engine {
            rules,
            repeat_after,
            events: events.iter().map(|k| (*k, event_severity(*k))).collect(),
            state: BTreeMap::new(),
            open: BTreeMap::new(),
            restarts: BTreeMap::new(),
            dropped: BTreeMap::new(),
        }
    }

    /// One host report of `node` at `now` (ms).
    pub fn on_host(&mut self, node: &str, r: &HostReport, now: i64) -> Vec<Note> {
        let mut samples: Vec<(Metric, Option<String>, f64)> = Vec::new();
        for d in &r.disks {
            samples.push((
                Metric::DiskUsedPercent,
                Some(d.path.clone()),
                d.used_percent,
            ));
        }
        samples.push((Metric::MemUsedPercent, None, r.mem.used_percent));
        for t in &r.temps {
            samples.push((Metric::Temperature, Some(t.sensor.clone()), t.temp));
        }
        if r.n_cpus > 0 {
            samples.push((Metric::LoadPerCpu, None, r.load.load1 / f64::from(r.n_cpus)));
        }
        let total = r.buffer.dropped_total;
        let prev = self.dropped.insert(node.to_owned(), total);
        let dropped = prev.map(|p| total.saturating_sub(p)).unwrap_or(0);
        samples.push((Metric::BufferDropped, None, dropped as f64));
        let kinds = [
            Metric::DiskUsedPercent,
            Metric::MemUsedPercent,
            Metric::Temperature,
            Metric::LoadPerCpu,
            Metric::BufferDropped,
        ];
        self.evaluate(node, &kinds, samples, now)
    }

    /// One containers report of `node` at `now` (ms).
    pub fn on_containers(&mut self, node: &str, r: &ContainersReport, now: i64) -> Vec<Note> {
        let mut samples = Vec::new();
        let window = self
            .rules
            .iter()
            .filter(|r| r.metric == Metric::Restarts)
            .filter_map(|r| r.window.map(|w| ms(w.0)))
            .max()
            .unwrap_or(600_000);
        for c in &r.containers {
            let subject = Some(c.name.clone());
            samples.push((
                Metric::ContainerUnhealthy,
                subject.clone(),
                f64::from(u8::from(c.health == Health::Unhealthy)),
            ));
            samples.push((
                Metric::OomKilled,
                subject.clone(),
                f64::from(u8::from(c.oom_killed)),
            ));
            let h = self
                .restarts
                .entry((node.to_owned(), c.name.clone()))
                .or_default();
            h.push((now, c.restart_count));
            h.retain(|(t, _)| now - t <= window);
            let first = h.first().map(|(_, n)| *n).unwrap_or(c.restart_count);
            samples.push((
                Metric::Restarts,
                subject,
                c.restart_count.saturating_sub(first) as f64,
            ));
        }
        // This node's containers that are gone: a range of the map, not a pass over the fleet.
        let names: std::collections::BTreeSet<&str> =
            r.containers.iter().map(|c| c.name.as_str()).collect();
        let gone: Vec<(String, String)> = self
            .restarts
            .range((node.to_owned(), String::new())..)
            .take_while(|((n, _), _)| n == node)
            .filter(|((_, c), _)| !names.contains(c.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.restarts.remove(&k);
        }
        let kinds = [
            Metric::ContainerUnhealthy,
            Metric::OomKilled,
            Metric::Restarts,
        ];
        self.evaluate(node, &kinds, samples, now)
    }

    /// Runs every rule on `kinds` over a report's samples; subjects of those kinds that are
    /// gone from the report (a removed container, an unmounted disk) count as clear.
    fn evaluate(
        &mut self,
        node: &str,
        kinds: &[Metric],
        samples: Vec<(Metric, Option<String>, f64)>,
        now: i64,
    ) -> Vec<Note> {
        let mut out = Vec::new();
        for rule in self.rules.clone() {
            if !kinds.contains(&rule.metric) {
                continue;
            }
            let mut seen = std::collections::BTreeSet::new();
            for (m, subject, value) in &samples {
                if *m != rule.metric {
                    continue;
                }
                if !seen.insert(subject.clone()) {
                    continue;
                }
                out.extend(self.step(&rule, node, subject.clone(), *value, now));
            }
            // This rule's subjects on this node: a range of the map (None sorts first).
            let gone: Vec<Option<String>> = self
                .state
                .range((rule.name.clone(), node.to_owned(), None)..)
                .map(|(k, _)| k)
                .take_while(|(r, n, _)| r == &rule.name && n == node)
                .filter(|(_, _, s)| !seen.contains(s))
                .map(|(_, _, s)| s.clone())
                .collect();
            for s in gone {
                // Absent: resolve at once if it was firing; forget a pending one.
                let key = (rule.name.clone(), node.to_owned(), s.clone());
                if let Some((Phase::Firing { since, .. } | Phase::Clearing { since, .. }, last)) =
                    self.state.remove(&key)
                {
                    out.push(self.note(&rule, node, s, last, since, AlertState::Resolved, false));
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn note(
        &self,
        rule: &Rule,
        node: &str,
        subject: Option<String>,
        value: f64,
        since: i64,
        state: AlertState,
        repeat: bool,
    ) -> Note {
        let on = match &subject {
            Some(s) => format!("{s} on {node}"),
            None => node.to_owned(),
        };
        let summary = match state {
            AlertState::Firing => format!(
                "{}: {on}: {} {value:.1} above {} for {}",
                rule.name,
                rule.metric.what(),
                rule.above,
                humantime_secs(rule.for_.0)
            ),
            AlertState::Resolved => format!(
                "{} resolved: {on}: {} {value:.1}",
                rule.name,
                rule.metric.what()
            ),
        };
        Note {
            alert: rule.name.clone(),
            state,
            severity: rule.severity,
            node: node.to_owned(),
            subject,
            value: Some(value),
            threshold: Some(rule.above),
            started: since,
            summary,
            source: "rule",
            repeat,
        }
    }

    fn step(
        &mut self,
        rule: &Rule,
        node: &str,
        subject: Option<String>,
        value: f64,
        now: i64,
    ) -> Option<Note> {
        let key = (rule.name.clone(), node.to_owned(), subject.clone());
        let clear = rule.clear_below.unwrap_or(rule.above);
        let hold = ms(rule.for_.0);
        let above = value > rule.above;
        let below = value <= clear;
        let phase = self.state.get(&key).map(|(p, _)| *p);
        let (next, note) = match phase {
            None if above => {
                if hold == 0 {
                    (
                        Some(Phase::Firing {
                            since: now,
                            sent: now,
                        }),
                        Some((now, AlertState::Firing, false)),
                    )
                } else {
                    (Some(Phase::Pending { since: now }), None)
                }
            }
            None => (None, None),
            Some(Phase::Pending { since }) if above => {
                if now - since >= hold {
                    (
                        Some(Phase::Firing { since, sent: now }),
                        Some((since, AlertState::Firing, false)),
                    )
                } else {
                    (Some(Phase::Pending { since }), None)
                }
            }
            Some(Phase::Pending { .. }) => (None, None),
            Some(Phase::Firing { since, sent }) | Some(Phase::Clearing { since, sent, .. })
                if !below =>
            {
                match self.repeat_after {
                    Some(r) if now - sent >= ms(r) => (
                        Some(Phase::Firing { since, sent: now }),
                        Some((since, AlertState::Firing, true)),
                    ),
                    _ => (Some(Phase::Firing { since, sent }), None),
                }
            }
            Some(Phase::Firing { since, sent }) => {
                if hold == 0 {
                    (None, Some((since, AlertState::Resolved, false)))
                } else {
                    (
                        Some(Phase::Clearing {
                            since,
                            sent,
                            below: now,
                        }),
                        None,
                    )
                }
            }
            Some(Phase::Clearing {
                since,
                sent,
                below: b,
            }) => {
                if now - b >= hold {
                    (None, Some((since, AlertState::Resolved, false)))
                } else {
                    (
                        Some(Phase::Clearing {
                            since,
                            sent,
                            below: b,
                        }),
                        None,
                    )
                }
            }
        };
        match next {
            Some(p) => {
                self.state.insert(key, (p, value));
            }
            None => {
                self.state.remove(&key);
            }
        }
        note.map(|(since, state, repeat)| {
            self.note(rule, node, subject, value, since, state, repeat)
        })
    }

    fn open_alert(
        &mut self,
        alert: &str,
        node: &str,
        severity: Severity,
        summary: String,
        source: &'static str,
        now: i64,
    ) -> Option<Note> {
        let key = (alert.to_owned(), node.to_owned(), None);
        if self.open.contains_key(&key) {
            return None;
        }
        self.open.insert(key, (now, now, severity, summary.clone()));
        Some(Note {
            alert: alert.to_owned(),
            state: AlertState::Firing,
            severity,
            node: node.to_owned(),
            subject: None,
            value: None,
            threshold: None,
            started: now,
            summary,
            source,
            repeat: false,
        })
    }

    fn close_alert(
        &mut self,
        alert: &str,
        node: &str,
        summary: String,
        source: &'static str,
    ) -> Option<Note> {
        let key = (alert.to_owned(), node.to_owned(), None);
        let (started, _, severity, _) = self.open.remove(&key)?;
        Some(Note {
            alert: alert.to_owned(),
            state: AlertState::Resolved,
            severity,
            node: node.to_owned(),
            subject: None,
            value: None,
            threshold: None,
            started,
            summary,
            source,
            repeat: false,
        })
    }

    /// A node was forgotten (a host gone for good): everything firing about it resolves, and
    /// nothing about it is kept.
    pub fn forget(&mut self, node: &str) -> Vec<Note> {
        let mut out = Vec::new();
        let keys: Vec<Key> = self.open.keys().filter(|k| k.1 == node).cloned().collect();
        for k in keys {
            out.extend(self.close_alert(
                &k.0,
                node,
                format!("{} resolved: {node} was forgotten", k.0),
                "liveness",
            ));
        }
        let keys: Vec<Key> = self.state.keys().filter(|k| k.1 == node).cloned().collect();
        for k in keys {
            let Some((phase, last)) = self.state.remove(&k) else {
                continue;
            };
            let (Phase::Firing { since, .. } | Phase::Clearing { since, .. }) = phase else {
                continue;
            };
            if let Some(rule) = self.rules.iter().find(|r| r.name == k.0).cloned() {
                out.push(self.note(&rule, node, k.2, last, since, AlertState::Resolved, false));
            }
        }
        self.restarts.retain(|(n, _), _| n != node);
        self.dropped.remove(node);
        out
    }

    /// An agent went offline (its Will, or silence) or came back. Coming back resolves
    /// `agent_offline` and the control loop's `agent_lost` (no `node_up` follows an
    /// `agent_lost`: the node never went down), so a later loss fires again.
    pub fn on_agent(&mut self, node: &str, online: bool, why: &str, now: i64) -> Vec<Note> {
        if online {
            ["agent_offline", "agent_lost"]
                .iter()
                .filter_map(|a| {
                    self.close_alert(
                        a,
                        node,
                        format!("{a} resolved: the agent on {node} is back"),
                        "liveness",
                    )
                })
                .collect()
        } else {
            self.open_alert(
                "agent_offline",
                node,
                Severity::Critical,
                format!("agent_offline: the agent on {node} is offline ({why})"),
                "liveness",
                now,
            )
            .into_iter()
            .collect()
        }
    }

    /// A node's clock off by `skew` ms (`Some`: `clock_skew` fires, a warning: its samples are
    /// written at true time, see `crate::clocks`) or right again (`None`: it resolves).
    pub fn on_clock(&mut self, node: &str, skew: Option<i64>, now: i64) -> Vec<Note> {
        match skew {
            Some(ms) => {
                let (by, way) = (
                    ms.unsigned_abs() as f64 / 1000.0,
                    if ms < 0 { "behind" } else { "ahead" },
                );
                self.open_alert(
                    "clock_skew",
                    node,
                    Severity::Warning,
                    format!("clock_skew: the clock of {node} is {by:.1} s {way}; its samples are written at true time"),
                    "clock",
                    now,
                )
                .into_iter()
                .collect()
            }
            None => self
                .close_alert(
                    "clock_skew",
                    node,
                    format!("clock_skew resolved: the clock of {node} is right again"),
                    "clock",
                )
                .into_iter()
                .collect(),
        }
    }

    /// A gateway event: alerts if its kind is configured to; `node_up` resolves `node_down`
    /// and `agent_lost` ([`PAIRED_EVENTS`]); the others are one-off notifications.
    pub fn on_event(&mut self, e: &GatewayEvent, now: i64) -> Vec<Note> {
        let node = e.node.clone().unwrap_or_default();
        if e.kind == EventKind::NodeUp {
            return PAIRED_EVENTS
                .iter()
                .filter_map(|a| {
                    self.close_alert(a, &node, format!("{a} resolved: {}", e.message), "event")
                })
                .collect();
        }
        let Some(sev) = self.events.get(&e.kind).copied() else {
            return Vec::new();
        };
        let paired = matches!(e.kind, EventKind::NodeDown | EventKind::AgentLost);
        let summary = format!("{}: {}", e.kind.as_str(), e.message);
        if paired {
            return self
                .open_alert(e.kind.as_str(), &node, sev, summary, "event", now)
                .into_iter()
                .collect();
        }
        // A one-off: fires, and there is nothing to resolve.
        vec![Note {
            alert: e.kind.as_str().to_owned(),
            state: AlertState::Firing,
            severity: sev,
            node,
            subject: e
                .details
                .get("service")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            value: None,
            threshold: None,
            started: now,
            summary,
            source: "event",
            repeat: false,
        }]
    }

    /// Reminders of open event and liveness alerts after `repeat_after`.
    pub fn tick(&mut self, now: i64) -> Vec<Note> {
        let Some(r) = self.repeat_after else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for ((alert, node, subject), (started, sent, sev, summary)) in self.open.iter_mut() {
            if now - *sent >= ms(r) {
                *sent = now;
                out.push(Note {
                    alert: alert.clone(),
                    state: AlertState::Firing,
                    severity: *sev,
                    node: node.clone(),
                    subject: subject.clone(),
                    value: None,
                    threshold: None,
                    started: *started,
                    summary: summary.clone(),
                    source: if alert == "agent_offline" {
                        "liveness"
                    } else {
                        "event"
                    },
                    repeat: true,
                });
            }
        }
        out
    }
}

fn humantime_secs(d: Duration) -> String {
    if d.as_millis() % 1000 == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_rules;
    use leakmon_common::config::Dur;

    fn disk_rule() -> Rule {
        Rule {
            name: "disk_full".into(),
            metric: Metric::DiskUsedPercent,
            above: 90.0,
            clear_below: Some(85.0),
            for_: Dur::secs(60),
            severity: Severity::Warning,
            window: None,
        }
    }

    fn host(used: f64) -> HostReport {
        use leakmon_protocol::{BufferStats, Disk, Header, Load, Memory, Swap};
        HostReport {
            header: Header {
                v: 1,
                node: "n".into(),
                run: 1,
                seq: 1,
                ts: 0,
                mono: None,
            },
            hostname: "n".into(),
            uptime_s: 1,
            n_cpus: 2,
            cpu: None,
            load: Load::default(),
            mem: Memory {
                used_percent: 50.0,
                ..Default::default()
            },
            swap: Swap::default(),
            disks: vec![Disk {
                path: "/".into(),
                used_percent: used,
                ..Default::default()
            }],
            net: vec![],
            temps: vec![],
            cores: vec![],
            diskio: vec![],
            kernel: None,
            processes: None,
            files: None,
            nstat: None,
            sockets: None,
            conntrack: None,
            interrupts: Vec::new(),
            soft_interrupts: Vec::new(),
            buffer: BufferStats::default(),
            cut: 0,
        }
    }

    const S: i64 = 1000;

    /// Feeds one host report per second with `used(t)`; returns (second, note).
    fn run(e: &mut Engine, from: i64, to: i64, used: impl Fn(i64) -> f64) -> Vec<(i64, Note)> {
        (from..to)
            .flat_map(|t| {
                e.on_host("n", &host(used(t)), t * S)
                    .into_iter()
                    .map(move |n| (t, n))
            })
            .collect()
    }

    #[test]
    fn fires_only_after_the_duration_and_once() {
        let mut e = Engine::new(vec![disk_rule()], None, &[]);
        let notes = run(&mut e, 0, 200, |_| 95.0);
        assert_eq!(notes.len(), 1);
        let (t, n) = &notes[0];
        assert_eq!(*t, 60);
        assert_eq!(n.state, AlertState::Firing);
        assert_eq!(n.subject.as_deref(), Some("/"));
        assert_eq!(n.started, 0);
        assert!(n.summary.contains("disk_full"), "{}", n.summary);
    }

    #[test]
    fn one_noisy_sample_neither_fires_nor_resolves() {
        let mut e = Engine::new(vec![disk_rule()], None, &[]);
        // a spike of one sample every 30 s: never 60 s above
        assert!(run(&mut e, 0, 300, |t| if t % 30 == 0 { 99.0 } else { 50.0 }).is_empty());
        // firing, then one low sample every 30 s: never 60 s below, never resolved
        let notes = run(&mut e, 300, 400, |_| 95.0);
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].1.state, AlertState::Firing);
        assert!(run(&mut e, 400, 700, |t| if t % 30 == 0 { 10.0 } else { 95.0 }).is_empty());
    }

    #[test]
    fn resolves_with_hysteresis_after_the_duration_and_once() {
        let mut e = Engine::new(vec![disk_rule()], None, &[]);
        run(&mut e, 0, 100, |_| 95.0);
        // between clear (85) and above (90): still firing
        assert!(run(&mut e, 100, 300, |_| 88.0).is_empty());
        let notes = run(&mut e, 300, 500, |_| 80.0);
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].0, 360);
        assert_eq!(notes[0].1.state, AlertState::Resolved);
        assert_eq!(notes[0].1.started, 0, "the same alert");
    }

    #[test]
    fn repeats_after_repeat_after_while_firing() {
        let mut e = Engine::new(vec![disk_rule()], Some(Duration::from_secs(100)), &[]);
        let notes = run(&mut e, 0, 300, |_| 95.0);
        let at: Vec<(i64, bool)> = notes.iter().map(|(t, n)| (*t, n.repeat)).collect();
        assert_eq!(at, [(60, false), (160, true), (260, true)]);
    }

    #[test]
    fn a_disk_that_disappears_resolves() {
        let mut e = Engine::new(vec![disk_rule()], None, &[]);
        run(&mut e, 0, 100, |_| 95.0);
        let mut r = host(0.0);
        r.disks.clear();
        let n = e.on_host("n", &r, 101 * S);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].state, AlertState::Resolved);
    }

    #[test]
    fn deduplicated_by_rule_node_and_subject() {
        let mut e = Engine::new(vec![disk_rule()], None, &[]);
        let mut r = host(95.0);
        let mut d2 = r.disks[0].clone();
        d2.path = "/data".into();
        r.disks.push(d2);
        let mut fired = Vec::new();
        for t in 0..100 {
            fired.extend(e.on_host("a", &r, t * S));
            fired.extend(e.on_host("b", &r, t * S));
        }
        assert_eq!(fired.len(), 4, "2 nodes x 2 disks");
    }

    fn containers(restarts: u64, health: Health, oom: bool) -> ContainersReport {
        serde_json::from_value(serde_json::json!({
            "v":1,"node":"n","run":1,"seq":1,"ts":0,"engine":"ok",
            "containers":[{"id":"c","name":"app","image":"i","state":"running",
              "health": health.as_str(),"restart_count":restarts,"oom_killed":oom}]
        }))
        .expect("containers")
    }

    #[test]
    fn restart_loop_counts_restarts_within_the_window() {
        let rule = Rule {
            name: "loop".into(),
            metric: Metric::Restarts,
            above: 2.5,
            clear_below: Some(0.5),
            for_: Dur::secs(0),
            severity: Severity::Warning,
            window: Some(Dur::secs(60)),
        };
        let mut e = Engine::new(vec![rule], None, &[]);
        // one restart every 30 s: 2 in any 60 s window: no alert
        let mut n = Vec::new();
        for t in 0..300 {
            n.extend(e.on_containers(
                "n",
                &containers((t / 30) as u64, Health::Healthy, false),
                t * S,
            ));
        }
        assert!(n.is_empty(), "{n:?}");
        // one every 10 s: fires
        for t in 300..330 {
            let c = 10 + 2 * ((t - 300) / 10) as u64;
            n.extend(e.on_containers("n", &containers(c, Health::Healthy, false), t * S));
        }
        assert_eq!(n.len(), 1, "{n:?}");
        assert_eq!(n[0].state, AlertState::Firing);
        // stable again for a window: resolves
        for t in 330..400 {
            n.extend(e.on_containers("n", &containers(20, Health::Healthy, false), t * S));
        }
        assert_eq!(n.last().map(|x| x.state), Some(AlertState::Resolved));
    }

    #[test]
    fn unhealthy_and_oom_with_the_default_rules() {
        let mut e = Engine::new(default_rules(), None, &[]);
        let mut n = Vec::new();
        for t in 0..40 {
            n.extend(e.on_containers("n", &containers(0, Health::Unhealthy, t >= 35), t * S));
        }
        let names: Vec<&str> = n.iter().map(|x| x.alert.as_str()).collect();
        assert_eq!(names, ["container_unhealthy", "container_oom_killed"]);
        assert_eq!(n[0].subject.as_deref(), Some("app"));
    }

    #[test]
    fn buffer_dropping_fires_on_an_increase() {
        let mut e = Engine::new(default_rules(), None, &[]);
        let mut r = host(10.0);
        assert!(e.on_host("n", &r, 0).is_empty());
        r.buffer.dropped_total = 7;
        let n = e.on_host("n", &r, S);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].alert, "agent_buffer_dropping");
        assert_eq!(n[0].value, Some(7.0));
        let n = e.on_host("n", &r, 2 * S);
        assert_eq!(n[0].state, AlertState::Resolved);
    }

    #[test]
    fn agent_offline_fires_and_resolves_once() {
        let mut e = Engine::new(vec![], Some(Duration::from_secs(60)), &[]);
        let f = e.on_agent("n", false, "its Will", 0);
        assert_eq!(f.len(), 1, "fires");
        assert_eq!(
            (f[0].alert.as_str(), f[0].state),
            ("agent_offline", AlertState::Firing)
        );
        assert!(e.on_agent("n", false, "silent", S).is_empty(), "once");
        assert!(e.tick(30 * S).is_empty());
        let r = e.tick(60 * S);
        assert_eq!(r.len(), 1);
        assert!(r[0].repeat);
        let r = e.on_agent("n", true, "", 70 * S);
        assert_eq!(r.len(), 1, "resolves");
        assert_eq!((r[0].state, r[0].started), (AlertState::Resolved, 0));
        assert!(e.on_agent("n", true, "", 71 * S).is_empty());
    }

    #[test]
    fn a_forgotten_node_resolves_what_fires_about_it_and_keeps_nothing() {
        let mut e = Engine::new(vec![], None, &[EventKind::NodeDown]);
        e.on_agent("ghost", false, "its Will", 0);
        e.on_event(&gw_event(EventKind::NodeDown, "ghost"), 0);
        e.on_agent("other", false, "its Will", 0);
        let r = e.forget("ghost");
        let mut names: Vec<_> = r.iter().map(|n| (n.alert.as_str(), n.state)).collect();
        names.sort_by_key(|x| x.0);
        assert_eq!(
            names,
            [
                ("agent_offline", AlertState::Resolved),
                ("node_down", AlertState::Resolved)
            ]
        );
        assert!(e.forget("ghost").is_empty());
        assert!(e.open.keys().all(|k| k.1 != "ghost"));
        assert_eq!(e.open.len(), 1, "the other node's alert stays");
    }

    #[test]
    fn agent_lost_resolves_when_the_agent_is_back_and_fires_again_later() {
        let mut e = Engine::new(vec![], None, &[EventKind::AgentLost]);
        assert_eq!(
            e.on_event(&gw_event(EventKind::AgentLost, "w4"), 0).len(),
            1
        );
        let back = e.on_agent("w4", true, "", 10 * S);
        assert_eq!(back.len(), 1);
        assert_eq!(
            (back[0].alert.as_str(), back[0].state),
            ("agent_lost", AlertState::Resolved)
        );
        // the next loss is a new alert, not deduplicated away
        let again = e.on_event(&gw_event(EventKind::AgentLost, "w4"), 20 * S);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].state, AlertState::Firing);
    }

    fn gw_event(kind: EventKind, node: &str) -> GatewayEvent {
        GatewayEvent {
            v: 1,
            kind,
            node: Some(node.into()),
            ts: 0,
            gateway: "gw".into(),
            dry_run: false,
            message: format!("{} {node}", kind.as_str()),
            details: Default::default(),
        }
    }

    #[test]
    fn node_down_fires_and_node_up_resolves() {
        let mut e = Engine::new(vec![], None, &[EventKind::NodeDown, EventKind::MassFailure]);
        let n = e.on_event(&gw_event(EventKind::NodeDown, "w4"), 0);
        assert_eq!(n.len(), 1);
        assert_eq!(
            (n[0].severity, n[0].state),
            (Severity::Critical, AlertState::Firing)
        );
        assert!(
            e.on_event(&gw_event(EventKind::NodeDown, "w4"), S)
                .is_empty(),
            "dedup"
        );
        let n = e.on_event(&gw_event(EventKind::NodeUp, "w4"), 10 * S);
        assert_eq!(n.len(), 1);
        assert_eq!(
            (n[0].alert.as_str(), n[0].state),
            ("node_down", AlertState::Resolved)
        );
        // not configured: nothing
        assert!(e
            .on_event(&gw_event(EventKind::Drain, "w4"), 11 * S)
            .is_empty());
        // one-offs fire each time
        assert_eq!(
            e.on_event(&gw_event(EventKind::MassFailure, "w4"), 12 * S)
                .len(),
            1
        );
    }
}
