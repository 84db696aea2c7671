//! Events the kernel could not deliver (ring buffer full), read from the
//! per-CPU `LOST` map at scrape time.

use std::sync::Mutex;

use aya::maps::{MapData, PerCpuArray};
use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    IntCounterVec, Opts,
};
use pywats_agent_ebpf::abi::EventKind;

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
        let map = self.map.lock().expect("lost map lock");
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
        let _guard = self.map.lock().expect("lost map lock");
        self.counter.reset();
        for (kind, n) in totals {
            self.counter.with_label_values(&[kind.name()]).inc_by(n);
        }
        self.counter.collect()
    }
}
