//! Batches the database has not taken yet: memory first, then the disk spool.
//!
//! Bound: memory holds at most `max_bytes` of line protocol. When a batch does not fit, every
//! batch in memory moves to the spool (oldest first) and the new one follows it, so the spool
//! is always the newer part; new batches keep going to the spool until it is drained. Without
//! a spool, the oldest batches are dropped and their lines counted. The spool is capped by its
//! own `max_bytes` and drops its oldest segments the same way.

use std::collections::VecDeque;
use std::time::Instant;

use leakmon_common::spool::{RecordPos, Spool};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Origin {
    Memory,
    Spool(RecordPos),
    /// The first half of a split batch: nothing to acknowledge.
    Part,
}

pub struct Buffer {
    mem: VecDeque<String>,
    mem_bytes: usize,
    max_bytes: usize,
    spool: Option<Spool>,
    dropped_lines: u64,
}

fn lines(b: &str) -> u64 {
    b.as_bytes().iter().filter(|c| **c == b'\n').count() as u64
}

impl Buffer {
    pub fn new(max_bytes: usize, spool: Option<Spool>) -> Self {
        Buffer {
            mem: VecDeque::new(),
            mem_bytes: 0,
            max_bytes,
            spool,
            dropped_lines: 0,
        }
    }

    fn spool_pending(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| !s.is_drained())
    }

    pub fn push(&mut self, batch: String, now: Instant) {
        let spilling = self.spool_pending() || self.mem_bytes + batch.len() > self.max_bytes;
        if spilling && self.spool.is_some() {
            let moved: Vec<String> = self.mem.drain(..).collect();
            self.mem_bytes = 0;
            for b in moved.iter().chain(std::iter::once(&batch)) {
                if !self.spill(b, now) {
                    // The disk failed: keep it in memory rather than lose it.
                    self.keep(b.clone());
                }
            }
            return;
        }
        self.keep(batch);
    }

    fn spill(&mut self, b: &str, now: Instant) -> bool {
        let Some(sp) = self.spool.as_mut() else {
            return false;
        };
        match sp.append(b.as_bytes(), now) {
            Ok(dropped) => {
                if dropped > 0 {
                    tracing::warn!(batches = dropped, "spool full: dropped the oldest batches");
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write to the spool");
                false
            }
        }
    }

    fn keep(&mut self, batch: String) {
        self.mem_bytes += batch.len();
        self.mem.push_back(batch);
        while self.mem_bytes > self.max_bytes && self.mem.len() > 1 {
            if let Some(old) = self.mem.pop_front() {
                self.mem_bytes -= old.len();
                let n = lines(&old);
                self.dropped_lines += n;
                tracing::warn!(lines = n, "write buffer full: dropped the oldest points");
            }
        }
    }

    /// The oldest batch not yet handed out.
    pub fn next(&mut self) -> Option<(String, Origin)> {
        if let Some(b) = self.mem.pop_front() {
            self.mem_bytes -= b.len();
            return Some((b, Origin::Memory));
        }
        let sp = self.spool.as_mut()?;
        loop {
            match sp.next_record() {
                Ok(Some((body, pos))) => match String::from_utf8(body) {
                    Ok(s) => return Some((s, Origin::Spool(pos))),
                    Err(_) => {
                        let _ = sp.ack(pos);
                    }
                },
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the spool");
                    return None;
                }
            }
        }
    }

    /// A batch handed out is settled (written or rejected).
    pub fn done(&mut self, origin: Origin) {
        if let (Origin::Spool(pos), Some(sp)) = (origin, self.spool.as_mut()) {
            if let Err(e) = sp.ack(pos) {
                tracing::warn!(error = %e, "cannot delete a written spool segment");
            }
        }
    }

    /// On shutdown: the batches handed out and not settled, and memory, go to the spool (if
    /// any), so a restart writes them. Returns the lines that could not be kept.
    pub fn close(&mut self, unsettled: Vec<(String, Origin)>, now: Instant) -> u64 {
        let mut lost = 0;
        let mut pending: Vec<String> = Vec::new();
        // Spool records handed out are simply read again next time: rewind to the oldest.
        let mut rewind: Option<RecordPos> = None;
        for (b, origin) in unsettled {
            match origin {
                Origin::Spool(pos) => rewind = Some(rewind.map_or(pos, |r| r.min(pos))),
                Origin::Memory | Origin::Part => pending.push(b),
            }
        }
        pending.extend(self.mem.drain(..));
        self.mem_bytes = 0;
        if let Some(sp) = self.spool.as_mut() {
            sp.rewind(rewind);
        }
        for b in pending {
            if !self.spill(&b, now) {
                lost += lines(&b);
            }
        }
        if let Some(sp) = self.spool.as_mut() {
            if let Err(e) = sp.save_cursor() {
                tracing::warn!(error = %e, "cannot save the spool position");
            }
        }
        lost
    }

    pub fn mem_bytes(&self) -> usize {
        self.mem_bytes
    }

    pub fn spool_bytes(&self) -> u64 {
        self.spool.as_ref().map(|s| s.bytes()).unwrap_or(0)
    }

    pub fn dropped_lines(&self) -> u64 {
        self.dropped_lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(i: usize, n: usize) -> String {
        (0..n).map(|j| format!("m,b={i} v={j} {i}\n")).collect()
    }

    fn drain(b: &mut Buffer) -> Vec<String> {
        std::iter::from_fn(|| {
            let (s, o) = b.next()?;
            b.done(o);
            Some(s)
        })
        .collect()
    }

    #[test]
    fn memory_fifo() {
        let mut b = Buffer::new(1 << 20, None);
        let now = Instant::now();
        for i in 0..3 {
            b.push(batch(i, 2), now);
        }
        assert_eq!(
            drain(&mut b),
            (0..3).map(|i| batch(i, 2)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn without_spool_the_oldest_are_dropped_and_counted() {
        let one = batch(0, 10).len();
        let mut b = Buffer::new(one * 3, None);
        let now = Instant::now();
        for i in 0..5 {
            b.push(batch(i, 10), now);
        }
        assert_eq!(b.dropped_lines(), 20);
        assert_eq!(
            drain(&mut b),
            (2..5).map(|i| batch(i, 10)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn overflow_goes_to_spool_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let one = batch(0, 10).len();
        let mut b = Buffer::new(one * 3, Some(Spool::open(dir.path(), 1 << 20).unwrap()));
        let now = Instant::now();
        for i in 0..10 {
            b.push(batch(i, 10), now);
        }
        assert!(b.spool_bytes() > 0);
        assert!(b.mem_bytes() <= one * 3);
        assert_eq!(b.dropped_lines(), 0);
        assert_eq!(
            drain(&mut b),
            (0..10).map(|i| batch(i, 10)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn close_keeps_everything_for_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        {
            let mut b = Buffer::new(1 << 20, Some(Spool::open(dir.path(), 1 << 20).unwrap()));
            for i in 0..4 {
                b.push(batch(i, 3), now);
            }
            let cur = b.next().into_iter().collect();
            assert_eq!(b.close(cur, now), 0);
        }
        let mut b = Buffer::new(1 << 20, Some(Spool::open(dir.path(), 1 << 20).unwrap()));
        assert_eq!(
            drain(&mut b),
            (0..4).map(|i| batch(i, 3)).collect::<Vec<_>>()
        );
    }
}
