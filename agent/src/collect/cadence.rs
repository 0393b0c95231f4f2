//! When the slowly changing parts of a sample are read again, and the grid the samplers and
//! beats tick on ([`ticker`]).
//!
//! Some figures change slowly but cost as much to read as all the rest: the process count walks
//! every /proc/<pid>/stat, the mount table is formatted by the kernel for every mount, the
//! sensors are found by walking /sys, the engine's `/info` is an HTTP request and a 5 KB JSON
//! document. They are read again every [`SLOW_EVERY`] (or every sample, if the interval is
//! longer) and their last reading is sent with every sample in between, so the schema and the
//! number of points are unchanged. Counters (CPU, network, disk I/O) are read every sample.

use std::time::Duration;

/// How often the slowly changing parts are read again.
pub const SLOW_EVERY_MS: i64 = 10_000;

/// A period over a clock passed in (ms); pure.
#[derive(Debug, Clone)]
pub struct Cadence {
    every_ms: i64,
    last_ms: Option<i64>,
}

impl Cadence {
    pub fn new(every_ms: i64) -> Self {
        Cadence {
            every_ms,
            last_ms: None,
        }
    }

    /// The slow cadence of [`SLOW_EVERY_MS`].
    pub fn slow() -> Self {
        Self::new(SLOW_EVERY_MS)
    }

    /// Whether a reading is due at `now_ms`; if so, `now_ms` becomes the last reading. Due
    /// at the first call, after a period, and whenever the clock went back (a wall clock set
    /// back an hour must not freeze the readings for an hour).
    pub fn due(&mut self, now_ms: i64) -> bool {
        let due = match self.last_ms {
            None => true,
            Some(last) => now_ms < last || now_ms - last >= self.every_ms,
        };
        if due {
            self.last_ms = Some(now_ms);
        }
        due
    }

    /// The next call is due whatever the clock says (something known to have changed).
    pub fn expire(&mut self) {
        self.last_ms = None;
    }
}

/// Ticks every `every` from `start`, a point of the agent's grid (its first instant and whole
/// periods after it), so that the samplers and the beats that fall on the same instant wake
/// the agent once (a sample's tick is every 4th beat's at the defaults). A late tick is not
/// made up for: the next is on the grid again.
pub fn ticker(start: tokio::time::Instant, every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(start, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick
}

/// The first instant at or after `now` that lies whole periods of `every` after `grid`.
pub fn grid_after(
    grid: tokio::time::Instant,
    every: Duration,
    now: tokio::time::Instant,
) -> tokio::time::Instant {
    let (since, every_ns) = (now.saturating_duration_since(grid), every.as_nanos().max(1));
    let periods = since.as_nanos().div_ceil(every_ns);
    let ahead = u64::try_from(periods.saturating_mul(every_ns)).unwrap_or(u64::MAX);
    grid + Duration::from_nanos(ahead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fall_on_the_grid_whatever_the_start() {
        let g = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(grid_after(g, ms(250), g), g);
        assert_eq!(grid_after(g, ms(250), g + ms(1)), g + ms(250));
        assert_eq!(grid_after(g, ms(250), g + ms(1000)), g + ms(1000));
        assert_eq!(grid_after(g, ms(1000), g + ms(1001)), g + ms(2000));
        // every 4th beat is a sample's tick
        let beat = grid_after(g, ms(250), g + ms(2760));
        assert_eq!(beat, g + ms(3000));
        assert_eq!(grid_after(g, ms(1000), g + ms(2760)), beat);
        assert_eq!(
            grid_after(g + ms(5), ms(250), g),
            g + ms(5),
            "before the grid: its start"
        );
    }

    #[test]
    fn due_first_then_once_a_period_and_when_the_clock_goes_back() {
        let mut c = Cadence::new(10_000);
        assert!(c.due(1_000_000));
        assert!(!c.due(1_000_001));
        assert!(!c.due(1_009_999));
        assert!(c.due(1_010_000));
        assert!(!c.due(1_015_000));
        // the wall clock set back an hour: read now, then every period from there
        assert!(c.due(1_015_000 - 3_600_000));
        assert!(!c.due(1_015_000 - 3_600_000 + 5_000));
        assert!(c.due(1_015_000 - 3_600_000 + 10_000));
        c.expire();
        assert!(c.due(1_015_000 - 3_600_000 + 10_001));
    }
}
