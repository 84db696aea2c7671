//! Reading the process tree from procfs: resolving configured pids and finding
//! the descendants a target already had when the agent started.

use std::{
    collections::{BTreeSet, HashMap},
    path::Path,
};

use procfs::process::{all_processes_with_root, Process};

use crate::{
    error::AgentError,
    proc::{identity::ProcId, k8s::PodIdentity},
};

/// A configured target as found in procfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPid {
    pub pid: u32,
    /// Start time in clock ticks after boot: with the pid, the process's identity.
    pub start: u64,
    /// Real and effective uid.
    pub uids: (u32, u32),
    /// Kernel process name (`comm`).
    pub comm: String,
    /// Executable path, empty when unreadable (e.g. a kernel thread).
    pub exe: String,
    /// The container and pod it runs in, when it does ([`resolve_target`]).
    pub pod: Option<PodIdentity>,
}

impl ResolvedPid {
    pub fn id(&self) -> ProcId {
        ProcId { pid: self.pid, start: self.start }
    }

    /// A target's name when nothing better is configured: its pod's name, else the process name.
    pub fn default_name(&self) -> &str {
        self.pod.as_ref().map(|p| p.pod.as_str()).filter(|p| !p.is_empty()).unwrap_or(&self.comm)
    }
}

/// Checks that `pid` is a live process (its main thread) and reads its identity.
pub fn resolve(proc_root: &Path, pid: u32) -> Result<ResolvedPid, AgentError> {
    let process = Process::new_with_root(proc_root.join(pid.to_string())).map_err(|_| AgentError::NoSuchPid(pid))?;
    let stat = process.stat().map_err(|_| AgentError::NoSuchPid(pid))?;
    // /proc/<tid> of a non-leader thread also exists; only a process (tgid) is a target.
    let status = process.status().map_err(|_| AgentError::NoSuchPid(pid))?;
    if status.tgid != pid as i32 || stat.state == 'Z' {
        return Err(AgentError::NoSuchPid(pid));
    }
    let exe = process.exe().map(|p| p.display().to_string()).unwrap_or_default();
    Ok(ResolvedPid { pid, start: stat.starttime, uids: (status.ruid, status.euid), comm: stat.comm, exe, pod: None })
}

/// [`resolve`], plus the container and pod the process runs in: for a
/// process about to become a target (not for liveness checks).
pub fn resolve_target(proc_root: &Path, pid: u32) -> Result<ResolvedPid, AgentError> {
    let mut p = resolve(proc_root, pid)?;
    p.pod = PodIdentity::read(proc_root, pid);
    Ok(p)
}

/// Executable path of `pid`, empty when unreadable.
pub fn exe_of(proc_root: &Path, pid: u32) -> String {
    std::fs::read_link(proc_root.join(pid.to_string()).join("exe")).map(|p| p.display().to_string()).unwrap_or_default()
}

/// All live descendants of `root` (children, grandchildren, …).
pub fn descendants(proc_root: &Path, root: u32) -> BTreeSet<ProcId> {
    let mut children: HashMap<u32, Vec<ProcId>> = HashMap::new();
    if let Ok(all) = all_processes_with_root(proc_root) {
        for process in all.flatten() {
            if let Ok(stat) = process.stat() {
                let id = ProcId { pid: stat.pid as u32, start: stat.starttime };
                children.entry(stat.ppid as u32).or_default().push(id);
            }
        }
    }
    let mut found = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            if found.insert(child) {
                stack.push(child.pid);
            }
        }
    }
    found
}

/// As much of a command line as `--match` looks at (Linux allows 2 MiB).
const CMDLINE_CAP: u64 = 64 << 10;

/// The command line of `pid`, arguments joined by spaces; `None` for kernel
/// threads, zombies and processes gone.
pub fn cmdline(proc_root: &Path, pid: u32) -> Option<String> {
    let raw = crate::proc::read_capped(&proc_root.join(pid.to_string()).join("cmdline"), CMDLINE_CAP).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let text = text.trim_end_matches('\0');
    (!text.is_empty()).then(|| text.replace('\0', " "))
}

/// The agent and its ancestors: the `sudo` or shell that started it has a
/// `--match` pattern in its command line too.
pub fn own_lineage(proc_root: &Path) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let mut pid = std::process::id();
    while pid > 1 && out.insert(pid) {
        let Ok(stat) = Process::new_with_root(proc_root.join(pid.to_string())).and_then(|p| p.stat()) else { break };
        pid = stat.ppid as u32;
    }
    out
}

/// Processes whose command line contains `pattern`, that are not in
/// `exclude` and that `admit` takes. Only the topmost of a process tree is
/// returned (a forked child keeps its parent's command line; it is the
/// target's child), and none below a process `covered` says is watched already.
pub fn matching(
    proc_root: &Path,
    pattern: &str,
    exclude: &BTreeSet<u32>,
    covered: impl Fn(u32) -> bool,
    mut admit: impl FnMut(u32) -> bool,
) -> Vec<u32> {
    let Ok(all) = all_processes_with_root(proc_root) else { return Vec::new() };
    let mut parent = HashMap::new();
    let mut hits = BTreeSet::new();
    for p in all.flatten() {
        let pid = p.pid as u32;
        if let Ok(stat) = p.stat() {
            parent.insert(pid, stat.ppid as u32);
        }
        if !exclude.contains(&pid) && cmdline(proc_root, pid).is_some_and(|c| c.contains(pattern)) && admit(pid) {
            hits.insert(pid);
        }
    }
    let topmost = |pid: u32| {
        let mut at = pid;
        for _ in 0..parent.len() {
            if covered(at) {
                return false;
            }
            match parent.get(&at) {
                Some(&up) if up > 1 => {
                    if hits.contains(&up) {
                        return false;
                    }
                    at = up;
                }
                _ => return true,
            }
        }
        true
    };
    hits.iter().copied().filter(|&pid| topmost(pid)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_self_and_rejects_missing() {
        let me = std::process::id();
        let r = resolve(Path::new("/proc"), me).unwrap();
        assert_eq!(r.pid, me);
        assert!(!r.comm.is_empty());
        assert!(matches!(resolve(Path::new("/proc"), u32::MAX - 1), Err(AgentError::NoSuchPid(_))));
    }

    #[test]
    fn finds_a_child() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let found = descendants(Path::new("/proc"), std::process::id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found.iter().any(|c| c.pid == child.id()));
    }
}
