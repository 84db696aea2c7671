//! CPU time of other processes, in nanoseconds (not clock ticks).

use std::process::Command;

use anyhow::{bail, Context as _};

/// CPU time (user + system) of process `pid` so far: all its threads, those
/// that already exited included. The kernel's per-process CPU clock, the same
/// accounting (`sum_exec_runtime`) as `/proc/<pid>/task/*/schedstat`, which
/// would lose the time of threads that ended between two readings.
pub fn process_ns(pid: u32) -> anyhow::Result<u64> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: plain syscall wrappers writing into locals.
    let ts = unsafe {
        if libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) != 0 {
            bail!("no CPU clock for process {pid} (has it exited?)");
        }
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(clock, &mut ts) != 0 {
            bail!("reading the CPU clock of process {pid}: {}", std::io::Error::last_os_error());
        }
        ts
    };
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Runs `cmd` to its end and returns the CPU time (user + system, from its
/// rusage at `wait4`) it used.
pub fn run_ns(cmd: &mut Command) -> anyhow::Result<u64> {
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter; waits for our own child
    // (std's Child does not reap on drop, so it is reaped exactly once).
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) < 0 {
            bail!("waiting for {cmd:?}: {}", std::io::Error::last_os_error());
        }
        usage
    };
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{cmd:?} failed (wait status {status})");
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    Ok(ns(usage.ru_utime) + ns(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    #[test]
    fn our_own_clock_moves_and_children_are_measured() {
        let me = std::process::id();
        let a = super::process_ns(me).unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i * i));
        }
        assert!(x > 0 && super::process_ns(me).unwrap() > a);
        let mut sh = std::process::Command::new("sh");
        sh.args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"]);
        assert!(super::run_ns(&mut sh).unwrap() > 0);
    }
}
