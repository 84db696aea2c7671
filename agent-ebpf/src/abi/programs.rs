//! The programs in the object and where the agent attaches them.

/// A tracepoint program: its function name in the object and its tracepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointProgram {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
}

/// Process lifecycle programs (`probes/sched.rs`).
pub const SCHED_PROGRAMS: [TracepointProgram; 3] = [
    TracepointProgram { program: "task_newtask", category: "task", name: "task_newtask" },
    TracepointProgram { program: "sched_process_exec", category: "sched", name: "sched_process_exec" },
    TracepointProgram { program: "sched_process_exit", category: "sched", name: "sched_process_exit" },
];
