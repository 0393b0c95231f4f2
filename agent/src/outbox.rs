//! Store-and-forward: the memory queue and, optionally, the disk spool, behind one door.
//!
//! While online, new messages wait in memory (briefly: they are sent at once). While offline,
//! they go to the spool if there is one, else to memory. Order is kept across both: the spool
//! always holds older messages than memory, so it is emptied first; when the link drops, what
//! was in flight is put back in front, and (with a spool) memory moves to the spool's tail.

use std::time::Instant;

use leakmon_protocol::BufferStats;

use crate::queue::{Message, Queue};
use leakmon_common::spool::{RecordPos, Spool};

/// Where an in-flight message came from, so its acknowledgement can be credited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Origin {
    Memory,
    Spool(RecordPos),
    /// A per-connection status message (birth, goodbye): not resent on another connection.
    Transient,
}

pub struct Outbox {
    mem: Queue,
    spool: Option<Spool>,
    online: bool,
}

impl Outbox {
    pub fn new(max_bytes: usize, spool: Option<Spool>) -> Self {
        Outbox {
            mem: Queue::new(max_bytes),
            spool,
            online: false,
        }
    }

    pub fn push(&mut self, m: Message, now: Instant) {
        if !self.online {
            if let Some(sp) = self.spool.as_mut() {
                match sp.append(&m.to_record(), now) {
                    Ok(_) => {
                        let d = sp.take_dropped();
                        self.mem.count_dropped(d);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot write to the spool; queueing in memory");
                    }
                }
            }
        }
        let dropped = self.mem.push(m);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                dropped_total = self.mem.dropped_total(),
                "buffer full: dropped the oldest messages"
            );
        }
    }

    /// The next message to send, oldest first.
    pub fn next(&mut self) -> Option<(Message, Origin)> {
        if let Some(sp) = self.spool.as_mut() {
            loop {
                match sp.next_record() {
                    Ok(Some((body, pos))) => match Message::from_record(&body) {
                        Some(m) => return Some((m, Origin::Spool(pos))),
                        None => {
                            // Checksummed but not ours (a file from another program?).
                            tracing::warn!("skipping an unreadable spool record");
                            self.mem.count_dropped(1);
                            let _ = sp.ack(pos);
                        }
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the spool");
                        break;
                    }
                }
            }
            let d = sp.take_dropped();
            self.mem.count_dropped(d);
        }
        self.mem.pop().map(|m| (m, Origin::Memory))
    }

    pub fn ack(&mut self, origin: Origin) {
        if let (Origin::Spool(pos), Some(sp)) = (origin, self.spool.as_mut()) {
            if let Err(e) = sp.ack(pos) {
                tracing::warn!(error = %e, "cannot delete a delivered spool segment");
            }
        }
    }

    pub fn set_online(&mut self) {
        self.online = true;
    }

    /// The link is gone: take back what was in flight (oldest first) and, with a spool, move
    /// memory to disk.
    pub fn set_offline(&mut self, inflight: Vec<(Message, Origin)>, now: Instant) {
        self.online = false;
        let first_spooled = inflight.iter().find_map(|(_, o)| match o {
            Origin::Spool(p) => Some(*p),
            _ => None,
        });
        if let Some(sp) = self.spool.as_mut() {
            sp.rewind(first_spooled);
        }
        let from_memory = inflight
            .into_iter()
            .filter(|(_, o)| *o == Origin::Memory)
            .map(|(m, _)| m);
        self.mem
            .requeue_front(from_memory.collect::<Vec<_>>().into_iter());
        if self.spool.is_some() {
            for m in self.mem.drain() {
                self.push(m, now);
            }
        }
    }

    /// Makes what is buffered durable before exit; returns how many messages are lost
    /// (memory without a spool).
    pub fn close(&mut self, inflight: Vec<(Message, Origin)>, now: Instant) -> usize {
        self.set_offline(inflight, now);
        if let Some(sp) = self.spool.as_mut() {
            if let Err(e) = sp.save_cursor() {
                tracing::warn!(error = %e, "cannot save the spool position");
            }
        }
        self.mem.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mem.is_empty() && self.spool.as_ref().is_none_or(|s| s.is_drained())
    }

    pub fn stats(&self) -> BufferStats {
        BufferStats {
            queued: self.mem.len() as u64,
            queued_bytes: self.mem.bytes() as u64,
            spooled_bytes: self.spool.as_ref().map(|s| s.bytes()).unwrap_or(0),
            dropped_total: self.mem.dropped_total(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: usize) -> Message {
        Message {
            topic: format!("t/{i}"),
            payload: vec![b'x'; 10],
            retain: false,
        }
    }

    /// Sends up to `n` messages, acking all but the last `unacked`; returns (sent, in flight).
    fn send(o: &mut Outbox, n: usize, unacked: usize) -> (Vec<String>, Vec<(Message, Origin)>) {
        let mut sent = vec![];
        let mut flight = vec![];
        for _ in 0..n {
            let Some((m, origin)) = o.next() else { break };
            sent.push(m.topic.clone());
            flight.push((m, origin));
        }
        let keep = flight.split_off(flight.len().saturating_sub(unacked));
        for (_, origin) in flight {
            o.ack(origin);
        }
        (sent, keep)
    }

    fn names(r: std::ops::Range<usize>) -> Vec<String> {
        r.map(|i| format!("t/{i}")).collect()
    }

    fn scenario(spool: bool) {
        let dir = tempfile::tempdir().unwrap();
        let sp = spool.then(|| Spool::open(dir.path(), 1 << 20).unwrap());
        let mut o = Outbox::new(1 << 20, sp);
        let now = Instant::now();
        // Offline from the start: 0..5 queue up.
        for i in 0..5 {
            o.push(msg(i), now);
        }
        o.set_online();
        // Sent 0..3; 1 and 2 are in flight when the link drops.
        let (sent, flight) = send(&mut o, 3, 2);
        assert_eq!(sent, names(0..3));
        o.set_offline(flight, now);
        for i in 5..8 {
            o.push(msg(i), now);
        }
        o.set_online();
        o.push(msg(8), now);
        let (sent, flight) = send(&mut o, 100, 0);
        assert!(flight.is_empty());
        assert_eq!(sent, names(1..9), "in flight first, then in order");
        assert!(o.is_empty());
    }

    #[test]
    fn order_kept_across_outage_in_memory() {
        scenario(false);
    }

    #[test]
    fn order_kept_across_outage_with_spool() {
        scenario(true);
    }

    #[test]
    fn second_outage_during_drain_keeps_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::new(1 << 20, Some(Spool::open(dir.path(), 1 << 20).unwrap()));
        let now = Instant::now();
        for i in 0..6 {
            o.push(msg(i), now);
        }
        o.set_online();
        o.push(msg(6), now); // online: memory, behind the spool
        let (sent, flight) = send(&mut o, 2, 1);
        assert_eq!(sent, names(0..2));
        o.set_offline(flight, now); // 1 in flight; 6 moves to the spool tail
        o.push(msg(7), now);
        o.set_online();
        let (sent, _) = send(&mut o, 100, 0);
        assert_eq!(sent, names(1..8));
    }

    #[test]
    fn close_with_spool_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Outbox::new(1 << 20, Some(Spool::open(dir.path(), 1 << 20).unwrap()));
            let now = Instant::now();
            o.set_online();
            for i in 0..3 {
                o.push(msg(i), now);
            }
            let (_, flight) = send(&mut o, 1, 1);
            assert_eq!(o.close(flight, now), 0);
        }
        let mut o = Outbox::new(1 << 20, Some(Spool::open(dir.path(), 1 << 20).unwrap()));
        o.set_online();
        assert_eq!(send(&mut o, 100, 0).0, names(0..3));
    }

    #[test]
    fn stats_count_drops() {
        let mut o = Outbox::new(1000, None);
        let now = Instant::now();
        for i in 0..100 {
            o.push(msg(i), now);
        }
        let s = o.stats();
        assert!(s.dropped_total > 0);
        assert_eq!(s.queued + s.dropped_total, 100);
        assert!(s.queued_bytes <= 1000);
    }
}
