//! What the kernel programs could not do, read from per-CPU maps at scrape
//! time: events not delivered (ring buffer full, `LOST`) and map inserts
//! refused (map full, `MAP_INSERT_FAILURES`: a socket or a child process
//! then goes untracked).

use std::sync::{Arc, Mutex};

use crate::sync::Locked;
use aya::maps::{MapData, PerCpuArray};
use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    IntCounterVec, Opts,
};
use pywats_agent_ebpf::abi::{map_slot, EventKind};

pub struct LostEvents {
    map: Mutex<PerCpuArray<MapData, u64>>,
    counter: IntCounterVec,
}

impl LostEvents {
    pub fn new(map: PerCpuArray<MapData, u64>) -> LostEvents {
        let counter = IntCounterVec::new(
            Opts::new(
                "pywats_agent_events_lost_total",
                "Events dropped in the kernel because a ring buffer was full, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric definition");
        LostEvents { map: Mutex::new(map), counter }
    }

    /// Lost events per kind, summed over CPUs.
    pub fn totals(&self) -> Vec<(EventKind, u64)> {
        let map = self.map.locked();
        EventKind::ALL
            .iter()
            .map(|&kind| {
                let n = map.get(&(kind as u32), 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0);
                (kind, n)
            })
            .collect()
    }
}

impl Collector for LostEvents {
    fn desc(&self) -> Vec<&Desc> {
        self.counter.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let totals = self.totals();
        // Same lock order as totals(): the map lock serialises reset-then-fill.
        let _guard = self.map.locked();
        self.counter.reset();
        for (kind, n) in totals {
            self.counter.with_label_values(&[kind.name()]).inc_by(n);
        }
        self.counter.collect()
    }
}

pub struct MapInsertFailures {
    map: Mutex<PerCpuArray<MapData, u64>>,
    counter: IntCounterVec,
}

impl MapInsertFailures {
    pub fn new(map: PerCpuArray<MapData, u64>) -> MapInsertFailures {
        let counter = IntCounterVec::new(
            Opts::new(
                "pywats_agent_map_insert_failures_total",
                "Inserts the kernel programs could not make because a map was full, by map: what it would \
                 have tracked (a socket, a child process, a call in flight) went untracked.",
            ),
            &["map"],
        )
        .expect("valid metric definition");
        for name in map_slot::NAMES {
            counter.with_label_values(&[name]);
        }
        MapInsertFailures { map: Mutex::new(map), counter }
    }
}

impl Collector for MapInsertFailures {
    fn desc(&self) -> Vec<&Desc> {
        self.counter.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let map = self.map.locked();
        self.counter.reset();
        for (slot, name) in map_slot::NAMES.iter().enumerate() {
            let n: u64 = map.get(&(slot as u32), 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0);
            self.counter.with_label_values(&[name]).inc_by(n);
        }
        self.counter.collect()
    }
}

/// Lets the shared `LostEvents` be registered while health keeps reading it.
pub struct LostEventsHandle(pub Arc<LostEvents>);

impl prometheus::core::Collector for LostEventsHandle {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }
    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}
