//! What to do with a write's answer: pure, so every rule has a test.
//!
//! - 2xx: written.
//! - no answer (connection refused, timeout), 429, 5xx: retry the same batch after a backoff
//!   that doubles per attempt up to `max_delay`, or after `Retry-After` if the server says more.
//! - 413 (too large), 400 (bad line): split the batch in halves and write each. Rewriting lines
//!   the database already took is harmless (same series, same timestamp: the same point), so
//!   bisecting keeps every good line of a batch; a single line answered 400 is rejected:
//!   counted and logged, never retried.
//! - 401, 403, 404 (bad token, missing database): retried with backoff, never dropped; the
//!   operator has to fix the configuration, and the data waits.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Written,
    Retry(Duration),
    Split,
    Rejected,
}

/// The delay before retry number `attempt` (1-based).
pub fn backoff(attempt: u32, max_delay: Duration) -> Duration {
    let base = Duration::from_millis(250);
    base.saturating_mul(
        1u32.checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX),
    )
    .min(max_delay)
}

/// `Retry-After` in seconds (the HTTP-date form is rare from databases and is ignored).
pub fn parse_retry_after(v: Option<&str>) -> Option<Duration> {
    v?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Classifies an answer; `status` is `None` when no answer came.
pub fn classify(
    status: Option<u16>,
    retry_after: Option<&str>,
    lines: usize,
    attempt: u32,
    max_delay: Duration,
) -> Outcome {
    let wait = || {
        let b = backoff(attempt, max_delay);
        Outcome::Retry(
            parse_retry_after(retry_after)
                .map(|r| r.min(max_delay.max(b)).max(b))
                .unwrap_or(b),
        )
    };
    match status {
        None => wait(),
        Some(s) if (200..300).contains(&s) => Outcome::Written,
        Some(413 | 400) if lines > 1 => Outcome::Split,
        Some(400) => Outcome::Rejected,
        // A single line too large for the server can never be written.
        Some(413) => Outcome::Rejected,
        Some(_) => wait(),
    }
}

/// Splits a batch of newline-terminated lines into two halves by line count.
pub fn split_batch(batch: &str) -> (String, String) {
    let n = batch.lines().count();
    let mid = n / 2;
    let mut cut = 0;
    for (i, (pos, _)) in batch.match_indices('\n').enumerate() {
        if i + 1 == mid {
            cut = pos + 1;
            break;
        }
    }
    (batch[..cut].to_owned(), batch[cut..].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn success() {
        assert_eq!(classify(Some(204), None, 10, 1, MAX), Outcome::Written);
        assert_eq!(classify(Some(200), None, 10, 1, MAX), Outcome::Written);
    }

    #[test]
    fn transient_errors_retry_with_growing_backoff() {
        assert_eq!(
            classify(None, None, 10, 1, MAX),
            Outcome::Retry(Duration::from_millis(250))
        );
        assert_eq!(
            classify(Some(503), None, 10, 3, MAX),
            Outcome::Retry(Duration::from_secs(1))
        );
        assert_eq!(classify(Some(500), None, 10, 30, MAX), Outcome::Retry(MAX));
        assert!(matches!(
            classify(Some(404), None, 10, 1, MAX),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            classify(Some(401), None, 10, 1, MAX),
            Outcome::Retry(_)
        ));
    }

    #[test]
    fn retry_after_is_honoured_within_the_cap() {
        assert_eq!(
            classify(Some(429), Some("5"), 10, 1, MAX),
            Outcome::Retry(Duration::from_secs(5))
        );
        assert_eq!(
            classify(Some(503), Some("3600"), 10, 1, MAX),
            Outcome::Retry(MAX)
        );
        assert_eq!(
            classify(Some(429), Some("soon"), 10, 1, MAX),
            Outcome::Retry(Duration::from_millis(250))
        );
    }

    #[test]
    fn too_large_and_bad_lines_split_then_reject() {
        assert_eq!(classify(Some(413), None, 2, 1, MAX), Outcome::Split);
        assert_eq!(classify(Some(400), None, 2, 1, MAX), Outcome::Split);
        assert_eq!(classify(Some(400), None, 1, 1, MAX), Outcome::Rejected);
        assert_eq!(classify(Some(413), None, 1, 1, MAX), Outcome::Rejected);
    }

    #[test]
    fn split_keeps_every_line() {
        let b = "a 1\nb 2\nc 3\nd 4\ne 5\n";
        let (x, y) = split_batch(b);
        assert_eq!(x, "a 1\nb 2\n");
        assert_eq!(y, "c 3\nd 4\ne 5\n");
        let (x, y) = split_batch("a 1\nb 2\n");
        assert_eq!((x.as_str(), y.as_str()), ("a 1\n", "b 2\n"));
    }
}
