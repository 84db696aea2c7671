//! Whether a pid still names the process the agent took it for.
//!
//! A pid freed by an exit is handed to a new process sooner or later, so a
//! pid is the same process only while its start time (field 22 of
//! `/proc/<pid>/stat`, clock ticks after boot) is the same. And only "no such
//! process" says a process is gone: any other failure to read its `/proc`
//! entry (EMFILE when the agent's fds run out, EACCES, …) says nothing about
//! the process, which stays watched.

use std::{io, path::Path};

/// A process: its pid and when it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcId {
    pub pid: u32,
    /// Start time in clock ticks after boot.
    pub start: u64,
}

/// Why a read of `/proc/<pid>` told nothing: the `kind` label of
/// `pywats_agent_proc_read_errors_total` (a fixed set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The agent's fd limit.
    Emfile,
    /// The system's file table.
    Enfile,
    Eacces,
    Eperm,
    Enomem,
    /// Read, but not a stat line.
    Malformed,
    Other,
}

impl ReadError {
    pub const ALL: [ReadError; 7] = [
        ReadError::Emfile,
        ReadError::Enfile,
        ReadError::Eacces,
        ReadError::Eperm,
        ReadError::Enomem,
        ReadError::Malformed,
        ReadError::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ReadError::Emfile => "emfile",
            ReadError::Enfile => "enfile",
            ReadError::Eacces => "eacces",
            ReadError::Eperm => "eperm",
            ReadError::Enomem => "enomem",
            ReadError::Malformed => "malformed",
            ReadError::Other => "other",
        }
    }
}

/// What `/proc/<pid>/stat` says about a pid now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// A live process (not a zombie) that started at `start`.
    Running { start: u64 },
    /// No such process, or one that has exited and waits to be reaped.
    Gone,
    /// The read failed for another reason: nothing is known.
    Unknown(ReadError),
}

/// What the agent should make of a process it watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// No such process any more.
    Exited,
    /// The pid belongs to another process now: the watched one exited.
    Reused,
    /// Unreadable: keep watching, count the error.
    Unknown(ReadError),
}

/// Reads `/proc/<pid>/stat` under `proc_root`.
pub fn stat(proc_root: &Path, pid: u32) -> Stat {
    match std::fs::read(proc_root.join(pid.to_string()).join("stat")) {
        Ok(bytes) => parse_stat(&bytes).map_or(Stat::Unknown(ReadError::Malformed), |(state, start)| {
            // A zombie, or a task being torn down, has exited.
            if matches!(state, b'Z' | b'X' | b'x') {
                Stat::Gone
            } else {
                Stat::Running { start }
            }
        }),
        Err(e) => classify(&e),
    }
}

/// Only ENOENT (no `/proc/<pid>`) and ESRCH (the process went while being
/// read) mean gone.
pub fn classify(e: &io::Error) -> Stat {
    let kind = match e.raw_os_error() {
        Some(libc::ENOENT | libc::ESRCH) => return Stat::Gone,
        Some(libc::EMFILE) => ReadError::Emfile,
        Some(libc::ENFILE) => ReadError::Enfile,
        Some(libc::EACCES) => ReadError::Eacces,
        Some(libc::EPERM) => ReadError::Eperm,
        Some(libc::ENOMEM) => ReadError::Enomem,
        _ => ReadError::Other,
    };
    Stat::Unknown(kind)
}

/// State and start time from a stat line. The command name (in parentheses)
/// may hold spaces and parentheses itself: fields are counted after the last `)`.
fn parse_stat(bytes: &[u8]) -> Option<(u8, u64)> {
    let close = bytes.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&bytes[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 (state) is the first after the name; starttime is field 22.
    let state = *fields.next()?.as_bytes().first()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl ProcId {
    /// The process `pid` names now; `Err` with what the read said otherwise.
    pub fn of(proc_root: &Path, pid: u32) -> Result<ProcId, Stat> {
        match stat(proc_root, pid) {
            Stat::Running { start } => Ok(ProcId { pid, start }),
            other => Err(other),
        }
    }

    /// Whether this process still runs under its pid.
    pub fn check(&self, proc_root: &Path) -> Liveness {
        judge(self.start, stat(proc_root, self.pid))
    }
}

/// A read of a watched process's stat, judged against its recorded start time.
pub fn judge(start: u64, now: Stat) -> Liveness {
    match now {
        Stat::Running { start: s } if s == start => Liveness::Alive,
        Stat::Running { .. } => Liveness::Reused,
        Stat::Gone => Liveness::Exited,
        Stat::Unknown(e) => Liveness::Unknown(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &[u8] = b"4242 (python3 (my) x) S 1 4242 4242 0 -1 4194560 2360 0 0 0 12 3 0 0 20 0 8 0 987654 \
                          226394112 6013 18446744073709551615 1 1 0 0 0 0 0 16781312 2 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn start_time_is_field_22_after_a_name_with_parentheses() {
        assert_eq!(parse_stat(LINE), Some((b'S', 987654)));
        assert_eq!(parse_stat(b"1 (init) S 0"), None);
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn only_no_such_process_means_gone() {
        for errno in [libc::ENOENT, libc::ESRCH] {
            assert_eq!(classify(&io::Error::from_raw_os_error(errno)), Stat::Gone, "errno {errno}");
        }
        for (errno, kind) in [
            (libc::EMFILE, ReadError::Emfile),
            (libc::ENFILE, ReadError::Enfile),
            (libc::EACCES, ReadError::Eacces),
            (libc::EPERM, ReadError::Eperm),
            (libc::ENOMEM, ReadError::Enomem),
            (libc::EIO, ReadError::Other),
            (libc::EINTR, ReadError::Other),
        ] {
            assert_eq!(classify(&io::Error::from_raw_os_error(errno)), Stat::Unknown(kind), "errno {errno}");
        }
    }

    #[test]
    fn a_pid_with_another_start_time_is_another_process() {
        assert_eq!(judge(100, Stat::Running { start: 100 }), Liveness::Alive);
        assert_eq!(judge(100, Stat::Running { start: 101 }), Liveness::Reused);
        assert_eq!(judge(100, Stat::Gone), Liveness::Exited);
        assert_eq!(judge(100, Stat::Unknown(ReadError::Emfile)), Liveness::Unknown(ReadError::Emfile));
    }

    #[test]
    fn reads_itself_a_child_and_a_missing_pid() {
        let proc_root = Path::new("/proc");
        let me = ProcId::of(proc_root, std::process::id()).unwrap();
        assert_eq!(me.check(proc_root), Liveness::Alive);
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let id = ProcId::of(proc_root, child.id()).unwrap();
        assert!(id.start >= me.start);
        child.kill().unwrap();
        // Killed but not reaped: a zombie has exited.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(id.check(proc_root), Liveness::Exited);
        child.wait().unwrap();
        assert_eq!(id.check(proc_root), Liveness::Exited);
        // The same pid, started at another time: the pid was reused.
        assert_eq!(ProcId { start: me.start + 1, ..me }.check(proc_root), Liveness::Reused);
        // A proc root that is not a directory: the read fails with ENOTDIR, which says nothing.
        assert_eq!(stat(Path::new("/dev/null"), 1), Stat::Unknown(ReadError::Other));
    }
}
