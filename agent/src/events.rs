//! Applies decoded kernel events to the agent's state.

use std::{
    os::unix::ffi::OsStrExt,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
};

use pywats_agent_ebpf::abi::{sock_state, DecodeError, Event, EventKind, SockInfo, SockKey, CLONE_VM};

use crate::sync::{Locked, ReadWrite};
use crate::{
    ebpf::{loader::SocketMap, tls::is_libssl, KernelTargets},
    fs::FsPipeline,
    metrics::Metrics,
    net::NetPipeline,
    proc::{admission::Admission, identity::ProcId, targets::Change, tree, Targets},
    seeding::seed_sockets,
    tls_attach::{TlsQueue, TlsWork},
};

/// Everything events update. Shared by the two ring-buffer readers.
#[derive(Clone)]
pub struct Handler {
    pub targets: Arc<RwLock<Targets>>,
    pub metrics: Arc<Metrics>,
    pub net: Arc<Mutex<NetPipeline>>,
    pub sockets: Arc<Mutex<SocketMap>>,
    pub fs: Arc<Mutex<FsPipeline>>,
    pub proc_root: Arc<PathBuf>,
    pub tls: TlsQueue,
    /// The kernel's target set (the liveness loop and adoption change it too).
    pub kernel_targets: Arc<Mutex<KernelTargets>>,
    /// Whose processes `--match` may adopt.
    pub admission: Arc<Admission>,
}

impl Handler {
    fn decode<'a>(&self, record: &'a [u8]) -> Option<Event<'a>> {
        match Event::decode(record) {
            Ok(e) => Some(e),
            Err(e) => {
                let reason = match e {
                    DecodeError::Short { .. } => "short",
                    DecodeError::UnknownKind(_) => "unknown_kind",
                    DecodeError::BadLength { .. } => "bad_length",
                };
                self.metrics.decode_errors.with_label_values(&[reason]).inc();
                tracing::debug!("undecodable event: {e:?}");
                None
            }
        }
    }

    /// One record of the process-event ring.
    pub fn proc(&self, record: &[u8]) {
        let Some(Event::Proc(kind, ev)) = self.decode(record) else {
            self.metrics.decode_errors.with_label_values(&["wrong_ring"]).inc();
            return;
        };
        self.metrics.events.with_label_values(&[kind.name()]).inc();
        let tgid = ev.header.tgid;
        // A new process's identity, read at once: its pid alone may name
        // another process by the time the agent looks again.
        let child = match kind {
            EventKind::ProcFork => ProcId::of(&self.proc_root, ev.child_tgid).ok(),
            _ => None,
        };
        let change = {
            let mut targets = self.targets.write_locked();
            match kind {
                EventKind::ProcFork => targets.add_child(ev.root_tgid, ev.child_tgid, child.map(|c| c.start)),
                EventKind::ProcExit => targets.exited(ev.root_tgid, tgid),
                EventKind::ProcExec => targets.exec(ev.root_tgid, tgid, tree::exe_of(&self.proc_root, tgid)),
                // Event::decode only makes Proc of the three kinds above.
                EventKind::SockConnect
                | EventKind::SockAccept
                | EventKind::SockClose
                | EventKind::SockData
                | EventKind::TlsData
                | EventKind::TlsClose
                | EventKind::FsOpen
                | EventKind::FsRename
                | EventKind::FsUnlink => Change::Unknown,
            }
        };
        match kind {
            EventKind::ProcExit => {
                self.process_gone(tgid, ev.header.ts_ns);
                self.tls.send(TlsWork::Exited(tgid));
            }
            // A child sharing its parent's memory (vfork, posix_spawn) is about
            // to exec: it gets probes if the new program opens libssl.
            EventKind::ProcFork if ev.header.ret as u64 & CLONE_VM == 0 => {
                if let Some(id) = child {
                    self.tls.send(TlsWork::Forked { id, reported_ns: ev.header.ts_ns })
                }
            }
            EventKind::ProcExec => self.after_exec(tgid, ev.header.ts_ns),
            _ => {}
        }
        log(&change);
    }

    /// A process's sockets close without close(): end its connections and
    /// forget its entries in the kernel's socket map.
    pub fn process_gone(&self, tgid: u32, ts_ns: u64) {
        self.net.locked().process_exited(tgid, ts_ns);
        let mut sockets = self.sockets.locked();
        let stale: Vec<_> = sockets.keys().flatten().filter(|k| k.tgid == tgid).collect();
        for key in stale {
            let _ = sockets.remove(&key);
        }
    }

    /// exec closed the process's CLOEXEC sockets without a `close()` (the
    /// kernel now treats their map entries as stale): its connections end,
    /// and the sockets that survived are registered again.
    fn after_exec(&self, tgid: u32, ts_ns: u64) {
        let mut net = self.net.locked();
        net.process_exited(tgid, ts_ns);
        let exec_gen = self.kernel_targets.locked().exec_gen(tgid);
        let mut sockets = self.sockets.locked();
        if let Err(e) = seed_sockets(&mut sockets, &mut net, &[tgid], &self.proc_root, |_| exec_gen) {
            self.metrics.collector_errors.with_label_values(&["socket_seed"]).inc();
            tracing::warn!("sockets of pid {tgid} after exec: {e}");
        }
    }

    /// One record of the socket-event ring.
    pub fn net(&self, record: &[u8]) {
        let Some(event) = self.decode(record) else { return };
        match event {
            Event::Conn(kind, ev) => {
                self.metrics.events.with_label_values(&[kind.name()]).inc();
                self.net.locked().on_conn(kind, &ev);
            }
            Event::Data { kind, event, prefix, suffix } => {
                self.metrics.events.with_label_values(&[kind.name()]).inc();
                let useless = self.net.locked().on_data(kind, &event, prefix, suffix);
                if useless && kind == EventKind::SockData {
                    self.ignore_socket(event.header.tgid, event.header.fd, event.conn_id);
                }
            }
            Event::Proc(..) | Event::Fs { .. } => self.metrics.decode_errors.with_label_values(&["wrong_ring"]).inc(),
        }
    }

    /// Tells the kernel to stop copying a socket's bytes, if the fd still holds
    /// the same connection.
    fn ignore_socket(&self, tgid: u32, fd: i32, conn_id: u64) {
        let Ok(fd) = u32::try_from(fd) else { return };
        let key = SockKey { tgid, fd };
        let mut sockets = self.sockets.locked();
        if let Ok(info) = sockets.get(&key, 0) {
            if info.conn_id == conn_id && matches!(info.state, sock_state::CONNECTED | sock_state::CONNECTING) {
                let _ = sockets.insert(key, SockInfo { state: sock_state::IGNORED, ..info }, 0);
            }
        }
    }

    /// One record of the file-event ring.
    pub fn fs(&self, record: &[u8]) {
        let Some(Event::Fs { kind, event, path1, path2 }) = self.decode(record) else {
            self.metrics.decode_errors.with_label_values(&["wrong_ring"]).inc();
            return;
        };
        self.metrics.events.with_label_values(&[kind.name()]).inc();
        if kind == EventKind::FsOpen && path1.first() == Some(&b'/') {
            let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path1));
            if is_libssl(path) {
                let (pid, reported_ns) = (event.header.tgid, event.header.ts_ns);
                let start = self.targets.read_locked().start_of(pid);
                if let Some(id) =
                    start.map(|start| ProcId { pid, start }).or_else(|| ProcId::of(&self.proc_root, pid).ok())
                {
                    self.tls.send(TlsWork::Opened { id, path: path.to_path_buf(), reported_ns });
                }
            }
        }
        self.fs.locked().on_event(kind, &event, path1, path2);
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
