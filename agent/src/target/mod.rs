//! A target's life, with one owner.
//!
//! Processes become targets (named at start with `--pid`, or found by
//! `--match`, at start or later), call exec, fork children and leave (their
//! exit event, or the liveness check when that event was lost). All of it
//! happens in [`Lifecycle`], which one thread owns: the `lifecycle` thread
//! reads the kernel's process events and runs the liveness rounds between
//! them ([`owner`]). Joining, exec and leaving are each written once, and
//! tell the per-target parts in one fixed order:
//!
//! registry → kernel target set → sockets → TLS probes → files → sampler →
//! dependency health.
//!
//! Locks: each part's state has a lock of its own, and each step below takes
//! only that part's lock and releases it before the next step, so the owner
//! never holds two. The other threads each hold at most one part lock at a
//! time too (the net reader: the pipeline, then, released, the socket map;
//! the file reader: the file pipeline; the server: one per page section).
//! Inside a part, the pipelines read the registry (`Targets`) and record
//! dependency health: those two are leaves, under which nothing else is
//! locked. With no thread waiting for a part lock while holding another, no
//! cycle of waits can form. The kernel target set is not shared at all: only
//! the owner changes it (the kernel changes it for forks and exits itself).

pub mod config;
pub mod liveness;
pub mod matching;
pub mod membership;
pub mod owner;
pub mod tls;

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, RwLock},
};

use pywats_agent_ebpf::abi::PROVISIONAL;

use crate::sync::{Locked, ReadWrite};
use crate::{
    cli::Args,
    clock::monotonic_ns,
    ebpf::{loader::SocketMap, KernelTargets},
    fs::{discover::Discovered, FsPipeline},
    metrics::Metrics,
    net::{
        dependency::{service_addresses, Dependencies},
        NetPipeline,
    },
    proc::{
        admission::{Admission, Rejected},
        identity::ProcId,
        sampler::CpuBaselines,
        targets::Change,
        tree::{self, ResolvedPid},
        Targets,
    },
    target::matching::AtExec,
    target::tls::{TlsQueue, TlsWork},
};

pub use crate::net::sockets::seed_sockets;

/// A process about to become a target.
pub struct Joining {
    pub process: ResolvedPid,
    /// The `--match` pattern that found it; `None` for a `--pid` target.
    pub pattern: Option<String>,
    /// The name it asks for (made unique when taken).
    pub name: String,
    /// Its pyWATS client config, when discovery found one.
    pub config: Option<Discovered>,
    /// When the kernel reported its exec, for a process taken in at exec.
    pub exec_ns: Option<u64>,
}

/// The handles of every per-target part.
pub struct Lifecycle {
    pub args: Arc<Args>,
    pub registry: Arc<RwLock<Targets>>,
    pub kernel: KernelTargets,
    pub net: Arc<Mutex<NetPipeline>>,
    pub sockets: Arc<Mutex<SocketMap>>,
    pub tls: TlsQueue,
    pub fs: Arc<Mutex<FsPipeline>>,
    pub sampler: CpuBaselines,
    pub deps: Arc<Mutex<Dependencies>>,
    pub metrics: Arc<Metrics>,
    /// Whose processes `--match` may adopt.
    pub admission: Admission,
    /// Who is a target, for the readers.
    pub membership: Arc<membership::Membership>,
    /// Provisional targets not judged at the previous round.
    pub leftovers: BTreeSet<u32>,
}

impl Lifecycle {
    /// A process becomes a target, with the descendants it has now, its open
    /// sockets, its libssl, its client's queues and converters. Returns the
    /// name it got.
    pub fn join(&mut self, j: Joining) -> String {
        let Joining { process: p, pattern, name, config, exec_ns } = j;
        // Registry.
        let name = self.registry.write_locked().add(&p, pattern.as_deref(), &name);
        self.membership.changed();
        // Kernel target set: the root first, so that a fork from now on is
        // reported; then the descendants it has (a fork racing the scan is
        // reported by its event, and added twice harmlessly).
        let mut ids = vec![p.id()];
        let mut refused = self.kernel.insert(p.pid, p.pid).is_err();
        for child in tree::descendants(&self.args.proc_root, p.pid) {
            refused |= self.kernel.insert(child.pid, p.pid).is_err();
            let change = self.registry.write_locked().add_child(p.pid, child.pid, Some(child.start));
            self.membership.changed();
            log(&change);
            ids.push(child);
        }
        if refused {
            self.metrics.collector_errors.with_label_values(&["target_map"]).inc();
            tracing::warn!(target_name = %name, "the kernel's target map refused pid {} or a child", p.pid);
        }
        // Sockets: just inserted, no exec counted yet.
        let tgids: Vec<u32> = ids.iter().map(|id| id.pid).collect();
        self.seed(&tgids, |_| 0, &name);
        // TLS probes.
        for &id in &ids {
            let exec_ns = exec_ns.filter(|_| id == p.id());
            self.tls.send(TlsWork::Adopted { id, exec_ns });
        }
        // Files: the client's own queues and converters, and the watches
        // from the flags and the TOML file meant for this target.
        let service = config.as_ref().and_then(|c| c.service.clone());
        if let Some(c) = config {
            let queues = c.queues.into_iter().map(|q| (q, name.clone())).collect();
            let converters = c.converters.into_iter().map(|q| (q, name.clone())).collect();
            self.fs.locked().extend(queues, converters);
        }
        self.fs.locked().adopt(&name);
        // Sampler: the CPU baseline, so its first reading is a rate, not 0.
        self.sampler.prime(p.pid);
        // Dependency health: which server is the client's WATS.
        if let Some(url) = service {
            self.set_service(&name, url);
        }
        self.metrics.targets_joined.with_label_values(&[if pattern.is_some() { "match" } else { "pid" }]).inc();
        let how = pattern.map_or_else(|| "given by --pid".to_string(), |p| format!("matches {p:?}"));
        tracing::info!(target_name = %name, "watching pid {} ({}, {how}) and {} child process(es)", p.pid, p.exe, ids.len() - 1);
        name
    }

    /// A process the kernel took in provisionally at its exec (its name is
    /// that of an allowed executable): it joins if its command line matches
    /// and `--match-user`/`--match-exe` allow it, else it goes, and nothing
    /// it did was applied (the readers wait for this decision).
    pub fn candidate(&mut self, pid: u32, exec_ns: u64) {
        if self.registry.read_locked().known_pids().contains(&pid) {
            // Judged already (a leftover of the previous round).
            return;
        }
        let args = self.args.clone();
        match matching::at_exec(&args, pid, &self.admission) {
            AtExec::Join(pattern, p) if self.registry.read_locked().matched_alive() < args.max_targets => {
                self.join(Joining { exec_ns: Some(exec_ns), ..matching::joining(&args, p, pattern) });
                let delay = monotonic_ns().saturating_sub(exec_ns) as f64 / 1e9;
                self.metrics.adoption_delay.with_label_values(&["exec"]).observe(delay);
                self.metrics.exec_candidates.with_label_values(&["adopted"]).inc();
            }
            AtExec::Join(pattern, p) => {
                self.admission.reject(&p, &pattern, Rejected::Limit);
                self.turn_away(pid, "released");
            }
            AtExec::NotATarget => self.turn_away(pid, "released"),
            AtExec::Gone => self.turn_away(pid, "gone"),
        }
    }

    /// A provisional target that is not one: out of the kernel's set, its
    /// sockets forgotten. (Its events are not applied: see `membership`.)
    fn turn_away(&mut self, pid: u32, outcome: &str) {
        self.metrics.exec_candidates.with_label_values(&[outcome]).inc();
        self.kernel.remove(pid);
        self.sockets.locked().forget_process(pid);
        self.membership.changed();
    }

    /// Provisional targets whose exec event was lost (or that a provisional
    /// one forked before it was judged) are judged now: those that were
    /// provisional at the previous round too (a newer one's exec event may
    /// still be on its way through the ring, and is judged there).
    pub fn judge_leftovers(&mut self) {
        let known = self.registry.read_locked().named_pids();
        let now: BTreeSet<u32> = self.kernel.provisional().into_iter().filter(|pid| !known.contains(pid)).collect();
        for &pid in now.intersection(&std::mem::take(&mut self.leftovers)) {
            self.candidate(pid, monotonic_ns());
        }
        self.leftovers = now;
    }

    /// A target forked: the kernel added the child to its set already. (A
    /// provisional one's child waits for its parent's verdict: the join's
    /// scan of descendants takes it in, or the next round judges it.)
    pub fn forked(&mut self, root: u32, child: u32, own_memory: bool, reported_ns: u64) {
        if root == PROVISIONAL {
            return;
        }
        // Its identity is read at once: its pid alone may name another
        // process by the time anyone looks again.
        let id = ProcId::of(&self.args.proc_root, child).ok();
        let change = self.registry.write_locked().add_child(root, child, id.map(|c| c.start));
        self.membership.changed();
        // A child sharing its parent's memory (vfork, posix_spawn) is about
        // to exec: it gets probes if the new program opens libssl.
        if let (Some(id), true) = (id, own_memory) {
            self.tls.send(TlsWork::Forked { id, reported_ns });
        }
        log(&change);
    }

    /// A target process called exec: the sockets it closed on exec (CLOEXEC)
    /// closed without a `close()`, so its connections end and the sockets
    /// that survived are registered again, under its new exec generation.
    pub fn exec(&mut self, root: u32, pid: u32, ts_ns: u64) {
        let change = self.registry.write_locked().exec(root, pid, tree::exe_of(&self.args.proc_root, pid));
        let exec_gen = self.kernel.exec_gen(pid);
        self.net.locked().process_exited(pid, ts_ns);
        self.seed(&[pid], |_| exec_gen, "");
        log(&change);
    }

    /// A target process is gone.
    pub fn leave(&mut self, root: u32, pid: u32, ts_ns: u64, how: Left) {
        let change = self.registry.write_locked().exited(root, pid);
        self.membership.changed();
        let start = match how {
            // The kernel took it out of its set itself.
            Left::Exit => None,
            Left::Missed(start) => {
                self.kernel.remove(pid);
                start
            }
            // In the kernel's set only if a target forked the new process: it stays.
            Left::Reused(start) => start,
        };
        // Its sockets closed without close().
        self.net.locked().process_exited(pid, ts_ns);
        self.sockets.locked().forget_process(pid);
        self.tls.send(TlsWork::Exited { pid, start });
        self.sampler.forget(pid);
        log(&change);
    }

    /// `--match` targets that exited before `before` are forgotten, and every
    /// part forgets what it kept under their names: what a node where
    /// clients come and go keeps stays bounded.
    pub fn forget_exited(&mut self, before: std::time::SystemTime) {
        let gone = self.registry.write_locked().forget_exited(before);
        self.membership.changed();
        for name in gone {
            self.net.locked().forget_target(&name);
            self.fs.locked().forget_target(&name);
            self.deps.locked().forget(&name);
            self.metrics.forget_target(&name);
            tracing::info!(target_name = %name, "forgot target {name}: exited long ago, its series removed");
        }
    }

    /// Registers the TCP sockets `tgids` hold now, in the kernel's socket map
    /// and the pipeline.
    fn seed(&self, tgids: &[u32], exec_gen: impl Fn(u32) -> u32, name: &str) {
        if let Err(e) = seed_sockets(&self.sockets, &self.net, tgids, &self.args.proc_root, exec_gen) {
            self.metrics.collector_errors.with_label_values(&["socket_seed"]).inc();
            tracing::warn!(target_name = %name, "open sockets of pids {tgids:?}: {e}");
        }
    }

    /// The service address is resolved off this thread: a name lookup may
    /// wait on DNS for seconds, and the client's config chooses the name.
    fn set_service(&self, name: &str, url: String) {
        let (deps, name) = (self.deps.clone(), name.to_string());
        let spawned = std::thread::Builder::new().name("resolve".into()).spawn(move || {
            let addrs = service_addresses(&url);
            deps.locked().set_service(&name, addrs);
        });
        if let Err(e) = spawned {
            self.metrics.collector_errors.with_label_values(&["resolve"]).inc();
            tracing::warn!("cannot start a thread to resolve the WATS service address: {e}");
        }
    }

    /// Every live process of every target whose start time is known.
    pub fn live_processes(&self) -> Vec<ProcId> {
        self.registry.read_locked().live_processes()
    }
}

/// How a target process left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Left {
    /// Its exit event.
    Exit,
    /// The liveness check found it gone: its exit event was lost (start time when known).
    Missed(Option<u64>),
    /// Its pid names another process now.
    Reused(Option<u64>),
}

/// Socket-map entries of a process that is gone.
trait ForgetProcess {
    fn forget_process(&mut self, tgid: u32);
}

impl ForgetProcess for SocketMap {
    fn forget_process(&mut self, tgid: u32) {
        let stale: Vec<_> = self.keys().flatten().filter(|k| k.tgid == tgid).collect();
        for key in stale {
            let _ = self.remove(&key);
        }
    }
}

pub fn log(change: &Change) {
    match change {
        Change::ChildJoined { target, child } => tracing::debug!(target_name = %target, "child process {child} joined"),
        Change::ChildLeft { target, child } => tracing::debug!(target_name = %target, "child process {child} exited"),
        Change::TargetExited { target, pid } => tracing::warn!(target_name = %target, "target process {pid} exited"),
        Change::Exec { target, pid } => tracing::debug!(target_name = %target, "process {pid} called exec"),
        Change::Unknown => {}
    }
}
