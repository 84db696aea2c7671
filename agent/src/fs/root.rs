//! Files as a target process sees them: paths resolved inside its root
//! (`/proc/<pid>/root`), so a client in a container is read from its own file
//! system, not the agent's. `openat2(RESOLVE_IN_ROOT)` keeps absolute
//! symlinks inside that root (a container's `/var/run → /run`); joining
//! `/proc/<pid>/root` and the path would follow them into the agent's own
//! file system and read the wrong file.

use std::{
    ffi::CString,
    fs::{File, ReadDir},
    io::{self, Read as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

/// The root directory of a process, as reachable from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetRoot {
    dir: PathBuf,
}

/// Set once `openat2` turned out to be missing (kernels before 5.6, or a
/// seccomp profile that does not know it): plain joins from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

impl TargetRoot {
    /// The root of process `pid` under `proc_root`.
    pub fn of(proc_root: &Path, pid: u32) -> TargetRoot {
        TargetRoot { dir: proc_root.join(pid.to_string()).join("root") }
    }

    /// The agent's own root.
    pub fn own() -> TargetRoot {
        TargetRoot { dir: PathBuf::from("/") }
    }

    /// `path` (as the process sees it) joined under the root, for messages
    /// and for the fallback without `openat2`.
    pub fn joined(&self, path: &Path) -> PathBuf {
        self.dir.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// Opens `path` inside the root with `flags` (`O_CLOEXEC` is added).
    pub fn open(&self, path: &Path, flags: i32) -> io::Result<File> {
        let flags = flags | libc::O_CLOEXEC;
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            match self.openat2(path, flags) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                    tracing::debug!("openat2 is not available ({e}): resolving target paths by joining them");
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        let c = CString::new(self.joined(path).as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: a valid NUL-terminated path; the fd returned is owned by the File.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by no one else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    fn openat2(&self, path: &Path, flags: i32) -> io::Result<File> {
        let root = CString::new(self.dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
        let relative = path.strip_prefix("/").unwrap_or(path);
        let relative = if relative.as_os_str().is_empty() { Path::new(".") } else { relative };
        let rel = CString::new(relative.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: a valid NUL-terminated path.
        let root_fd = unsafe { libc::open(root.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if root_fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `root_fd` was just opened; the File closes it.
        let root_dir = unsafe { File::from_raw_fd(root_fd) };
        // SAFETY: `open_how` is plain integers; all-zero is its empty value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = flags as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: valid fd, path and `open_how` of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root_dir.as_raw_fd(),
                rel.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new fd, owned by no one else.
        Ok(unsafe { File::from_raw_fd(fd as i32) })
    }

    pub fn read_to_string(&self, path: &Path) -> io::Result<String> {
        let mut s = String::new();
        self.open(path, libc::O_RDONLY)?.read_to_string(&mut s)?;
        Ok(s)
    }

    /// The entries of directory `path`.
    pub fn read_dir(&self, path: &Path) -> io::Result<ReadDir> {
        let dir = self.open(path, libc::O_RDONLY | libc::O_DIRECTORY)?;
        // The directory is open; read it through its fd (std has no fdopendir).
        std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
    }

    pub fn is_dir(&self, path: &Path) -> bool {
        self.open(path, libc::O_PATH | libc::O_DIRECTORY).is_ok()
    }

    pub fn is_file(&self, path: &Path) -> bool {
        self.open(path, libc::O_PATH).and_then(|f| f.metadata()).is_ok_and(|m| m.is_file())
    }

    /// Device and inode of the root directory: two processes with the same
    /// identity see the same file system.
    pub fn identity(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&self.dir).ok().map(|m| (m.dev(), m.ino()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pywats-root-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_through_the_process_root() {
        let dir = scratch("read");
        std::fs::write(dir.join("f.txt"), "hello").unwrap();
        let root = TargetRoot::of(Path::new("/proc"), std::process::id());
        assert_eq!(root.read_to_string(&dir.join("f.txt")).unwrap(), "hello");
        assert!(root.is_dir(&dir) && !root.is_file(&dir));
        assert!(root.is_file(&dir.join("f.txt")) && !root.is_dir(&dir.join("f.txt")));
        let names: Vec<_> = root.read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, ["f.txt"]);
        assert!(root.read_to_string(&dir.join("missing")).is_err());
        assert_eq!(root.identity(), TargetRoot::own().identity());
        assert_eq!(TargetRoot::own().read_to_string(&dir.join("f.txt")).unwrap(), "hello");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An absolute symlink is resolved inside the root given, not the
    /// agent's: here the root is a directory with its own `/etc/answer`.
    #[test]
    fn absolute_symlinks_stay_inside_the_root() {
        let dir = scratch("symlink");
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/answer"), "inside").unwrap();
        std::os::unix::fs::symlink("/etc/answer", dir.join("link")).unwrap();
        let root = TargetRoot { dir: dir.clone() };
        assert_eq!(root.read_to_string(Path::new("/link")).unwrap(), "inside");
        // `..` cannot climb out of it either.
        assert!(root.read_to_string(Path::new("/../../../../etc/hostname")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
