//! Events sent through ring buffers.

use super::assert_size;

/// What an event reports. Travels as `u32` in [`EventHeader::kind`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A target process created a child process (not a thread); the header's
    /// `ret` holds the clone flags.
    ProcFork = 1,
    /// A target process replaced its image with `execve`.
    ProcExec = 2,
    /// The last thread of a target process exited.
    ProcExit = 3,
    /// A TCP `connect()` finished: `ret` 0, `-EINPROGRESS`, or `-errno`
    /// (also sent when `SO_ERROR` reveals the outcome of a non-blocking one).
    SockConnect = 4,
    /// A TCP connection was accepted.
    SockAccept = 5,
    /// A tracked connection's fd was closed.
    SockClose = 6,
    /// Bytes read or written on a tracked connection.
    SockData = 7,
    /// A file was opened.
    FsOpen = 8,
    /// A file was renamed.
    FsRename = 9,
    /// A file was deleted.
    FsUnlink = 10,
    /// Plaintext a target moved through libssl (a [`DataEvent`](super::DataEvent)).
    TlsData = 11,
    /// A TLS connection ended: `SSL_free` (a [`ConnEvent`](super::ConnEvent)).
    TlsClose = 12,
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
        EventKind::ProcFork,
        EventKind::ProcExec,
        EventKind::ProcExit,
        EventKind::SockConnect,
        EventKind::SockAccept,
        EventKind::SockClose,
        EventKind::SockData,
        EventKind::FsOpen,
        EventKind::FsRename,
        EventKind::FsUnlink,
        EventKind::TlsData,
        EventKind::TlsClose,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            EventKind::ProcFork => "proc_fork",
            EventKind::ProcExec => "proc_exec",
            EventKind::ProcExit => "proc_exit",
            EventKind::SockConnect => "sock_connect",
            EventKind::SockAccept => "sock_accept",
            EventKind::SockClose => "sock_close",
            EventKind::SockData => "sock_data",
            EventKind::FsOpen => "fs_open",
            EventKind::FsRename => "fs_rename",
            EventKind::FsUnlink => "fs_unlink",
            EventKind::TlsData => "tls_data",
            EventKind::TlsClose => "tls_close",
        }
    }
}

impl TryFrom<u32> for EventKind {
    type Error = u32;

    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            1 => EventKind::ProcFork,
            2 => EventKind::ProcExec,
            3 => EventKind::ProcExit,
            4 => EventKind::SockConnect,
            5 => EventKind::SockAccept,
            6 => EventKind::SockClose,
            7 => EventKind::SockData,
            8 => EventKind::FsOpen,
            9 => EventKind::FsRename,
            10 => EventKind::FsUnlink,
            11 => EventKind::TlsData,
            12 => EventKind::TlsClose,
            other => return Err(other),
        })
    }
}

/// Common header of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    /// File descriptor the event is about, -1 when none.
    pub fd: i32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ts_ns: u64,
    /// Syscall or function result, 0 when none.
    pub ret: i64,
    /// True length of the data the event is about.
    pub len: u32,
    /// Bytes of that data captured after the event struct.
    pub captured: u32,
}
assert_size!(EventHeader, 40);

/// A process lifecycle event ([`EventKind::ProcFork`], `ProcExec`, `ProcExit`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcEvent {
    pub header: EventHeader,
    /// The configured target the process belongs to.
    pub root_tgid: u32,
    /// For a fork: the new process. Otherwise equal to `header.tgid`.
    pub child_tgid: u32,
}
assert_size!(ProcEvent, 48);
