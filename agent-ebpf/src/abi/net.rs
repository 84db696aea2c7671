//! Socket tracking: the per-socket map and the socket events.

use super::{assert_size, EventHeader};

/// Bytes captured from the start of a socket read/write buffer.
pub const CAPTURE_PREFIX: u32 = 4096;
/// Bytes captured from the end of a buffer longer than the prefix, so the end
/// of a message (e.g. a chunked body's last chunk) is seen even when the
/// middle is not.
pub const CAPTURE_SUFFIX: u32 = 64;

/// `AF_INET`, `AF_INET6` from `linux/socket.h`.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
/// `SOCK_STREAM`; the socket type's low bits (flags like SOCK_NONBLOCK above).
pub const SOCK_STREAM: u64 = 1;
pub const SOCK_TYPE_MASK: u64 = 0xf;
/// `EINPROGRESS`: a non-blocking connect that is under way.
pub const EINPROGRESS: i64 = 115;
/// Errors of a read or write that end a connection: reported, with no data.
pub const ECONNRESET: i64 = 104;
pub const EPIPE: i64 = 32;
/// `SOL_SOCKET` / `SO_ERROR`: how Python learns the outcome of a non-blocking connect.
pub const SOL_SOCKET: u64 = 1;
pub const SO_ERROR: u64 = 4;

/// Key of the socket map: a file descriptor of a target process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockKey {
    pub tgid: u32,
    pub fd: u32,
}
assert_size!(SockKey, 8);

/// Lifecycle of a tracked TCP socket.
pub mod sock_state {
    /// Created by `socket()`, not connected yet.
    pub const CREATED: u32 = 0;
    /// `connect()` returned EINPROGRESS; its outcome comes from `SO_ERROR`.
    pub const CONNECTING: u32 = 1;
    /// Connected (or accepted): its data is reported.
    pub const CONNECTED: u32 = 2;
    /// A listening socket: its accepted connections are tracked.
    pub const LISTENING: u32 = 3;
    /// Connected, but its bytes are of no use (TLS ciphertext, whose
    /// plaintext the libssl probes report; not HTTP): set by the agent, so
    /// data is no longer copied out. Its close is still reported.
    pub const IGNORED: u32 = 4;
}

/// Which side of the connection the target is.
pub mod role {
    pub const UNKNOWN: u32 = 0;
    /// The target connected: it writes requests and reads responses.
    pub const CLIENT: u32 = 1;
    /// The target accepted: it reads requests and writes responses.
    pub const SERVER: u32 = 2;
}

/// Value of the socket map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockInfo {
    /// Unique per connection (time of connect/accept), so a reused fd never
    /// mixes two connections.
    pub conn_id: u64,
    pub state: u32,
    pub role: u32,
    /// The owner's [`Target::exec_gen`](super::Target) when the entry was made.
    pub exec_gen: u32,
    pub _pad: u32,
}
assert_size!(SockInfo, 24);

/// A socket address: IPv4 in the first 4 bytes of `addr`, or IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockAddr {
    pub family: u16,
    /// Host byte order.
    pub port: u16,
    pub _pad: u32,
    pub addr: [u8; 16],
}
assert_size!(SockAddr, 24);

/// [`EventKind::SockConnect`](super::EventKind) (ret: 0, or -errno of a failed
/// connect), `SockAccept`, `SockClose`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEvent {
    pub header: EventHeader,
    pub conn_id: u64,
    pub addr: SockAddr,
}
assert_size!(ConnEvent, 72);

/// Direction of [`DataEvent`] bytes.
pub mod direction {
    /// Written by the target (write, send, …).
    pub const EGRESS: u32 = 0;
    /// Read by the target.
    pub const INGRESS: u32 = 1;
}

/// [`DataEvent::seq`] when the kernel could not keep the offset.
pub const SEQ_UNKNOWN: u64 = u64::MAX;

/// Flags of [`DataEvent`].
pub mod data_flags {
    /// A vectored call with more than one buffer: only the first was captured.
    pub const VECTORED_PARTIAL: u32 = 1;
}

/// [`EventKind::SockData`](super::EventKind): bytes a target moved through a
/// tracked socket (or, as `TlsData`, plaintext through libssl; the conn id
/// then carries `TLS_CONN`). `header.ret` is the true byte count; `prefix_len` bytes from
/// the start of the data follow the struct, then `suffix_len` bytes that end
/// exactly at the data's end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataEvent {
    pub header: EventHeader,
    pub conn_id: u64,
    /// When the call began (`header.ts_ns` is when it returned). A request's
    /// start is when the client began handing it over: a write that blocks,
    /// or whose thread is preempted before returning, must not shorten it.
    pub call_start_ns: u64,
    /// Offset of these bytes in the connection's stream in this direction
    /// (bytes reported before them since the probes first saw it), or
    /// [`SEQ_UNKNOWN`]. A jump tells the agent exactly how much it lost.
    pub seq: u64,
    /// A [`direction`] value.
    pub direction: u16,
    /// The socket's [`role`] value.
    pub role: u16,
    pub prefix_len: u32,
    pub suffix_len: u32,
    pub flags: u32,
}
assert_size!(DataEvent, 80);

/// Scratch space a program assembles a data event in before output.
#[repr(C)]
pub struct DataScratch {
    pub event: DataEvent,
    /// Twice the prefix so the verifier sees a masked length stay in bounds.
    pub bytes: [u8; (2 * CAPTURE_PREFIX + CAPTURE_SUFFIX) as usize],
}
