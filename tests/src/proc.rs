//! Ground truth from /proc.

/// A field of /proc/<pid>/status, e.g. `Threads` or `VmRSS` (kB for sizes).
pub fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A pid that no process has right now.
pub fn unused_pid() -> u32 {
    let max: u32 =
        std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(32768);
    (2..max).rev().find(|&p| !exists(p)).expect("some pid is free")
}

/// User + system CPU seconds a process has used so far (`/proc/<pid>/stat`).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the command name, which may itself hold spaces and parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat has a comm") + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// The lowest fd number `pid` could be given now, counting fds it holds on
/// `/proc` files as free (the agent opens and closes those all the time):
/// with RLIMIT_NOFILE there, every file it opens next fails with EMFILE.
pub fn lowest_free_fd(pid: u32) -> u64 {
    let held: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the fd list")
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|target| !target.starts_with("/proc")))
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !held.contains(n)).expect("a free fd number")
}

/// Sets the soft RLIMIT_NOFILE of `pid` (the one the kernel enforces; the
/// hard limit stays, so it can be raised again without CAP_SYS_RESOURCE) and
/// returns the soft limit it had.
pub fn set_nofile(pid: u32, soft: u64) -> u64 {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a null new limit only reads; valid pointer to an rlimit.
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit {pid}: {}", std::io::Error::last_os_error());
    let new = libc::rlimit { rlim_cur: soft, rlim_max: old.rlim_max };
    // SAFETY: valid pointer to an rlimit; no old value asked for.
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit {pid}: {}", std::io::Error::last_os_error());
    old.rlim_cur
}
