//! Attaches and detaches the per-process TLS probes, on a thread of its own:
//! symbol lookups and uprobe registration take milliseconds, and the ring
//! readers that report new processes must not wait for them.

use std::{
    path::{Path, PathBuf},
    sync::{
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
        Arc, Mutex,
    },
};

use crate::{
    ebpf::{tls, Probes},
    http::AgentStatus,
    metrics::Metrics,
};

/// Work waiting for the thread; beyond this it is dropped and counted (the
/// liveness loop's periodic re-check still finds those processes).
const QUEUE: usize = 1024;

pub enum TlsWork {
    /// A process became a target (adopted, forked by a target, or exec'd):
    /// probe what it maps and the libssl files of its root.
    Process(u32),
    /// A target opened a libssl file (path as the process wrote it).
    Opened(u32, PathBuf),
    /// A target process is gone.
    Exited(u32),
    /// The periodic re-check: the live target processes.
    Recheck(Vec<u32>),
}

/// The sending side, held by the event handlers and the liveness loop.
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

/// Starts the thread. `probes` stays shared with the program statistics.
pub fn start(
    probes: Arc<Mutex<Probes>>,
    status: Arc<AgentStatus>,
    metrics: Arc<Metrics>,
    proc_root: PathBuf,
) -> std::io::Result<TlsQueue> {
    let (tx, rx) = sync_channel(QUEUE);
    let worker = Worker { probes, status, metrics: metrics.clone(), proc_root };
    std::thread::Builder::new().name("tls-attach".into()).spawn(move || worker.run(rx))?;
    Ok(TlsQueue { tx, metrics })
}

struct Worker {
    probes: Arc<Mutex<Probes>>,
    status: Arc<AgentStatus>,
    metrics: Arc<Metrics>,
    proc_root: PathBuf,
}

impl Worker {
    fn run(self, rx: Receiver<TlsWork>) {
        while let Ok(work) = rx.recv() {
            let changed = match work {
                TlsWork::Process(pid) => self.attach(pid, tls::libssl_candidates(&self.proc_root, pid)),
                TlsWork::Opened(pid, path) => match tls::in_root(&self.proc_root, pid, &path) {
                    Some(lib) => self.attach(pid, [lib]),
                    None => false,
                },
                TlsWork::Exited(pid) => self.probes.lock().expect("probes lock").detach_tls(pid) > 0,
                TlsWork::Recheck(live) => self.recheck(&live),
            };
            if changed {
                let probes = self.probes.lock().expect("probes lock");
                *self.status.tls_libraries.write().expect("status lock") = probes.tls_libraries();
                self.metrics.tls_processes.set(probes.tls_processes().len() as i64);
            }
        }
    }

    fn attach(&self, pid: u32, libs: impl IntoIterator<Item = PathBuf>) -> bool {
        let mut changed = false;
        for lib in libs {
            changed |= self.attach_one(pid, &lib);
        }
        changed
    }

    fn attach_one(&self, pid: u32, lib: &Path) -> bool {
        match self.probes.lock().expect("probes lock").attach_tls(pid, lib) {
            Ok(attached) => attached,
            Err(e) => {
                self.metrics.collector_errors.with_label_values(&["tls_attach"]).inc();
                tracing::warn!("cannot attach the TLS probes to {} for pid {pid}: {e}", lib.display());
                false
            }
        }
    }

    /// Probes what live targets map now (a library loaded from an unusual
    /// place, an event dropped) and drops the probes of processes that left.
    fn recheck(&self, live: &[u32]) -> bool {
        let gone: Vec<u32> = {
            let probes = self.probes.lock().expect("probes lock");
            probes.tls_processes().into_iter().filter(|pid| !live.contains(pid)).collect()
        };
        let mut changed = false;
        for pid in gone {
            changed |= self.probes.lock().expect("probes lock").detach_tls(pid) > 0;
        }
        for &pid in live {
            changed |= self.attach(pid, tls::libssl_of(&self.proc_root, pid));
        }
        changed
    }
}
