//! The gateway's own counters, shown on `/metrics` in Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// What the failure detector said of a node, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Suspect,
    Dead,
    Refuted,
}

/// The most (node, reason) series of `leakmon_gateway_rejected_total`.
const MAX_REJECTED_SERIES: usize = 10_000;

#[derive(Debug, Default)]
pub struct Metrics {
    messages_in: AtomicU64,
    points_written: AtomicU64,
    write_errors: AtomicU64,
    lines_rejected: AtomicU64,
    buffer_bytes: AtomicU64,
    spool_bytes: AtomicU64,
    buffer_dropped_lines: AtomicU64,
    /// 1 while this gateway is the active one.
    active: AtomicU64,
    events: AtomicU64,
    /// The failure detector: beats heard, suspicions, dead verdicts, refutations, and its
    /// local-health score.
    beats: AtomicU64,
    suspicions: AtomicU64,
    detector_dead: AtomicU64,
    refuted: AtomicU64,
    detector_health: AtomicU64,
    /// Samples written at true time because their agent's clock was off.
    clock_corrected: AtomicU64,
    cut: AtomicU64,
    mqtt_dropped: AtomicU64,
    too_many_nodes: AtomicU64,
    duplicates: AtomicU64,
    missing: AtomicU64,
    /// Rejected payloads by (node, reason).
    rejected: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Unix ms of the last message per node.
    last_seen: Mutex<BTreeMap<String, i64>>,
}

impl Metrics {
    pub fn message_in(&self, node: &str, now_ms: i64) {
        self.messages_in.fetch_add(1, Relaxed);
        if let Ok(mut m) = self.last_seen.lock() {
            match m.get_mut(node) {
                Some(v) => *v = now_ms,
                None => {
                    m.insert(node.to_owned(), now_ms);
                }
            }
        }
    }

    /// Drops a forgotten node's series.
    pub fn forget(&self, node: &str) {
        if let Ok(mut m) = self.last_seen.lock() {
            m.remove(node);
        }
        if let Ok(mut m) = self.rejected.lock() {
            m.retain(|(n, _), _| n != node);
        }
    }

    /// Counts a rejected payload; returns how many of this kind there have been.
    pub fn rejected(&self, node: &str, reason: &'static str) -> u64 {
        let Ok(mut m) = self.rejected.lock() else {
            return 0;
        };
        // One series per node and reason, up to a bound: past it, new nodes count as "?".
        let key = (node.to_owned(), reason);
        let key = if m.len() >= MAX_REJECTED_SERIES && !m.contains_key(&key) {
            ("?".to_owned(), reason)
        } else {
            key
        };
        let c = m.entry(key).or_insert(0);
        *c += 1;
        *c
    }

    pub fn set_active(&self, active: bool) {
        self.active.store(u64::from(active), Relaxed);
    }

    pub fn event(&self) {
        self.events.fetch_add(1, Relaxed);
    }

    /// Items or texts a report carried past the protocol's bounds (cut on arrival).
    pub fn cut(&self, n: u32) {
        self.cut.fetch_add(u64::from(n), Relaxed);
    }

    /// A message the MQTT outbox had to drop (full during a long broker outage).
    pub fn mqtt_dropped(&self) {
        self.mqtt_dropped.fetch_add(1, Relaxed);
    }

    /// A message from a new node name dropped because the gateway already knows its maximum.
    pub fn too_many_nodes(&self) {
        self.too_many_nodes.fetch_add(1, Relaxed);
    }

    /// A copy of a data message already handled (an agent resends after a reconnect).
    pub fn duplicate(&self) {
        self.duplicates.fetch_add(1, Relaxed);
    }

    /// `n` data messages of a node that never arrived (`crate::ingest::seen`).
    pub fn missing(&self, n: u64) {
        self.missing.fetch_add(n, Relaxed);
    }

    pub fn beat(&self) {
        self.beats.fetch_add(1, Relaxed);
    }

    /// A sample written at true time, its agent's clock being off (`crate::clocks`).
    pub fn clock_corrected(&self) {
        self.clock_corrected.fetch_add(1, Relaxed);
    }

    /// A detector verdict: a suspicion, a death, or a suspicion refuted.
    pub fn detector(&self, v: Verdict) {
        match v {
            Verdict::Suspect => &self.suspicions,
            Verdict::Dead => &self.detector_dead,
            Verdict::Refuted => &self.refuted,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn set_detector_health(&self, score: u64) {
        self.detector_health.store(score, Relaxed);
    }

    pub fn points_written(&self, n: u64) {
        self.points_written.fetch_add(n, Relaxed);
    }

    pub fn write_error(&self) {
        self.write_errors.fetch_add(1, Relaxed);
    }

    pub fn lines_rejected(&self, n: u64) {
        self.lines_rejected.fetch_add(n, Relaxed);
    }

    pub fn set_buffer(&self, mem: u64, spool: u64, dropped: u64) {
        self.buffer_bytes.store(mem, Relaxed);
        self.spool_bytes.store(spool, Relaxed);
        self.buffer_dropped_lines.store(dropped, Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        counter(
            "leakmon_gateway_messages_total",
            "MQTT messages received from agents.",
            "counter",
            self.messages_in.load(Relaxed),
        );
        counter(
            "leakmon_gateway_points_written_total",
            "Points the database accepted.",
            "counter",
            self.points_written.load(Relaxed),
        );
        counter(
            "leakmon_gateway_write_errors_total",
            "Failed write requests (each retried).",
            "counter",
            self.write_errors.load(Relaxed),
        );
        counter(
            "leakmon_gateway_lines_rejected_total",
            "Lines the database refused as invalid (dropped).",
            "counter",
            self.lines_rejected.load(Relaxed),
        );
        counter(
            "leakmon_gateway_buffer_bytes",
            "Line protocol waiting in memory for the database.",
            "gauge",
            self.buffer_bytes.load(Relaxed),
        );
        counter(
            "leakmon_gateway_spool_bytes",
            "Line protocol waiting in the disk spool.",
            "gauge",
            self.spool_bytes.load(Relaxed),
        );
        counter(
            "leakmon_gateway_buffer_dropped_lines_total",
            "Lines dropped from a full write buffer without a spool, and batches (spool records, not read to count their lines) dropped from a full spool.",
            "counter",
            self.buffer_dropped_lines.load(Relaxed),
        );
        counter(
            "leakmon_gateway_active",
            "1 while this gateway is the active one (writes and acts), 0 on standby.",
            "gauge",
            self.active.load(Relaxed),
        );
        counter(
            "leakmon_gateway_events_total",
            "Gateway events (decisions and actions) published.",
            "counter",
            self.events.load(Relaxed),
        );
        for (name, help, kind, v) in [
            (
                "leakmon_gateway_beats_total",
                "Liveness beats received from agents.",
                "counter",
                &self.beats,
            ),
            (
                "leakmon_gateway_clock_corrected_total",
                "Samples written at true time because their agent's clock was off by 2 s or more.",
                "counter",
                &self.clock_corrected,
            ),
            (
                "leakmon_gateway_detector_suspicions_total",
                "Nodes the failure detector found silent and had probed from vantage points.",
                "counter",
                &self.suspicions,
            ),
            (
                "leakmon_gateway_detector_dead_total",
                "Nodes the failure detector declared dead (silent, unreachable from vantage points).",
                "counter",
                &self.detector_dead,
            ),
            (
                "leakmon_gateway_detector_refuted_total",
                "Suspicions refuted by a beat or an answered probe.",
                "counter",
                &self.refuted,
            ),
            (
                "leakmon_gateway_cut_total",
                "List items and texts cut from agent reports past the protocol's bounds (500 containers, 64 disks/interfaces/sensors, 256-byte names).",
                "counter",
                &self.cut,
            ),
            (
                "leakmon_gateway_mqtt_dropped_total",
                "Messages (alerts, discovery; a decision's event only to make room for a newer one) the MQTT outbox dropped while the broker was away.",
                "counter",
                &self.mqtt_dropped,
            ),
            (
                "leakmon_gateway_unknown_nodes_dropped_total",
                "Messages from new node names dropped because the gateway already tracks its maximum of nodes.",
                "counter",
                &self.too_many_nodes,
            ),
            (
                "leakmon_gateway_duplicates_dropped_total",
                "Copies of data messages already handled, dropped (agents resend what the broker acknowledged lately after a reconnect).",
                "counter",
                &self.duplicates,
            ),
            (
                "leakmon_gateway_messages_missing_total",
                "Data messages (host, containers, events) of a node's run that never reached this active gateway, counted 256 of that node's messages later: lost at the agent, by the broker (its queue for the gateway full) or on the way. Not counted with mqtt.shared_group.",
                "counter",
                &self.missing,
            ),
            (
                "leakmon_gateway_detector_health",
                "The detector's local-health score (0 healthy; 3 or more: no verdicts).",
                "gauge",
                &self.detector_health,
            ),
        ] {
            counter(name, help, kind, v.load(Relaxed));
        }
        let _ = writeln!(
            s,
            "# HELP leakmon_gateway_rejected_total Agent payloads dropped, by node and reason.\n\
             # TYPE leakmon_gateway_rejected_total counter"
        );
        if let Ok(m) = self.rejected.lock() {
            for ((node, reason), v) in m.iter() {
                let _ = writeln!(
                    s,
                    "leakmon_gateway_rejected_total{{node=\"{}\",reason=\"{reason}\"}} {v}",
                    label(node)
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP leakmon_gateway_node_last_seen_seconds Unix time of the last message per node.\n\
             # TYPE leakmon_gateway_node_last_seen_seconds gauge"
        );
        if let Ok(m) = self.last_seen.lock() {
            for (node, ms) in m.iter() {
                let _ = writeln!(
                    s,
                    "leakmon_gateway_node_last_seen_seconds{{node=\"{}\"}} {:.3}",
                    label(node),
                    *ms as f64 / 1000.0
                );
            }
        }
        s
    }
}

/// Escapes a label value (node names from topics are validated, but be safe).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_labels() {
        let m = Metrics::default();
        m.message_in("edge-01", 1_700_000_000_500);
        assert_eq!(m.rejected("edge-01", "malformed"), 1);
        assert_eq!(m.rejected("edge-01", "malformed"), 2);
        m.points_written(10);
        m.beat();
        m.detector(Verdict::Suspect);
        m.detector(Verdict::Suspect);
        m.detector(Verdict::Refuted);
        m.set_detector_health(2);
        let t = m.render();
        assert!(t.contains("leakmon_gateway_beats_total 1\n"));
        assert!(t.contains("leakmon_gateway_detector_suspicions_total 2\n"));
        assert!(t.contains("leakmon_gateway_detector_dead_total 0\n"));
        assert!(t.contains("leakmon_gateway_detector_refuted_total 1\n"));
        assert!(t.contains(
            "# TYPE leakmon_gateway_detector_health gauge\nleakmon_gateway_detector_health 2\n"
        ));
        assert!(t.contains("leakmon_gateway_messages_total 1\n"));
        assert!(t.contains("leakmon_gateway_points_written_total 10\n"));
        assert!(
            t.contains("leakmon_gateway_rejected_total{node=\"edge-01\",reason=\"malformed\"} 2\n")
        );
        assert!(
            t.contains("leakmon_gateway_node_last_seen_seconds{node=\"edge-01\"} 1700000000.500")
        );
    }
}
