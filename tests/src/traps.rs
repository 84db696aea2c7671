//! Bare uprobes at the agent's TLS probe sites: the kernel's breakpoints and
//! return trampolines with its own counting handler (a perf event per site,
//! for the one process, as the agent attaches its programs), no BPF program
//! and no agent. What a watched TLS client pays for them is the least an
//! agent built on uprobes at these sites can cost it; the rest of the agent's
//! price is its programs' work. Used by `cargo xtask bench` and, on arm64,
//! by `e2e/cost.rs`.

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{bail, Context as _};
use serde_json::Value;

/// A place the agent probes: library file, file offset, entry or return.
pub struct Site {
    library: CString,
    offset: u64,
    ret: bool,
}

/// The sites of the agent's TLS programs, from its `/health/details`.
pub fn sites(details: &Value) -> anyhow::Result<Vec<Site>> {
    let probes = details["tls_probes"].as_array().context("/health/details has no tls_probes")?;
    let mut out = Vec::new();
    for p in probes {
        let (Some(library), Some(program), Some(offset)) =
            (p["library"].as_str(), p["program"].as_str(), p["offset"].as_u64())
        else {
            bail!("a tls_probes entry without library, program or offset: {p}");
        };
        out.push(Site { library: CString::new(library)?, offset, ret: program.ends_with("_ret") });
    }
    if out.is_empty() {
        bail!("the agent probed no libssl");
    }
    Ok(out)
}

/// The perf events of one run; closing them removes the uprobes.
pub struct Traps {
    events: Vec<OwnedFd>,
}

/// `perf_event_attr` up to `PERF_ATTR_SIZE_VER5` (linux/perf_event.h): the
/// fields used here are `type` (offset 0), `size` (4), `config` (8), the
/// flags (40), `config1` (56, the uprobe's path) and `config2` (64, its file
/// offset).
const ATTR_SIZE: usize = 112;
/// linux/perf_event.h.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// The `inherit` bit of the attr's flags word (offset 40).
const INHERIT: u64 = 1 << 1;

impl Traps {
    /// Plants a uprobe (or uretprobe) at every site, for process `pid` only
    /// (the kernel plants the breakpoints in that process's memory).
    pub fn open(pid: u32, sites: &[Site]) -> anyhow::Result<Traps> {
        let pmu = "/sys/bus/event_source/devices/uprobe";
        let kind: u32 = std::fs::read_to_string(format!("{pmu}/type"))?.trim().parse()?;
        // "config:0": the bit of `config` that makes it a return probe.
        let format = std::fs::read_to_string(format!("{pmu}/format/retprobe"))?;
        let bit: u32 = format.trim().strip_prefix("config:").context("uprobe retprobe format")?.parse()?;
        // One event per thread of the process (an event counts one task and,
        // with `inherit`, the threads it starts later).
        let tasks: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        let mut fds = Vec::new();
        for (s, &tid) in sites.iter().flat_map(|s| tasks.iter().map(move |t| (s, t))) {
            let mut attr = [0u8; ATTR_SIZE];
            attr[0..4].copy_from_slice(&kind.to_ne_bytes());
            attr[4..8].copy_from_slice(&(ATTR_SIZE as u32).to_ne_bytes());
            attr[8..16].copy_from_slice(&(u64::from(s.ret) << bit).to_ne_bytes());
            attr[56..64].copy_from_slice(&(s.library.as_ptr() as u64).to_ne_bytes());
            attr[64..72].copy_from_slice(&s.offset.to_ne_bytes());
            // `inherit`: threads started later are counted too (the pyWATS
            // client makes its requests from a thread of its own).
            attr[40..48].copy_from_slice(&INHERIT.to_ne_bytes());
            // SAFETY: a valid attr buffer of the size it declares; the path outlives the call.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_perf_event_open,
                    attr.as_ptr(),
                    tid as libc::pid_t,
                    -1,
                    -1,
                    PERF_FLAG_FD_CLOEXEC,
                )
            };
            if fd < 0 {
                bail!(
                    "perf_event_open of a uprobe at {}:{:#x}: {}",
                    s.library.to_string_lossy(),
                    s.offset,
                    std::io::Error::last_os_error()
                );
            }
            // SAFETY: a new fd owned by nothing else.
            fds.push(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        Ok(Traps { events: fds })
    }

    /// How often the probes fired (entries and returns) in the process, so
    /// that a run whose sites missed the client cannot pass for a cheap floor.
    pub fn fired(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for fd in &self.events {
            let mut count = [0u8; 8];
            // SAFETY: reads 8 bytes into a buffer of 8 from an fd we own.
            let n = unsafe { libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
            if n != 8 {
                bail!("reading a uprobe's perf count: {}", std::io::Error::last_os_error());
            }
            total += u64::from_ne_bytes(count);
        }
        Ok(total)
    }
}
