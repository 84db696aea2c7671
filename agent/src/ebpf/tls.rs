//! Finds the libssl each target maps and attaches the TLS uprobes to it, once
//! per library file; called again periodically, so a library loaded later
//! (Python imports `ssl` lazily; `dlopen`) and new child processes are covered.

use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Library files mapped by `pid` whose name starts with `libssl.so`, as paths
/// readable from here (through `/proc/<pid>/root`, so containers work).
pub fn libssl_of(proc_root: &Path, pid: u32) -> BTreeSet<PathBuf> {
    let proc = proc_root.join(pid.to_string());
    let Ok(maps) = std::fs::read_to_string(proc.join("maps")) else {
        return BTreeSet::new();
    };
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| {
            path.starts_with('/')
                && Path::new(path).file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libssl.so"))
        })
        .map(|path| proc.join("root").join(path.trim_start_matches('/')))
        .collect()
}

/// Identity of a library file: device and inode (the same file reached through
/// different paths is attached once).
pub fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
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
}
