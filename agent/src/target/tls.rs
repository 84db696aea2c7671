//! Attaches and detaches the per-process TLS probes, on threads of their own:
//! uprobe registration takes milliseconds and the ring readers that report
//! new processes must not wait for it; detaching is slower still and is
//! deferred until attaching is quiet ([`QUIET`]).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError},
        Arc, Mutex,
    },
    time::Duration,
};

use aya::programs::uprobe::UProbeLink;

use crate::sync::{Locked, ReadWrite};
use crate::{
    clock::monotonic_ns,
    ebpf::{
        libssl::probe_plan,
        tls::{self, ProcessKey},
        Probes,
    },
    fs::root::{FileKind, TargetRoot},
    http::AgentStatus,
    metrics::Metrics,
    proc::identity::{Liveness, ProcId},
    supervise::{self, Heartbeat, Supervisor},
};

/// Work waiting for the thread; beyond this it is dropped and counted (the
/// liveness round's periodic re-check still finds those processes).
const QUEUE: usize = 1024;

pub enum TlsWork {
    /// A process became a target at start or through `--match`: probe what
    /// it maps and the libssl files of its root, which it may load later.
    /// `exec_ns`: when the kernel reported its exec, for a process taken in
    /// at exec (the attach latency).
    Adopted { id: ProcId, exec_ns: Option<u64> },
    /// A target forked a child with a memory of its own: probe the libssl it
    /// inherited, at once (it may call it right away). `reported_ns`: when
    /// the kernel reported the fork, for the attach latency.
    Forked { id: ProcId, reported_ns: u64 },
    /// A target opened a libssl file (path as the process wrote it): an
    /// exec'd child loading it, a `dlopen`. The kernel woke the agent for it.
    Opened { id: ProcId, path: PathBuf, reported_ns: u64 },
    /// A target process is gone: the one of that start time, or every process
    /// of that pid (`None`: its exit event, which names the pid only).
    Exited { pid: u32, start: Option<u64> },
    /// The periodic re-check: the live target processes.
    Recheck(Vec<ProcId>),
}

/// The sending side, held by the lifecycle and the file reader.
#[derive(Clone)]
pub struct TlsQueue {
    tx: SyncSender<TlsWork>,
    metrics: Arc<Metrics>,
}

impl TlsQueue {
    pub fn send(&self, work: TlsWork) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(work) {
            self.metrics.collector_errors.with_label_values(&["tls_attach_queue"]).inc();
        }
    }
}

/// Starts the two threads under `parts`. `probes` stays shared with the
/// program statistics.
pub fn start(
    parts: &mut Supervisor,
    probes: Arc<Mutex<Probes>>,
    status: Arc<AgentStatus>,
    metrics: Arc<Metrics>,
    proc_root: PathBuf,
) -> std::io::Result<TlsQueue> {
    let (tx, rx) = sync_channel(QUEUE);
    let (reap, reaped) = sync_channel::<Vec<UProbeLink>>(QUEUE);
    let busy = Arc::new(AtomicU64::new(0));
    let reaper_busy = busy.clone();
    let stop = parts.stop_flag();
    parts.thread("tls_detach", move |beat| {
        reap_when_quiet(reaped, &reaper_busy, &stop, &beat);
        Ok(())
    })?;
    let worker = Worker { probes, status, metrics: metrics.clone(), proc_root, reap, busy };
    let stop = parts.stop_flag();
    parts.thread("tls_attach", move |beat| {
        worker.run(rx, &stop, &beat);
        Ok(())
    })?;
    Ok(TlsQueue { tx, metrics })
}

struct Worker {
    probes: Arc<Mutex<Probes>>,
    status: Arc<AgentStatus>,
    metrics: Arc<Metrics>,
    proc_root: PathBuf,
    reap: SyncSender<Vec<UProbeLink>>,
    /// When the last attach ended (monotonic ns): the reaper waits for quiet.
    busy: Arc<AtomicU64>,
}

/// Detaching a probe removes its breakpoints under the same kernel locks an
/// attach takes, and waits for RCU grace periods: done while attaches run, it
/// made a just-forked child wait 150 ms for its probes. Links of exited
/// processes are dropped once no attach has run for [`QUIET`], or once
/// [`MAX_WAITING`] wait (each holds an fd: where processes come and go
/// without pause, quiet never comes).
const QUIET: Duration = Duration::from_secs(1);
const MAX_WAITING: usize = 256;

fn reap_when_quiet(reaped: Receiver<Vec<UProbeLink>>, busy: &AtomicU64, stop: &AtomicBool, beat: &Heartbeat) {
    let mut waiting: Vec<UProbeLink> = Vec::new();
    let quiet = || monotonic_ns().saturating_sub(busy.load(Ordering::Relaxed)) >= QUIET.as_nanos() as u64;
    while !stop.load(Ordering::Relaxed) {
        beat.beat();
        match reaped.recv_timeout(QUIET / 4) {
            Ok(links) => waiting.extend(links),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // One link at a time (each waits for grace periods, tens of ms on a
        // busy machine): an attach that comes meanwhile goes first.
        while (quiet() || waiting.len() > MAX_WAITING) && !stop.load(Ordering::Relaxed) {
            let Some(link) = waiting.pop() else { break };
            drop(link);
            beat.beat();
        }
    }
}

impl Worker {
    fn run(self, rx: Receiver<TlsWork>, stop: &AtomicBool, beat: &Heartbeat) {
        while !stop.load(Ordering::Relaxed) {
            beat.beat();
            supervise::stall_injected("tls_attach", stop);
            let work = match rx.recv_timeout(QUIET / 4) {
                Ok(work) => work,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let changed = match work {
                TlsWork::Adopted { id, exec_ns } => {
                    let attached = self.attach(id, |proc_root, pid| {
                        let mut libs = tls::libssl_of(proc_root, pid);
                        libs.extend(tls::libssl_in_lib_dirs(proc_root, pid));
                        libs
                    });
                    match exec_ns {
                        Some(reported_ns) => self.observe(attached, reported_ns),
                        None => attached,
                    }
                }
                TlsWork::Forked { id, reported_ns } => {
                    let attached = self.attach(id, tls::libssl_of);
                    self.observe(attached, reported_ns)
                }
                TlsWork::Opened { id, path, reported_ns } => {
                    let attached = self.attach(id, |_, _| BTreeSet::from([path]));
                    self.observe(attached, reported_ns)
                }
                TlsWork::Exited { pid, start } => {
                    let gone: Vec<_> = self
                        .probes
                        .locked()
                        .tls_processes()
                        .into_iter()
                        .filter(|p| p.0 == pid && start.is_none_or(|s| s == p.1))
                        .collect();
                    gone.into_iter().fold(false, |changed, p| self.detach(p) | changed)
                }
                TlsWork::Recheck(live) => self.recheck(&live),
            };
            if changed {
                let probes = self.probes.locked();
                *self.status.tls_libraries.write_locked() = probes.tls_libraries();
                *self.status.tls_probes.write_locked() = probes.tls_probes();
                self.metrics.tls_processes.set(probes.tls_processes().len() as i64);
            }
        }
    }

    /// Records how long a new process went unprobed.
    fn observe(&self, attached: bool, reported_ns: u64) -> bool {
        if attached {
            self.metrics.tls_attach.observe(monotonic_ns().saturating_sub(reported_ns) as f64 / 1e9);
        }
        attached
    }

    fn detach(&self, process: ProcessKey) -> bool {
        let links = self.probes.locked().detach_tls(process);
        let any = !links.is_empty();
        // A full reaper queue means detaching here: slower, never lost.
        if let Err(TrySendError::Full(links) | TrySendError::Disconnected(links)) = self.reap.try_send(links) {
            drop(links);
        }
        any
    }

    /// Probes the libraries `libs` finds for process `id` (paths in its
    /// root), if its pid still names it: before (a pid given to a new process
    /// would get probes meant for the old one) and after (it may have changed
    /// while attaching, which takes milliseconds).
    fn attach(&self, id: ProcId, libs: impl FnOnce(&Path, u32) -> BTreeSet<PathBuf>) -> bool {
        if id.check(&self.proc_root) != Liveness::Alive {
            return false;
        }
        let root = TargetRoot::of(&self.proc_root, id.pid);
        let mut changed = false;
        for lib in libs(&self.proc_root, id.pid) {
            changed |= self.attach_one(id, &root, &lib);
        }
        if changed && id.check(&self.proc_root) == Liveness::Reused {
            self.detach((id.pid, id.start));
            return false;
        }
        changed
    }

    /// Opens the library through the process's root (a regular file within
    /// its cap, or nothing), works out where the probes go unless that file
    /// was seen before, and attaches them through the same fd. The file is
    /// read without the probes lock.
    fn attach_one(&self, id: ProcId, root: &TargetRoot, path: &Path) -> bool {
        let process = (id.pid, id.start);
        let lib = match root.open_file(path, FileKind::Library) {
            Ok(lib) => lib,
            // Counted and logged as refused, or simply not there.
            Err(_) => return false,
        };
        let known = {
            let probes = self.probes.locked();
            if probes.tls_probed(process, &lib.stat) {
                return false;
            }
            probes.tls_plan(&lib.stat)
        };
        let plan = match known {
            Some(plan) => plan,
            None => match lib.read().map_err(|e| e.to_string()).and_then(|data| probe_plan(&data)) {
                Ok((plan, internal)) => {
                    tracing::info!(
                        "libssl {}: {}",
                        lib.shown.display(),
                        if internal {
                            "probing its internal read and write functions"
                        } else {
                            "probing its exported SSL_read/SSL_write functions"
                        }
                    );
                    self.probes.locked().remember_tls_plan(lib.stat, plan.clone());
                    plan
                }
                Err(e) => return self.failed(&lib.shown, id.pid, &e),
            },
        };
        let result = self.probes.locked().attach_tls(process, &lib, &plan);
        self.busy.store(monotonic_ns(), Ordering::Relaxed);
        match result {
            Ok(attached) => attached,
            Err(e) => self.failed(&lib.shown, id.pid, &e.to_string()),
        }
    }

    fn failed(&self, lib: &Path, pid: u32, e: &str) -> bool {
        self.metrics.collector_errors.with_label_values(&["tls_attach"]).inc();
        tracing::warn!("cannot attach the TLS probes to {} for pid {pid}: {e}", lib.display());
        false
    }

    /// Probes what live targets map now (a library loaded from an unusual
    /// place, an event dropped) and drops the probes of processes that left.
    fn recheck(&self, live: &[ProcId]) -> bool {
        let gone: Vec<ProcessKey> = {
            let probes = self.probes.locked();
            probes.tls_processes().into_iter().filter(|&(pid, start)| !live.contains(&ProcId { pid, start })).collect()
        };
        let mut changed = false;
        for process in gone {
            changed |= self.detach(process);
        }
        for &id in live {
            changed |= self.attach(id, tls::libssl_of);
        }
        changed
    }
}
