//! Reconnect backoff: exponential with jitter, pure (the random numbers are passed in).
//!
//! rumqttc reconnects as fast as it is polled; a fleet of agents reconnecting in lock-step
//! after a broker restart would hammer it. Each delay is drawn uniformly from the upper half
//! of the current exponential step ("equal jitter"), so agents spread out but never retry
//! sooner than half the step.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The delay before the next attempt; `random` is any uniformly random u64.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let step = self
            .min
            .saturating_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1).min(31);
        let half = step / 2;
        let span = (step - half).as_nanos().max(1) as u64;
        half + Duration::from_nanos(random % span)
    }

    /// Call after a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A small xorshift generator for jitter; not for anything secret.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeds from the clock and the process id, so agents started together still differ.
    pub fn from_entropy() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Jitter((t ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_max_with_jitter_in_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut j = Jitter(42);
        let mut steps = vec![];
        for _ in 0..12 {
            steps.push(b.next_delay(j.next_u64()));
        }
        // step k is min * 2^k capped at max; the delay lies in [step/2, step).
        let expect = [500u64, 1000, 2000, 4000, 8000, 16000, 30000, 30000];
        for (d, step) in steps.iter().zip(expect) {
            let ms = d.as_millis() as u64;
            assert!(
                ms >= step / 2 && ms < step,
                "{ms} not in [{}, {step})",
                step / 2
            );
        }
        assert!(steps.iter().all(|d| *d < Duration::from_secs(30)));
        b.reset();
        assert!(b.next_delay(0) == Duration::from_millis(250));
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for i in 0..1000 {
            assert!(b.next_delay(i) <= Duration::from_secs(60));
        }
    }

    #[test]
    fn jitter_differs() {
        let mut j = Jitter(7);
        let a = j.next_u64();
        assert_ne!(a, j.next_u64());
    }
}
