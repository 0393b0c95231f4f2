//! The bounded in-memory store-and-forward queue. Pure: no clock, no I/O.
//!
//! Bound: the sum of [`Message::cost`] of queued messages never exceeds `max_bytes`. When a
//! new message does not fit, the oldest messages are dropped until it does, and counted.
//! A `VecDeque` of owned messages is used rather than `heapless`: messages vary from 200 bytes
//! (an event) to tens of KiB (a containers report), so a byte budget is the honest bound, and a
//! fixed-slot ring sized for the largest message would hold a tenth as many.

use std::collections::VecDeque;

/// Bytes counted for a message beyond its topic and payload (allocation headers, fields).
pub const OVERHEAD: usize = 64;

/// One MQTT publish, always QoS 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

const RETAIN: u8 = 1;

impl Message {
    pub fn cost(&self) -> usize {
        self.topic.len() + self.payload.len() + OVERHEAD
    }

    /// The spool record of a message: `flags: u8 | topic_len: u16 LE | topic | payload`.
    pub fn to_record(&self) -> Vec<u8> {
        let topic = self.topic.as_bytes();
        let topic_len = topic.len().min(u16::MAX as usize);
        let mut body = Vec::with_capacity(3 + topic_len + self.payload.len());
        body.push(if self.retain { RETAIN } else { 0 });
        body.extend_from_slice(&(topic_len as u16).to_le_bytes());
        body.extend_from_slice(&topic[..topic_len]);
        body.extend_from_slice(&self.payload);
        body
    }

    pub fn from_record(body: &[u8]) -> Option<Message> {
        let flags = *body.first()?;
        let tl = u16::from_le_bytes([*body.get(1)?, *body.get(2)?]) as usize;
        let topic = std::str::from_utf8(body.get(3..3 + tl)?).ok()?.to_owned();
        Some(Message {
            topic,
            payload: body[3 + tl..].to_vec(),
            retain: flags & RETAIN != 0,
        })
    }
}

#[derive(Debug)]
pub struct Queue {
    items: VecDeque<Message>,
    bytes: usize,
    max_bytes: usize,
    dropped_total: u64,
}

impl Queue {
    pub fn new(max_bytes: usize) -> Self {
        Queue {
            items: VecDeque::new(),
            bytes: 0,
            max_bytes,
            dropped_total: 0,
        }
    }

    /// Appends a message, dropping the oldest while over budget. Returns how many were dropped
    /// (a message larger than the whole budget is itself dropped).
    pub fn push(&mut self, m: Message) -> usize {
        self.bytes += m.cost();
        self.items.push_back(m);
        self.trim()
    }

    /// Puts messages back at the front, in their order (unacknowledged in-flight messages
    /// after a lost connection). They are the oldest, so they are the first to go if over.
    pub fn requeue_front(&mut self, msgs: impl DoubleEndedIterator<Item = Message>) -> usize {
        for m in msgs.rev() {
            self.bytes += m.cost();
            self.items.push_front(m);
        }
        self.trim()
    }

    fn trim(&mut self) -> usize {
        let mut dropped = 0;
        while self.bytes > self.max_bytes {
            match self.items.pop_front() {
                Some(old) => {
                    self.bytes -= old.cost();
                    dropped += 1;
                }
                None => break,
            }
        }
        self.dropped_total += dropped as u64;
        dropped
    }

    pub fn pop(&mut self) -> Option<Message> {
        let m = self.items.pop_front()?;
        self.bytes -= m.cost();
        Some(m)
    }

    /// Takes every message out, oldest first.
    pub fn drain(&mut self) -> Vec<Message> {
        self.bytes = 0;
        self.items.drain(..).collect()
    }

    /// Counts messages dropped by another buffer (the spool) in the same total.
    pub fn count_dropped(&mut self, n: u64) {
        self.dropped_total += n;
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: usize, size: usize) -> Message {
        Message {
            topic: format!("t/{i}"),
            payload: vec![b'x'; size],
            retain: false,
        }
    }

    fn ids(q: &mut Queue) -> Vec<String> {
        std::iter::from_fn(|| q.pop()).map(|m| m.topic).collect()
    }

    #[test]
    fn fifo_within_budget() {
        let mut q = Queue::new(10_000);
        for i in 0..5 {
            assert_eq!(q.push(msg(i, 100)), 0);
        }
        assert_eq!(q.len(), 5);
        assert_eq!(q.bytes(), 5 * (100 + 3 + OVERHEAD));
        assert_eq!(ids(&mut q), ["t/0", "t/1", "t/2", "t/3", "t/4"]);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn full_drops_oldest_and_counts() {
        let one = 100 + 3 + OVERHEAD;
        let mut q = Queue::new(3 * one);
        for i in 0..5 {
            q.push(msg(i, 100));
        }
        assert_eq!(q.dropped_total(), 2);
        assert!(q.bytes() <= 3 * one);
        assert_eq!(ids(&mut q), ["t/2", "t/3", "t/4"]);
    }

    #[test]
    fn oversized_message_is_dropped_not_wedged() {
        let mut q = Queue::new(500);
        q.push(msg(0, 10));
        assert_eq!(q.push(msg(1, 10_000)), 2);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
        q.push(msg(2, 10));
        assert_eq!(ids(&mut q), ["t/2"]);
    }

    #[test]
    fn requeue_puts_inflight_first_in_order() {
        let mut q = Queue::new(10_000);
        q.push(msg(3, 10));
        q.requeue_front(vec![msg(1, 10), msg(2, 10)].into_iter());
        assert_eq!(ids(&mut q), ["t/1", "t/2", "t/3"]);
    }

    #[test]
    fn requeue_over_budget_drops_the_oldest() {
        let one = 10 + 3 + OVERHEAD;
        let mut q = Queue::new(2 * one);
        q.push(msg(3, 10));
        q.push(msg(4, 10));
        assert_eq!(q.requeue_front(vec![msg(1, 10), msg(2, 10)].into_iter()), 2);
        assert_eq!(ids(&mut q), ["t/3", "t/4"]);
    }

    #[test]
    fn spool_record_round_trip() {
        for m in [
            msg(1, 0),
            msg(2, 100),
            Message {
                retain: true,
                ..msg(3, 5)
            },
        ] {
            assert_eq!(Message::from_record(&m.to_record()), Some(m));
        }
        assert_eq!(Message::from_record(&[]), None);
        assert_eq!(
            Message::from_record(&[0, 9, 0, b'a']),
            None,
            "topic runs past the end"
        );
    }

    #[test]
    fn drain_empties() {
        let mut q = Queue::new(10_000);
        q.push(msg(0, 1));
        q.push(msg(1, 1));
        let d = q.drain();
        assert_eq!(d.len(), 2);
        assert_eq!((q.len(), q.bytes()), (0, 0));
    }
}
