//! Finds tracefs, mounting it when it is not mounted (aya resolves tracepoint
//! ids through it, and the agent reads tracepoint formats from it).

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use crate::error::AgentError;

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

fn usable(dir: &Path) -> bool {
    dir.join("events").is_dir()
}

/// Returns the tracefs root, mounting tracefs at /sys/kernel/tracing if needed.
pub fn ensure() -> Result<PathBuf, AgentError> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if usable(Path::new(dir)) {
            return Ok(PathBuf::from(dir));
        }
    }
    mount(TRACEFS).map_err(AgentError::Tracefs)?;
    tracing::info!("mounted tracefs at {TRACEFS}");
    Ok(PathBuf::from(TRACEFS))
}

fn mount(target: &str) -> std::io::Result<()> {
    let source = CString::new("nodev").expect("static string");
    let fstype = CString::new("tracefs").expect("static string");
    let target = CString::new(target).expect("static string");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if !usable(Path::new(TRACEFS)) {
        return Err(std::io::Error::other("mounted, but it has no events directory"));
    }
    Ok(())
}
