//! Loads the embedded object, fills in this kernel's tracepoint offsets and
//! attaches the programs.

use std::path::Path;

use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{uprobe::UProbeScope, ProgramError, TracePoint, UProbe},
    Ebpf, EbpfLoader,
};
use pywats_agent_ebpf::abi::{
    SockInfo, SockKey, Target, TracepointProgram, FS_PROGRAMS, GLOBAL_TP_OFFSETS, MAP_FS_EVENTS, MAP_LOST,
    MAP_NET_EVENTS, MAP_PROC_EVENTS, MAP_SOCKETS, MAP_TARGETS, NET_PROGRAMS, SCHED_PROGRAMS, TLS_PROGRAMS,
};

use crate::{ebpf::format, error::AgentError};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pywats-agent-ebpf"));

/// The kernel's target set (tgid → which configured target it belongs to).
pub type TargetMap = HashMap<MapData, u32, Target>;
/// The kernel's tracked sockets.
pub type SocketMap = HashMap<MapData, SockKey, SockInfo>;

/// Every program the agent attaches.
pub fn all_programs() -> impl Iterator<Item = TracepointProgram> {
    SCHED_PROGRAMS.into_iter().chain(NET_PROGRAMS).chain(FS_PROGRAMS)
}

/// Loaded programs. Dropping this detaches them all.
pub struct Probes {
    ebpf: Ebpf,
    attached: Vec<&'static str>,
    /// libssl files the TLS uprobes are attached to: (dev, inode) → path.
    tls_libraries: std::collections::BTreeMap<(u64, u64), std::path::PathBuf>,
}

/// What the rest of the agent needs from a successful load.
pub struct Loaded {
    pub probes: Probes,
    pub targets: TargetMap,
    pub proc_events: RingBuf<MapData>,
    pub net_events: RingBuf<MapData>,
    pub fs_events: RingBuf<MapData>,
    pub sockets: SocketMap,
    pub lost: PerCpuArray<MapData, u64>,
}

impl Probes {
    /// Names of the programs currently attached.
    pub fn attached(&self) -> &[&'static str] {
        &self.attached
    }

    /// Attaches every program; the first refusal stops and is reported.
    pub fn attach_all(&mut self) -> Result<(), AgentError> {
        for tp in all_programs() {
            self.attach(tp)?;
        }
        Ok(())
    }

    /// Library files the TLS uprobes are attached to.
    /// Kernel CPU time and runs of each program so far (counted while the
    /// kernel's statistics are enabled: `metrics::ProgramStats`).
    pub fn run_stats(&self) -> Vec<(String, std::time::Duration, u64)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some((name.to_string(), info.run_time(), info.run_count()))
            })
            .collect()
    }

    pub fn tls_libraries(&self) -> Vec<String> {
        self.tls_libraries.values().map(|p| p.display().to_string()).collect()
    }

    /// Attaches the TLS uprobes to the libssl at `lib` unless that file already has them.
    /// Returns whether it attached.
    pub fn attach_tls(&mut self, lib: &Path) -> Result<bool, AgentError> {
        let Some(id) = super::tls::file_id(lib) else { return Ok(false) };
        if self.tls_libraries.contains_key(&id) {
            return Ok(false);
        }
        for up in TLS_PROGRAMS {
            let err = |source: ProgramError| program_error(up.program, source);
            let program: &mut UProbe = self
                .ebpf
                .program_mut(up.program)
                .ok_or(AgentError::MissingProgram(up.program))?
                .try_into()
                .map_err(err)?;
            program.attach(up.symbol, lib, UProbeScope::AllProcesses).map_err(err)?;
        }
        tracing::info!("TLS probes attached to {}", lib.display());
        self.tls_libraries.insert(id, lib.to_path_buf());
        Ok(true)
    }

    fn attach(&mut self, tp: TracepointProgram) -> Result<(), AgentError> {
        let err = |source: ProgramError| program_error(tp.program, source);
        let program: &mut TracePoint =
            self.ebpf.program_mut(tp.program).ok_or(AgentError::MissingProgram(tp.program))?.try_into().map_err(err)?;
        program.load().map_err(err)?;
        program.attach(tp.category, tp.name).map_err(err)?;
        self.attached.push(tp.program);
        tracing::debug!(program = tp.program, "attached {}:{}", tp.category, tp.name);
        Ok(())
    }
}

fn program_error(program: &'static str, source: ProgramError) -> AgentError {
    let reason = match &source {
        // The verifier log can be thousands of lines: keep its end, where the reason is.
        ProgramError::LoadError { io_error, verifier_log } => {
            let text = verifier_log.to_string();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(12)..].join("\n  ");
            format!("BPF_PROG_LOAD failed: {io_error}\n  verifier log (end):\n  {tail}")
        }
        other => crate::error::chain(other),
    };
    AgentError::Program { program, reason }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, AgentError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(AgentError::MissingMap(name))?;
    T::try_from(map).map_err(|source| AgentError::Map { name, source })
}

/// Raises RLIMIT_MEMLOCK for kernels that still charge BPF memory to it (< 5.11).
fn raise_memlock() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}

/// Loads the object into the kernel (programs are not attached yet).
pub fn load(tracefs: &Path) -> Result<Loaded, AgentError> {
    raise_memlock();
    let offsets = format::tracepoint_offsets(tracefs)?;
    tracing::debug!(?offsets, "tracepoint offsets");
    let mut ebpf = EbpfLoader::new().override_global(GLOBAL_TP_OFFSETS, &offsets, true).load(OBJECT)?;
    // The TLS programs are attached later, per library found; load them now.
    for up in TLS_PROGRAMS {
        let err = |source: ProgramError| program_error(up.program, source);
        let program: &mut UProbe =
            ebpf.program_mut(up.program).ok_or(AgentError::MissingProgram(up.program))?.try_into().map_err(err)?;
        program.load().map_err(err)?;
    }
    let targets = take(&mut ebpf, MAP_TARGETS)?;
    let proc_events = take(&mut ebpf, MAP_PROC_EVENTS)?;
    let net_events = take(&mut ebpf, MAP_NET_EVENTS)?;
    let fs_events = take(&mut ebpf, MAP_FS_EVENTS)?;
    let sockets = take(&mut ebpf, MAP_SOCKETS)?;
    let lost = take(&mut ebpf, MAP_LOST)?;
    Ok(Loaded {
        probes: Probes { ebpf, attached: Vec::new(), tls_libraries: Default::default() },
        targets,
        proc_events,
        net_events,
        fs_events,
        sockets,
        lost,
    })
}
