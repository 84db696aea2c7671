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

/// A syscall handler: its program, its syscall number (on the CPU the
/// programs are built for, [`super::arch`]), and whether it runs at the
/// syscall's exit (else at its entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallProgram {
    pub program: &'static str,
    pub nr: u32,
    pub exit: bool,
}

pub(super) const fn enter(program: &'static str, nr: u32) -> SyscallProgram {
    SyscallProgram { program, nr, exit: false }
}

pub(super) const fn exit(program: &'static str, nr: u32) -> SyscallProgram {
    SyscallProgram { program, nr, exit: true }
}

/// The socket syscalls' numbers; every CPU the agent runs on has all of them.
pub(super) struct NetNumbers {
    pub read: u32,
    pub write: u32,
    pub close: u32,
    pub readv: u32,
    pub writev: u32,
    pub socket: u32,
    pub connect: u32,
    pub accept: u32,
    pub accept4: u32,
    pub sendto: u32,
    pub recvfrom: u32,
    pub sendmsg: u32,
    pub recvmsg: u32,
    pub getsockopt: u32,
}

/// Socket handlers (`probes/net.rs`), by the numbers of one CPU.
pub(super) const fn net_programs(nr: &NetNumbers) -> [SyscallProgram; 27] {
    [
        enter("sys_enter_socket", nr.socket),
        exit("sys_exit_socket", nr.socket),
        enter("sys_enter_connect", nr.connect),
        exit("sys_exit_connect", nr.connect),
        enter("sys_enter_accept", nr.accept),
        exit("sys_exit_accept", nr.accept),
        enter("sys_enter_accept4", nr.accept4),
        exit("sys_exit_accept4", nr.accept4),
        enter("sys_enter_getsockopt", nr.getsockopt),
        exit("sys_exit_getsockopt", nr.getsockopt),
        enter("sys_enter_close", nr.close),
        enter("sys_enter_write", nr.write),
        exit("sys_exit_write", nr.write),
        enter("sys_enter_read", nr.read),
        exit("sys_exit_read", nr.read),
        enter("sys_enter_writev", nr.writev),
        exit("sys_exit_writev", nr.writev),
        enter("sys_enter_readv", nr.readv),
        exit("sys_exit_readv", nr.readv),
        enter("sys_enter_sendto", nr.sendto),
        exit("sys_exit_sendto", nr.sendto),
        enter("sys_enter_recvfrom", nr.recvfrom),
        exit("sys_exit_recvfrom", nr.recvfrom),
        enter("sys_enter_sendmsg", nr.sendmsg),
        exit("sys_exit_sendmsg", nr.sendmsg),
        enter("sys_enter_recvmsg", nr.recvmsg),
        exit("sys_exit_recvmsg", nr.recvmsg),
    ]
}
