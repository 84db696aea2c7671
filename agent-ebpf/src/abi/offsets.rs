//! Tracepoint field offsets. Tracepoint layouts change between kernels
//! (e.g. `sched_process_fork` moved to `__data_loc` strings), so the agent reads
//! them from tracefs `format` files and writes them into this global before load.

use super::assert_size;

/// Name of the global holding [`TracepointOffsets`] in the eBPF object.
pub const GLOBAL_TP_OFFSETS: &str = "TP_OFFSETS";

/// Offsets (bytes from the start of the tracepoint record) of the fields the
/// programs read. Zero means "field absent on this kernel".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointOffsets {
    /// `task:task_newtask` `pid`.
    pub newtask_pid: u32,
    /// `task:task_newtask` `clone_flags` (u64).
    pub newtask_clone_flags: u32,
    /// `sched:sched_process_exit` `group_dead` (bool); 0 when absent.
    pub exit_group_dead: u32,
    pub _pad: u32,
}
assert_size!(TracepointOffsets, 16);

impl TracepointOffsets {
    /// Offsets of the kernels this was written on (6.x); the agent overrides them.
    pub const DEFAULT: TracepointOffsets =
        TracepointOffsets { newtask_pid: 8, newtask_clone_flags: 32, exit_group_dead: 32, _pad: 0 };
}

/// `CLONE_THREAD` from `linux/sched.h`: set when a new task is a thread.
pub const CLONE_THREAD: u64 = 0x0001_0000;
/// `CLONE_VM`: the new process shares its parent's memory (vfork,
/// posix_spawn) until it calls exec. Sent in a fork event's `ret`.
pub const CLONE_VM: u64 = 0x0000_0100;
