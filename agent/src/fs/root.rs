//! Files as a target process sees them: paths resolved inside its root
//! (`/proc/<pid>/root`), so a client in a container is read from its own file
//! system, not the agent's. `openat2(RESOLVE_IN_ROOT)` keeps absolute
//! symlinks inside that root (a container's `/var/run → /run`); joining
//! `/proc/<pid>/root` and the path would follow them into the agent's own
//! file system and read the wrong file.
//!
//! What a watched process puts in its root is hostile until checked: a FIFO
//! would block a read for ever, a device file may act on open (a pty slave
//! becomes the controlling terminal of a process without one), a symlink to
//! `/dev/zero` or a sparse file never ends. So a file is first opened as a
//! path only (`O_PATH`, which opens nothing), `fstat`ed: a regular file within
//! the cap of what it is read for, or refused (counted in
//! `pywats_agent_files_refused_total`, logged at warn). Only then is that very
//! inode opened for reading (non-blocking, never a controlling terminal) and
//! read through its fd, at most up to the cap; callers that need a path for
//! the same file (a uprobe attach) use the fd's [`RootFile::fd_path`], so
//! nothing is resolved twice.

use std::{
    ffi::CString,
    fs::{File, ReadDir},
    io::{self, Read as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _},
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    },
    path::{Component, Path, PathBuf},
    sync::{LazyLock, OnceLock},
    time::Duration,
};

use prometheus::{IntCounterVec, Opts};

use crate::metrics::RateLimitedLog;

/// The root directory of a process, as reachable from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetRoot {
    dir: PathBuf,
}

/// How paths are resolved inside a root, chosen once by [`resolution`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resolution {
    /// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
    InRoot,
    /// Without `openat2` (kernels before 5.6, or a seccomp profile that does
    /// not know it): one component at a time, refusing every symlink and
    /// `..`. Safe, and blind to files reached through a symlink.
    Walk,
}

/// Whether `openat2` works here, tried once on the agent's own root: a
/// failure of one later call is that file's, never the mode's.
fn resolution() -> Resolution {
    static MODE: OnceLock<Resolution> = OnceLock::new();
    *MODE.get_or_init(|| match TargetRoot::own().openat2(Path::new("/"), libc::O_PATH | libc::O_DIRECTORY) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            tracing::warn!(
                "openat2 is not available ({e}): files in targets' roots are resolved one component at a time, \
                 and those reached through a symlink are not read"
            );
            Resolution::Walk
        }
        _ => Resolution::InRoot,
    })
}

/// What a file in a target's root is read for, and at most how large it may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// The pyWATS client's config JSON.
    ClientConfig,
    /// `/etc/hostname`, the pod's service-account namespace.
    PodName,
    /// A libssl shared object, read to place the TLS probes.
    Library,
}

impl FileKind {
    pub const ALL: [FileKind; 3] = [FileKind::ClientConfig, FileKind::PodName, FileKind::Library];

    /// Real ones are far smaller: a client config a few KiB, a name a line,
    /// OpenSSL 3's libssl under 1 MiB.
    pub fn cap(self) -> u64 {
        match self {
            FileKind::ClientConfig => 1 << 20,
            FileKind::PodName => 4 << 10,
            FileKind::Library => 32 << 20,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            FileKind::ClientConfig => "client_config",
            FileKind::PodName => "pod_name",
            FileKind::Library => "library",
        }
    }
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a regular file")]
    NotRegular,
    #[error("{size} bytes, more than the {cap} it may have")]
    TooLarge { size: u64, cap: u64 },
}

impl Refused {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Refused::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }

    fn label(&self) -> &'static str {
        match self {
            Refused::Io(_) => "unreadable",
            Refused::NotRegular => "not_regular",
            Refused::TooLarge { .. } => "too_large",
        }
    }
}

/// `pywats_agent_files_refused_total{kind,reason}`, shared by every reader
/// (the agent's registry registers it).
pub static REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new(
            "pywats_agent_files_refused_total",
            "Files in a target's root the agent did not read, by what they were read for (client_config, \
             pod_name, library) and why: not_regular (a FIFO, a device, a socket), too_large (past the cap \
             of their kind), unreadable (another error than \"not found\").",
        ),
        &["kind", "reason"],
    )
    .expect("valid metric definition");
    for kind in FileKind::ALL {
        for reason in ["not_regular", "too_large", "unreadable"] {
            c.with_label_values(&[kind.label(), reason]);
        }
    }
    c
});

static REFUSED_LOG: RateLimitedLog = RateLimitedLog::new(Duration::from_secs(60));

/// Counts and logs a refusal; a file that does not exist is not one.
fn refused(kind: FileKind, path: &Path, why: Refused) -> Refused {
    if !why.is_not_found() {
        REFUSED.with_label_values(&[kind.label(), why.label()]).inc();
        REFUSED_LOG.warn(format_args!("not reading {} ({}): {why}", path.display(), kind.label()));
    }
    why
}

/// What `fstat` said of an open file: with the size and times, a file
/// rewritten in place is another file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileStat {
    fn of(file: &File) -> io::Result<(FileStat, bool)> {
        let m = file.metadata()?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        let stat = FileStat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        };
        Ok((stat, m.file_type().is_file()))
    }
}

/// A regular file of a target's root, open for reading.
pub struct RootFile {
    file: File,
    pub stat: FileStat,
    kind: FileKind,
    /// The path it was opened by, for messages.
    pub shown: PathBuf,
}

impl RootFile {
    /// Its content, read through the fd, at most up to the cap of its kind.
    pub fn read(&self) -> Result<Vec<u8>, Refused> {
        let cap = self.kind.cap();
        let mut data = Vec::with_capacity(self.stat.size.min(cap) as usize);
        // A file that grew since the fstat is read one byte past the cap, and refused.
        (&self.file).take(cap + 1).read_to_end(&mut data)?;
        if data.len() as u64 > cap {
            return Err(refused(self.kind, &self.shown, Refused::TooLarge { size: data.len() as u64, cap }));
        }
        Ok(data)
    }

    /// A path that names this very file (its fd), for an API that takes a path.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// Opens the file an `O_PATH` fd refers to (its inode, not its path again).
fn reopen(handle: &File, flags: i32) -> io::Result<File> {
    let path = CString::new(format!("/proc/self/fd/{}", handle.as_raw_fd())).map_err(io::Error::other)?;
    // SAFETY: a valid NUL-terminated path; the fd returned is owned by the File.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by no one else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

impl TargetRoot {
    /// The root of process `pid` under `proc_root`.
    pub fn of(proc_root: &Path, pid: u32) -> TargetRoot {
        TargetRoot { dir: proc_root.join(pid.to_string()).join("root") }
    }

    /// The agent's own root.
    pub fn own() -> TargetRoot {
        TargetRoot { dir: PathBuf::from("/") }
    }

    /// `path` (as the process sees it) joined under the root, for messages.
    pub fn joined(&self, path: &Path) -> PathBuf {
        self.dir.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// Opens `path` inside the root with `flags` (`O_CLOEXEC`, `O_NOCTTY` and
    /// `O_NONBLOCK` are added: nothing opened here blocks or becomes a
    /// terminal). For reading a file, [`TargetRoot::open_file`].
    pub fn open(&self, path: &Path, flags: i32) -> io::Result<File> {
        // openat2 takes O_PATH with no other flags than these.
        let flags = if flags & libc::O_PATH != 0 {
            flags | libc::O_CLOEXEC
        } else {
            flags | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK
        };
        match resolution() {
            Resolution::InRoot => self.openat2(path, flags),
            Resolution::Walk => self.walk(path, flags),
        }
    }

    /// Opens a regular file of at most `kind`'s cap for reading, refusing
    /// anything else before it is opened for real.
    pub fn open_file(&self, path: &Path, kind: FileKind) -> Result<RootFile, Refused> {
        let shown = self.joined(path);
        let checked = || -> Result<(File, FileStat), Refused> {
            let handle = self.open(path, libc::O_PATH)?;
            let (stat, regular) = FileStat::of(&handle)?;
            if !regular {
                return Err(Refused::NotRegular);
            }
            if stat.size > kind.cap() {
                return Err(Refused::TooLarge { size: stat.size, cap: kind.cap() });
            }
            let file = reopen(&handle, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY)?;
            match FileStat::of(&file)? {
                (now, true) if (now.dev, now.ino) == (stat.dev, stat.ino) => Ok((file, now)),
                _ => Err(Refused::NotRegular),
            }
        };
        match checked() {
            Ok((file, stat)) => Ok(RootFile { file, stat, kind, shown }),
            Err(why) => Err(refused(kind, &shown, why)),
        }
    }

    /// A regular file's content (see [`TargetRoot::open_file`]).
    pub fn read_file(&self, path: &Path, kind: FileKind) -> Result<Vec<u8>, Refused> {
        self.open_file(path, kind)?.read()
    }

    pub fn read_string(&self, path: &Path, kind: FileKind) -> Result<String, Refused> {
        let bytes = self.read_file(path, kind)?;
        String::from_utf8(bytes).map_err(|e| Refused::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
    }

    fn openat2(&self, path: &Path, flags: i32) -> io::Result<File> {
        let relative = path.strip_prefix("/").unwrap_or(path);
        let relative = if relative.as_os_str().is_empty() { Path::new(".") } else { relative };
        let rel = CString::new(relative.as_os_str().as_bytes()).map_err(io::Error::other)?;
        let root_dir = self.root_dir()?;
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

    /// Without `openat2`: each directory opened below the last, no symlink
    /// followed (`O_NOFOLLOW`), no `..`.
    fn walk(&self, path: &Path, flags: i32) -> io::Result<File> {
        let names: Vec<&std::ffi::OsStr> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(Ok(n)),
                Component::RootDir | Component::CurDir => None,
                Component::ParentDir | Component::Prefix(_) => {
                    Some(Err(io::Error::new(io::ErrorKind::PermissionDenied, "`..` in a target path")))
                }
            })
            .collect::<io::Result<_>>()?;
        let mut dir = self.root_dir()?;
        let Some((last, parents)) = names.split_last() else { return reopen(&dir, flags) };
        for name in parents {
            dir = openat(&dir, name, libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)?;
        }
        let file = openat(&dir, last, flags | libc::O_NOFOLLOW)?;
        // With O_PATH, O_NOFOLLOW opens a symlink itself: refused too.
        if file.metadata()?.file_type().is_symlink() {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        Ok(file)
    }

    fn root_dir(&self) -> io::Result<File> {
        let root = CString::new(self.dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: a valid NUL-terminated path.
        let fd = unsafe { libc::open(root.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened; the File closes it.
        Ok(unsafe { File::from_raw_fd(fd) })
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
        std::fs::metadata(&self.dir).ok().map(|m| (m.dev(), m.ino()))
    }
}

fn openat(dir: &File, name: &std::ffi::OsStr, flags: i32) -> io::Result<File> {
    let name = CString::new(name.as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a valid fd and NUL-terminated name; the fd returned is owned by the File.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by no one else.
    Ok(unsafe { File::from_raw_fd(fd) })
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

    const KIND: FileKind = FileKind::PodName;

    #[test]
    fn reads_through_the_process_root() {
        let dir = scratch("read");
        std::fs::write(dir.join("f.txt"), "hello").unwrap();
        let root = TargetRoot::of(Path::new("/proc"), std::process::id());
        assert_eq!(root.read_string(&dir.join("f.txt"), KIND).unwrap(), "hello");
        assert!(root.is_dir(&dir) && !root.is_file(&dir));
        assert!(root.is_file(&dir.join("f.txt")) && !root.is_dir(&dir.join("f.txt")));
        let names: Vec<_> = root.read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, ["f.txt"]);
        assert!(root.read_string(&dir.join("missing"), KIND).unwrap_err().is_not_found());
        assert_eq!(root.identity(), TargetRoot::own().identity());
        assert_eq!(TargetRoot::own().read_string(&dir.join("f.txt"), KIND).unwrap(), "hello");
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
        assert_eq!(root.read_string(Path::new("/link"), KIND).unwrap(), "inside");
        // `..` cannot climb out of it either.
        assert!(root.read_string(Path::new("/../../../../etc/hostname"), KIND).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn refusals(reason: &str) -> u64 {
        REFUSED.with_label_values(&[KIND.label(), reason]).get()
    }

    /// A FIFO (with a writer that never writes), a symlink to `/dev/zero`, a
    /// pty slave and a sparse file past the cap: each refused at once,
    /// counted, and nothing blocks or becomes the agent's terminal.
    #[test]
    fn only_regular_files_within_the_cap_are_read() {
        let dir = scratch("hostile");
        let fifo = CString::new(dir.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        // A reader would block in open() without O_NONBLOCK, and in read()
        // with a writer: this one holds the FIFO open for writing.
        // SAFETY: as above.
        let writer = unsafe { libc::open(fifo.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK) };
        assert!(writer >= 0);
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero")).unwrap();
        // SAFETY: opens the pty master; the fd is closed below.
        let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) };
        assert!(master >= 0);
        // SAFETY: a valid master fd.
        unsafe { assert_eq!(libc::grantpt(master) | libc::unlockpt(master), 0) };
        // SAFETY: a valid master fd; the name is copied at once.
        let slave = unsafe { std::ffi::CStr::from_ptr(libc::ptsname(master)) }.to_str().unwrap().to_string();
        std::os::unix::fs::symlink(&slave, dir.join("pty")).unwrap();
        let big = File::create(dir.join("big")).unwrap();
        big.set_len(8 << 30).unwrap();
        let root = TargetRoot::own();
        let before = (refusals("not_regular"), refusals("too_large"));
        for name in ["fifo", "zero", "pty"] {
            assert!(matches!(root.read_file(&dir.join(name), KIND), Err(Refused::NotRegular)), "{name}");
        }
        assert!(matches!(root.read_file(&dir.join("big"), KIND), Err(Refused::TooLarge { .. })));
        assert!(matches!(root.read_file(&dir, KIND), Err(Refused::NotRegular)));
        assert_eq!((refusals("not_regular"), refusals("too_large")), (before.0 + 4, before.1 + 1));
        // SAFETY: the fds opened above.
        unsafe {
            libc::close(writer);
            libc::close(master);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file that grows past the cap after its fstat is read one byte past
    /// the cap and refused.
    #[test]
    fn a_file_that_grows_is_read_no_further_than_the_cap() {
        let dir = scratch("grow");
        std::fs::write(dir.join("f"), "x").unwrap();
        let f = TargetRoot::own().open_file(&dir.join("f"), KIND).unwrap();
        std::fs::write(dir.join("f"), vec![b'y'; KIND.cap() as usize * 4]).unwrap();
        assert!(matches!(f.read(), Err(Refused::TooLarge { size, .. }) if size == KIND.cap() + 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Without `openat2` every symlink is refused, and plain paths still work.
    #[test]
    fn the_walk_follows_no_symlink() {
        let dir = scratch("walk");
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/answer"), "inside").unwrap();
        std::os::unix::fs::symlink("/etc/answer", dir.join("link")).unwrap();
        std::os::unix::fs::symlink("etc", dir.join("dirlink")).unwrap();
        let root = TargetRoot { dir: dir.clone() };
        let mut s = String::new();
        root.walk(Path::new("/etc/answer"), libc::O_RDONLY).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "inside");
        for p in ["/link", "/dirlink/answer", "/etc/../etc/answer"] {
            assert!(root.walk(Path::new(p), libc::O_RDONLY).is_err(), "{p}");
            assert!(root.walk(Path::new(p), libc::O_PATH).is_err(), "{p}");
        }
        assert!(root.walk(Path::new("/"), libc::O_PATH | libc::O_DIRECTORY).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
