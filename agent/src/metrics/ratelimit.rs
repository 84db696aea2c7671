//! A warning that repeats at most once per interval, with a count of what it held back.

use crate::sync::Locked;
use std::{
    fmt::Arguments,
    sync::Mutex,
    time::{Duration, Instant},
};

pub struct RateLimitedLog {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedLog {
    pub const fn new(every: Duration) -> RateLimitedLog {
        RateLimitedLog { every, state: Mutex::new((None, 0)) }
    }

    pub fn warn(&self, message: Arguments<'_>) {
        let mut state = self.state.locked();
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.every => state.1 += 1,
            _ => {
                if state.1 > 0 {
                    tracing::warn!("{message} ({} similar messages suppressed)", state.1);
                } else {
                    tracing::warn!("{message}");
                }
                *state = (Some(now), 0);
            }
        }
    }
}
