//! Each agent's clock, as its beats show it (pure; the gateway's time passed in).
//!
//! An agent stamps its samples with its own wall clock, which may be wrong: a Raspberry Pi
//! has no real-time clock and boots with the last saved time (or 1970) until NTP answers. Its
//! samples would then land an hour back, over its own history, or in the future. The gateway
//! hears every agent's beats in real time (they are never buffered), and each beat carries the
//! agent's wall clock and its monotonic clock (`CLOCK_BOOTTIME`, which nobody sets). So per
//! agent run the gateway knows
//!
//! - `offset` = true time - monotonic clock: the least of `arrival - mono` over the run's
//!   beats (each includes the beat's way to the gateway, a few ms; the least is the closest);
//! - `skew` = the agent's wall clock - true time, at its latest beat.
//!
//! A sample of the same run carries its monotonic reading too, so its true time is `mono +
//! offset`, whatever the wall clock said when it was sampled (buffered samples from before
//! an outage, while the clock was still wrong, are placed right). When that differs from its
//! own stamp by [`SKEW_BOUND_MS`] or more, the gateway writes it at the true time and says so
//! in a `clock_offset_ms` field; within the bound it is left as stamped, so a redelivery of the
//! same sample always lands on the same point. The last [`RUNS_KEPT`] runs of each agent are
//! remembered, so samples of an earlier run (queued across an agent restart, while no gateway
//! was active) are placed too; a sample of a run never heard, or from an agent that sends no
//! clock readings, is written as stamped.

use std::collections::{HashMap, HashSet};

/// A sample whose stamp is this far from true time (either way) is written at true time.
/// NTP keeps a synced clock within milliseconds; 2 s is far beyond that and well within a
/// sampling interval.
pub const SKEW_BOUND_MS: i64 = 2_000;
/// A `clock_skew` alert resolves once the skew is under this (hysteresis: a clock hovering
/// at the bound does not flap).
pub const RESOLVE_BELOW_MS: i64 = 1_000;
/// Beats heard in a run before its offset is trusted: the first already places samples within
/// its own way to the gateway (milliseconds); later ones only make that closer. A sample that
/// reaches the gateway before its run's first beat (the first of a run, now and then: the beat
/// and the data ride different connections) is written as stamped.
pub const SETTLE_BEATS: u32 = 1;
/// Runs remembered per agent: the current one and those before it, for samples queued across
/// agent restarts.
pub const RUNS_KEPT: usize = 4;
/// Agents tracked at most (as many node names as the gateway tracks, `nodes::MAX_NODES`).
pub const MAX_CLOCKS: usize = 20_000;

#[derive(Debug, Clone, PartialEq)]
struct Clock {
    run: u64,
    /// True time (ms since the epoch) - the agent's monotonic clock (ms).
    offset: i64,
    beats: u32,
    /// The agent's wall clock - true time at its latest beat, ms.
    skew: i64,
}

/// What a sample's stamp needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Correction {
    /// Its true time, ms since the epoch.
    pub ts: i64,
    /// Its stamp - its true time, ms.
    pub offset_ms: i64,
}

#[derive(Debug, Default)]
pub struct Clocks {
    /// Each agent's current run.
    nodes: HashMap<String, Clock>,
    /// Each agent's earlier runs, newest last (at most [`RUNS_KEPT`] - 1).
    earlier: HashMap<String, Vec<Clock>>,
    /// Nodes whose `clock_skew` alert is open.
    told: HashSet<String>,
}

impl Clocks {
    pub fn new() -> Self {
        Self::default()
    }

    /// A beat of `node`'s run `run`, carrying the agent's wall clock `ts` and monotonic clock
    /// `mono` (either absent: an older agent), heard at `now_ms` by this gateway's clock.
    pub fn on_beat(
        &mut self,
        node: &str,
        run: u64,
        ts: Option<i64>,
        mono: Option<u64>,
        now_ms: i64,
    ) {
        let (Some(ts), Some(mono)) = (ts, mono.and_then(|m| i64::try_from(m).ok())) else {
            return;
        };
        if !self.nodes.contains_key(node) && self.nodes.len() >= MAX_CLOCKS {
            return;
        }
        let offset = now_ms.saturating_sub(mono);
        let c = self.nodes.entry(node.to_owned()).or_insert(Clock {
            run,
            offset,
            beats: 0,
            skew: 0,
        });
        if c.run != run {
            let old = std::mem::replace(
                c,
                Clock {
                    run,
                    offset,
                    beats: 0,
                    skew: 0,
                },
            );
            let earlier = self.earlier.entry(node.to_owned()).or_default();
            // a run that comes back (beats reordered) is the current one again
            earlier.retain(|e| e.run != run && e.run != old.run);
            if old.beats >= SETTLE_BEATS {
                earlier.push(old);
            }
            if earlier.len() >= RUNS_KEPT {
                earlier.remove(0);
            }
        }
        c.offset = c.offset.min(offset);
        c.beats = c.beats.saturating_add(1);
        c.skew = ts.saturating_sub(mono.saturating_add(c.offset));
    }

    /// The agent's wall clock - true time, ms, once its run's offset is trusted.
    pub fn skew(&self, node: &str) -> Option<i64> {
        self.nodes
            .get(node)
            .filter(|c| c.beats >= SETTLE_BEATS)
            .map(|c| c.skew)
    }

    /// Where a sample of `node`'s run `run`, stamped `ts` with monotonic reading `mono`, goes:
    /// `Some` when its stamp is [`SKEW_BOUND_MS`] or more from its true time.
    pub fn correct(&self, node: &str, run: u64, ts: i64, mono: Option<u64>) -> Option<Correction> {
        let c = self
            .nodes
            .get(node)
            .filter(|c| c.run == run)
            .or_else(|| self.earlier.get(node)?.iter().find(|c| c.run == run))
            .filter(|c| c.beats >= SETTLE_BEATS)?;
        let mono = i64::try_from(mono?).ok()?;
        let true_ts = mono.saturating_add(c.offset);
        let offset_ms = ts.saturating_sub(true_ts);
        (offset_ms.abs() >= SKEW_BOUND_MS).then_some(Correction {
            ts: true_ts,
            offset_ms,
        })
    }

    pub fn forget(&mut self, node: &str) {
        self.nodes.remove(node);
        self.earlier.remove(node);
        self.told.remove(node);
    }

    /// Whether `node`'s `clock_skew` alert opens now (`Some(Some(skew))`: off by
    /// [`SKEW_BOUND_MS`] or more) or resolves (`Some(None)`: back under
    /// [`RESOLVE_BELOW_MS`]); `None`: no change, or not known.
    pub fn alert_change(&mut self, node: &str) -> Option<Option<i64>> {
        let skew = self.skew(node)?;
        let told = self.told.contains(node);
        if !told && skew.abs() >= SKEW_BOUND_MS {
            self.told.insert(node.to_owned());
            Some(Some(skew))
        } else if told && skew.abs() < RESOLVE_BELOW_MS {
            self.told.remove(node);
            Some(None)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_796_000_000_000;
    const HOUR: i64 = 3_600_000;

    /// `node`'s agent beating every 250 ms from true time T, its wall clock `skew` off, its
    /// monotonic clock at 5,000 s, each beat `delay` ms on the way.
    fn beats(c: &mut Clocks, node: &str, run: u64, skew: i64, n: i64, delay: impl Fn(i64) -> i64) {
        for i in 0..n {
            let t = T + i * 250;
            let mono = 5_000_000 + i * 250;
            c.on_beat(node, run, Some(t + skew), Some(mono as u64), t + delay(i));
        }
    }

    #[test]
    fn a_clock_an_hour_behind_is_found_and_its_samples_placed_at_true_time() {
        let mut c = Clocks::new();
        assert_eq!(c.skew("pi"), None, "no beat yet");
        beats(&mut c, "pi", 1, -HOUR, 8, |i| 5 + (i % 3) * 20);
        assert_eq!(c.skew("pi"), Some(-HOUR - 5));

        // a sample taken at true time T + 1,000 (mono 5,001,000), stamped an hour back
        let k = c
            .correct("pi", 1, T + 1_000 - HOUR, Some(5_001_000))
            .unwrap();
        assert!(
            (k.ts - (T + 1_000)).abs() <= 5,
            "within the beats' delay: {k:?}"
        );
        assert_eq!(k.offset_ms, -HOUR - 5);
        // ten minutes ahead
        let mut c = Clocks::new();
        beats(&mut c, "pi", 1, 600_000, 8, |_| 3);
        let k = c.correct("pi", 1, T + 600_000, Some(5_000_000)).unwrap();
        assert_eq!((k.ts, k.offset_ms), (T + 3, 599_997));
    }

    #[test]
    fn buffered_samples_from_while_the_clock_was_wrong_are_placed_by_the_monotonic_clock() {
        // sampled at true time T - 60 s while the clock said 1970; NTP fixed it since
        let mut c = Clocks::new();
        beats(&mut c, "pi", 7, 0, 8, |_| 4);
        assert_eq!(c.skew("pi"), Some(-4));
        let k = c
            .correct("pi", 7, 12_345, Some(5_000_000 - 60_000))
            .unwrap();
        assert_eq!(k.ts, T - 60_000 + 4);
        // a sample of the right time is left as stamped (a redelivery lands on the same point)
        assert_eq!(c.correct("pi", 7, T + 1_500, Some(5_001_500)), None);
        assert_eq!(
            c.correct("pi", 7, T + 3_000, Some(5_001_500)),
            None,
            "under the bound"
        );
    }

    #[test]
    fn what_cannot_be_placed_is_left_as_stamped() {
        let mut c = Clocks::new();
        beats(&mut c, "pi", 2, -HOUR, 8, |_| 4);
        assert_eq!(
            c.correct("pi", 1, T - HOUR, Some(5_000_000)),
            None,
            "an earlier run"
        );
        assert_eq!(
            c.correct("pi", 2, T - HOUR, None),
            None,
            "no monotonic reading"
        );
        assert_eq!(c.correct("other", 2, T - HOUR, Some(1)), None, "never beat");
        // an older agent's beats carry no clocks
        c.on_beat("old", 1, None, None, T);
        assert_eq!(c.skew("old"), None);
        // a new run starts over
        beats(&mut c, "pi", 3, 0, 1, |_| 4);
        assert_eq!(
            c.skew("pi"),
            Some(-4),
            "known from the new run's first beat"
        );
        // the old run's samples (queued across the agent's restart) are still placed
        let k = c.correct("pi", 2, T - HOUR, Some(5_000_000)).unwrap();
        assert_eq!(k.ts, T + 4);
        // up to RUNS_KEPT runs back
        for run in 4..(4 + RUNS_KEPT as u64) {
            beats(&mut c, "pi", run, 0, 1, |_| 4);
        }
        assert_eq!(
            c.correct("pi", 2, T - HOUR, Some(5_000_000)),
            None,
            "forgotten runs back"
        );
        c.forget("pi");
        assert_eq!(c.correct("pi", 3, T, Some(5_000_000)), None);
    }

    #[test]
    fn the_clock_skew_alert_opens_once_and_resolves_when_the_clock_is_right_again() {
        let mut c = Clocks::new();
        beats(&mut c, "pi", 1, -HOUR, 8, |_| 4);
        assert_eq!(c.alert_change("pi"), Some(Some(-HOUR - 4)));
        assert_eq!(c.alert_change("pi"), None, "once");
        // NTP steps the clock to within 1.5 s: still open (hysteresis)
        beats(&mut c, "pi", 1, -1_500, 1, |_| 4);
        assert_eq!(c.alert_change("pi"), None);
        beats(&mut c, "pi", 1, 0, 1, |_| 4);
        assert_eq!(c.alert_change("pi"), Some(None));
        assert_eq!(c.alert_change("pi"), None);
    }
}
