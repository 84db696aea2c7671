//! The last requests, for `/debug/requests`. Method, templated endpoint,
//! status, timing and an optional correlation id only: never headers or bodies.

use std::collections::VecDeque;

use serde::Serialize;

pub const KEEP: usize = 1000;

#[derive(Clone, Debug, Serialize)]
pub struct RecentRequest {
    pub target: String,
    pub method: String,
    pub endpoint: String,
    pub status: &'static str,
    pub code: String,
    pub outcome: &'static str,
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub remote: Option<String>,
    pub request_id: Option<String>,
    pub retry: bool,
}

#[derive(Default)]
pub struct Recent {
    items: VecDeque<RecentRequest>,
}

impl Recent {
    pub fn push(&mut self, r: RecentRequest) {
        if self.items.len() == KEEP {
            self.items.pop_front();
        }
        self.items.push_back(r);
    }

    /// Newest first.
    pub fn list(&self) -> Vec<RecentRequest> {
        self.items.iter().rev().cloned().collect()
    }
}
