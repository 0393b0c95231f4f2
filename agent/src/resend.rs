//! What the broker acknowledged lately, sent again after a reconnect.
//!
//! A PUBACK means the broker holds a message, not that the gateway stored it: until the active
//! gateway has written it (or spooled it: it acknowledges only then), the message lives in the
//! broker's memory, and a broker that crashes (SIGKILL, the OOM killer, a power cut) loses it.
//! The chaos run found exactly that: the broker killed 0.3 s after a sample, the sample gone.
//! So the agent keeps the data messages the broker acknowledged within the last
//! `buffer.resend_window` (bounded in bytes too) and publishes them again, oldest first and
//! before anything else, on every new connection; the gateway drops the copies it already
//! had by `(run, seq)` (`gateway/src/ingest/seen.rs`) and the database would store a copy as
//! the same point anyway. Pure: time is passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use leakmon_common::buffer::Message;

/// The most bytes of messages kept for resending, whatever the window.
pub const MAX_BYTES: usize = 256 * 1024;

pub struct Resend {
    window: Duration,
    max_bytes: usize,
    /// (when the broker acknowledged it, a digest of it, the message), oldest first.
    kept: VecDeque<(Instant, u64, Message)>,
    bytes: usize,
}

impl Resend {
    /// `window` zero: nothing is kept.
    pub fn new(window: Duration, max_bytes: usize) -> Self {
        Resend {
            window,
            max_bytes,
            kept: VecDeque::new(),
            bytes: 0,
        }
    }

    /// The broker acknowledged `msg` at `now`. A message already kept (a copy sent again and
    /// acknowledged again) keeps its first time: nothing is resent beyond the window.
    pub fn acknowledged(&mut self, now: Instant, msg: Message) {
        if self.window.is_zero() {
            return;
        }
        let digest = digest(&msg);
        if self
            .kept
            .iter()
            .any(|(_, d, m)| *d == digest && m.topic == msg.topic && m.payload == msg.payload)
        {
            return;
        }
        self.bytes += cost(&msg);
        self.kept.push_back((now, digest, msg));
        self.prune(now);
    }

    /// What to publish again on a new connection at `now`, oldest first (kept: a broker that
    /// crashes again soon after loses the copies too).
    pub fn due(&mut self, now: Instant) -> VecDeque<Message> {
        self.prune(now);
        self.kept.iter().map(|(_, _, m)| m.clone()).collect()
    }

    fn prune(&mut self, now: Instant) {
        while let Some((at, _, m)) = self.kept.front() {
            let old = now.saturating_duration_since(*at) > self.window;
            if !old && self.bytes <= self.max_bytes {
                break;
            }
            self.bytes -= cost(m);
            self.kept.pop_front();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.len()
    }
}

fn cost(m: &Message) -> usize {
    m.topic.len() + m.payload.len()
}

/// A cheap first test before comparing bytes: FNV-1a over the length and the first and last
/// 64 bytes (where a message's seq and, sealed, its mac are). Hashing every byte of every
/// acknowledged report was 4 % of the agent's instructions.
fn digest(m: &Message) -> u64 {
    let p = &m.payload;
    let (head, tail) = (&p[..p.len().min(64)], &p[p.len().saturating_sub(64)..]);
    let h0 = 0xcbf2_9ce4_8422_2325 ^ p.len() as u64;
    head.iter().chain(tail).fold(h0, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, len: usize) -> Message {
        let mut payload = format!("{{\"seq\":{seq}}}").into_bytes();
        payload.resize(len.max(payload.len()), b' ');
        Message {
            topic: "leakmon/v1/nodes/n/host".into(),
            payload,
            retain: false,
        }
    }

    fn seqs(q: &VecDeque<Message>) -> Vec<String> {
        q.iter()
            .map(|m| String::from_utf8_lossy(&m.payload).trim().to_owned())
            .collect()
    }

    #[test]
    fn keeps_the_window_oldest_first_and_resends_it_on_every_connection() {
        let t0 = Instant::now();
        let mut r = Resend::new(Duration::from_secs(30), MAX_BYTES);
        for s in 1..=5 {
            r.acknowledged(t0 + Duration::from_secs(s * 10), msg(s, 0));
        }
        // at 55 s: acknowledged at 30, 40, 50 s are within 30 s
        let due = r.due(t0 + Duration::from_secs(55));
        assert_eq!(seqs(&due), ["{\"seq\":3}", "{\"seq\":4}", "{\"seq\":5}"]);
        // still kept for the next connection (the broker may crash again)
        assert_eq!(r.due(t0 + Duration::from_secs(56)).len(), 3);
    }

    #[test]
    fn a_copy_acknowledged_again_keeps_its_first_time() {
        let t0 = Instant::now();
        let mut r = Resend::new(Duration::from_secs(30), MAX_BYTES);
        r.acknowledged(t0, msg(1, 0));
        // resent on a reconnect 20 s later and acknowledged again
        r.acknowledged(t0 + Duration::from_secs(20), msg(1, 0));
        assert_eq!(r.len(), 1);
        // gone once 30 s passed since the first acknowledgement: never resent for ever
        assert!(r.due(t0 + Duration::from_secs(31)).is_empty());
    }

    #[test]
    fn bounded_in_bytes_the_oldest_going_first() {
        let t0 = Instant::now();
        let mut r = Resend::new(Duration::from_secs(30), 10_000);
        for s in 1..=5 {
            r.acknowledged(t0, msg(s, 3_000));
        }
        let due = r.due(t0);
        assert_eq!(due.len(), 3, "{:?}", seqs(&due));
        assert!(seqs(&due)[0].starts_with("{\"seq\":3}"));
    }

    #[test]
    fn a_zero_window_keeps_nothing() {
        let t0 = Instant::now();
        let mut r = Resend::new(Duration::ZERO, MAX_BYTES);
        r.acknowledged(t0, msg(1, 0));
        assert!(r.due(t0).is_empty());
    }
}
