//! The database writer's schedule: a pure state machine, time passed in.
//!
//! Inputs: lines from ingest ([`Writer::on_lines`]), the time ([`Writer::tick`]), the answer to
//! each request ([`Writer::on_answer`]), the end of the input ([`Writer::close`]). Outputs:
//! batches to keep in the store, [`Request`]s to send, what became of each request
//! ([`Settled`]), the time to wake up at ([`Writer::deadline`]) and, once closed, what was not
//! written ([`Closed`]). [`super::influx`] is its shell: it owns the store (memory, then the
//! disk spool), makes the HTTP calls and sleeps; this module never reads the clock, the network
//! or the disk. Each batch carries an opaque origin `O` from the store, handed back when the
//! batch is settled or returned, so the schedule does not depend on how the store keeps it.
//!
//! Rules (each has a unit test below):
//! 1. Lines gather into a batch, handed to the store once it holds `batch_size` lines or
//!    `flush_interval` after its first line, whichever comes first.
//! 2. Requests take the store's oldest batch, at most `concurrency` in flight. The store is
//!    asked only when a request can go out, so unsent data stays in the store, under its byte
//!    bound and spool, rather than piling up here.
//! 3. A failed request ([`policy`]: no answer, 429, 5xx, 401/403/404) puts its batch first in
//!    line again, sent after the backoff for its attempt (`Retry-After` honoured, capped at
//!    `max_retry_delay`). Until then nothing else is sent either: the database is likely down
//!    or overloaded, and more requests would fail the same way. Of several failures the latest
//!    deadline holds.
//! 4. A batch answered 400 or 413 is cut in halves that go first in line as fresh batches
//!    (attempts counted from zero again); a single line so answered is rejected: dropped, and
//!    reported so the shell counts it. The second half keeps the batch's origin and the first
//!    has none, so the store settles the batch once, when its second half is settled.
//! 5. Closing: no new lines, nothing new sent; answers to the requests in flight still apply.
//!    Once none is in flight, the partial batch and every batch awaiting a retry are handed
//!    back, exactly once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::policy::{self, Outcome};

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Lines per batch.
    pub batch_size: usize,
    /// The longest a line waits for its batch to fill.
    pub flush_interval: Duration,
    /// The cap on the delay before a retry, `Retry-After` included.
    pub max_retry_delay: Duration,
    /// Requests in flight at once. Writes are idempotent (points carry their sample time), so
    /// their order does not matter to the database.
    pub concurrency: usize,
}

/// Names a request from [`Writer::start`] until its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(u64);

/// Send `body` (newline-terminated lines) and report the answer under `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: RequestId,
    /// Shared with the writer, which keeps it until the request is settled.
    pub body: Arc<str>,
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled<O> {
    /// The database took the batch; its origin (if any) is settled in the store.
    Written { lines: usize, origin: Option<O> },
    /// Kept, first in line, for another try after `delay`.
    Retry {
        attempt: u32,
        delay: Duration,
        lines: usize,
    },
    /// Cut in halves, both first in line.
    Split,
    /// A line the database refuses: dropped for good; its origin (if any) is settled.
    Rejected {
        line: Arc<str>,
        lines: usize,
        origin: Option<O>,
    },
}

/// What the writer had not written when it closed, for the store to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed<O> {
    /// The batch still gathering lines: new data, for the store like any full batch.
    pub rest: Option<String>,
    /// Batches taken from the store (or halves of them) and not settled, in the order they
    /// would have been sent. `None`: the first half of a split batch, which has no origin.
    pub unsettled: Vec<(String, Option<O>)>,
}

#[derive(Debug)]
struct Batch<O> {
    body: Arc<str>,
    lines: usize,
    origin: Option<O>,
    /// Whether settling this batch settles its origin in the store. Of the halves of a split
    /// batch one does: the last of them settled (the others carry the origin only to be
    /// described by [`Writer::held`]).
    settles: bool,
    /// The batch taken from the store that this one is (or is a part of).
    lineage: u64,
    /// Requests made with this batch so far.
    attempt: u32,
    /// Already copied to durable storage by [`Writer::take_undurable`].
    copied: bool,
}

impl<O> Batch<O> {
    fn new(body: Arc<str>, origin: Option<O>) -> Self {
        Batch {
            lines: body.matches('\n').count(),
            body,
            origin,
            settles: true,
            lineage: 0,
            attempt: 0,
            copied: false,
        }
    }

    /// The origin the store settles when this batch is.
    fn settled_origin(self) -> Option<O> {
        if self.settles {
            self.origin
        } else {
            None
        }
    }
}

/// `t + d`, or as far as the clock goes: a delay of centuries from the configuration is a
/// very long wait, not a panic.
fn after(t: Instant, mut d: Duration) -> Instant {
    loop {
        if let Some(x) = t.checked_add(d) {
            return x;
        }
        d /= 2;
    }
}

#[derive(Debug)]
pub struct Writer<O> {
    s: Settings,
    /// Lines gathering for the next batch, their count, and when the first arrived.
    batch: String,
    batch_lines: usize,
    batch_started: Option<Instant>,
    /// Batches to send before the store's: failed ones awaiting retry, halves of split ones.
    again: VecDeque<Batch<O>>,
    in_flight: BTreeMap<RequestId, Batch<O>>,
    next_id: u64,
    next_lineage: u64,
    /// After a failure, no request goes out before this.
    retry_at: Option<Instant>,
    closing: bool,
    closed: bool,
}

impl<O: Clone> Writer<O> {
    pub fn new(s: Settings) -> Self {
        Writer {
            s,
            batch: String::new(),
            batch_lines: 0,
            batch_started: None,
            again: VecDeque::new(),
            in_flight: BTreeMap::new(),
            next_id: 0,
            next_lineage: 0,
            retry_at: None,
            closing: false,
            closed: false,
        }
    }

    /// Lines from ingest (one or more, each ending in a newline). Returns a full batch for the
    /// store. Lines given after [`Writer::close`] still join the batch, up to [`Writer::closed`].
    pub fn on_lines(&mut self, lines: &str, now: Instant) -> Option<String> {
        if self.batch.is_empty() {
            self.batch_started = Some(now);
        }
        self.batch_lines += lines.matches('\n').count();
        self.batch.push_str(lines);
        (self.batch_lines >= self.s.batch_size).then(|| self.take_batch())
    }

    /// The time passes: returns the batch for the store once it is `flush_interval` old.
    pub fn tick(&mut self, now: Instant) -> Option<String> {
        let due = self
            .batch_started
            .is_some_and(|t| after(t, self.s.flush_interval) <= now);
        due.then(|| self.take_batch())
    }

    fn take_batch(&mut self) -> String {
        self.batch_lines = 0;
        self.batch_started = None;
        std::mem::take(&mut self.batch)
    }

    /// The requests to send now: while a request may go out (not closing, fewer than
    /// `concurrency` in flight, no retry pending), the next batch waiting for a retry, else the
    /// store's next one from `next`, which is called only when it will be sent.
    pub fn start(
        &mut self,
        now: Instant,
        mut next: impl FnMut() -> Option<(String, O)>,
    ) -> Vec<Request> {
        let mut out = Vec::new();
        while !self.closing
            && self.in_flight.len() < self.s.concurrency
            && self.retry_at.is_none_or(|t| t <= now)
        {
            self.retry_at = None;
            let Some(mut b) = self.again.pop_front().or_else(|| {
                next().map(|(body, origin)| {
                    self.next_lineage += 1;
                    let mut b = Batch::new(Arc::from(body), Some(origin));
                    b.lineage = self.next_lineage;
                    b
                })
            }) else {
                break;
            };
            b.attempt += 1;
            let id = RequestId(self.next_id);
            self.next_id += 1;
            out.push(Request {
                id,
                body: b.body.clone(),
            });
            self.in_flight.insert(id, b);
        }
        out
    }

    /// The answer to request `id`: its HTTP status (`None`: no answer came) and `Retry-After`,
    /// classified by [`policy::classify`]. `None` if `id` is not in flight.
    pub fn on_answer(
        &mut self,
        id: RequestId,
        status: Option<u16>,
        retry_after: Option<&str>,
        now: Instant,
    ) -> Option<Settled<O>> {
        let b = self.in_flight.get(&id)?;
        let outcome = policy::classify(
            status,
            retry_after,
            b.lines,
            b.attempt,
            self.s.max_retry_delay,
        );
        self.on_outcome(id, outcome, now)
    }

    /// What request `id`'s answer means, as [`policy`] says. `None` if `id` is not in flight.
    pub fn on_outcome(
        &mut self,
        id: RequestId,
        outcome: Outcome,
        now: Instant,
    ) -> Option<Settled<O>> {
        let b = self.in_flight.remove(&id)?;
        Some(match outcome {
            Outcome::Written => Settled::Written {
                lines: b.lines,
                origin: self.settle(b),
            },
            Outcome::Retry(delay) => {
                let at = after(now, delay);
                self.retry_at = Some(self.retry_at.map_or(at, |t| t.max(at)));
                let settled = Settled::Retry {
                    attempt: b.attempt,
                    delay,
                    lines: b.lines,
                };
                self.again.push_front(b);
                settled
            }
            Outcome::Split => {
                let (first, second) = policy::split_batch(&b.body);
                let mut head = Batch::new(Arc::from(first), b.origin.clone());
                head.settles = false;
                head.copied = b.copied;
                head.lineage = b.lineage;
                let mut tail = Batch::new(Arc::from(second), b.origin);
                tail.settles = b.settles;
                tail.copied = b.copied;
                tail.lineage = b.lineage;
                self.again.push_front(tail);
                self.again.push_front(head);
                Settled::Split
            }
            Outcome::Rejected => Settled::Rejected {
                line: b.body.clone(),
                lines: b.lines,
                origin: self.settle(b),
            },
        })
    }

    /// The origin to settle in the store now that `b` is done: its own, unless another part of
    /// the same batch is still held, which then settles it when it is done.
    fn settle(&mut self, b: Batch<O>) -> Option<O> {
        if !b.settles {
            return None;
        }
        let rest = self
            .again
            .iter_mut()
            .chain(self.in_flight.values_mut())
            .find(|o| o.lineage == b.lineage && b.lineage != 0);
        match rest {
            Some(o) => {
                o.settles = true;
                None
            }
            None => b.origin,
        }
    }

    /// Copies of the batches in the writer's hands (in flight or awaiting a retry) that are
    /// not kept anywhere durable (`durable` says which origins are) and were not copied
    /// before: what a crash now would lose. The shell spools them when the database goes
    /// down; a batch written twice is harmless (points carry their sample time). Each batch
    /// is handed out once, however often the database goes down while it waits.
    pub fn take_undurable(&mut self, durable: impl Fn(&O) -> bool) -> Vec<(String, Option<O>)> {
        self.again
            .iter_mut()
            .chain(self.in_flight.values_mut())
            .filter(|b| !b.copied && !b.origin.as_ref().is_some_and(&durable))
            .map(|b| {
                b.copied = true;
                (String::from(&*b.body), b.origin.clone())
            })
            .collect()
    }

    /// The origins of the batches in the writer's hands (in flight or awaiting a retry,
    /// halves of split ones included), with whether [`Writer::take_undurable`] copied them:
    /// what the shell asks about to know what is durable.
    pub fn held(&self) -> impl Iterator<Item = (&O, bool)> {
        self.again
            .iter()
            .chain(self.in_flight.values())
            .filter_map(|b| b.origin.as_ref().map(|o| (o, b.copied)))
    }

    /// Whether lines are gathering for the next batch.
    pub fn has_partial(&self) -> bool {
        !self.batch.is_empty()
    }

    /// Requests in flight now.
    pub fn requests_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The partial batch now, if any (the shell flushes early when the broker waits for
    /// acknowledgements).
    pub fn flush(&mut self) -> Option<String> {
        self.has_partial().then(|| self.take_batch())
    }

    /// The input has ended: take no more, send nothing new, wait for the answers in flight.
    pub fn close(&mut self) {
        self.closing = true;
    }

    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Once closing and nothing is in flight: everything not written, for the store to keep.
    /// Returned once; `None` before and after.
    pub fn closed(&mut self) -> Option<Closed<O>> {
        if !self.closing || self.closed || !self.in_flight.is_empty() {
            return None;
        }
        self.closed = true;
        let rest = (!self.batch.is_empty()).then(|| self.take_batch());
        let unsettled = self
            .again
            .drain(..)
            .map(|b| (String::from(&*b.body), b.settled_origin()))
            .collect();
        Some(Closed { rest, unsettled })
    }

    /// When to call [`Writer::tick`] and [`Writer::start`] again, if nothing else happens
    /// first: the partial batch's flush, or the end of a retry delay while a request could go
    /// out (with every slot taken, an answer comes first anyway).
    pub fn deadline(&self) -> Option<Instant> {
        let flush = self.batch_started.map(|t| after(t, self.s.flush_interval));
        let retry = self
            .retry_at
            .filter(|_| !self.closing && self.in_flight.len() < self.s.concurrency);
        match (flush, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn settings(batch_size: usize, concurrency: usize) -> Settings {
        Settings {
            batch_size,
            flush_interval: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(30),
            concurrency,
        }
    }

    /// `n` lines, tagged with `tag` so batches are told apart.
    fn lines(tag: &str, n: usize) -> String {
        (0..n).map(|i| format!("m,b={tag} v={i} {i}\n")).collect()
    }

    /// A store of batches, each with its number as origin.
    fn store(batches: &[String]) -> VecDeque<(String, u32)> {
        batches.iter().cloned().zip(0..).collect()
    }

    fn bodies(reqs: &[Request]) -> Vec<&str> {
        reqs.iter().map(|r| &*r.body).collect()
    }

    #[test]
    fn what_only_the_writer_holds_is_named_for_the_spool() {
        let mut w: Writer<bool> = Writer::new(settings(10, 4));
        let t0 = Instant::now();
        let mut store = vec![("a 1\n".to_owned(), true), ("b 2\n".to_owned(), false)].into_iter();
        let reqs = w.start(t0, || store.next());
        assert_eq!(reqs.len(), 2);
        // origin `true`: a spool record; `false`: memory
        assert_eq!(
            w.take_undurable(|o| *o),
            [("b 2\n".to_owned(), Some(false))]
        );
        w.on_outcome(reqs[1].id, Outcome::Retry(Duration::from_secs(1)), t0);
        assert!(
            w.take_undurable(|o| *o).is_empty(),
            "copied once, not again"
        );
    }

    #[test]
    fn a_batch_goes_to_the_store_at_batch_size_lines() {
        let mut w = Writer::<u32>::new(settings(3, 1));
        let t = Instant::now();
        assert_eq!(w.on_lines(&lines("a", 1), t), None);
        assert_eq!(w.on_lines(&lines("b", 1), t), None);
        assert_eq!(
            w.on_lines(&lines("c", 1), t),
            Some(lines("a", 1) + &lines("b", 1) + &lines("c", 1))
        );
        // Lines are counted, not messages: one message of four lines fills a batch.
        assert_eq!(w.on_lines(&lines("d", 4), t), Some(lines("d", 4)));
        assert_eq!(w.deadline(), None);
    }

    #[test]
    fn a_batch_goes_to_the_store_flush_interval_after_its_first_line() {
        let mut w = Writer::<u32>::new(settings(100, 1));
        let t = Instant::now();
        assert_eq!(w.tick(t), None);
        assert_eq!(w.deadline(), None);
        w.on_lines(&lines("a", 1), t);
        // A later line does not push the deadline back.
        w.on_lines(&lines("b", 1), t + Duration::from_millis(500));
        assert_eq!(w.deadline(), Some(t + Duration::from_secs(1)));
        assert_eq!(w.tick(t + Duration::from_secs(1) - MS), None);
        assert_eq!(
            w.tick(t + Duration::from_secs(1)),
            Some(lines("a", 1) + &lines("b", 1))
        );
        assert_eq!(w.deadline(), None);
        assert_eq!(w.tick(t + Duration::from_secs(5)), None);
    }

    #[test]
    fn never_more_than_concurrency_requests_in_flight() {
        let batches: Vec<String> = (0..5).map(|i| lines(&i.to_string(), 2)).collect();
        let mut s = store(&batches);
        let mut w = Writer::new(settings(2, 2));
        let t = Instant::now();
        let first = w.start(t, || s.pop_front());
        assert_eq!(bodies(&first), [&*batches[0], &*batches[1]]);
        // The store is asked only for batches that go out.
        assert_eq!(s.len(), 3);
        assert!(w.start(t, || s.pop_front()).is_empty());
        assert_eq!(w.requests_in_flight(), 2);
        assert_eq!(
            w.on_answer(first[1].id, Some(204), None, t),
            Some(Settled::Written {
                lines: 2,
                origin: Some(1)
            })
        );
        let next = w.start(t, || s.pop_front());
        assert_eq!(bodies(&next), [&*batches[2]]);
        assert_eq!(w.requests_in_flight(), 2);
        // An answer is taken once.
        assert_eq!(w.on_answer(first[1].id, Some(204), None, t), None);
    }

    #[test]
    fn a_failure_is_retried_after_the_backoff_before_anything_newer() {
        let batches = [lines("a", 2), lines("b", 2)];
        let mut s = store(&batches);
        let mut w = Writer::new(settings(2, 1));
        let t = Instant::now();
        let a = w.start(t, || s.pop_front());
        assert_eq!(
            w.on_answer(a[0].id, None, None, t),
            Some(Settled::Retry {
                attempt: 1,
                delay: Duration::from_millis(250),
                lines: 2
            })
        );
        assert!(w
            .start(t + Duration::from_millis(249), || s.pop_front())
            .is_empty());
        assert_eq!(w.deadline(), Some(t + Duration::from_millis(250)));
        let t = t + Duration::from_millis(250);
        let again = w.start(t, || s.pop_front());
        assert_eq!(bodies(&again), [&*batches[0]]);
        assert_eq!(w.deadline(), None);
        // The backoff doubles with each attempt of the same batch.
        assert_eq!(
            w.on_answer(again[0].id, Some(503), None, t),
            Some(Settled::Retry {
                attempt: 2,
                delay: Duration::from_millis(500),
                lines: 2
            })
        );
        let t = t + Duration::from_millis(500);
        let again = w.start(t, || s.pop_front());
        assert_eq!(bodies(&again), [&*batches[0]]);
        w.on_answer(again[0].id, Some(204), None, t);
        assert_eq!(bodies(&w.start(t, || s.pop_front())), [&*batches[1]]);
    }

    #[test]
    fn retry_after_is_honoured_up_to_max_retry_delay() {
        let batches = [lines("a", 1), lines("b", 1)];
        let mut s = store(&batches);
        let mut w = Writer::new(settings(1, 1));
        let t = Instant::now();
        let r = w.start(t, || s.pop_front());
        w.on_answer(r[0].id, Some(429), Some("5"), t);
        assert_eq!(w.deadline(), Some(t + Duration::from_secs(5)));
        assert!(w
            .start(t + Duration::from_secs(4), || s.pop_front())
            .is_empty());
        let t = t + Duration::from_secs(5);
        let r = w.start(t, || s.pop_front());
        assert_eq!(
            w.on_answer(r[0].id, Some(503), Some("3600"), t),
            Some(Settled::Retry {
                attempt: 2,
                delay: Duration::from_secs(30),
                lines: 1
            })
        );
        assert_eq!(w.deadline(), Some(t + Duration::from_secs(30)));
    }

    #[test]
    fn after_a_failure_nothing_new_goes_out_until_the_latest_retry_time() {
        let batches: Vec<String> = (0..4).map(|i| lines(&i.to_string(), 1)).collect();
        let mut s = store(&batches);
        let mut w = Writer::new(settings(1, 3));
        let t = Instant::now();
        let r = w.start(t, || s.pop_front());
        assert_eq!(r.len(), 3);
        w.on_answer(r[0].id, Some(429), Some("2"), t);
        // A success frees a slot, but the retry delay holds every send.
        w.on_answer(r[1].id, Some(204), None, t);
        assert!(w
            .start(t + Duration::from_secs(1), || s.pop_front())
            .is_empty());
        // A shorter delay later does not shorten the wait.
        w.on_answer(r[2].id, None, None, t + Duration::from_secs(1));
        assert_eq!(w.deadline(), Some(t + Duration::from_secs(2)));
        let r = w.start(t + Duration::from_secs(2), || s.pop_front());
        // Both failed batches go before the store's, the latest failure first.
        assert_eq!(bodies(&r), [&*batches[2], &*batches[0], &*batches[3]]);
    }

    #[test]
    fn a_batch_answered_400_or_413_is_split_and_its_halves_sent_first() {
        let batches = [lines("a", 4), lines("b", 1)];
        let mut s = store(&batches);
        let mut w = Writer::new(settings(4, 2));
        let t = Instant::now();
        let r = w.start(t, || s.pop_front());
        assert_eq!(r.len(), 2);
        assert_eq!(
            w.on_answer(r[0].id, Some(413), None, t),
            Some(Settled::Split)
        );
        w.on_answer(r[1].id, Some(204), None, t);
        let halves = w.start(t, || s.pop_front());
        let (first, second) = policy::split_batch(&batches[0]);
        assert_eq!(bodies(&halves), [first.as_str(), second.as_str()]);
        // Halves start their attempts afresh.
        assert_eq!(
            w.on_answer(halves[0].id, None, None, t),
            Some(Settled::Retry {
                attempt: 1,
                delay: Duration::from_millis(250),
                lines: 2
            })
        );
        // The batch is settled once, when the last of its halves is: here the first half,
        // written after the second (settling the store's record earlier would lose the first
        // half's lines to a crash meanwhile).
        assert_eq!(
            w.on_answer(halves[1].id, Some(204), None, t),
            Some(Settled::Written {
                lines: 2,
                origin: None
            })
        );
        assert_eq!(w.held().map(|(o, _)| *o).collect::<Vec<_>>(), [0]);
        let t = t + Duration::from_millis(250);
        let r = w.start(t, || s.pop_front());
        assert_eq!(bodies(&r), [first.as_str()]);
        assert_eq!(
            w.on_answer(r[0].id, Some(204), None, t),
            Some(Settled::Written {
                lines: 2,
                origin: Some(0)
            })
        );
        assert_eq!(w.held().count(), 0);
    }

    #[test]
    fn a_refused_line_is_dropped_and_reported_once() {
        let bad = "m v=bad 1\n";
        let batch = format!("m v=1 1\n{bad}");
        let mut s = store(&[batch]);
        let mut w = Writer::new(settings(2, 1));
        let t = Instant::now();
        let r = w.start(t, || s.pop_front());
        assert_eq!(
            w.on_answer(r[0].id, Some(400), None, t),
            Some(Settled::Split)
        );
        let good = w.start(t, || s.pop_front());
        assert_eq!(
            w.on_answer(good[0].id, Some(204), None, t),
            Some(Settled::Written {
                lines: 1,
                origin: None
            })
        );
        let refused = w.start(t, || s.pop_front());
        assert_eq!(bodies(&refused), [bad]);
        assert_eq!(
            w.on_answer(refused[0].id, Some(400), None, t),
            Some(Settled::Rejected {
                line: Arc::from(bad),
                lines: 1,
                origin: Some(0)
            })
        );
        // A single line too large for the server is refused the same way.
        let mut s = store(&[lines("big", 1)]);
        let r = w.start(t, || s.pop_front());
        assert!(matches!(
            w.on_answer(r[0].id, Some(413), None, t),
            Some(Settled::Rejected { lines: 1, .. })
        ));
        assert!(w.start(t, || s.pop_front()).is_empty());
        assert_eq!(w.requests_in_flight(), 0);
    }

    #[test]
    fn closing_hands_back_every_unsettled_batch_once() {
        let batches: Vec<String> = (0..4).map(|i| lines(&i.to_string(), 2)).collect();
        let mut s = store(&batches);
        let mut w = Writer::new(settings(2, 2));
        let t = Instant::now();
        let r = w.start(t, || s.pop_front());
        // Batch 0 is split, its halves wait; batch 1 stays in flight.
        w.on_answer(r[0].id, Some(400), None, t);
        w.on_lines(&lines("partial", 1), t);
        w.close();
        assert!(w.is_closing());
        // Nothing new goes out, and nothing is handed back while a request is in flight.
        assert!(w
            .start(t + Duration::from_secs(60), || s.pop_front())
            .is_empty());
        assert_eq!(w.deadline(), Some(t + Duration::from_secs(1)));
        assert_eq!(w.closed(), None);
        // The answer in flight still counts: a failure joins the batches handed back.
        w.on_answer(r[1].id, None, None, t);
        assert_eq!(w.deadline(), Some(t + Duration::from_secs(1)));
        let (first, second) = policy::split_batch(&batches[0]);
        assert_eq!(
            w.closed(),
            Some(Closed {
                rest: Some(lines("partial", 1)),
                unsettled: vec![
                    (batches[1].clone(), Some(1)),
                    (first, None),
                    (second, Some(0)),
                ],
            })
        );
        assert_eq!(w.closed(), None);
        // The store's batches were never taken: they are still there.
        assert_eq!(s, store(&batches).split_off(2));
    }

    #[test]
    fn closing_with_nothing_pending_returns_nothing_to_keep() {
        let mut w = Writer::<u32>::new(settings(2, 2));
        assert_eq!(w.closed(), None);
        w.close();
        assert_eq!(
            w.closed(),
            Some(Closed {
                rest: None,
                unsettled: vec![]
            })
        );
    }

    /// Property: through any sequence of lines, ticks, failures, Retry-After, splits, refusals
    /// and answers in any order, then closing, every line is written, rejected (only if bad) or
    /// kept (handed back, or never taken from the store), exactly once; every origin the store
    /// handed out is settled or handed back exactly once; never more than `concurrency`
    /// requests are in flight, and none goes out before a retry time.
    #[test]
    fn nothing_is_lost_or_duplicated() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let bad = |l: &str| l.contains("bad=");
        let split_lines = |b: &str| b.lines().map(str::to_owned).collect::<Vec<_>>();
        for round in 0..300 {
            let concurrency = 1 + rand(4) as usize;
            let mut w = Writer::new(Settings {
                batch_size: 1 + rand(6) as usize,
                flush_interval: Duration::from_millis(1 + rand(50)),
                max_retry_delay: Duration::from_millis(1 + rand(400)),
                concurrency,
            });
            let mut t = Instant::now();
            let mut store: VecDeque<(String, u32)> = VecDeque::new();
            let mut origins = 0u32;
            let mut requests: Vec<Request> = Vec::new();
            let mut lines_in = 0usize;
            // No request may go out before this (the latest retry time so far).
            let mut hold = t;
            let mut written: Vec<String> = Vec::new();
            let mut rejected: Vec<String> = Vec::new();
            let mut settled: Vec<u32> = Vec::new();
            let steps = 50 + rand(400);
            for step in 0..steps {
                if step + 1 == steps || (step > steps / 2 && rand(40) == 0) {
                    w.close();
                }
                let out = w.start(t, || store.pop_front());
                assert!(
                    out.is_empty() || hold <= t,
                    "round {round}: sent before the retry time"
                );
                requests.extend(out);
                assert!(w.requests_in_flight() <= concurrency, "round {round}");
                assert_eq!(w.requests_in_flight(), requests.len());
                let mut to_store = None;
                match rand(4) {
                    0 if !w.is_closing() => {
                        let msg: String = (0..1 + rand(3))
                            .map(|_| {
                                lines_in += 1;
                                let kind = if rand(15) == 0 { "bad" } else { "ok" };
                                format!("m,r={round} {kind}={lines_in} {lines_in}\n")
                            })
                            .collect();
                        to_store = w.on_lines(&msg, t);
                    }
                    1 => {
                        t += Duration::from_millis(rand(60));
                        to_store = w.tick(t);
                    }
                    _ if !requests.is_empty() => {
                        let req = requests.swap_remove(rand(requests.len() as u64) as usize);
                        let (status, retry_after) = match rand(10) {
                            0 => (None, None),
                            1 => (Some(503), None),
                            2 => (Some(429), Some("1")),
                            // Too large: a server's limit is above one line.
                            3 if req.body.lines().count() > 1 => (Some(413), None),
                            _ if req.body.lines().any(bad) => (Some(400), None),
                            _ => (Some(204), None),
                        };
                        match w.on_answer(req.id, status, retry_after, t) {
                            Some(Settled::Written { origin, .. }) => {
                                written.extend(split_lines(&req.body));
                                settled.extend(origin);
                            }
                            Some(Settled::Rejected { line, origin, .. }) => {
                                assert_eq!(line, req.body);
                                rejected.extend(split_lines(&line));
                                settled.extend(origin);
                            }
                            Some(Settled::Retry { delay, .. }) => hold = hold.max(t + delay),
                            Some(Settled::Split) => {}
                            None => panic!("round {round}: an answer in flight was not taken"),
                        }
                    }
                    _ => {}
                }
                if let Some(b) = to_store {
                    store.push_back((b, origins));
                    origins += 1;
                }
            }
            // The last answers, then the writer is closed.
            while let Some(req) = requests.pop() {
                if let Some(Settled::Written { origin, .. }) =
                    w.on_answer(req.id, Some(204), None, t)
                {
                    written.extend(split_lines(&req.body));
                    settled.extend(origin);
                }
            }
            let closed = w.closed().expect("closed once nothing is in flight");
            assert_eq!(w.closed(), None);
            let mut kept: Vec<String> = closed.rest.iter().flat_map(|b| split_lines(b)).collect();
            for (body, origin) in closed.unsettled {
                kept.extend(split_lines(&body));
                settled.extend(origin);
            }
            for (body, origin) in &store {
                kept.extend(split_lines(body));
                settled.push(*origin);
            }

            assert!(
                rejected.iter().all(|l| bad(l)),
                "round {round}: a good line rejected"
            );
            let mut all: Vec<&String> = written.iter().chain(&rejected).chain(&kept).collect();
            all.sort();
            all.dedup();
            assert_eq!(
                all.len(),
                written.len() + rejected.len() + kept.len(),
                "round {round}: a line twice"
            );
            assert_eq!(all.len(), lines_in, "round {round}: a line lost");
            settled.sort_unstable();
            assert_eq!(
                settled,
                (0..origins).collect::<Vec<_>>(),
                "round {round}: an origin lost or settled twice"
            );
        }
    }
}
