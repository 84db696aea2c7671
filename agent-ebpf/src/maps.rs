//! Map definitions; names are the statics' identifiers and match `abi::MAP_*`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use pywats_agent_ebpf::abi::{
    map_slot, DataScratch, ExecPrefix, FsScratch, SockAddr, SockInfo, SockKey, Target, TlsScratch, EXEC_PREFIXES,
    FS_EVENTS_BYTES, LOST_SLOTS, MAX_SOCKETS, MAX_TARGETS, NET_EVENTS_BYTES, PROC_EVENTS_BYTES, SYSCALL_SLOTS,
    TARGET_BITS_WORDS,
};

#[map]
pub static TARGETS: HashMap<u32, Target> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// `BPF_F_MMAPABLE`: the agent maps the array to change bits atomically.
const BPF_F_MMAPABLE: u32 = 1 << 10;

#[map]
pub static TARGET_BITS: Array<u64> = Array::with_max_entries(TARGET_BITS_WORDS, BPF_F_MMAPABLE);

#[map]
pub static EXEC_MATCH: Array<ExecPrefix> = Array::with_max_entries(EXEC_PREFIXES, 0);

#[map]
pub static SYS_ENTER_PROGS: ProgramArray = ProgramArray::with_max_entries(SYSCALL_SLOTS, 0);

#[map]
pub static SYS_EXIT_PROGS: ProgramArray = ProgramArray::with_max_entries(SYSCALL_SLOTS, 0);

#[map]
pub static PROC_EVENTS: RingBuf = RingBuf::with_byte_size(PROC_EVENTS_BYTES, 0);

#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_SLOTS, 0);

#[map]
pub static MAP_INSERT_FAILURES: PerCpuArray<u64> = PerCpuArray::with_max_entries(map_slot::NAMES.len() as u32, 0);

#[map]
pub static SOCKETS: HashMap<SockKey, SockInfo> = HashMap::with_max_entries(MAX_SOCKETS, 0);

#[map]
pub static NET_EVENTS: RingBuf = RingBuf::with_byte_size(NET_EVENTS_BYTES, 0);

/// Arguments of a syscall in flight, parked by its enter program for its exit
/// program, per thread (`pid_tgid`). Kernel-internal: the agent never reads it.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Pending {
    pub op: u32,
    pub fd: u32,
    /// Buffer, iovec array, msghdr, sockaddr or optval pointer.
    pub buf: u64,
    /// Byte count or iovec count.
    pub count: u64,
    pub conn_id: u64,
    pub role: u32,
    pub _pad: u32,
    /// When the syscall was entered.
    pub enter_ns: u64,
    pub addr: SockAddr,
}

impl Pending {
    pub const EMPTY: Pending = Pending {
        op: 0,
        fd: 0,
        buf: 0,
        count: 0,
        conn_id: 0,
        role: 0,
        _pad: 0,
        enter_ns: 0,
        addr: SockAddr { family: 0, port: 0, _pad: 0, addr: [0; 16] },
    };
}

/// A connection of a target: socket connections by their connect/accept
/// time, TLS ones by `SSL * | TLS_CONN`. Kernel-internal.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct ConnKey {
    pub tgid: u32,
    pub _pad: u32,
    pub conn_id: u64,
}

/// Per connection: bytes reported so far, [egress, ingress], and for TLS
/// whether its calls are captured whole ([`crate::emit::CAPTURE_WHOLE`]).
/// LRU, so entries of connections whose end was never seen age out.
#[map]
pub static STREAM_SEQ: LruHashMap<ConnKey, [u64; 3]> = LruHashMap::with_max_entries(MAX_SOCKETS, 0);

#[map]
pub static PENDING: HashMap<u64, Pending> = HashMap::with_max_entries(16384, 0);

/// Per-CPU space to assemble a data event (too big for the 512-byte stack).
#[map]
pub static SCRATCH: PerCpuArray<DataScratch> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static FS_EVENTS: RingBuf = RingBuf::with_byte_size(FS_EVENTS_BYTES, 0);

/// Arguments of a file syscall in flight, per thread. Kernel-internal.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct FsPending {
    pub kind: u32,
    pub flags: u32,
    pub dirfd1: i32,
    pub dirfd2: i32,
    pub path1: u64,
    pub path2: u64,
}

#[map]
pub static FS_PENDING: HashMap<u64, FsPending> = HashMap::with_max_entries(16384, 0);

#[map]
pub static FS_SCRATCH: PerCpuArray<FsScratch> = PerCpuArray::with_max_entries(1, 0);

/// An SSL call in flight, per thread. Kernel-internal.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct TlsPending {
    pub ssl: u64,
    pub buf: u64,
    /// `size_t *` the `_ex` variants report the byte count through; 0 otherwise.
    pub count_out: u64,
    /// When the call was entered.
    pub enter_ns: u64,
}

#[map]
pub static TLS_PENDING: HashMap<u64, TlsPending> = HashMap::with_max_entries(16384, 0);

#[map]
pub static TLS_SCRATCH: PerCpuArray<TlsScratch> = PerCpuArray::with_max_entries(1, 0);
