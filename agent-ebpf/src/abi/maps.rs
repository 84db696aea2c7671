//! Map names and sizes. The kernel side declares each map with a static of the
//! same name (the `#[map]` macro takes the identifier), the agent looks maps up
//! by these constants.

use super::assert_size;

/// `HashMap<u32 tgid, Target>`: the processes whose events are reported.
pub const MAP_TARGETS: &str = "TARGETS";
/// `Array<u64>`, mmapable: one bit per possible tgid, set for the processes in
/// [`MAP_TARGETS`]. Every syscall on the host asks "is this a target?"; an
/// array read is inlined by the verifier, a hash lookup is not, so the bit
/// answers it and the hash is read only for targets. Both sides change bits
/// with atomic instructions (the agent through its mapping), never whole words.
pub const MAP_TARGET_BITS: &str = "TARGET_BITS";
/// `ProgramArray`: the enter handler of each traced syscall, by syscall number.
pub const MAP_SYS_ENTER_PROGS: &str = "SYS_ENTER_PROGS";
/// `ProgramArray`: the exit handler of each traced syscall, by syscall number.
pub const MAP_SYS_EXIT_PROGS: &str = "SYS_EXIT_PROGS";
/// `RingBuf`: process lifecycle events.
pub const MAP_PROC_EVENTS: &str = "PROC_EVENTS";
/// `HashMap<SockKey, SockInfo>`: the TCP sockets of targets.
pub const MAP_SOCKETS: &str = "SOCKETS";
/// `RingBuf`: socket events.
pub const MAP_NET_EVENTS: &str = "NET_EVENTS";
/// `RingBuf`: file events.
pub const MAP_FS_EVENTS: &str = "FS_EVENTS";
/// `PerCpuArray<u64>` indexed by [`crate::abi::EventKind`]: events dropped
/// because the ring buffer was full.
pub const MAP_LOST: &str = "LOST";

/// Capacity of the target set (targets plus their descendant processes).
pub const MAX_TARGETS: u32 = 8192;
/// Words of [`MAP_TARGET_BITS`]: `PID_MAX_LIMIT` (2^22, the most any 64-bit
/// kernel allows) bits, 512 KiB.
pub const TARGET_BITS_WORDS: u32 = (1 << 22) / 64;
/// Slots of the syscall program arrays (syscall numbers below this).
pub const SYSCALL_SLOTS: u32 = 512;
/// Size of the process-event ring buffer (a power of two, multiple of the page
/// size): forks, execs and exits, a few dozen bytes each, drained at once.
pub const PROC_EVENTS_BYTES: u32 = 64 * 1024;
/// Capacity of the socket map.
pub const MAX_SOCKETS: u32 = 65536;
/// Default size of the socket-event ring buffer (`--net-ring-kib`). The agent
/// maps a ring's pages twice (the kernel's wrap-around view), so this costs
/// twice its size in resident memory; 4 MiB holds 40 ms of the agent's measured
/// top rate (docs/performance.md), four drain intervals.
pub const NET_EVENTS_BYTES: u32 = 4 * 1024 * 1024;
/// Default size of the file-event ring buffer (`--fs-ring-kib`): an event is
/// at most two paths, so 1 MiB holds several thousand queue moves.
pub const FS_EVENTS_BYTES: u32 = 1024 * 1024;
/// Slots of the lost-event counter: one per event kind value.
pub const LOST_SLOTS: u32 = 16;

/// Value of the target map: which configured target a process belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// tgid of the configured (root) process; equals the key for a root.
    pub root_tgid: u32,
    /// Times the process called exec since it became a target (the kernel
    /// counts them). A socket-map entry made under an older value is stale:
    /// exec closed the CLOEXEC sockets without a `close()`, and a file that
    /// reuses the fd number must not be taken for the socket.
    pub exec_gen: u32,
}
assert_size!(Target, 8);

/// `root_tgid` of a provisional target: a process the kernel took into the
/// target set at its exec because its name matched [`MAP_EXEC_MATCH`], not
/// judged by the agent yet (no tgid is 0).
pub const PROVISIONAL: u32 = 0;

/// `Array<ExecPrefix>` of [`EXEC_PREFIXES`] slots, filled in order: with
/// `--match`, a process whose name (`comm`, after exec the file name it
/// executed) starts with one of these becomes a provisional target at its
/// exec, so that nothing it does before the agent has looked at it is missed.
pub const MAP_EXEC_MATCH: &str = "EXEC_MATCH";
/// Slots of [`MAP_EXEC_MATCH`].
pub const EXEC_PREFIXES: u32 = 8;

/// A prefix of executable names; an unused slot has `active == 0`, and one
/// of length 0 matches every exec.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecPrefix {
    pub active: u32,
    /// Bytes of `bytes` that must match (at most 15: `comm` holds 15 and a NUL).
    pub len: u32,
    pub bytes: [u8; 16],
}
assert_size!(ExecPrefix, 24);

/// `PerCpuArray<u64>` indexed by [`map_slot`]: inserts the kernel programs
/// could not make because a map was full (or out of memory).
pub const MAP_INSERT_FAILURES: &str = "MAP_INSERT_FAILURES";

/// Slots of [`MAP_INSERT_FAILURES`], and the `map` label of each.
pub mod map_slot {
    pub const TARGETS: u32 = 0;
    pub const SOCKETS: u32 = 1;
    pub const PENDING: u32 = 2;
    pub const FS_PENDING: u32 = 3;
    pub const TLS_PENDING: u32 = 4;
    pub const STREAM_SEQ: u32 = 5;
    /// Label values, by slot.
    pub const NAMES: [&str; 6] = ["targets", "sockets", "pending", "fs_pending", "tls_pending", "stream_seq"];
}
