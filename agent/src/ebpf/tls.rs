//! TLS uprobes, per process. The libssl functions are probed only in target
//! processes: the kernel then plants breakpoints in those processes alone, and
//! every other program on the host that uses the same libssl runs untouched.
//!
//! A process gets its probes when it becomes a target, when a target forks it
//! or it calls exec (the kernel's process events wake the agent at once), and
//! when it opens a libssl file (the file events); the liveness round re-checks
//! its mapped libraries every 2 s. Probes may be attached before the library
//! is mapped: the kernel plants them when the process maps it. They are
//! detached when the process exits.

use std::{
    collections::{BTreeMap, BTreeSet},
    num::NonZeroU32,
    path::{Path, PathBuf},
};

use aya::programs::{
    uprobe::{UProbeAttachLocation, UProbeLink, UProbeLinkId, UProbeScope},
    UProbe,
};
use pywats_agent_ebpf::abi::TLS_PROGRAMS;

use crate::{
    ebpf::{libssl::Probe, loader::program_error, Probes},
    error::AgentError,
    fs::root::{FileStat, RootFile, TargetRoot},
    proc::read_capped,
};

/// A library file: device and inode (the same file reached through different
/// paths, such as `/lib` and `/usr/lib`, is probed once per process).
type FileId = (u64, u64);

/// A probed library file in one process: its path (as shown), what `fstat`
/// said of it when its plan was made, and the links to detach.
type Probed = (PathBuf, FileStat, Vec<(usize, UProbeLinkId)>);

/// A process: pid and start time (clock ticks after boot). A pid alone may
/// name a new process after the probed one exited, which must get probes of
/// its own.
pub type ProcessKey = (u32, u64);

/// Plans kept for files no probed process uses any more, at most.
const SPARE_PLANS: usize = 16;

/// Debian's and Ubuntu's multiarch name of this CPU's libraries.
#[cfg(target_arch = "x86_64")]
macro_rules! multiarch {
    () => {
        "x86_64-linux-gnu"
    };
}
#[cfg(target_arch = "aarch64")]
macro_rules! multiarch {
    () => {
        "aarch64-linux-gnu"
    };
}

/// Where distributions keep libssl, relative to a process's root. Probes are
/// attached to these ahead of time, so a process that loads libssl later
/// (Python imports `ssl` lazily) is probed from its first TLS call.
const LIB_DIRS: [&str; 8] = [
    concat!("/usr/lib/", multiarch!()),
    concat!("/lib/", multiarch!()),
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/lib",
    "/usr/local/lib",
    "/usr/local/lib64",
];

/// `/proc/<pid>/maps` of a process with many libraries is tens of KiB.
const MAPS_CAP: u64 = 4 << 20;

#[derive(Default)]
pub struct TlsLinks {
    /// What to attach in each library file, worked out once per file as
    /// `fstat` of the fd it was read through saw it (a file rewritten in
    /// place is another file, with a plan of its own).
    plans: BTreeMap<FileStat, Vec<Probe>>,
    /// Per process: the library files probed and the links to detach.
    by_process: BTreeMap<ProcessKey, BTreeMap<FileId, Probed>>,
}

impl Probes {
    /// Whether `process` has its probes in the file `stat` describes.
    pub fn tls_probed(&self, process: ProcessKey, stat: &FileStat) -> bool {
        self.tls.by_process.get(&process).is_some_and(|files| files.contains_key(&(stat.dev, stat.ino)))
    }

    /// The plan made for the file `stat` describes, if one was.
    pub fn tls_plan(&self, stat: &FileStat) -> Option<Vec<Probe>> {
        self.tls.plans.get(stat).cloned()
    }

    /// Keeps the plan of a file, dropping those of files nobody is probed in
    /// when there are many: a process rewriting files makes new ones.
    pub fn remember_tls_plan(&mut self, stat: FileStat, plan: Vec<Probe>) {
        if self.tls.plans.len() >= SPARE_PLANS {
            let used: BTreeSet<FileStat> =
                self.tls.by_process.values().flat_map(|files| files.values().map(|(_, stat, _)| *stat)).collect();
            self.tls.plans.retain(|s, _| used.contains(s));
        }
        self.tls.plans.insert(stat, plan);
    }

    /// Attaches `plan` in the libssl `lib` (opened and checked by the caller,
    /// attached through its fd: the very file the plan was made of) for
    /// `process` only, unless it is probed there already. Returns whether it
    /// attached.
    pub fn attach_tls(&mut self, process: ProcessKey, lib: &RootFile, plan: &[Probe]) -> Result<bool, AgentError> {
        if !self.tls_loaded() || plan.is_empty() || self.tls_probed(process, &lib.stat) {
            return Ok(false);
        }
        let (pid, _) = process;
        let Some(scope) = NonZeroU32::new(pid).map(UProbeScope::OneProcess) else { return Ok(false) };
        let started = std::time::Instant::now();
        let target = lib.fd_path();
        let mut links = Vec::new();
        for &Probe { index, offset, .. } in plan {
            let up = &TLS_PROGRAMS[index];
            let program: &mut UProbe = self
                .ebpf
                .program_mut(up.program)
                .ok_or(AgentError::MissingProgram(up.program))?
                .try_into()
                .map_err(|e| program_error(up.program, e))?;
            match program.attach(UProbeAttachLocation::AbsoluteOffset(offset), &target, scope) {
                Ok(link) => links.push((index, link)),
                Err(e) => {
                    drop(self.take_links(links));
                    return Err(program_error(up.program, e));
                }
            }
        }
        tracing::debug!(pid, "TLS probes attached to {} in {:?}", lib.shown.display(), started.elapsed());
        let id = (lib.stat.dev, lib.stat.ino);
        self.tls.by_process.entry(process).or_default().insert(id, (lib.shown.clone(), lib.stat, links));
        Ok(true)
    }

    /// Takes the TLS probes of a process that is gone. Dropping the links
    /// detaches them, which waits for the kernel's RCU grace periods (tens of
    /// milliseconds each): the caller drops them where no attach waits.
    pub fn detach_tls(&mut self, process: ProcessKey) -> Vec<UProbeLink> {
        let Some(files) = self.tls.by_process.remove(&process) else { return Vec::new() };
        files.into_values().flat_map(|(_, _, links)| self.take_links(links)).collect()
    }

    fn take_links(&mut self, links: Vec<(usize, UProbeLinkId)>) -> Vec<UProbeLink> {
        let mut out = Vec::with_capacity(links.len());
        for (index, link) in links {
            let name = TLS_PROGRAMS[index].program;
            if let Some(program) = self.ebpf.program_mut(name).and_then(|p| <&mut UProbe>::try_from(p).ok()) {
                // Fails only for a link the program no longer holds.
                if let Ok(link) = program.take_link(link) {
                    out.push(link);
                }
            }
        }
        out
    }

    /// Processes whose TLS probes are attached.
    pub fn tls_processes(&self) -> Vec<ProcessKey> {
        self.tls.by_process.keys().copied().collect()
    }

    /// The library files probed, in any process (paths as the agent reads them).
    pub fn tls_libraries(&self) -> Vec<String> {
        let paths: BTreeSet<String> = self
            .tls
            .by_process
            .values()
            .flat_map(|files| files.values().map(|(path, _, _)| path.display().to_string()))
            .collect();
        paths.into_iter().collect()
    }

    /// Where the TLS programs sit, per probed library file (for
    /// `/health/details`: whether the internal functions were found, and for
    /// the bench, which plants bare uprobes at the same places).
    pub fn tls_probes(&self) -> Vec<TlsProbe> {
        let mut out: BTreeSet<TlsProbe> = BTreeSet::new();
        for (path, stat, _) in self.tls.by_process.values().flat_map(|files| files.values()) {
            for p in self.tls.plans.get(stat).into_iter().flatten() {
                out.insert(TlsProbe {
                    library: path.display().to_string(),
                    program: TLS_PROGRAMS[p.index].program,
                    offset: p.offset,
                    function: if p.internal { "internal" } else { TLS_PROGRAMS[p.index].symbol },
                });
            }
        }
        out.into_iter().collect()
    }
}

/// A TLS program's place: its library file (as the agent reads it), file
/// offset, and function: the exported one it is named for, or `internal`
/// (the function both wrappers of a direction call, found by decoding
/// x86_64 code; on arm64 the exported functions are probed).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct TlsProbe {
    pub library: String,
    pub program: &'static str,
    pub offset: u64,
    pub function: &'static str,
}

/// Library files mapped by `pid` whose name starts with `libssl.so`, as the
/// process names them (paths in its root).
pub fn libssl_of(proc_root: &Path, pid: u32) -> BTreeSet<PathBuf> {
    let Ok(maps) = read_capped(&proc_root.join(pid.to_string()).join("maps"), MAPS_CAP) else {
        return BTreeSet::new();
    };
    String::from_utf8_lossy(&maps)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/') && is_libssl(Path::new(path)))
        .map(PathBuf::from)
        .collect()
}

/// The libssl files in the usual directories of `pid`'s root, which it may
/// load later (paths in its root).
pub fn libssl_in_lib_dirs(proc_root: &Path, pid: u32) -> BTreeSet<PathBuf> {
    let root = TargetRoot::of(proc_root, pid);
    let mut out = BTreeSet::new();
    for dir in LIB_DIRS.map(Path::new) {
        let Ok(entries) = root.read_dir(dir) else { continue };
        out.extend(entries.flatten().map(|e| dir.join(e.file_name())).filter(|p| is_libssl(p)));
    }
    out
}

pub fn is_libssl(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libssl.so"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_no_libssl_in_a_process_without_it() {
        // The test binary does not link OpenSSL.
        assert!(libssl_of(Path::new("/proc"), std::process::id()).is_empty());
        assert!(libssl_of(Path::new("/proc"), u32::MAX - 1).is_empty());
    }

    #[test]
    fn candidates_include_the_system_libssl() {
        let own = libssl_in_lib_dirs(Path::new("/proc"), std::process::id());
        // The test machines have OpenSSL 3 installed (Python's ssl needs it).
        assert!(own.iter().any(|p| p.to_string_lossy().contains("libssl.so")), "{own:?}");
    }

    #[test]
    fn libssl_is_known_by_its_name() {
        assert!(is_libssl(Path::new("/x/libssl.so.3")) && !is_libssl(Path::new("/x/libcrypto.so.3")));
    }
}
