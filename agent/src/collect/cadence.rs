//! When the slowly changing parts of a sample are read again.
//!
//! Some figures change slowly but cost as much to read as all the rest: the process count walks
//! every /proc/<pid>/stat, the mount table is formatted by the kernel for every mount, the
//! sensors are found by walking /sys, the engine's `/info` is an HTTP request and a 5 KB JSON
//! document. They are read again every [`SLOW_EVERY`] (or every sample, if the interval is
//! longer) and their last reading is sent with every sample in between, so the schema and the
//! number of points are unchanged. Counters (CPU, network, disk I/O) are read every sample.

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

#[cfg(test)]
mod tests {
    use super::*;

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
