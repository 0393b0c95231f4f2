//! What to do with a write's answer: pure, so every rule has a test.
//!
//! - 2xx: written.
//! - no answer (connection refused, timeout), 429, 5xx: retry the same batch after a backoff
//!   that doubles per attempt up to `max_delay`, or after `Retry-After` if the server says more.
//! - 413 (too large), 400 (bad line), 422 (InfluxDB 2: a point outside the retention period, a
//!   field type conflict) and every other 4xx but those below: the batch can never be written
//!   as it is. Split it in halves and write each. Rewriting lines the database already took is
//!   harmless (same series, same timestamp: the same point), so bisecting keeps every good
//!   line of a batch; a single line so answered is rejected: counted and logged, never
//!   retried, and nothing waits behind it.
//! - 401, 403, 404 (bad token, missing database): retried with backoff, never dropped; the
//!   operator has to fix the configuration, and the data waits. 408 and 429 (the server is
//!   busy): retried too.

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
        Some(401 | 403 | 404 | 408 | 429) => wait(),
        // The request itself is wrong for this server: bisect to the lines it refuses; a
        // single line so answered (too large, bad, outside retention) can never be written.
        Some(s) if (400..500).contains(&s) && lines > 1 => Outcome::Split,
        Some(s) if (400..500).contains(&s) => Outcome::Rejected,
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
    fn every_answer_has_an_end_422_and_other_client_errors_bisect_to_a_drop() {
        // InfluxDB 2's 422 (outside retention, type conflict) was retried forever, holding
        // every later write behind it
        assert_eq!(classify(Some(422), None, 8, 1, MAX), Outcome::Split);
        assert_eq!(classify(Some(422), None, 1, 1, MAX), Outcome::Rejected);
        for s in [405, 409, 411, 414, 415, 418] {
            assert_eq!(classify(Some(s), None, 1, 1, MAX), Outcome::Rejected, "{s}");
        }
        // the operator's to fix, or the server busy: the data waits
        for s in [401, 403, 404, 408, 429] {
            assert!(
                matches!(classify(Some(s), None, 1, 1, MAX), Outcome::Retry(_)),
                "{s}"
            );
        }
        // every status classifies without a panic
        for s in 0..1000u16 {
            let _ = classify(Some(s), Some("x"), 2, u32::MAX, MAX);
        }
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
