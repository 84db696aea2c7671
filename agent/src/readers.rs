//! The socket and file rings' records, applied to the pipelines. (The
//! process ring belongs to the lifecycle thread: `target::owner`.) Each
//! record takes one part lock at a time, and is applied only once its process
//! is known to be a target (`target::membership`).

use std::{
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use pywats_agent_ebpf::abi::{sock_state, DecodeError, Event, EventKind, SockInfo, SockKey};

use crate::sync::{Locked, ReadWrite};
use crate::{
    ebpf::{loader::SocketMap, tls::is_libssl},
    fs::FsPipeline,
    metrics::Metrics,
    net::NetPipeline,
    proc::{identity::ProcId, Targets},
    target::{
        membership::Settle,
        tls::{TlsQueue, TlsWork},
    },
};

/// Decodes a record; what cannot be decoded is counted by reason.
pub fn decode<'a>(metrics: &Metrics, record: &'a [u8]) -> Option<Event<'a>> {
    match Event::decode(record) {
        Ok(e) => Some(e),
        Err(e) => {
            let reason = match e {
                DecodeError::Short { .. } => "short",
                DecodeError::UnknownKind(_) => "unknown_kind",
                DecodeError::BadLength { .. } => "bad_length",
            };
            metrics.decode_errors.with_label_values(&[reason]).inc();
            tracing::debug!("undecodable event: {e:?}");
            None
        }
    }
}

/// Whether the event's process is a target; one that is not is counted.
fn settled(settle: &mut Settle, metrics: &Metrics, kind: EventKind, tgid: u32, ts_ns: u64) -> bool {
    match settle.check(tgid, ts_ns) {
        Ok(()) => true,
        Err(why) => {
            metrics.events_ignored.with_label_values(&[kind.name(), why.label()]).inc();
            false
        }
    }
}

/// What the socket ring's records update.
pub struct NetReader {
    pub metrics: Arc<Metrics>,
    pub net: Arc<Mutex<NetPipeline>>,
    pub sockets: Arc<Mutex<SocketMap>>,
    pub settle: Settle,
}

impl NetReader {
    /// One record of the socket-event ring.
    pub fn record(&mut self, record: &[u8]) {
        let Some(event) = decode(&self.metrics, record) else { return };
        let (kind, header) = match &event {
            Event::Conn(kind, ev) => (*kind, ev.header),
            Event::Data { kind, event, .. } => (*kind, event.header),
            Event::Proc(..) | Event::Fs { .. } => {
                return self.metrics.decode_errors.with_label_values(&["wrong_ring"]).inc();
            }
        };
        if !settled(&mut self.settle, &self.metrics, kind, header.tgid, header.ts_ns) {
            return;
        }
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
}

/// What the file ring's records update.
pub struct FsReader {
    pub metrics: Arc<Metrics>,
    pub fs: Arc<Mutex<FsPipeline>>,
    pub targets: Arc<RwLock<Targets>>,
    pub tls: TlsQueue,
    pub proc_root: PathBuf,
    pub settle: Settle,
}

impl FsReader {
    /// One record of the file-event ring.
    pub fn record(&mut self, record: &[u8]) {
        let Some(decoded) = decode(&self.metrics, record) else { return };
        let Event::Fs { kind, event, path1, path2 } = decoded else {
            self.metrics.decode_errors.with_label_values(&["wrong_ring"]).inc();
            return;
        };
        if !settled(&mut self.settle, &self.metrics, kind, event.header.tgid, event.header.ts_ns) {
            return;
        }
        self.metrics.events.with_label_values(&[kind.name()]).inc();
        if kind == EventKind::FsOpen && path1.first() == Some(&b'/') {
            let path = Path::new(std::ffi::OsStr::from_bytes(path1));
            if is_libssl(path) {
                self.libssl_opened(event.header.tgid, path, event.header.ts_ns);
            }
        }
        self.fs.locked().on_event(kind, &event, path1, path2);
    }

    /// A target opened a libssl file (an exec'd child loading it, a
    /// `dlopen`): its probes, at once.
    fn libssl_opened(&self, pid: u32, path: &Path, reported_ns: u64) {
        let start = self.targets.read_locked().start_of(pid);
        let id = start.map(|start| ProcId { pid, start }).or_else(|| ProcId::of(&self.proc_root, pid).ok());
        if let Some(id) = id {
            self.tls.send(TlsWork::Opened { id, path: path.to_path_buf(), reported_ns });
        }
    }
}
