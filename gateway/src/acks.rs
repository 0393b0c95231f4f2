//! Acknowledging agents' messages only once what they carry is durable (with a spool): pure.
//!
//! With `influxdb.spool_dir` set, the active gateway takes MQTT messages with manual
//! acknowledgements. Every message gets a sequence number as it arrives; the lines it yields go
//! to the database writer tagged with it. The writer says how far everything is durable
//! ([`Durable`]: below which number every line it received is written, refused for good, or
//! fsynced to the spool), and the connection acknowledges, in arrival order, each message
//! that yielded no lines or whose number is below that mark. A crash then loses nothing the
//! broker counts as delivered: what was not acknowledged comes again to the persistent session
//! (a line written twice is the same point).
//!
//! The broker sends only so many unacknowledged messages (mosquitto's
//! `max_inflight_messages`, 20 by default; RabbitMQ's prefetch, 10): once [`FLUSH_AT`] wait,
//! the writer sends its partial batch at once instead of waiting for `flush_interval`, so
//! throughput is a window per database round trip, not a window per `flush_interval`.

use std::collections::VecDeque;

use tokio::sync::watch;

/// Lines for the database writer: line protocol and the number of the message it came from
/// (0: made by the gateway itself, e.g. a status change or an event).
pub type Delivery = (String, u64);

/// Messages waiting for durability at which the writer flushes its partial batch. Below every
/// common broker's window (mosquitto 20, EMQX 32, RabbitMQ 10).
pub const FLUSH_AT: usize = 8;

/// A message waiting for its acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Waiting<P> {
    seq: u64,
    /// It yielded lines for the database (else it is acknowledged once all before it are).
    lines: bool,
    ack: P,
}

/// The messages of one connection not yet acknowledged, in arrival order. `P` is what
/// acknowledging one takes (the client's packet id).
#[derive(Debug)]
pub struct AckQueue<P> {
    waiting: VecDeque<Waiting<P>>,
    next_seq: u64,
}

impl<P> Default for AckQueue<P> {
    fn default() -> Self {
        AckQueue {
            waiting: VecDeque::new(),
            next_seq: 1,
        }
    }
}

impl<P> AckQueue<P> {
    /// The number of the next message (numbers only grow, across connections too: 0 means
    /// "no message", for lines made by the gateway itself).
    pub fn next_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Message `seq` was handled; `lines`: it gave the writer lines.
    pub fn handled(&mut self, seq: u64, lines: bool, ack: P) {
        self.waiting.push_back(Waiting { seq, lines, ack });
    }

    /// Those to acknowledge now, in order, given that every line numbered below
    /// `durable_below` is durable. `take` is offered each in turn and returns `false` when
    /// it cannot take more now (the client's queue is full): the rest waits.
    pub fn release(&mut self, durable_below: u64, mut take: impl FnMut(&P) -> bool) {
        while let Some(w) = self.waiting.front() {
            if w.lines && w.seq >= durable_below {
                return;
            }
            if !take(&w.ack) {
                return;
            }
            self.waiting.pop_front();
        }
    }

    /// Messages waiting for their acknowledgement (with lines or behind one that has): the
    /// writer's cue to flush, as they all take the broker's window.
    pub fn pressure(&self) -> usize {
        self.waiting.len()
    }

    /// The connection is gone: what it did not acknowledge comes again on the next one.
    pub fn connection_lost(&mut self) {
        self.waiting.clear();
    }
}

/// What the writer tells the connection, and the connection the writer.
#[derive(Debug, Clone)]
pub struct Durable {
    /// Every line numbered below this is durable (from the writer).
    pub below: watch::Receiver<u64>,
    /// Messages with lines waiting for their acknowledgement (from the connection).
    pub pressure: watch::Sender<usize>,
}

/// The writer's side of [`Durable`].
#[derive(Debug)]
pub struct DurableWriter {
    pub below: watch::Sender<u64>,
    pub pressure: watch::Receiver<usize>,
}

/// A linked pair.
pub fn link() -> (Durable, DurableWriter) {
    let (below_tx, below) = watch::channel(0);
    let (pressure, pressure_rx) = watch::channel(0);
    (
        Durable { below, pressure },
        DurableWriter {
            below: below_tx,
            pressure: pressure_rx,
        },
    )
}

/// Where everything is durable below, from what is not: the first message numbers of the
/// batches still only in memory (0: none to track) and the highest number received.
pub fn durable_below(not_durable: impl IntoIterator<Item = u64>, received_max: u64) -> u64 {
    not_durable
        .into_iter()
        .filter(|s| *s > 0)
        .min()
        .unwrap_or(u64::MAX)
        .min(received_max.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(q: &mut AckQueue<u16>, below: u64) -> Vec<u16> {
        let mut out = Vec::new();
        q.release(below, |p| {
            out.push(*p);
            true
        });
        out
    }

    #[test]
    fn acknowledged_in_order_once_durable() {
        let mut q = AckQueue::default();
        let (a, b, c, d) = (q.next_seq(), q.next_seq(), q.next_seq(), q.next_seq());
        q.handled(a, true, 1);
        q.handled(b, false, 2); // a status: no lines
        q.handled(c, true, 3);
        q.handled(d, false, 4);
        assert_eq!(q.pressure(), 4, "all four take the broker's window");
        assert_eq!(
            released(&mut q, a),
            Vec::<u16>::new(),
            "nothing durable yet"
        );
        assert_eq!(released(&mut q, b), [1, 2], "a durable; b has no lines");
        assert_eq!(released(&mut q, c), Vec::<u16>::new());
        assert_eq!(q.pressure(), 2);
        assert_eq!(released(&mut q, d), [3, 4]);
        assert_eq!(q.pressure(), 0);
    }

    #[test]
    fn messages_without_lines_first_in_line_go_at_once() {
        let mut q = AckQueue::default();
        let s = q.next_seq();
        q.handled(s, false, 9);
        assert_eq!(released(&mut q, 0), [9]);
    }

    #[test]
    fn a_full_client_queue_holds_the_rest_for_later() {
        let mut q = AckQueue::default();
        for p in 1..=3 {
            let s = q.next_seq();
            q.handled(s, true, p);
        }
        let mut n = 0;
        q.release(u64::MAX, |_| {
            n += 1;
            n <= 2
        });
        assert_eq!(q.pressure(), 1);
        assert_eq!(released(&mut q, u64::MAX), [3]);
    }

    #[test]
    fn a_lost_connection_forgets_its_messages_but_numbers_keep_growing() {
        let mut q = AckQueue::default();
        let s = q.next_seq();
        q.handled(s, true, 1);
        q.connection_lost();
        assert_eq!(q.pressure(), 0);
        assert_eq!(released(&mut q, u64::MAX), Vec::<u16>::new());
        assert!(q.next_seq() > s);
    }

    #[test]
    fn durable_below_the_oldest_batch_only_in_memory() {
        assert_eq!(durable_below([], 0), 1, "nothing received");
        assert_eq!(durable_below([], 41), 42, "all received is durable");
        assert_eq!(durable_below([7, 0, 12], 41), 7);
        assert_eq!(durable_below([0], u64::MAX), u64::MAX);
    }
}
