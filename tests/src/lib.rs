//! Harness of the end-to-end tests: runs the real agent binary, real Python
//! processes, and reads ground truth from /proc.

pub mod agent;
pub mod docs;
pub mod http;
pub mod image;
pub mod load;
pub mod pki;
pub mod proc;
pub mod prom;
pub mod prometheus;
pub mod promtool;
pub mod py;
pub mod tls;
pub mod traps;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_path_buf()
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How far a process's own clock, read right after a call returns, may lie
/// from the kernel's stamp of that call: 5 ms on a machine, more under an
/// emulator (`cargo xtask vm` sets `PYWATS_E2E_CLOCK_SLACK_MS`: TCG runs
/// the guest some twenty times slower, and its scheduler's gaps with it).
pub fn clock_slack() -> f64 {
    std::env::var("PYWATS_E2E_CLOCK_SLACK_MS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(5.0) / 1e3
}

/// An unused loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// CLOCK_MONOTONIC in ns: the clock of the kernel's event timestamps
/// (`bpf_ktime_get_ns`), for bracketing what the agent measures.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The wall clock in seconds since the epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_secs_f64()
}
