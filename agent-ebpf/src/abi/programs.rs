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

/// Socket programs (`probes/net.rs`): program name = tracepoint name.
pub const NET_PROGRAMS: [TracepointProgram; 27] = [
    tp("sys_enter_socket", "syscalls", "sys_enter_socket"),
    tp("sys_exit_socket", "syscalls", "sys_exit_socket"),
    tp("sys_enter_connect", "syscalls", "sys_enter_connect"),
    tp("sys_exit_connect", "syscalls", "sys_exit_connect"),
    tp("sys_enter_accept", "syscalls", "sys_enter_accept"),
    tp("sys_exit_accept", "syscalls", "sys_exit_accept"),
    tp("sys_enter_accept4", "syscalls", "sys_enter_accept4"),
    tp("sys_exit_accept4", "syscalls", "sys_exit_accept4"),
    tp("sys_enter_getsockopt", "syscalls", "sys_enter_getsockopt"),
    tp("sys_exit_getsockopt", "syscalls", "sys_exit_getsockopt"),
    tp("sys_enter_close", "syscalls", "sys_enter_close"),
    tp("sys_enter_write", "syscalls", "sys_enter_write"),
    tp("sys_exit_write", "syscalls", "sys_exit_write"),
    tp("sys_enter_read", "syscalls", "sys_enter_read"),
    tp("sys_exit_read", "syscalls", "sys_exit_read"),
    tp("sys_enter_writev", "syscalls", "sys_enter_writev"),
    tp("sys_exit_writev", "syscalls", "sys_exit_writev"),
    tp("sys_enter_readv", "syscalls", "sys_enter_readv"),
    tp("sys_exit_readv", "syscalls", "sys_exit_readv"),
    tp("sys_enter_sendto", "syscalls", "sys_enter_sendto"),
    tp("sys_exit_sendto", "syscalls", "sys_exit_sendto"),
    tp("sys_enter_recvfrom", "syscalls", "sys_enter_recvfrom"),
    tp("sys_exit_recvfrom", "syscalls", "sys_exit_recvfrom"),
    tp("sys_enter_sendmsg", "syscalls", "sys_enter_sendmsg"),
    tp("sys_exit_sendmsg", "syscalls", "sys_exit_sendmsg"),
    tp("sys_enter_recvmsg", "syscalls", "sys_enter_recvmsg"),
    tp("sys_exit_recvmsg", "syscalls", "sys_exit_recvmsg"),
];

/// File programs (`probes/fs.rs`): program name = tracepoint name.
pub const FS_PROGRAMS: [TracepointProgram; 14] = [
    tp("sys_enter_openat", "syscalls", "sys_enter_openat"),
    tp("sys_exit_openat", "syscalls", "sys_exit_openat"),
    tp("sys_enter_openat2", "syscalls", "sys_enter_openat2"),
    tp("sys_exit_openat2", "syscalls", "sys_exit_openat2"),
    tp("sys_enter_rename", "syscalls", "sys_enter_rename"),
    tp("sys_exit_rename", "syscalls", "sys_exit_rename"),
    tp("sys_enter_renameat", "syscalls", "sys_enter_renameat"),
    tp("sys_exit_renameat", "syscalls", "sys_exit_renameat"),
    tp("sys_enter_renameat2", "syscalls", "sys_enter_renameat2"),
    tp("sys_exit_renameat2", "syscalls", "sys_exit_renameat2"),
    tp("sys_enter_unlink", "syscalls", "sys_enter_unlink"),
    tp("sys_exit_unlink", "syscalls", "sys_exit_unlink"),
    tp("sys_enter_unlinkat", "syscalls", "sys_enter_unlinkat"),
    tp("sys_exit_unlinkat", "syscalls", "sys_exit_unlinkat"),
];
