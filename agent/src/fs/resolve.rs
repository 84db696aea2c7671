//! Turns the paths a process passed to a syscall into absolute, normalised
//! paths in that process's view: relative to its cwd (`AT_FDCWD`) or to the
//! directory a dirfd points to.

use std::path::{Component, Path, PathBuf};

use pywats_agent_ebpf::abi::AT_FDCWD;

/// Lexically normalises an absolute path (`.` and `..` removed).
pub fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Resolves `path` as process `tgid` meant it, or `None` when the base
/// directory cannot be read any more (the process or the fd is gone).
pub fn resolve(proc_root: &Path, tgid: u32, dirfd: i32, path: &[u8]) -> Option<PathBuf> {
    let path = Path::new(std::str::from_utf8(path).ok()?);
    if path.is_absolute() {
        return Some(normalise(path));
    }
    let proc = proc_root.join(tgid.to_string());
    let base = if dirfd == AT_FDCWD { proc.join("cwd") } else { proc.join("fd").join(dirfd.to_string()) };
    let base = std::fs::read_link(base).ok()?;
    Some(normalise(&base.join(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(normalise(Path::new("/a/./b/../c//d")), PathBuf::from("/a/c/d"));
        assert_eq!(normalise(Path::new("/../x")), PathBuf::from("/x"));
    }

    #[test]
    fn relative_to_cwd_and_dirfd() {
        let me = std::process::id();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(resolve(Path::new("/proc"), me, AT_FDCWD, b"x/../y.txt"), Some(cwd.join("y.txt")));
        assert_eq!(resolve(Path::new("/proc"), me, AT_FDCWD, b"/abs/f"), Some(PathBuf::from("/abs/f")));
        let dir = std::fs::File::open("/tmp").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
        assert_eq!(resolve(Path::new("/proc"), me, fd, b"q/f.queued"), Some(PathBuf::from("/tmp/q/f.queued")));
        assert_eq!(resolve(Path::new("/proc"), me, 9999, b"f"), None);
        assert_eq!(resolve(Path::new("/proc"), me, AT_FDCWD, b"\xff"), None);
    }
}
