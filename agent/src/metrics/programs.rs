//! The agent's own cost in the kernel: CPU time and runs of each of its
//! programs, from the kernel's per-program statistics (on while the agent holds
//! a `BPF_ENABLE_STATS` fd), read at scrape time.

use std::{
    os::fd::OwnedFd,
    sync::{Arc, Mutex},
};

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    CounterVec, IntCounterVec, Opts,
};

use crate::ebpf::Probes;
use crate::sync::Locked;

pub struct ProgramStats {
    probes: Arc<Mutex<Probes>>,
    _enabled: OwnedFd,
    seconds: CounterVec,
    runs: IntCounterVec,
    /// Serialises reset-then-fill between concurrent scrapes.
    scrape: Mutex<()>,
}

impl ProgramStats {
    /// `None` when the kernel refuses to keep statistics (before 5.8, or
    /// without CAP_SYS_ADMIN): the agent works without these metrics.
    pub fn new(probes: Arc<Mutex<Probes>>) -> Option<ProgramStats> {
        let enabled = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(
                    "kernel statistics of the programs are unavailable ({e}): no pywats_agent_program_* metrics"
                );
                return None;
            }
        };
        let seconds = CounterVec::new(
            Opts::new(
                "pywats_agent_program_cpu_seconds_total",
                "CPU time the kernel spent in each of the agent's programs (the agent's in-kernel overhead).",
            ),
            &["program"],
        )
        .expect("valid metric definition");
        let runs = IntCounterVec::new(
            Opts::new("pywats_agent_program_runs_total", "Runs of each of the agent's programs."),
            &["program"],
        )
        .expect("valid metric definition");
        Some(ProgramStats { probes, _enabled: enabled, seconds, runs, scrape: Mutex::new(()) })
    }
}

impl Collector for ProgramStats {
    fn desc(&self) -> Vec<&Desc> {
        self.seconds.desc().into_iter().chain(self.runs.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats = self.probes.locked().run_stats();
        let _guard = self.scrape.locked();
        self.seconds.reset();
        self.runs.reset();
        for (program, time, runs) in stats {
            self.seconds.with_label_values(&[&program]).inc_by(time.as_secs_f64());
            self.runs.with_label_values(&[&program]).inc_by(runs);
        }
        self.seconds.collect().into_iter().chain(self.runs.collect()).collect()
    }
}
