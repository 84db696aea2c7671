//! Least privilege: once the programs are loaded and attached, the agent
//! keeps only the capabilities its later work needs (docs/guides/operations.md,
//! "Least privilege", says what broke when each was dropped):
//!
//! * `CAP_SYS_ADMIN`: the libssl uprobes of each new target process
//!   (`perf_event_open` of the uprobe PMU; kernels since mid-2025 require it
//!   again, 5.8 to then took `CAP_PERFMON`). The kernel accepts it wherever it
//!   checks `CAP_BPF` or `CAP_PERFMON`, so with it those two go.
//! * `CAP_BPF`, `CAP_PERFMON`, when `CAP_SYS_ADMIN` is not there: map updates
//!   through `bpf()` (before 6.5, every `bpf()` command of a process without
//!   it fails while unprivileged BPF is off), and uprobes where `CAP_PERFMON` is enough.
//! * `CAP_SYS_PTRACE`: `/proc/<pid>/{maps,root,fd,exe,environ}` of a process
//!   whose user or capabilities differ from the agent's: every process, once
//!   the agent has dropped capabilities that a root client keeps.
//! * `CAP_DAC_READ_SEARCH`: a client's config, queue and converter folders
//!   whatever their owner and modes.
//! * `CAP_NET_BIND_SERVICE`, only for a listen port below 1024 (the server
//!   binds after the drop).
//!
//! Capabilities are per thread and a new thread copies its creator's: the
//! drop runs before the agent starts any thread, so it covers them all.

use caps::{CapSet, Capability, CapsHashSet};

use crate::error::AgentError;

/// What the agent keeps, if it has them, in the order of the list above.
const WANTED: [Capability; 5] = [
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_DAC_READ_SEARCH,
];

/// The capabilities to keep, out of those `permitted`.
pub fn kept(permitted: &CapsHashSet, listen_port: u16) -> CapsHashSet {
    let mut kept: CapsHashSet = WANTED.into_iter().filter(|c| permitted.contains(c)).collect();
    if kept.contains(&Capability::CAP_SYS_ADMIN) {
        kept.remove(&Capability::CAP_BPF);
        kept.remove(&Capability::CAP_PERFMON);
    }
    if listen_port < 1024 && permitted.contains(&Capability::CAP_NET_BIND_SERVICE) {
        kept.insert(Capability::CAP_NET_BIND_SERVICE);
    }
    kept
}

/// Names, sorted, for the log.
pub fn names(set: &CapsHashSet) -> String {
    let mut names: Vec<String> = set.iter().map(|c| c.to_string()).collect();
    names.sort();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(" ")
    }
}

fn failed(step: &str, e: impl std::fmt::Display) -> AgentError {
    AgentError::Capabilities(format!("{step}: {e}"))
}

/// Drops every capability but [`kept`] from the effective, permitted and
/// inheritable sets (and the ambient one), and from the bounding set when the
/// agent may change it (`CAP_SETPCAP`); sets no_new_privs, so no exec can
/// gain any back. Must run before the agent starts its threads.
pub fn drop_unneeded(listen_port: u16) -> Result<(), AgentError> {
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| failed("reading the permitted set", e))?;
    let kept = kept(&permitted, listen_port);
    let bounding = caps::read(None, CapSet::Bounding).map_err(|e| failed("reading the bounding set", e))?;
    let may_narrow = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false);
    if may_narrow {
        for cap in bounding.difference(&kept) {
            caps::drop(None, CapSet::Bounding, *cap).map_err(|e| failed("narrowing the bounding set", e))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| failed("clearing the ambient set", e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| failed("clearing the inheritable set", e))?;
    // The effective set must stay within the permitted one: it goes first.
    caps::set(None, CapSet::Effective, &kept).map_err(|e| failed("setting the effective set", e))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(|e| failed("setting the permitted set", e))?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(failed("setting no_new_privs", std::io::Error::last_os_error()));
    }
    let bounding = if may_narrow {
        "the bounding set too".to_string()
    } else {
        format!(
            "bounding set left at {} (no CAP_SETPCAP; no_new_privs keeps an exec from regaining any)",
            names(&bounding)
        )
    };
    tracing::info!("capabilities dropped after start: keeping {} ({bounding})", names(&kept));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Capability::*;

    fn set(caps: &[Capability]) -> CapsHashSet {
        caps.iter().copied().collect()
    }

    #[test]
    fn root_keeps_sys_admin_ptrace_and_dac_read_search() {
        let all = caps::all();
        assert_eq!(kept(&all, 9090), set(&[CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH]));
        assert_eq!(kept(&all, 443), set(&[CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH, CAP_NET_BIND_SERVICE]));
    }

    #[test]
    fn without_sys_admin_bpf_and_perfmon_stay() {
        let given = set(&[CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH, CAP_SYS_RESOURCE, CAP_SETPCAP]);
        assert_eq!(kept(&given, 9090), set(&[CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH]));
    }

    #[test]
    fn nothing_is_kept_that_was_not_there() {
        assert_eq!(kept(&set(&[CAP_SYS_PTRACE, CAP_NET_BIND_SERVICE]), 9090), set(&[CAP_SYS_PTRACE]));
        assert_eq!(kept(&CapsHashSet::new(), 80), CapsHashSet::new());
        assert_eq!(names(&CapsHashSet::new()), "none");
        assert_eq!(names(&set(&[CAP_SYS_PTRACE, CAP_BPF])), "CAP_BPF CAP_SYS_PTRACE");
    }
}
