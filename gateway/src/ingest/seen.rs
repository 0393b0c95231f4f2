//! Which data messages of each node this gateway has handled already, by `(run, seq)`: an
//! agent publishes again what the broker acknowledged lately on every new connection
//! (`agent/src/resend.rs`: a broker that crashed lost what it held), and the copies of
//! what arrived are dropped here, before they reach the alerts, the node views or the
//! database. Per node the last [`RUNS`] runs, each with its highest seq and which of the
//! [`WINDOW`] seqs below it were seen; a seq further below is taken as seen (a copy is at
//! most a window of messages old).
//!
//! The same window counts what never came: a seq of a run that leaves the window unseen (a
//! window of later seqs of that node has arrived), not below the run's first seq here, is
//! **missing**: lost at the agent (its buffer full, a report too large), by the broker (its
//! queue for this gateway full, as at 10,000 agents on one 2-vCPU machine, docs/benchmarks.md)
//! or on the way. Pure.

use std::collections::BTreeMap;

/// Runs remembered per node (a restarted agent's spool may still deliver its last run's).
pub const RUNS: usize = 4;
/// Seqs below the highest remembered one by one.
pub const WINDOW: u64 = 256;

#[derive(Debug, Clone)]
struct Run {
    run: u64,
    high: u64,
    /// Bit i: `high - 1 - i` was seen.
    below: [u64; (WINDOW / 64) as usize],
    /// The first seq of the run this gateway saw: none below it counts as missing.
    floor: u64,
}

impl Run {
    fn new(run: u64, seq: u64) -> Self {
        Run {
            run,
            high: seq,
            below: [0; (WINDOW / 64) as usize],
            floor: seq,
        }
    }

    /// Whether `seq` is new; records it, and adds to `missing` the seqs that leave the window
    /// unseen.
    fn first_time(&mut self, seq: u64, missing: &mut u64) -> bool {
        if seq > self.high {
            *missing += self.unseen_leaving(seq - self.high);
            self.shift(seq - self.high);
            self.high = seq;
            return true;
        }
        if seq == self.high {
            return false;
        }
        let i = self.high - 1 - seq;
        if i >= WINDOW {
            return false;
        }
        let (word, bit) = ((i / 64) as usize, i % 64);
        let seen = self.below[word] & (1 << bit) != 0;
        self.below[word] |= 1 << bit;
        !seen
    }

    /// How many seqs at or above the floor leave the window unseen when the highest seq
    /// moves up by `by`: the top `by` bits of the window (seqs `high - WINDOW ..`), and, for a
    /// jump beyond the window, the seqs jumped over that never entered it.
    fn unseen_leaving(&self, by: u64) -> u64 {
        let counted = |seq: u64| seq >= self.floor;
        let mut n = 0;
        // old bit i (seq high - 1 - i) leaves when i + by >= WINDOW
        for i in WINDOW.saturating_sub(by)..WINDOW {
            let seen = self.below[(i / 64) as usize] & (1 << (i % 64)) != 0;
            if !seen && self.high > i && counted(self.high - 1 - i) {
                n += 1;
            }
        }
        // seqs high + 1 ..= high + by - 1 - WINDOW never were in the window (the new highest
        // is high + by, its window reaches down to high + by - WINDOW)
        n + by.saturating_sub(WINDOW + 1)
    }

    /// The highest seq moves up by `by`: every bit moves up by `by` (a left shift of the
    /// 256-bit number), and the old highest becomes bit `by - 1`.
    fn shift(&mut self, by: u64) {
        let n = self.below.len();
        if by >= WINDOW {
            self.below = [0; (WINDOW / 64) as usize];
            return;
        }
        let (words, bits) = ((by / 64) as usize, by % 64);
        for i in (0..n).rev() {
            let mut v = 0;
            if i >= words {
                v = self.below[i - words] << bits;
                if bits > 0 && i > words {
                    v |= self.below[i - words - 1] >> (64 - bits);
                }
            }
            self.below[i] = v;
        }
        let old = by - 1;
        self.below[(old / 64) as usize] |= 1 << (old % 64);
    }
}

/// Seen `(run, seq)` of every node.
#[derive(Debug, Default)]
pub struct Seen {
    nodes: BTreeMap<String, Vec<Run>>,
    /// Seqs that left a window unseen, since the last [`Seen::take_missing`].
    missing: u64,
}

impl Seen {
    /// The seqs found missing since the last call.
    pub fn take_missing(&mut self) -> u64 {
        std::mem::take(&mut self.missing)
    }

    /// Whether this is the first time `node`'s message `(run, seq)` is handled; records it.
    pub fn first_time(&mut self, node: &str, run: u64, seq: u64) -> bool {
        let runs = match self.nodes.get_mut(node) {
            Some(r) => r,
            None => self.nodes.entry(node.to_owned()).or_default(),
        };
        if let Some(r) = runs.iter_mut().find(|r| r.run == run) {
            return r.first_time(seq, &mut self.missing);
        }
        if runs.len() >= RUNS {
            // the oldest run goes (runs grow by one per agent start)
            if let Some(i) = runs
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| r.run)
                .map(|(i, _)| i)
            {
                if runs[i].run > run {
                    // older than every run remembered: an old spool's message, not a copy
                    return true;
                }
                runs.swap_remove(i);
            }
        }
        runs.push(Run::new(run, seq));
        true
    }

    /// Forgets `node` (its retained status cleared).
    pub fn forget(&mut self, node: &str) {
        self.nodes.remove(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_found_in_any_order_and_new_seqs_pass() {
        let mut s = Seen::default();
        for seq in 1..=10 {
            assert!(s.first_time("n", 1, seq));
        }
        // the broker lost 11 and 12; the agent resends 8..=12 after its reconnect, then 13
        for seq in 8..=10 {
            assert!(!s.first_time("n", 1, seq), "{seq} is a copy");
        }
        assert!(s.first_time("n", 1, 11));
        assert!(s.first_time("n", 1, 12));
        assert!(!s.first_time("n", 1, 12));
        assert!(s.first_time("n", 1, 13));
        // a gap filled late: 15 before 14
        assert!(s.first_time("n", 1, 15));
        assert!(s.first_time("n", 1, 14));
        assert!(!s.first_time("n", 1, 14));
        assert!(!s.first_time("n", 1, 15));
    }

    #[test]
    fn nodes_and_runs_apart_and_a_restarted_agent_starts_again() {
        let mut s = Seen::default();
        assert!(s.first_time("a", 1, 5));
        assert!(s.first_time("b", 1, 5));
        assert!(s.first_time("a", 2, 1));
        assert!(s.first_time("a", 2, 5));
        assert!(!s.first_time("a", 1, 5));
        // a run older than every remembered one: let through (an old spool, not a copy)
        for run in 3..=6 {
            assert!(s.first_time("a", run, 1));
        }
        assert!(s.first_time("a", 1, 6));
        s.forget("a");
        assert!(s.first_time("a", 6, 1));
    }

    #[test]
    fn far_below_the_window_is_a_copy_and_big_jumps_clear_it() {
        let mut s = Seen::default();
        assert!(s.first_time("n", 1, 1_000));
        assert!(!s.first_time("n", 1, 1_000 - WINDOW - 1));
        assert!(s.first_time("n", 1, 999));
        assert!(s.first_time("n", 1, 1_000 + 2 * WINDOW));
        // 999 and 1000 are far below now
        assert!(!s.first_time("n", 1, 1_000));
        assert!(s.first_time("n", 1, 1_000 + 2 * WINDOW - 1));
    }

    #[test]
    fn seqs_that_never_came_are_counted_once_a_window_later() {
        let mut s = Seen::default();
        // first seen at 100: nothing below it is missing
        for seq in (100..=400).filter(|q| q % 10 != 3) {
            s.first_time("n", 1, seq);
        }
        // the copies and late arrivals: 395 was seen; 393 arrives late (inside the window)
        assert!(!s.first_time("n", 1, 395));
        assert!(s.first_time("n", 1, 393));
        // seqs ending in 3 from 103 up to 400 - 256 - 1 = 143 left the window: 103 ... 143
        assert_eq!(s.take_missing(), 5);
        assert_eq!(s.take_missing(), 0, "taken");
        // a jump far past the window: the unseen left in it (the 3s from 153 to 383, not 393),
        // and the 999 seqs 401 ..= 1399 jumped over, but the ones now in the new window
        s.first_time("n", 1, 1_400 + WINDOW);
        assert_eq!(s.take_missing(), 24 + (1_400 + WINDOW - 1 - WINDOW - 400));
        // a new run starts clean, other nodes apart
        s.first_time("n", 2, 5);
        s.first_time("m", 1, 1);
        s.first_time("m", 1, 2 + WINDOW);
        assert_eq!(
            s.take_missing(),
            0,
            "m's 2 ..= 1 + WINDOW are still in its window"
        );
        s.first_time("m", 1, 2 + 2 * WINDOW + 1);
        assert_eq!(s.take_missing(), WINDOW, "and now out of it");
    }

    #[test]
    fn the_window_keeps_every_bit_across_shifts() {
        let mut s = Seen::default();
        for seq in (1..=300).step_by(2) {
            assert!(s.first_time("n", 1, seq));
        }
        // 300 - 256 < seq: the even ones are new, the odd ones copies
        for seq in 46..300 {
            assert_eq!(s.first_time("n", 1, seq), seq % 2 == 0, "seq {seq}");
        }
    }
}
