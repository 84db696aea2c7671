//! Queue worker status: how long the oldest queued item has waited, how long
//! the oldest item in processing has been there, and whether that is longer
//! than `--queue-stall-secs` (a worker stuck on it, or dead).
//!
//! Ages are computed at scrape time from the times items entered their state
//! (the kernel's event clock; a file found by a directory read: its ctime at
//! the queue's first read, else the time of the read). Each queue keeps
//! those times per state in an ordered multiset, so an event costs O(log n)
//! and a scrape O(log n) per queue, however many items the queue holds.

use std::{
    collections::BTreeMap,
    num::NonZeroU64,
    sync::{Arc, Mutex},
};

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    GaugeVec, IntGaugeVec, Opts,
};

use crate::{clock::monotonic_ns, fs::preset::State, fs::FsPipeline, sync::Locked};

/// Entry times of the queued and of the processing items: time → items.
/// Items whose time is unknown are not in it.
#[derive(Debug, Default)]
pub struct Ages {
    queued: BTreeMap<u64, u32>,
    processing: BTreeMap<u64, u32>,
}

impl Ages {
    fn of(&mut self, state: State) -> Option<&mut BTreeMap<u64, u32>> {
        match state {
            State::Queued => Some(&mut self.queued),
            State::Processing => Some(&mut self.processing),
            State::Completed | State::Failed => None,
        }
    }

    /// An item entered `state` at `since`.
    pub fn add(&mut self, state: State, since: Option<NonZeroU64>) {
        if let (Some(times), Some(t)) = (self.of(state), since) {
            *times.entry(t.get()).or_default() += 1;
        }
    }

    /// An item that entered `state` at `since` left it.
    pub fn remove(&mut self, state: State, since: Option<NonZeroU64>) {
        if let (Some(times), Some(t)) = (self.of(state), since) {
            if let Some(n) = times.get_mut(&t.get()) {
                *n -= 1;
                if *n == 0 {
                    times.remove(&t.get());
                }
            }
        }
    }

    /// When the item longest in `state` entered it.
    pub fn oldest(&self, state: State) -> Option<u64> {
        let times = match state {
            State::Queued => &self.queued,
            State::Processing => &self.processing,
            State::Completed | State::Failed => return None,
        };
        times.first_key_value().map(|(&t, _)| t)
    }
}

/// One queue's oldest entry times, for the gauges.
pub struct QueueAges {
    pub target: String,
    pub queue: String,
    pub oldest_queued_ns: Option<u64>,
    pub oldest_processing_ns: Option<u64>,
}

/// `pywats_queue_oldest_item_age_seconds`, `…_processing_item_age_seconds`
/// and `pywats_queue_stalled`, computed at scrape time.
pub struct WorkerStatus {
    fs: Arc<Mutex<FsPipeline>>,
    stall_ns: u64,
    queued: GaugeVec,
    processing: GaugeVec,
    stalled: IntGaugeVec,
}

impl WorkerStatus {
    pub fn new(fs: Arc<Mutex<FsPipeline>>, stall_secs: u64) -> WorkerStatus {
        let labels = &["target", "queue_name"];
        let gauge = |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
        WorkerStatus {
            fs,
            stall_ns: stall_secs.saturating_mul(1_000_000_000),
            queued: gauge(
                "pywats_queue_oldest_item_age_seconds",
                "How long the oldest item waiting in the queue (queued/pending) has waited; 0 when none waits.",
            ),
            processing: gauge(
                "pywats_queue_processing_item_age_seconds",
                "How long the oldest item in processing has been processing; 0 when none is.",
            ),
            stalled: IntGaugeVec::new(
                Opts::new("pywats_queue_stalled", "1 when an item has been processing longer than --queue-stall-secs."),
                labels,
            )
            .expect("valid metric"),
        }
    }
}

impl Collector for WorkerStatus {
    fn desc(&self) -> Vec<&Desc> {
        [self.queued.desc(), self.processing.desc(), self.stalled.desc()].concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Held through reset-then-fill, so concurrent scrapes do not mix.
        let fs = self.fs.locked();
        let now = monotonic_ns();
        let age = |since: Option<u64>| since.map_or(0, |s| now.saturating_sub(s));
        self.queued.reset();
        self.processing.reset();
        self.stalled.reset();
        for q in fs.worker_status() {
            let l = [q.target.as_str(), q.queue.as_str()];
            let processing = age(q.oldest_processing_ns);
            self.queued.with_label_values(&l).set(age(q.oldest_queued_ns) as f64 / 1e9);
            self.processing.with_label_values(&l).set(processing as f64 / 1e9);
            self.stalled.with_label_values(&l).set(i64::from(processing > self.stall_ns));
        }
        [self.queued.collect(), self.processing.collect(), self.stalled.collect()].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ns: u64) -> Option<NonZeroU64> {
        NonZeroU64::new(ns)
    }

    #[test]
    fn the_oldest_time_per_state_follows_items_in_and_out() {
        let mut a = Ages::default();
        a.add(State::Queued, t(30));
        a.add(State::Queued, t(10));
        a.add(State::Queued, t(10));
        a.add(State::Processing, t(20));
        a.add(State::Completed, t(1));
        a.add(State::Queued, None);
        assert_eq!((a.oldest(State::Queued), a.oldest(State::Processing)), (Some(10), Some(20)));
        a.remove(State::Queued, t(10));
        assert_eq!(a.oldest(State::Queued), Some(10));
        a.remove(State::Queued, t(10));
        assert_eq!(a.oldest(State::Queued), Some(30));
        a.remove(State::Processing, t(20));
        assert_eq!((a.oldest(State::Processing), a.oldest(State::Completed)), (None, None));
        // Removing what is not there changes nothing.
        a.remove(State::Queued, t(99));
        assert_eq!(a.oldest(State::Queued), Some(30));
    }
}
