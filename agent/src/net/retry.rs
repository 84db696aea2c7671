//! Retry detection: a request that repeats a failed one of the same target
//! (same method, endpoint and body digest) within a window.

use std::collections::HashMap;

pub const WINDOW_NS: u64 = 5 * 60 * 1_000_000_000;

#[derive(Default)]
pub struct Retries {
    /// (target, method, endpoint, digest) → time of the last failure.
    failed: HashMap<(String, String, String, u64), u64>,
}

impl Retries {
    /// Records a finished request; returns whether it was a retry.
    pub fn record(&mut self, key: (String, String, String, u64), start_ns: u64, end_ns: u64, failed: bool) -> bool {
        let retry = self.failed.get(&key).is_some_and(|&t| t <= start_ns && start_ns - t <= WINDOW_NS);
        if failed {
            self.failed.insert(key, end_ns);
        } else {
            self.failed.remove(&key);
        }
        if self.failed.len() > 10_000 {
            self.failed.retain(|_, t| end_ns.saturating_sub(*t) <= WINDOW_NS);
        }
        retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(d: u64) -> (String, String, String, u64) {
        ("t".into(), "POST".into(), "/x".into(), d)
    }

    #[test]
    fn retry_after_failure_within_window() {
        let mut r = Retries::default();
        assert!(!r.record(k(1), 0, 10, true));
        assert!(r.record(k(1), 20, 30, true));
        assert!(r.record(k(1), 40, 50, false));
        // Success clears: the next identical request is new work.
        assert!(!r.record(k(1), 60, 70, false));
        // A different body is not a retry.
        assert!(!r.record(k(2), 80, 90, true));
        assert!(!r.record(k(3), 100, 110, false));
        // Outside the window it is not a retry.
        assert!(!r.record(k(2), 90 + WINDOW_NS + 1, 0, false));
    }
}
