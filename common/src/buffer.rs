//! Store-and-forward: one bounded buffer, memory first and then the disk spool, used by both
//! binaries: the agent's MQTT messages while the broker is away, the gateway's line-protocol
//! batches while the database is down.
//!
//! **Order.** Items leave in the order they came in. The spool always holds older items than
//! memory, so it is emptied first; items handed out and given back (in flight when a link
//! dropped) go back in front.
//!
//! **Where an item goes.** While the peer is reachable ([`Buffer::set_online`], the initial
//! state) an item waits in memory. It goes to the spool instead, when there is one, if the peer
//! is away ([`Buffer::set_offline`]: memory moves to the spool then, so a crash while offline
//! loses nothing) or if memory is full (memory moves to the spool's tail first, then the item
//! follows, so order holds).
//!
//! **The one drop rule.** Memory holds at most `max_bytes` (the sum of [`Item::cost`]). When an
//! item does not fit and there is no spool (or the disk fails), the oldest items in memory are
//! dropped until it does; an item larger than the whole bound is itself dropped. The spool
//! holds at most its own `max_bytes` and deletes its oldest segment to make room. Every drop is
//! counted in `dropped_total`: memory drops in [`Item::units`] (messages, lines), spool drops in
//! records (a segment is deleted without being read).
//!
//! The memory part is pure; the spool does the disk I/O, so a buffer without one is a pure
//! data structure and is unit-tested as such.

use std::collections::VecDeque;

use leakmon_protocol::BufferStats;

use crate::spool::{RecordPos, Spool};

/// What a buffer holds.
pub trait Item: Sized {
    /// Bytes this item counts against the memory bound.
    fn cost(&self) -> usize;
    /// What dropping this item counts as in `dropped_total`.
    fn units(&self) -> u64 {
        1
    }
    /// Its spool record.
    fn to_record(&self) -> Vec<u8>;
    /// Back from a spool record; `None` if the record is not one of ours.
    fn from_record(body: Vec<u8>) -> Option<Self>;
    /// What its owner tracks its durability by (the gateway: the number of the first MQTT
    /// message whose lines it holds); 0: nothing. See [`Buffer::deferring_sync`].
    fn mark(&self) -> u64 {
        0
    }
}

/// Forcing spilled items to disk, taken by [`Buffer::start_sync`] to run off the event loop.
#[derive(Debug)]
pub struct SyncJob {
    file: std::io::Result<std::fs::File>,
    /// The lowest [`Item::mark`] (above 0) among the items it makes durable; `u64::MAX`: none.
    pub mark: u64,
}

impl SyncJob {
    /// Forces the items to disk (blocking: run it on a thread that may block).
    pub fn run(self) -> std::io::Result<()> {
        self.file?.sync_data()
    }
}

/// Bytes counted for a message beyond its topic and payload (allocation headers, fields).
pub const MESSAGE_OVERHEAD: usize = 64;

/// One MQTT publish (always QoS 1): what the agent buffers and what the gateway publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

const RETAIN: u8 = 1;

impl Item for Message {
    fn cost(&self) -> usize {
        self.topic.len() + self.payload.len() + MESSAGE_OVERHEAD
    }

    /// `flags: u8 | topic_len: u16 LE | topic | payload`.
    fn to_record(&self) -> Vec<u8> {
        let topic = self.topic.as_bytes();
        let topic_len = topic.len().min(u16::MAX as usize);
        let mut body = Vec::with_capacity(3 + topic_len + self.payload.len());
        body.push(if self.retain { RETAIN } else { 0 });
        body.extend_from_slice(&(topic_len as u16).to_le_bytes());
        body.extend_from_slice(&topic[..topic_len]);
        body.extend_from_slice(&self.payload);
        body
    }

    fn from_record(body: Vec<u8>) -> Option<Message> {
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

/// A batch of line protocol: costs its length, counts its lines.
impl Item for String {
    fn cost(&self) -> usize {
        self.len()
    }

    fn units(&self) -> u64 {
        self.as_bytes().iter().filter(|c| **c == b'\n').count() as u64
    }

    fn to_record(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn from_record(body: Vec<u8>) -> Option<String> {
        String::from_utf8(body).ok()
    }
}

/// Where an item handed out came from, so its acknowledgement can be credited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Memory,
    Spool(RecordPos),
}

pub struct Buffer<T> {
    mem: VecDeque<T>,
    mem_bytes: usize,
    max_bytes: usize,
    spool: Option<Spool>,
    online: bool,
    dropped_total: u64,
    sync_failed: bool,
    /// Spilling leaves the forcing to disk to [`Buffer::start_sync`].
    defer_sync: bool,
    /// The lowest mark spilled since the last [`Buffer::start_sync`] (`u64::MAX`: none).
    unsynced: u64,
}

impl<T: Item> Buffer<T> {
    /// An empty buffer, online.
    pub fn new(max_bytes: usize, spool: Option<Spool>) -> Self {
        Buffer {
            mem: VecDeque::new(),
            mem_bytes: 0,
            max_bytes,
            spool,
            online: true,
            dropped_total: 0,
            sync_failed: false,
            defer_sync: false,
            unsynced: u64::MAX,
        }
    }

    /// The same buffer, leaving the forcing of spilled items to disk to its owner (the
    /// gateway's writer, which must not block its event loop on an fsync for every batch it
    /// spills): spilling only writes, and [`Buffer::start_sync`] hands out one job forcing
    /// everything spilled since the last, a group commit. Until a job for an item has run, the
    /// item is not durable: its [`Item::mark`] is in [`Buffer::unsynced_mark`] and then in the
    /// job's.
    pub fn deferring_sync(mut self) -> Self {
        self.defer_sync = true;
        self
    }

    /// The lowest mark spilled and not yet in a sync job (`u64::MAX`: none).
    pub fn unsynced_mark(&self) -> u64 {
        self.unsynced
    }

    /// One job forcing what was spilled since the last (`None`: nothing waits). A handle the
    /// job could not get is its error, and the marks stay waiting for the next.
    pub fn start_sync(&mut self) -> Option<SyncJob> {
        let Some(file) = self.spool.as_mut()?.sync_job() else {
            // Nothing waits to be forced, yet marks may: what was spilled since the last job
            // was forced in place (a new segment forces the one before it; closing forces all).
            // Held, they would hold every acknowledgement behind them for good.
            self.unsynced = u64::MAX;
            return None;
        };
        let mark = if file.is_ok() {
            std::mem::replace(&mut self.unsynced, u64::MAX)
        } else {
            self.unsynced
        };
        Some(SyncJob { file, mark })
    }

    /// A job from [`Buffer::start_sync`] ended. A failure is logged and counted as
    /// [`Buffer::sync_failed`] until one succeeds; its marks go back to waiting (what it
    /// covered may not be on disk) and the spool is forced again by the next job.
    pub fn sync_done(&mut self, mark: u64, result: std::io::Result<()>) {
        match result {
            Ok(()) => self.sync_failed = false,
            Err(e) => {
                tracing::warn!(error = %e,
                    "cannot force the spool to disk; a power cut now may lose its last records");
                self.sync_failed = true;
                self.unsynced = self.unsynced.min(mark);
                if let Some(sp) = self.spool.as_mut() {
                    sp.mark_dirty();
                }
            }
        }
    }

    /// The same buffer, offline until [`Buffer::set_online`] (the agent, before its first
    /// connection: items go to the spool, if there is one).
    pub fn starting_offline(mut self) -> Self {
        self.online = false;
        self
    }

    pub fn push(&mut self, item: T) {
        let full = self.mem_bytes + item.cost() > self.max_bytes;
        if (!self.online || full) && self.spool.is_some() {
            self.spill_memory(Some(item));
            return;
        }
        self.keep_back(item);
    }

    /// Moves memory to the spool's tail, then `item` after it (memory first, so the spool
    /// stays the older part). What the disk refuses stays in memory rather than being lost.
    fn spill_memory(&mut self, item: Option<T>) {
        let moved: Vec<T> = self.mem.drain(..).collect();
        self.mem_bytes = 0;
        for i in moved.into_iter().chain(item) {
            if let Err(i) = self.spill(i) {
                self.keep_back(i);
            }
        }
        // on disk before anyone counts them kept; one sync for the lot (or the owner's job)
        if let Some(sp) = self.spool.as_mut().filter(|_| !self.defer_sync) {
            self.sync_failed = !sp.sync_or_warn();
        }
    }

    /// Appends to the spool; gives the item back if the disk failed.
    fn spill(&mut self, item: T) -> Result<(), T> {
        let Some(sp) = self.spool.as_mut() else {
            return Err(item);
        };
        match sp.append_unsynced(&item.to_record()) {
            Ok(_) => {
                if self.defer_sync && item.mark() > 0 {
                    self.unsynced = self.unsynced.min(item.mark());
                }
                let dropped = sp.take_dropped();
                if dropped > 0 {
                    tracing::warn!(records = dropped, "spool full: dropped its oldest segment");
                    self.dropped_total += dropped;
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write to the spool; keeping in memory");
                Err(item)
            }
        }
    }

    fn keep_back(&mut self, item: T) {
        self.mem_bytes += item.cost();
        self.mem.push_back(item);
        self.trim();
    }

    /// Drops the oldest items while memory is over its bound.
    fn trim(&mut self) {
        let mut units = 0;
        while self.mem_bytes > self.max_bytes {
            let Some(old) = self.mem.pop_front() else {
                break;
            };
            self.mem_bytes -= old.cost();
            units += old.units();
        }
        if units > 0 {
            self.dropped_total += units;
            tracing::warn!(
                dropped = units,
                dropped_total = self.dropped_total,
                "buffer full: dropped the oldest"
            );
        }
    }

    /// The oldest item not yet handed out.
    pub fn next_item(&mut self) -> Option<(T, Origin)> {
        if let Some(sp) = self.spool.as_mut() {
            loop {
                match sp.next_record() {
                    Ok(Some((body, pos))) => match T::from_record(body) {
                        Some(i) => return Some((i, Origin::Spool(pos))),
                        None => {
                            // Checksummed but not ours (a file from another program?).
                            tracing::warn!("skipping an unreadable spool record");
                            self.dropped_total += 1;
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
            self.dropped_total += sp.take_dropped();
        }
        let i = self.mem.pop_front()?;
        self.mem_bytes -= i.cost();
        Some((i, Origin::Memory))
    }

    /// An item handed out was delivered (or settled for good).
    pub fn ack(&mut self, origin: Origin) {
        if let (Origin::Spool(pos), Some(sp)) = (origin, self.spool.as_mut()) {
            if let Err(e) = sp.ack(pos) {
                tracing::warn!(error = %e, "cannot delete a delivered spool segment");
            }
        }
    }

    /// The last forcing of the spool to disk failed (a dying disk): what was spilled since may
    /// not survive a power cut. Cleared by the next one that succeeds.
    pub fn sync_failed(&self) -> bool {
        self.sync_failed
    }

    /// Nothing on disk left to hand out (or no spool).
    pub fn spool_drained(&self) -> bool {
        self.spool.as_ref().is_none_or(|s| s.is_drained())
    }

    /// The items held in memory now (not on disk), oldest first.
    pub fn in_memory(&self) -> impl Iterator<Item = &T> {
        self.mem.iter()
    }

    /// Whether items can go to disk.
    pub fn has_spool(&self) -> bool {
        self.spool.is_some()
    }

    pub fn set_online(&mut self) {
        self.online = true;
    }

    /// The peer is gone: take back what was handed out and not acknowledged (oldest first)
    /// and, with a spool, move memory to disk.
    pub fn set_offline(&mut self, unacked: Vec<(T, Origin)>) {
        self.online = false;
        self.give_back(unacked);
        if self.spool.is_none() {
            self.trim();
        } else {
            self.spill_memory(None);
        }
    }

    /// Items handed out and not acknowledged go back in front, in their order: spool records
    /// are read again from the oldest, memory items are put back.
    fn give_back(&mut self, unacked: Vec<(T, Origin)>) {
        let first_spooled = unacked
            .iter()
            .filter_map(|(_, o)| match o {
                Origin::Spool(p) => Some(*p),
                Origin::Memory => None,
            })
            .min();
        if let Some(sp) = self.spool.as_mut() {
            sp.rewind(first_spooled);
        }
        for (i, _) in unacked
            .into_iter()
            .rev()
            .filter(|(_, o)| *o == Origin::Memory)
        {
            self.mem_bytes += i.cost();
            self.mem.push_front(i);
        }
    }

    /// Makes what is held durable before exit: what was handed out and not acknowledged, and
    /// memory, go to the spool, whose read position is saved. Returns the units lost (memory
    /// without a spool).
    pub fn close(&mut self, unacked: Vec<(T, Origin)>) -> u64 {
        self.set_offline(unacked);
        if let Some(sp) = self.spool.as_mut() {
            if let Err(e) = sp.save_cursor() {
                tracing::warn!(error = %e, "cannot save the spool position");
            }
        }
        self.mem.iter().map(Item::units).sum()
    }

    /// Nothing left to hand out.
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty() && self.spool.as_ref().is_none_or(|s| s.is_drained())
    }

    pub fn stats(&self) -> BufferStats {
        BufferStats {
            queued: self.mem.len() as u64,
            queued_bytes: self.mem_bytes as u64,
            spooled_bytes: self.spool.as_ref().map(|s| s.bytes()).unwrap_or(0),
            dropped_total: self.dropped_total,
        }
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

    fn cost(size: usize) -> usize {
        msg(0, size).cost()
    }

    fn names(r: std::ops::Range<usize>) -> Vec<String> {
        r.map(|i| format!("t/{i}")).collect()
    }

    /// Hands out up to `n`, acknowledging all but the last `unacked`; returns (topics handed
    /// out, still unacknowledged).
    fn send(
        b: &mut Buffer<Message>,
        n: usize,
        unacked: usize,
    ) -> (Vec<String>, Vec<(Message, Origin)>) {
        let mut sent = vec![];
        let mut flight = vec![];
        for _ in 0..n {
            let Some((m, origin)) = b.next_item() else {
                break;
            };
            sent.push(m.topic.clone());
            flight.push((m, origin));
        }
        let keep = flight.split_off(flight.len().saturating_sub(unacked));
        for (_, origin) in flight {
            b.ack(origin);
        }
        (sent, keep)
    }

    fn all(b: &mut Buffer<Message>) -> Vec<String> {
        send(b, usize::MAX, 0).0
    }

    fn spool(dir: &tempfile::TempDir) -> Option<Spool> {
        Some(Spool::open(dir.path(), 1 << 20).expect("spool"))
    }

    // --- memory only (pure) ---

    #[test]
    fn fifo_within_budget() {
        let mut b = Buffer::new(10_000, None);
        for i in 0..5 {
            b.push(msg(i, 100));
        }
        let s = b.stats();
        assert_eq!((s.queued, s.queued_bytes), (5, 5 * cost(100) as u64));
        assert_eq!(all(&mut b), names(0..5));
        assert_eq!(b.stats().queued_bytes, 0);
    }

    #[test]
    fn full_drops_oldest_and_counts() {
        let mut b = Buffer::new(3 * cost(100), None);
        for i in 0..5 {
            b.push(msg(i, 100));
        }
        let s = b.stats();
        assert_eq!(s.dropped_total, 2);
        assert!(s.queued_bytes <= 3 * cost(100) as u64);
        assert_eq!(all(&mut b), names(2..5));
    }

    #[test]
    fn oversized_item_is_dropped_not_wedged() {
        let mut b = Buffer::new(500, None);
        b.push(msg(0, 10));
        b.push(msg(1, 10_000));
        assert!(b.is_empty());
        assert_eq!(b.stats().dropped_total, 2);
        b.push(msg(2, 10));
        assert_eq!(all(&mut b), names(2..3));
    }

    #[test]
    fn given_back_items_come_first_in_order() {
        let mut b = Buffer::new(10_000, None);
        for i in 0..4 {
            b.push(msg(i, 10));
        }
        let (sent, flight) = send(&mut b, 3, 2);
        assert_eq!(sent, names(0..3));
        b.set_offline(flight);
        b.set_online();
        assert_eq!(all(&mut b), names(1..4));
    }

    #[test]
    fn given_back_over_budget_drops_the_oldest() {
        let mut b = Buffer::new(2 * cost(10), None);
        b.push(msg(1, 10));
        b.push(msg(2, 10));
        let (_, flight) = send(&mut b, 2, 2);
        b.push(msg(3, 10));
        b.push(msg(4, 10));
        b.set_offline(flight);
        assert_eq!(b.stats().dropped_total, 2);
        assert_eq!(all(&mut b), names(3..5));
    }

    #[test]
    fn close_without_spool_counts_what_is_lost() {
        let mut b = Buffer::new(1 << 20, None);
        for i in 0..3 {
            b.push(msg(i, 1));
        }
        let (_, flight) = send(&mut b, 1, 1);
        assert_eq!(b.close(flight), 3);
    }

    #[test]
    fn message_record_round_trip() {
        for m in [
            msg(1, 0),
            msg(2, 100),
            Message {
                retain: true,
                ..msg(3, 5)
            },
        ] {
            assert_eq!(Message::from_record(m.to_record()), Some(m));
        }
        assert_eq!(Message::from_record(vec![]), None);
        assert_eq!(
            Message::from_record(vec![0, 9, 0, b'a']),
            None,
            "topic runs past the end"
        );
    }

    #[test]
    fn line_batches_count_their_lines() {
        let batch = |i: usize| format!("m v={i} 1\nm v={i} 2\n");
        let mut b = Buffer::new(batch(0).len() * 2, None);
        for i in 0..5 {
            b.push(batch(i));
        }
        assert_eq!(b.stats().dropped_total, 6, "three batches of two lines");
        let left: Vec<String> = std::iter::from_fn(|| b.next_item().map(|(s, _)| s)).collect();
        assert_eq!(left, [batch(3), batch(4)]);
    }

    // --- with a spool ---

    fn outage(with_spool: bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Buffer::new(1 << 20, if with_spool { spool(&dir) } else { None });
        // Offline from the start: 0..5 queue up.
        b.set_offline(vec![]);
        for i in 0..5 {
            b.push(msg(i, 10));
        }
        b.set_online();
        // 0..3 handed out; 1 and 2 are in flight when the link drops.
        let (sent, flight) = send(&mut b, 3, 2);
        assert_eq!(sent, names(0..3));
        b.set_offline(flight);
        for i in 5..8 {
            b.push(msg(i, 10));
        }
        b.set_online();
        b.push(msg(8, 10));
        assert_eq!(all(&mut b), names(1..9), "in flight first, then in order");
        assert!(b.is_empty());
    }

    #[test]
    fn order_kept_across_an_outage_in_memory() {
        outage(false);
    }

    #[test]
    fn order_kept_across_an_outage_with_a_spool() {
        outage(true);
    }

    #[test]
    fn offline_items_go_to_disk_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Buffer::new(1 << 20, spool(&dir));
        b.set_offline(vec![]);
        b.push(msg(0, 10));
        let s = b.stats();
        assert_eq!(s.queued, 0);
        assert!(s.spooled_bytes > 0);
    }

    #[test]
    fn a_second_outage_while_draining_keeps_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Buffer::new(1 << 20, spool(&dir));
        b.set_offline(vec![]);
        for i in 0..6 {
            b.push(msg(i, 10));
        }
        b.set_online();
        b.push(msg(6, 10)); // online: memory, behind the spool
        let (sent, flight) = send(&mut b, 2, 1);
        assert_eq!(sent, names(0..2));
        b.set_offline(flight); // 1 in flight; 6 moves to the spool's tail
        b.push(msg(7, 10));
        b.set_online();
        assert_eq!(all(&mut b), names(1..8));
    }

    #[test]
    fn full_memory_moves_to_the_spool_and_nothing_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Buffer::new(3 * cost(10), spool(&dir));
        for i in 0..10 {
            b.push(msg(i, 10));
        }
        let s = b.stats();
        assert!(s.spooled_bytes > 0);
        assert!(s.queued_bytes <= 3 * cost(10) as u64);
        assert_eq!(s.dropped_total, 0);
        assert_eq!(all(&mut b), names(0..10));
    }

    /// Pushes `n` messages (while offline, so onto the disk, or online, so into memory), hands
    /// out `sent` and leaves the last `unacked` of them unacknowledged, closes, and reopens the
    /// spool: what the next run sends.
    fn close_and_reopen(offline: bool, n: usize, sent: usize, unacked: usize) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut b = Buffer::new(1 << 20, spool(&dir));
            if offline {
                b.set_offline(vec![]);
            }
            for i in 0..n {
                b.push(msg(i, 10));
            }
            b.set_online();
            let (_, flight) = send(&mut b, sent, unacked);
            assert_eq!(b.close(flight), 0, "nothing lost with a spool");
        }
        let mut b: Buffer<Message> = Buffer::new(1 << 20, spool(&dir));
        all(&mut b)
    }

    #[test]
    fn close_with_a_spool_keeps_everything_for_the_next_run() {
        assert_eq!(close_and_reopen(false, 3, 1, 1), names(0..3));
    }

    #[test]
    fn close_rewinds_spooled_items_in_flight() {
        assert_eq!(close_and_reopen(true, 4, 3, 2), names(1..4));
    }

    /// A message that tracks its number as its mark, as the gateway's batches do.
    #[derive(Debug, PartialEq)]
    struct Marked(u64);

    impl Item for Marked {
        fn cost(&self) -> usize {
            100
        }
        fn to_record(&self) -> Vec<u8> {
            self.0.to_le_bytes().to_vec()
        }
        fn from_record(body: Vec<u8>) -> Option<Marked> {
            Some(Marked(u64::from_le_bytes(body.try_into().ok()?)))
        }
        fn mark(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn deferred_sync_keeps_what_was_spilled_unsynced_until_a_job_for_it_ran() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Buffer::new(1000, spool(&dir)).deferring_sync();
        assert!(
            b.start_sync().is_none(),
            "nothing spilled, nothing to force"
        );
        b.push(Marked(3));
        assert_eq!(
            b.unsynced_mark(),
            u64::MAX,
            "in memory: the owner sees it there"
        );
        b.set_offline(Vec::new());
        b.push(Marked(4));
        assert_eq!(b.unsynced_mark(), 3, "spilled, not forced: not durable");
        let job = b.start_sync().expect("a job");
        assert_eq!(job.mark, 3);
        assert_eq!(b.unsynced_mark(), u64::MAX, "the job holds them now");
        b.push(Marked(5));
        assert_eq!(
            b.unsynced_mark(),
            5,
            "spilled while the job runs: for the next job"
        );
        let mark = job.mark;
        b.sync_done(mark, job.run());
        assert!(!b.sync_failed());
        // a job that failed: its items wait for the next one, and the spool is forced again
        let job = b.start_sync().expect("a job");
        b.sync_done(job.mark, Err(std::io::Error::other("disk gone")));
        assert!(b.sync_failed());
        assert_eq!(b.unsynced_mark(), 5);
        let job = b.start_sync().expect("forced again after a failure");
        assert_eq!(job.mark, 5);
        let mark = job.mark;
        b.sync_done(mark, job.run());
        assert!(!b.sync_failed());
        assert_eq!(b.unsynced_mark(), u64::MAX);
        let got: Vec<u64> = std::iter::from_fn(|| b.next_item())
            .map(|(m, _)| m.0)
            .collect();
        assert_eq!(got, [3, 4, 5], "nothing lost, in order");
    }

    #[test]
    fn what_the_spool_forced_in_place_is_not_held_as_unsynced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Buffer::new(1000, spool(&dir))
            .deferring_sync()
            .starting_offline();
        b.push(Marked(3));
        assert_eq!(b.unsynced_mark(), 3);
        // closing forces the spool in place (its read position is saved with it)
        assert_eq!(b.close(Vec::new()), 0);
        assert!(b.start_sync().is_none(), "nothing left to force");
        assert_eq!(b.unsynced_mark(), u64::MAX, "durable: not held");
    }

    #[test]
    fn without_deferral_spilling_forces_the_spool_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Buffer::new(1000, spool(&dir)).starting_offline();
        b.push(Marked(7));
        assert_eq!(b.unsynced_mark(), u64::MAX);
        assert!(b.start_sync().is_none(), "already on disk");
    }
}
