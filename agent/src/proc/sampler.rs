//! procfs gauges of each live target, read at scrape time.
//!
//! CPU percent follows psutil's `Process.cpu_percent()`: user+system time of all
//! threads over wall time since the previous sample, in % of one CPU (so it can
//! exceed 100). The first baseline is taken when the target is registered, so
//! the first scrape already has a meaningful value.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use procfs::process::Process;
use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    CounterVec, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use crate::sync::{Locked, ReadWrite};
use crate::{
    metrics::RateLimitedLog,
    proc::{k8s, Targets},
};

/// Samples closer together than this reuse the previous CPU percentage, so
/// concurrent or rapid scrapes do not compute it over a window of a few ticks.
const MIN_CPU_WINDOW: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug)]
struct CpuBaseline {
    ticks: u64,
    at: Instant,
    percent: f64,
}

/// One reading of a process from procfs.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub cpu_ticks: u64,
    pub rss_bytes: u64,
    pub threads: i64,
    pub open_fds: usize,
    /// Start time in clock ticks after boot.
    pub start_ticks: u64,
}

pub fn read(proc_root: &Path, pid: u32) -> procfs::ProcResult<Reading> {
    let process = Process::new_with_root(proc_root.join(pid.to_string()))?;
    let stat = process.stat()?;
    Ok(Reading {
        cpu_ticks: stat.utime + stat.stime,
        rss_bytes: stat.rss * procfs::page_size(),
        threads: stat.num_threads,
        open_fds: process.fd_count()?,
        start_ticks: stat.starttime,
    })
}

/// Boot time in seconds since the epoch, from `<proc_root>/stat`.
fn boot_time(proc_root: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join("stat")).ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// Each target's CPU time at its previous reading: `cpu_percent` is the rate
/// since then, as psutil's is.
#[derive(Clone)]
pub struct CpuBaselines {
    proc_root: PathBuf,
    by_pid: Arc<Mutex<HashMap<u32, CpuBaseline>>>,
}

impl CpuBaselines {
    /// Takes the baseline of a new target, so that its first reading is a rate.
    pub fn prime(&self, pid: u32) {
        if let Ok(r) = read(&self.proc_root, pid) {
            let mut b = self.by_pid.locked();
            b.insert(pid, CpuBaseline { ticks: r.cpu_ticks, at: Instant::now(), percent: 0.0 });
        }
    }

    /// A target process left.
    pub fn forget(&self, pid: u32) {
        self.by_pid.locked().remove(&pid);
    }
}

pub struct ProcSampler {
    targets: Arc<RwLock<Targets>>,
    proc_root: PathBuf,
    ticks_per_second: f64,
    boot_time: f64,
    baselines: CpuBaselines,
    cpu_percent: GaugeVec,
    memory: GaugeVec,
    threads: GaugeVec,
    open_fds: GaugeVec,
    cpu_seconds: CounterVec,
    start_time: GaugeVec,
    processes: GaugeVec,
    info: GaugeVec,
    /// Targets by state (`watched`, `exited`, `removed`): an exited one is a client down.
    target_states: IntGaugeVec,
    /// `--match` patterns without a live process: nothing to watch, not an error.
    match_idle: IntGauge,
    errors: IntCounterVec,
    error_log: RateLimitedLog,
    scrape: Mutex<()>,
    descs: Vec<Desc>,
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

impl ProcSampler {
    /// `errors` counts failed reads (`pywats_agent_collector_errors_total`).
    pub fn new(targets: Arc<RwLock<Targets>>, proc_root: PathBuf, errors: IntCounterVec) -> ProcSampler {
        let t = &["target"];
        let cpu_percent =
            gauge("pywats_process_cpu_percent", "CPU usage of the target process, % of one CPU (psutil semantics).", t);
        let memory = gauge("pywats_process_memory_bytes", "Resident set size of the target process.", t);
        let threads = gauge("pywats_process_threads", "Threads of the target process.", t);
        let open_fds = gauge("pywats_process_open_fds", "Open file descriptors of the target process.", t);
        let cpu_seconds = CounterVec::new(
            Opts::new("pywats_process_cpu_seconds_total", "User and system CPU time of the target process."),
            t,
        )
        .expect("valid metric definition");
        let start_time =
            gauge("pywats_process_start_time_seconds", "Start time of the target process, seconds since the epoch.", t);
        let processes =
            gauge("pywats_target_processes", "Processes attributed to the target (itself and its descendants).", t);
        let info = gauge(
            "pywats_target_info",
            "A live target: its process id, executable, and the container and Kubernetes pod it runs in.",
            &["target", "pid", "exe", "k8s_namespace", "k8s_pod", "k8s_pod_uid", "container"],
        );
        let target_states = IntGaugeVec::new(
            Opts::new(
                "pywats_agent_targets",
                "Targets by state: watched (alive), exited (its client is down), removed (its pod left the node).",
            ),
            &["state"],
        )
        .expect("valid metric definition");
        let match_idle = IntGauge::new(
            "pywats_agent_match_idle",
            "--match patterns no live process matches (nothing to watch on this node: not an error).",
        )
        .expect("valid metric definition");
        let mut descs = Vec::new();
        for c in [&cpu_percent, &memory, &threads, &open_fds, &start_time, &processes, &info] {
            descs.extend(c.desc().into_iter().cloned());
        }
        descs.extend(cpu_seconds.desc().into_iter().cloned());
        descs.extend(target_states.desc().into_iter().cloned());
        descs.extend(match_idle.desc().into_iter().cloned());
        let boot_time = boot_time(&proc_root).unwrap_or(0) as f64;
        ProcSampler {
            targets,
            baselines: CpuBaselines { proc_root: proc_root.clone(), by_pid: Arc::default() },
            proc_root,
            ticks_per_second: procfs::ticks_per_second() as f64,
            boot_time,
            cpu_percent,
            memory,
            threads,
            open_fds,
            cpu_seconds,
            start_time,
            processes,
            info,
            target_states,
            match_idle,
            errors,
            error_log: RateLimitedLog::new(Duration::from_secs(60)),
            scrape: Mutex::new(()),
            descs,
        }
    }

    /// The handle through which targets get their CPU baseline when they join.
    pub fn baselines(&self) -> CpuBaselines {
        self.baselines.clone()
    }

    fn cpu_percent(&self, pid: u32, ticks: u64, now: Instant) -> f64 {
        let mut baselines = self.baselines.by_pid.locked();
        let Some(prev) = baselines.get(&pid).copied() else {
            baselines.insert(pid, CpuBaseline { ticks, at: now, percent: 0.0 });
            return 0.0;
        };
        let window = now.duration_since(prev.at);
        if window < MIN_CPU_WINDOW {
            return prev.percent;
        }
        let used = ticks.saturating_sub(prev.ticks) as f64 / self.ticks_per_second;
        let percent = used / window.as_secs_f64() * 100.0;
        baselines.insert(pid, CpuBaseline { ticks, at: now, percent });
        percent
    }

    /// Every gauge family of the sampler (the CPU seconds counter aside).
    fn gauges(&self) -> [&GaugeVec; 7] {
        [&self.cpu_percent, &self.memory, &self.threads, &self.open_fds, &self.start_time, &self.processes, &self.info]
    }

    /// `pywats_agent_targets`: an exited target whose pod is gone from the
    /// node was removed or moved on purpose, and is no client down.
    fn count_states(&self, targets: &Targets) {
        let exited: Vec<_> = targets.iter().filter(|t| !t.alive).collect();
        let in_pods = exited.iter().any(|t| t.pod.as_ref().is_some_and(|p| !p.pod_uid.is_empty()));
        let pods = if in_pods { k8s::pods_on_node(&self.proc_root) } else { Default::default() };
        let removed = exited
            .iter()
            .filter(|t| t.pod.as_ref().is_some_and(|p| !p.pod_uid.is_empty() && !pods.contains(&p.pod_uid)))
            .count();
        let live = targets.iter().filter(|t| t.alive).count();
        self.target_states.with_label_values(&["watched"]).set(live as i64);
        self.target_states.with_label_values(&["exited"]).set((exited.len() - removed) as i64);
        self.target_states.with_label_values(&["removed"]).set(removed as i64);
    }

    fn sample(&self) {
        for v in self.gauges() {
            v.reset();
        }
        self.cpu_seconds.reset();
        let targets = self.targets.read_locked();
        self.count_states(&targets);
        self.match_idle.set(targets.idle_patterns().len() as i64);
        let now = Instant::now();
        let mut live = Vec::new();
        for t in targets.iter().filter(|t| t.alive) {
            let r = match read(&self.proc_root, t.pid) {
                // The pid names a new process: the target exited (the liveness check ends it).
                Ok(r) if r.start_ticks != t.start => continue,
                Ok(r) => r,
                Err(e) => {
                    // Usually a race with the exit event; the series simply go away.
                    self.errors.with_label_values(&["procfs"]).inc();
                    self.error_log.warn(format_args!("procfs read of target {} (pid {}) failed: {e}", t.name, t.pid));
                    continue;
                }
            };
            live.push(t.pid);
            let l = &[t.name.as_str()];
            self.cpu_percent.with_label_values(l).set(self.cpu_percent(t.pid, r.cpu_ticks, now));
            self.memory.with_label_values(l).set(r.rss_bytes as f64);
            self.threads.with_label_values(l).set(r.threads as f64);
            self.open_fds.with_label_values(l).set(r.open_fds as f64);
            self.cpu_seconds.with_label_values(l).inc_by(r.cpu_ticks as f64 / self.ticks_per_second);
            self.start_time.with_label_values(l).set(self.boot_time + r.start_ticks as f64 / self.ticks_per_second);
            self.processes.with_label_values(l).set(1.0 + t.children.len() as f64);
            let pod = t.pod.clone().unwrap_or_default();
            let pid = t.pid.to_string();
            self.info
                .with_label_values(&[&t.name, &pid, &t.exe, &pod.namespace, &pod.pod, &pod.pod_uid, &pod.container])
                .set(1.0);
        }
        self.baselines.by_pid.locked().retain(|pid, _| live.contains(pid));
    }
}

impl Collector for ProcSampler {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // One scrape at a time: reset-then-fill must not interleave.
        let _guard = self.scrape.locked();
        self.sample();
        let mut out = Vec::new();
        for v in self.gauges() {
            out.extend(v.collect());
        }
        out.extend(self.cpu_seconds.collect());
        out.extend(self.target_states.collect());
        out.extend(self.match_idle.collect());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let r = read(Path::new("/proc"), std::process::id()).unwrap();
        assert!(r.threads >= 1);
        assert!(r.rss_bytes > 0);
        assert!(r.open_fds >= 3);
        assert!(boot_time(Path::new("/proc")).unwrap() > 1_000_000_000);
    }
}
