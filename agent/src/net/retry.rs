//! Retry detection: a request that repeats a failed one of the same target
//! (same method, endpoint and body digest) within a window.

use std::collections::HashMap;

use crate::net::limits::MAX_RETRY_KEYS;

pub const WINDOW_NS: u64 = 5 * 60 * 1_000_000_000;

#[derive(Default)]
pub struct Retries {
    /// (target, method, endpoint, digest) → time of the last failure.
    failed: HashMap<(String, String, String, u64), u64>,
}

/// What [`Retries::record`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Recorded {
    pub retry: bool,
    /// Failures forgotten to stay within [`MAX_RETRY_KEYS`].
    pub forgotten: usize,
}

impl Retries {
    /// A target that is gone.
    pub fn forget(&mut self, target: &str) {
        self.failed.retain(|(t, ..), _| t != target);
    }

    /// Records a finished request.
    pub fn record(&mut self, key: (String, String, String, u64), start_ns: u64, end_ns: u64, failed: bool) -> Recorded {
        let retry = self.failed.get(&key).is_some_and(|&t| t <= start_ns && start_ns - t <= WINDOW_NS);
        if failed {
            self.failed.insert(key, end_ns);
        } else {
            self.failed.remove(&key);
        }
        let mut forgotten = 0;
        if self.failed.len() > MAX_RETRY_KEYS {
            self.failed.retain(|_, t| end_ns.saturating_sub(*t) <= WINDOW_NS);
        }
        if self.failed.len() > MAX_RETRY_KEYS {
            // Failures within the window beyond the cap: forget the older
            // half, so the next request does not pay for this again.
            let mut times: Vec<u64> = self.failed.values().copied().collect();
            let (_, &mut cutoff, _) = times.select_nth_unstable(MAX_RETRY_KEYS / 2);
            let before = self.failed.len();
            self.failed.retain(|_, t| *t > cutoff);
            forgotten = before - self.failed.len();
        }
        Recorded { retry, forgotten }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(d: u64) -> (String, String, String, u64) {
        ("t".into(), "POST".into(), "/x".into(), d)
    }

    fn retry(r: &mut Retries, key: u64, start: u64, end: u64, failed: bool) -> bool {
        r.record(k(key), start, end, failed).retry
    }

    #[test]
    fn retry_after_failure_within_window() {
        let mut r = Retries::default();
        assert!(!retry(&mut r, 1, 0, 10, true));
        assert!(retry(&mut r, 1, 20, 30, true));
        assert!(retry(&mut r, 1, 40, 50, false));
        // Success clears: the next identical request is new work.
        assert!(!retry(&mut r, 1, 60, 70, false));
        // A different body is not a retry.
        assert!(!retry(&mut r, 2, 80, 90, true));
        assert!(!retry(&mut r, 3, 100, 110, false));
        // Outside the window it is not a retry.
        assert!(!retry(&mut r, 2, 90 + WINDOW_NS + 1, 0, false));
    }

    #[test]
    fn failures_within_the_window_are_capped_and_counted() {
        let mut r = Retries::default();
        let mut forgotten = 0;
        for i in 0..(MAX_RETRY_KEYS as u64 * 3) {
            forgotten += r.record(k(i), i, i, true).forgotten;
            assert!(r.failed.len() <= MAX_RETRY_KEYS);
        }
        assert_eq!(forgotten + r.failed.len(), MAX_RETRY_KEYS * 3);
        // The newest failures are the ones kept.
        let last = MAX_RETRY_KEYS as u64 * 3 - 1;
        assert!(r.record(k(last), last + 1, last + 1, false).retry);
    }
}
