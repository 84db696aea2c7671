//! Retry detection: a request is a retry when it is the same request as the
//! target's previous one of its kind (same method, same path as sent, same
//! body), started within [`WINDOW_NS`] after that one ended in a failure a
//! client retries ([`retryable`]), and sooner than the request's own schedule.
//!
//! What it is not: a request to another id (`/api/Report/Wsjf/1` then `/2`
//! are two paths, however they template), a repeat after an answer a client
//! does not retry (a 404: the client asks again later, as planned), and a
//! scheduled repeat: a request the client also repeats after it succeeded
//! has an interval of its own (start to start), and a repeat after a failure
//! that comes at that interval, not sooner (under half of it), is the
//! schedule's next run. A connect that failed carried no request, so what
//! the client sends next cannot be told from new work: failed connects are
//! counted in `pywats_errors_total{operation="connect"}`, not here.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
};

use crate::net::{limits::MAX_RETRY_KEYS, report::Outcome};

/// Request body bytes hashed into a request's digest (with its length): a
/// report's id and timestamps are near its start.
pub const DIGEST_BODY: u64 = 4096;

/// How long after a failure a repeat still counts as its retry. pyWATS waits
/// at most 30 s between attempts (`RetryConfig.max_delay`); a repeat a
/// minute later is new work.
pub const WINDOW_NS: u64 = 60 * 1_000_000_000;

/// Whether a client retries a request that ended so: no connection or no
/// answer (a timeout, a reset, a close before the response, a stream reset),
/// too many requests (429), or a server error (5xx).
pub fn retryable(outcome: Outcome) -> bool {
    match outcome {
        Outcome::Response(code) => code == 429 || code >= 500,
        Outcome::Abandoned | Outcome::PeerClosed | Outcome::Reset | Outcome::StreamReset => true,
    }
}

/// A target and a digest of its request: a path may be kilobytes long, and
/// thousands of them are remembered.
pub type Key = (String, u64);

/// The key of a request: method, path as sent (query dropped) and body digest.
pub fn key(target: &str, method: &str, path: &str, body_digest: u64) -> Key {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (method, path, body_digest).hash(&mut h);
    (target.to_string(), h.finish())
}

/// The latest request of a key.
#[derive(Clone, Copy, Debug)]
struct Last {
    start_ns: u64,
    end_ns: u64,
    /// It ended in a failure a client retries.
    failed: bool,
    /// Start to start, the latest interval at which the request came again
    /// after an outcome that is not retried: its schedule.
    period_ns: Option<u64>,
}

#[derive(Default)]
pub struct Retries {
    last: HashMap<Key, Last>,
}

/// What [`Retries::record`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Recorded {
    pub retry: bool,
    /// Requests forgotten to stay within [`MAX_RETRY_KEYS`].
    pub forgotten: usize,
}

impl Retries {
    /// A target that is gone.
    pub fn forget(&mut self, target: &str) {
        self.last.retain(|(t, _), _| t != target);
    }

    /// Records a finished request; `failed`: it ended in a failure a client retries.
    pub fn record(&mut self, key: Key, start_ns: u64, end_ns: u64, failed: bool) -> Recorded {
        let previous = self.last.get(&key).copied();
        let retry = previous.is_some_and(|p| {
            let after_failure = p.failed && p.end_ns <= start_ns && start_ns - p.end_ns <= WINDOW_NS;
            let before_schedule = p.period_ns.is_none_or(|period| start_ns.saturating_sub(p.start_ns) < period / 2);
            after_failure && before_schedule
        });
        let period_ns = match previous {
            Some(p) if !p.failed && p.start_ns < start_ns => Some(start_ns - p.start_ns),
            Some(p) => p.period_ns,
            None => None,
        };
        self.last.insert(key, Last { start_ns, end_ns, failed, period_ns });
        Recorded { retry, forgotten: self.trim(end_ns) }
    }

    /// Keeps at most [`MAX_RETRY_KEYS`] requests: those older than the
    /// window first (they can no longer be retried), then the older half.
    fn trim(&mut self, now_ns: u64) -> usize {
        if self.last.len() <= MAX_RETRY_KEYS {
            return 0;
        }
        self.last.retain(|_, l| now_ns.saturating_sub(l.end_ns) <= WINDOW_NS);
        if self.last.len() <= MAX_RETRY_KEYS {
            return 0;
        }
        // Requests within the window beyond the cap: forget the older half,
        // so that the next request does not pay for this again.
        let mut ends: Vec<u64> = self.last.values().map(|l| l.end_ns).collect();
        let (_, &mut cutoff, _) = ends.select_nth_unstable(MAX_RETRY_KEYS / 2);
        let before = self.last.len();
        self.last.retain(|_, l| l.end_ns > cutoff);
        before - self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn k(path: &str) -> Key {
        key("t", "GET", path, 0)
    }

    /// A request of `path` from `start` to `end` seconds; true when it is a retry.
    fn retry(r: &mut Retries, path: &str, start: u64, end: u64, failed: bool) -> bool {
        r.record(k(path), start * S, end * S, failed).retry
    }

    #[test]
    fn a_repeat_after_a_retryable_failure_within_the_window_is_a_retry() {
        let mut r = Retries::default();
        assert!(!retry(&mut r, "/a", 0, 1, true));
        assert!(retry(&mut r, "/a", 2, 3, true));
        assert!(retry(&mut r, "/a", 5, 6, false));
        // After a success the same request is new work.
        assert!(!retry(&mut r, "/a", 100, 101, false));
        // Past the window it is new work too.
        assert!(!retry(&mut r, "/b", 0, 1, true));
        assert!(!retry(&mut r, "/b", 62, 63, false));
        // Started before the failure ended: a concurrent request, not its retry.
        assert!(!retry(&mut r, "/c", 0, 10, true));
        assert!(!r.record(k("/c"), 9 * S, 11 * S, false).retry);
    }

    #[test]
    fn another_id_another_body_or_a_404_is_never_a_retry() {
        let mut r = Retries::default();
        for id in 0..20 {
            assert!(!retry(&mut r, &format!("/api/Report/Wsjf/{id}"), id * 2, id * 2 + 1, true));
        }
        let body = |d| key("t", "POST", "/api/Report/WSJF", d);
        assert!(!r.record(body(1), 0, S, true).retry);
        assert!(!r.record(body(2), 2 * S, 3 * S, true).retry);
        // What a client does not retry: a 404 asked again on schedule.
        assert!(!retryable(Outcome::Response(404)));
        for i in 0..5 {
            assert!(!retry(&mut r, "/gone", i * 10, i * 10 + 1, retryable(Outcome::Response(404))));
        }
    }

    #[test]
    fn a_scheduled_repeat_is_not_a_retry_but_a_retry_between_runs_is() {
        let mut r = Retries::default();
        // Polled every 10 s: answered twice, then failing.
        assert!(!retry(&mut r, "/poll", 0, 1, false));
        assert!(!retry(&mut r, "/poll", 10, 11, false));
        assert!(!retry(&mut r, "/poll", 20, 21, true));
        // The next run, on schedule, after a failure.
        assert!(!retry(&mut r, "/poll", 30, 31, true));
        // A retry 1 s after a failure, well before the next run.
        assert!(retry(&mut r, "/poll", 32, 33, true));
        assert!(retry(&mut r, "/poll", 35, 36, false));
        assert!(!retry(&mut r, "/poll", 40, 41, false));
    }

    #[test]
    fn retryable_outcomes() {
        for (outcome, want) in [
            (Outcome::Response(200), false),
            (Outcome::Response(404), false),
            (Outcome::Response(429), true),
            (Outcome::Response(500), true),
            (Outcome::Response(503), true),
            (Outcome::Abandoned, true),
            (Outcome::Reset, true),
            (Outcome::PeerClosed, true),
            (Outcome::StreamReset, true),
        ] {
            assert_eq!(retryable(outcome), want, "{outcome:?}");
        }
    }

    #[test]
    fn requests_within_the_window_are_capped_and_counted() {
        let mut r = Retries::default();
        let mut forgotten = 0;
        let n = MAX_RETRY_KEYS as u64 * 3;
        for i in 0..n {
            forgotten += r.record(k(&i.to_string()), i, i, true).forgotten;
            assert!(r.last.len() <= MAX_RETRY_KEYS);
        }
        assert_eq!(forgotten + r.last.len(), MAX_RETRY_KEYS * 3);
        // The newest are the ones kept.
        assert!(r.record(k(&(n - 1).to_string()), n, n, false).retry);
    }
}
