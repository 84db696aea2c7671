//! Checks the capabilities needed to load and attach programs before trying,
//! so the operator sees one clear line instead of an EPERM from deep in aya.

use std::path::Path;

use crate::error::AgentError;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability set of this process, from `/proc/self/status`.
fn effective_caps(proc_root: &Path) -> Option<u64> {
    let status = std::fs::read_to_string(proc_root.join("self/status")).ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// Whether a capability set can load tracing programs and read their maps.
pub fn sufficient(caps: u64) -> bool {
    has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON))
}

pub fn check(proc_root: &Path) -> Result<(), AgentError> {
    match effective_caps(proc_root) {
        Some(caps) if sufficient(caps) => Ok(()),
        Some(caps) => Err(AgentError::Privileges(format!(" (effective capabilities: {caps:#x})"))),
        // Cannot tell: let the kernel decide and report.
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_sets() {
        assert!(sufficient(0x000001ffffffffff)); // root
        assert!(sufficient(1 << CAP_SYS_ADMIN));
        assert!(sufficient((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(!sufficient(1 << CAP_BPF));
        assert!(!sufficient(0));
    }
}
