//! The agent's own process, in the standard form every Prometheus client
//! library exports (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! …, as Python's prometheus_client and Go's client_golang name them), read
//! from `<proc_root>/self` at scrape time.
//!
//! The `prometheus` crate's `process` feature would pull procfs 0.17 beside
//! the agent's 0.18; this reads the same files with the one already linked.

use std::{path::Path, sync::Mutex};

use procfs::process::{LimitValue, Process};
use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    Counter, Gauge, IntCounterVec,
};

use crate::sync::Locked;

pub struct ProcessMetrics {
    process: Option<Process>,
    /// Seconds since the epoch at boot, and clock ticks per second.
    boot_time: f64,
    ticks_per_second: f64,
    page_size: f64,
    cpu_seconds: Counter,
    resident: Gauge,
    virtual_memory: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge,
    /// `pywats_agent_collector_errors_total{collector="self"}`.
    errors: IntCounterVec,
    /// Serialises reset-then-fill of the counter.
    collecting: Mutex<()>,
}

fn gauge(name: &str, help: &str) -> Gauge {
    Gauge::new(name, help).expect("valid metric definition")
}

impl ProcessMetrics {
    /// The process whose `/proc` entry is `<proc_root>/self`: the agent.
    pub fn new(proc_root: &Path, errors: IntCounterVec) -> ProcessMetrics {
        let process = Process::new_with_root(proc_root.join("self"));
        if let Err(e) = &process {
            tracing::warn!("the agent's own process metrics are off: {e}");
        }
        let boot_time = std::fs::read_to_string(proc_root.join("stat"))
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok()))
            .unwrap_or(0.0);
        ProcessMetrics {
            process: process.ok(),
            boot_time,
            ticks_per_second: procfs::ticks_per_second() as f64,
            page_size: procfs::page_size() as f64,
            cpu_seconds: Counter::new("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.")
                .expect("valid metric definition"),
            resident: gauge("process_resident_memory_bytes", "Resident memory size in bytes."),
            virtual_memory: gauge("process_virtual_memory_bytes", "Virtual memory size in bytes."),
            open_fds: gauge("process_open_fds", "Number of open file descriptors."),
            max_fds: gauge("process_max_fds", "Maximum number of open file descriptors."),
            start_time: gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds."),
            errors,
            collecting: Mutex::new(()),
        }
    }

    fn families(&self) -> [&dyn Collector; 6] {
        [&self.cpu_seconds, &self.resident, &self.virtual_memory, &self.open_fds, &self.max_fds, &self.start_time]
    }

    /// Reads `/proc/self` into the families. On an error they are left out
    /// of this scrape (not reported as zeros).
    fn read(&self, process: &Process) -> procfs::ProcResult<()> {
        let stat = process.stat()?;
        let limits = process.limits()?;
        let fds = process.fd_count()?;
        self.cpu_seconds.reset();
        self.cpu_seconds.inc_by((stat.utime + stat.stime) as f64 / self.ticks_per_second);
        self.resident.set(stat.rss as f64 * self.page_size);
        self.virtual_memory.set(stat.vsize as f64);
        self.open_fds.set(fds as f64);
        self.max_fds.set(match limits.max_open_files.soft_limit {
            LimitValue::Value(n) => n as f64,
            LimitValue::Unlimited => f64::INFINITY,
        });
        self.start_time.set(self.boot_time + stat.starttime as f64 / self.ticks_per_second);
        Ok(())
    }
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.families().into_iter().flat_map(|c| c.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(process) = &self.process else { return Vec::new() };
        let _serial = self.collecting.locked();
        if let Err(e) = self.read(process) {
            self.errors.with_label_values(&["self"]).inc();
            tracing::debug!("reading the agent's own /proc entry: {e}");
            return Vec::new();
        }
        self.families().into_iter().flat_map(|c| c.collect()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors() -> IntCounterVec {
        IntCounterVec::new(prometheus::Opts::new("t_errors_total", "test"), &["collector"]).unwrap()
    }

    fn value(families: &[MetricFamily], name: &str) -> f64 {
        let f = families.iter().find(|f| f.name() == name).unwrap_or_else(|| panic!("no {name}"));
        let m = &f.get_metric()[0];
        match f.get_field_type() {
            prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
            _ => m.get_gauge().get_value(),
        }
    }

    #[test]
    fn reads_this_process_as_the_client_libraries_do() {
        let m = ProcessMetrics::new(Path::new("/proc"), errors());
        let kib = |field: &str| -> f64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with(field)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() * 1024.0
        };
        // Other tests' threads map and touch memory meanwhile: the reading must
        // lie between what status said just before and just after it (a few
        // tries, in case memory went up and down in between).
        let within = |field: &str, name: &str| {
            (0..5).any(|_| {
                let before = kib(field);
                let v = value(&m.collect(), name);
                let after = kib(field);
                before.min(after) <= v && v <= before.max(after)
            })
        };
        assert!(within("VmSize:", "process_virtual_memory_bytes"));
        // The kernel sums RSS counters per CPU lazily: stat and status may
        // differ by a few pages.
        let rss = value(&m.collect(), "process_resident_memory_bytes");
        assert!((rss - kib("VmRSS:")).abs() < 4.0 * 1048576.0, "{rss} vs {}", kib("VmRSS:"));
        let f = m.collect();
        assert_eq!(f.len(), 6);
        let fds = std::fs::read_dir("/proc/self/fd").unwrap().count() as f64;
        // read_dir holds one fd of its own while listing.
        assert!((value(&f, "process_open_fds") - fds).abs() <= 1.0);
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: a valid rlimit to fill.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        assert_eq!(value(&f, "process_max_fds"), limit.rlim_cur as f64);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let start = value(&f, "process_start_time_seconds");
        assert!(start <= now + 1.0 && start > now - 3600.0, "{start} vs {now}");
        // The kernel's own count for this process (all threads), beside the
        // tick-sampled one procfs gives: within the ticks of the test's threads.
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid timespec to fill.
        assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) }, 0);
        let cpu = t.tv_sec as f64 + t.tv_nsec as f64 / 1e9;
        let seconds = value(&f, "process_cpu_seconds_total");
        assert!((seconds - cpu).abs() < 0.2, "{seconds} vs the kernel's {cpu}");
    }

    #[test]
    fn a_missing_proc_entry_leaves_the_families_out() {
        let dir = std::env::temp_dir().join(format!("pywats-agent-noproc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = ProcessMetrics::new(&dir, errors());
        assert!(m.collect().is_empty());
        assert_eq!(m.desc().len(), 6);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
