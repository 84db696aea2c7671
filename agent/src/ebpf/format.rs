//! Reads tracepoint `format` files, so field offsets come from the running
//! kernel instead of being compiled in.

use std::path::Path;

use pywats_agent_ebpf::abi::TracepointOffsets;

use crate::error::AgentError;

/// Offset of `field` in a tracepoint format description.
///
/// Lines look like `\tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;`.
pub fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';');
        let decl = parts.next()?.trim().strip_prefix("field:")?;
        let name = decl.rsplit(' ').next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        parts.find_map(|p| p.trim().strip_prefix("offset:")?.parse().ok())
    })
}

fn read(tracefs: &Path, tracepoint: &str) -> Result<String, AgentError> {
    let path = tracefs.join("events").join(tracepoint).join("format");
    std::fs::read_to_string(&path).map_err(|source| AgentError::TracepointFormat { path, source })
}

fn required(format: &str, tracepoint: &'static str, field: &'static str) -> Result<u32, AgentError> {
    field_offset(format, field).ok_or(AgentError::TracepointField { tracepoint, field })
}

/// The offsets the sched programs need, from this kernel.
pub fn tracepoint_offsets(tracefs: &Path) -> Result<TracepointOffsets, AgentError> {
    let newtask = read(tracefs, "task/task_newtask")?;
    let exit = read(tracefs, "sched/sched_process_exit")?;
    Ok(TracepointOffsets {
        newtask_pid: required(&newtask, "task/task_newtask", "pid")?,
        newtask_clone_flags: required(&newtask, "task/task_newtask", "clone_flags")?,
        exit_group_dead: field_offset(&exit, "group_dead").unwrap_or(0),
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEWTASK: &str = "name: task_newtask\nID: 205\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
        \tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;\n\
        \tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n\
        \tfield:u64 clone_flags;\toffset:32;\tsize:8;\tsigned:0;\n\n\
        print fmt: \"pid=%d comm=%s clone_flags=%llx\", REC->pid, REC->comm, REC->clone_flags\n";

    #[test]
    fn finds_fields() {
        assert_eq!(field_offset(NEWTASK, "pid"), Some(8));
        assert_eq!(field_offset(NEWTASK, "comm"), Some(12));
        assert_eq!(field_offset(NEWTASK, "clone_flags"), Some(32));
        assert_eq!(field_offset(NEWTASK, "common_pid"), Some(4));
        assert_eq!(field_offset(NEWTASK, "group_dead"), None);
        // `pid` must not match inside `common_pid` or the print fmt line.
        assert_eq!(field_offset("\tfield:int common_pid;\toffset:4;\tsize:4;\n", "pid"), None);
    }

    #[test]
    fn data_loc_fields() {
        let f = "\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n";
        assert_eq!(field_offset(f, "parent_comm"), Some(8));
    }
}
