//! What the gateway publishes waits here until the broker has it: queued in order, handed to
//! the MQTT client, and let go only when its PUBACK arrives. A connection that drops takes
//! nothing with it: what the client had not yet had acknowledged goes back in front, in order
//! (the next connection gets a fresh client, which would not replay it). Duplicates are
//! possible, as QoS 1 allows; losses are not.
//!
//! A decision's event (`node_down`, `drain`, ...) is never refused: when the outbox is full,
//! the oldest other message makes room (counted). With a state directory, decision events are
//! also journaled to disk until acknowledged, so a restart (or a crash) of the gateway does not
//! lose them: the next start publishes them again.
//!
//! [`Journal`] is the small persistence both this and the webhook queues use: a JSON file
//! rewritten atomically (temporary file, fsync, rename) on every change; the things it holds
//! are rare (events, alerts), so rewriting is cheap and keeps recovery trivial.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::metrics::Metrics;
use leakmon_common::buffer::Message;

/// A JSON file holding a list, replaced atomically on every [`Journal::save`].
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn new(path: PathBuf) -> Self {
        Journal { path }
    }

    /// What the file holds; empty if it is missing or unreadable (logged).
    pub fn load<T: DeserializeOwned>(&self) -> Vec<T> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::error!(path = %self.path.display(), error = %e,
                    "journal unreadable; starting without it");
                Vec::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "journal unreadable");
                Vec::new()
            }
        }
    }

    /// Replaces the file's list with `items` (durably: written, synced, renamed).
    pub fn save<T: Serialize>(&self, items: &[T]) {
        if let Err(e) = self.try_save(items) {
            tracing::error!(path = %self.path.display(), error = %e,
                "cannot write the journal; what it holds survives only in memory");
        }
    }

    fn try_save<T: Serialize>(&self, items: &[T]) -> std::io::Result<()> {
        use std::io::Write as _;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(items).unwrap_or_default())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Bytes of a PUBLISH beyond its topic and payload: fixed header (up to 5), topic length (2),
/// packet id (2).
const PACKET_OVERHEAD: usize = 9;

/// A journaled decision event: its message, by an id of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Kept {
    id: u64,
    topic: String,
    /// Events are JSON, so UTF-8.
    payload: String,
    retain: bool,
}

#[derive(Debug)]
struct Entry {
    msg: Message,
    /// A decision's event, with its journal id when journaled.
    decision: Option<u64>,
    /// The packet id the client gave it, once it was written.
    pkid: Option<u16>,
}

#[derive(Debug, Default)]
struct State {
    /// Not yet handed to the client.
    queue: VecDeque<Entry>,
    /// Handed to the client, in order, until their PUBACK.
    inflight: VecDeque<Entry>,
    next_id: u64,
}

/// Publishes waiting for the broker ([`crate::bus`] drains it).
pub struct Outbox {
    state: Mutex<State>,
    pub notify: tokio::sync::Notify,
    cap: usize,
    /// The largest packet the client sends (`mqtt.max_packet_size`): a message that cannot
    /// fit would break every connection it is tried on, so it never gets in.
    max_packet: usize,
    metrics: Arc<Metrics>,
    journal: Option<Journal>,
}

impl Outbox {
    /// An outbox of at most `cap` messages; with a state directory, decision events are
    /// journaled in `<dir>/events.json`, and those a previous run left are queued first.
    pub fn new(
        cap: usize,
        max_packet: usize,
        metrics: Arc<Metrics>,
        state_dir: Option<&Path>,
    ) -> Self {
        let journal = state_dir.map(|d| Journal::new(d.join("events.json")));
        let mut st = State::default();
        if let Some(j) = &journal {
            let kept: Vec<Kept> = j.load();
            if !kept.is_empty() {
                tracing::info!(events = kept.len(), "publishing events a previous run left");
            }
            for k in kept {
                st.next_id = st.next_id.max(k.id + 1);
                st.queue.push_back(Entry {
                    msg: Message {
                        topic: k.topic,
                        payload: k.payload.into_bytes(),
                        retain: k.retain,
                    },
                    decision: Some(k.id),
                    pkid: None,
                });
            }
        }
        Outbox {
            state: Mutex::new(st),
            notify: tokio::sync::Notify::new(),
            cap,
            max_packet,
            metrics,
            journal,
        }
    }

    /// Queues `m`; a `decision` always gets in (the oldest other queued message, else the
    /// oldest queued decision, makes room); another message is refused when full. Whether `m`
    /// got in.
    pub fn push(&self, m: Message, decision: bool) -> bool {
        // A publish the client would refuse for good (a wildcard in its topic, or larger than
        // its packet limit) would wait in front of everything else forever: refused here.
        if !rumqttc::valid_topic(&m.topic)
            || m.topic.len() + m.payload.len() + PACKET_OVERHEAD > self.max_packet
        {
            self.metrics.mqtt_dropped();
            tracing::error!(topic = %m.topic, bytes = m.payload.len(), max_packet = self.max_packet,
                "a message the MQTT client cannot send (topic or size): dropped");
            return false;
        }
        let Ok(mut st) = self.state.lock() else {
            return false;
        };
        if st.queue.len() + st.inflight.len() >= self.cap {
            if !decision {
                self.metrics.mqtt_dropped();
                return false;
            }
            let i = st
                .queue
                .iter()
                .position(|e| e.decision.is_none())
                .unwrap_or(0);
            if st.queue.remove(i).is_some() {
                self.metrics.mqtt_dropped();
            }
        }
        let id = decision.then(|| {
            st.next_id += 1;
            st.next_id
        });
        st.queue.push_back(Entry {
            msg: m,
            decision: id,
            pkid: None,
        });
        if decision {
            self.save(&st);
        }
        drop(st);
        self.notify.notify_one();
        true
    }

    /// Hands queued messages to `publish` (the client's non-blocking publish) until it
    /// refuses one (its queue is full: every message in the outbox is one the client takes,
    /// [`Outbox::push`]); they stay in flight until [`Outbox::acked`]. Each connection has a
    /// fresh client and event loop, so nothing is replayed behind the outbox's back and packet
    /// ids are assigned ([`Outbox::written`]) in the order messages were handed over.
    pub fn drain(&self, mut publish: impl FnMut(&Message) -> bool) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        while let Some(e) = st.queue.front() {
            if !publish(&e.msg) {
                return;
            }
            if let Some(e) = st.queue.pop_front() {
                st.inflight.push_back(e);
            }
        }
    }

    /// The client wrote the next publish with packet id `pkid`.
    pub fn written(&self, pkid: u16) {
        if let Ok(mut st) = self.state.lock() {
            if let Some(e) = st.inflight.iter_mut().find(|e| e.pkid.is_none()) {
                e.pkid = Some(pkid);
            }
        }
    }

    /// The broker acknowledged packet `pkid`: that message is delivered.
    pub fn acked(&self, pkid: u16) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if let Some(i) = st.inflight.iter().position(|e| e.pkid == Some(pkid)) {
            let e = st.inflight.remove(i);
            if e.is_some_and(|e| e.decision.is_some()) {
                self.save(&st);
            }
        }
    }

    /// The connection ended: what was in flight goes back in front, in order.
    pub fn connection_lost(&self) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        while let Some(mut e) = st.inflight.pop_back() {
            e.pkid = None;
            st.queue.push_front(e);
        }
    }

    /// Messages waiting or in flight.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .map(|st| st.queue.len() + st.inflight.len())
            .unwrap_or(0)
    }

    fn save(&self, st: &State) {
        let Some(j) = &self.journal else { return };
        let kept: Vec<Kept> = st
            .inflight
            .iter()
            .chain(st.queue.iter())
            .filter_map(|e| {
                Some(Kept {
                    id: e.decision?,
                    topic: e.msg.topic.clone(),
                    payload: String::from_utf8_lossy(&e.msg.payload).into_owned(),
                    retain: e.msg.retain,
                })
            })
            .collect();
        j.save(&kept);
    }

    #[cfg(test)]
    fn topics(&self) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.inflight
            .iter()
            .chain(st.queue.iter())
            .map(|e| e.msg.topic.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t: &str) -> Message {
        Message {
            topic: t.into(),
            payload: b"{}".to_vec(),
            retain: false,
        }
    }

    #[test]
    fn a_full_outbox_refuses_others_but_never_a_decision() {
        let metrics = Arc::new(Metrics::default());
        let o = Outbox::new(3, 1 << 20, metrics.clone(), None);
        assert!(o.push(m("alert1"), false));
        assert!(o.push(m("event1"), true));
        assert!(o.push(m("alert2"), false));
        assert!(!o.push(m("alert3"), false), "full: refused");
        assert!(o.push(m("event2"), true), "a decision gets in");
        assert_eq!(
            o.topics(),
            ["event1", "alert2", "event2"],
            "the oldest other went"
        );
        assert!(o.push(m("event3"), true));
        assert!(o.push(m("event4"), true));
        assert_eq!(o.topics(), ["event2", "event3", "event4"]);
        assert!(metrics
            .render()
            .contains("leakmon_gateway_mqtt_dropped_total 4"));
    }

    #[test]
    fn a_message_the_client_cannot_send_never_gets_in() {
        let metrics = Arc::new(Metrics::default());
        let o = Outbox::new(100, 4096, metrics.clone(), None);
        let big = Message {
            topic: "t".into(),
            payload: vec![b'x'; 4096],
            retain: false,
        };
        assert!(!o.push(big, true), "too large, even a decision");
        assert!(!o.push(m("a/+/b"), false), "a wildcard");
        assert!(o.push(m("fine"), true));
        assert_eq!(o.topics(), ["fine"]);
        assert!(metrics
            .render()
            .contains("leakmon_gateway_mqtt_dropped_total 2"));
    }

    #[test]
    fn a_message_leaves_only_on_its_puback_and_a_lost_connection_loses_nothing() {
        let o = Outbox::new(100, 1 << 20, Arc::new(Metrics::default()), None);
        for t in ["a", "b", "c", "d"] {
            o.push(m(t), false);
        }
        // the client takes three, then is full
        let mut taken = Vec::new();
        o.drain(|msg| {
            if taken.len() == 3 {
                return false;
            }
            taken.push(msg.topic.clone());
            true
        });
        assert_eq!(taken, ["a", "b", "c"]);
        o.written(1);
        o.written(2);
        o.acked(2); // b delivered; a written, c not yet
        assert_eq!(o.topics(), ["a", "c", "d"]);
        // the link drops: a and c go back in front of d, in order
        o.connection_lost();
        assert_eq!(o.topics(), ["a", "c", "d"]);
        let mut again = Vec::new();
        o.drain(|msg| {
            again.push(msg.topic.clone());
            true
        });
        assert_eq!(again, ["a", "c", "d"]);
        for (pkid, _) in again.iter().enumerate() {
            o.written(pkid as u16 + 1);
        }
        for pkid in [3, 1, 2] {
            o.acked(pkid);
        }
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn decision_events_survive_a_restart_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let o = Outbox::new(100, 1 << 20, metrics.clone(), Some(dir.path()));
        o.push(m("alert"), false);
        o.push(m("node_down"), true);
        o.push(m("drain"), true);
        o.drain(|_| true);
        o.written(1);
        o.written(2);
        o.written(3);
        o.acked(2); // node_down delivered
        drop(o);
        // a crash: the next start publishes what was not acknowledged, alerts aside
        let o = Outbox::new(100, 1 << 20, metrics.clone(), Some(dir.path()));
        assert_eq!(o.topics(), ["drain"]);
        o.drain(|_| true);
        o.written(7);
        o.acked(7);
        drop(o);
        let o = Outbox::new(100, 1 << 20, metrics, Some(dir.path()));
        assert_eq!(o.len(), 0);
    }
}
