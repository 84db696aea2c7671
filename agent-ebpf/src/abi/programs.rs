//! The programs in the object and where the agent attaches them.

/// A tracepoint program: its function name in the object and its tracepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointProgram {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
}

const fn tp(program: &'static str, category: &'static str, name: &'static str) -> TracepointProgram {
    TracepointProgram { program, category, name }
}

/// Process lifecycle programs (`probes/sched.rs`).
pub const SCHED_PROGRAMS: [TracepointProgram; 3] = [
    tp("task_newtask", "task", "task_newtask"),
    tp("sched_process_exec", "sched", "sched_process_exec"),
    tp("sched_process_exit", "sched", "sched_process_exit"),
];

/// The two programs on the raw `sys_enter`/`sys_exit` tracepoints
/// (`probes/syscalls.rs`): (program, raw tracepoint). They run for every
/// syscall on the host, return at once for a task that is not a target, and
/// hand a target's syscall to its handler by tail call.
///
/// Why raw tracepoints and not `syscalls:sys_enter_*`: measured here with
/// programs that return at once, the per-syscall tracepoints cost an
/// unwatched `read`/`write` +220 ns (the perf-event path copies every record),
/// the raw pair +130 ns (docs/performance.md).
pub const SYSCALL_DISPATCHERS: [(&str, &str); 2] = [("raw_sys_enter", "sys_enter"), ("raw_sys_exit", "sys_exit")];

/// A syscall handler: its program, its syscall number (x86_64), and whether
/// it runs at the syscall's exit (else at its entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallProgram {
    pub program: &'static str,
    pub nr: u32,
    pub exit: bool,
}

const fn enter(program: &'static str, nr: u32) -> SyscallProgram {
    SyscallProgram { program, nr, exit: false }
}

const fn exit(program: &'static str, nr: u32) -> SyscallProgram {
    SyscallProgram { program, nr, exit: true }
}

/// x86_64 syscall numbers (`arch/x86/entry/syscalls/syscall_64.tbl`).
pub mod nr {
    pub const READ: u32 = 0;
    pub const WRITE: u32 = 1;
    pub const CLOSE: u32 = 3;
    pub const READV: u32 = 19;
    pub const WRITEV: u32 = 20;
    pub const SOCKET: u32 = 41;
    pub const CONNECT: u32 = 42;
    pub const ACCEPT: u32 = 43;
    pub const SENDTO: u32 = 44;
    pub const RECVFROM: u32 = 45;
    pub const SENDMSG: u32 = 46;
    pub const RECVMSG: u32 = 47;
    pub const GETSOCKOPT: u32 = 55;
    pub const RENAME: u32 = 82;
    pub const UNLINK: u32 = 87;
    pub const OPENAT: u32 = 257;
    pub const UNLINKAT: u32 = 263;
    pub const RENAMEAT: u32 = 264;
    pub const ACCEPT4: u32 = 288;
    pub const RENAMEAT2: u32 = 316;
    pub const OPENAT2: u32 = 437;
}

/// Socket handlers (`probes/net.rs`).
pub const NET_PROGRAMS: [SyscallProgram; 27] = [
    enter("sys_enter_socket", nr::SOCKET),
    exit("sys_exit_socket", nr::SOCKET),
    enter("sys_enter_connect", nr::CONNECT),
    exit("sys_exit_connect", nr::CONNECT),
    enter("sys_enter_accept", nr::ACCEPT),
    exit("sys_exit_accept", nr::ACCEPT),
    enter("sys_enter_accept4", nr::ACCEPT4),
    exit("sys_exit_accept4", nr::ACCEPT4),
    enter("sys_enter_getsockopt", nr::GETSOCKOPT),
    exit("sys_exit_getsockopt", nr::GETSOCKOPT),
    enter("sys_enter_close", nr::CLOSE),
    enter("sys_enter_write", nr::WRITE),
    exit("sys_exit_write", nr::WRITE),
    enter("sys_enter_read", nr::READ),
    exit("sys_exit_read", nr::READ),
    enter("sys_enter_writev", nr::WRITEV),
    exit("sys_exit_writev", nr::WRITEV),
    enter("sys_enter_readv", nr::READV),
    exit("sys_exit_readv", nr::READV),
    enter("sys_enter_sendto", nr::SENDTO),
    exit("sys_exit_sendto", nr::SENDTO),
    enter("sys_enter_recvfrom", nr::RECVFROM),
    exit("sys_exit_recvfrom", nr::RECVFROM),
    enter("sys_enter_sendmsg", nr::SENDMSG),
    exit("sys_exit_sendmsg", nr::SENDMSG),
    enter("sys_enter_recvmsg", nr::RECVMSG),
    exit("sys_exit_recvmsg", nr::RECVMSG),
];

/// File handlers (`probes/fs.rs`).
pub const FS_PROGRAMS: [SyscallProgram; 14] = [
    enter("sys_enter_openat", nr::OPENAT),
    exit("sys_exit_openat", nr::OPENAT),
    enter("sys_enter_openat2", nr::OPENAT2),
    exit("sys_exit_openat2", nr::OPENAT2),
    enter("sys_enter_rename", nr::RENAME),
    exit("sys_exit_rename", nr::RENAME),
    enter("sys_enter_renameat", nr::RENAMEAT),
    exit("sys_exit_renameat", nr::RENAMEAT),
    enter("sys_enter_renameat2", nr::RENAMEAT2),
    exit("sys_exit_renameat2", nr::RENAMEAT2),
    enter("sys_enter_unlink", nr::UNLINK),
    exit("sys_exit_unlink", nr::UNLINK),
    enter("sys_enter_unlinkat", nr::UNLINKAT),
    exit("sys_exit_unlinkat", nr::UNLINKAT),
];

/// Offsets in x86_64's `struct pt_regs` (`arch/x86/include/asm/ptrace.h`) of
/// the six syscall arguments (rdi, rsi, rdx, r10, r8, r9) and of `orig_ax`
/// (the syscall number), which the raw syscall tracepoints hand over.
pub const PT_REGS_ARGS: [u32; 6] = [112, 104, 96, 56, 72, 64];
pub const PT_REGS_ORIG_AX: u32 = 120;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handler_has_a_slot_and_a_unique_place() {
        let all: [SyscallProgram; 41] = {
            let mut v = [NET_PROGRAMS[0]; 41];
            v[..27].copy_from_slice(&NET_PROGRAMS);
            v[27..].copy_from_slice(&FS_PROGRAMS);
            v
        };
        for (i, a) in all.iter().enumerate() {
            assert!(a.nr < super::super::SYSCALL_SLOTS, "{a:?}");
            assert_eq!(a.program.starts_with("sys_exit_"), a.exit, "{a:?}");
            for b in &all[i + 1..] {
                assert!(!(a.nr == b.nr && a.exit == b.exit), "{a:?} and {b:?} share a slot");
                assert_ne!(a.program, b.program);
            }
        }
    }
}
