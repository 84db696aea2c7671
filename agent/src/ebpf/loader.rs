//! Loads the embedded object, fills in this kernel's tracepoint offsets and
//! attaches the programs.

use std::path::Path;

use aya::{
    maps::{MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{ProgramError, RawTracePoint, TracePoint, UProbe},
    Ebpf, EbpfLoader,
};
use pywats_agent_ebpf::abi::{
    SockInfo, SockKey, SyscallProgram, TracepointProgram, FS_PROGRAMS, GLOBAL_TP_OFFSETS, MAP_EXEC_MATCH,
    MAP_FS_EVENTS, MAP_INSERT_FAILURES, MAP_LOST, MAP_NET_EVENTS, MAP_PROC_EVENTS, MAP_SOCKETS, MAP_SYS_ENTER_PROGS,
    MAP_SYS_EXIT_PROGS, MAP_TARGETS, MAP_TARGET_BITS, NET_PROGRAMS, SCHED_PROGRAMS, SYSCALL_DISPATCHERS, TLS_PROGRAMS,
};

use crate::{
    ebpf::{format, targets::KernelTargets, tls::TlsLinks},
    error::AgentError,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pywats-agent-ebpf"));

/// The kernel's tracked sockets.
pub type SocketMap = aya::maps::HashMap<MapData, SockKey, SockInfo>;

fn syscall_handlers() -> impl Iterator<Item = SyscallProgram> {
    NET_PROGRAMS.into_iter().chain(FS_PROGRAMS)
}

/// Every program the agent attaches at start (the TLS ones come per process).
pub fn all_programs() -> impl Iterator<Item = &'static str> {
    SCHED_PROGRAMS
        .iter()
        .map(|t| t.program)
        .chain(SYSCALL_DISPATCHERS.iter().map(|(p, _)| *p))
        .chain(syscall_handlers().map(|s| s.program))
}

/// Loaded programs. Dropping this detaches them all.
pub struct Probes {
    pub(super) ebpf: Ebpf,
    attached: Vec<&'static str>,
    /// The syscall handlers by number: entries live as long as these maps.
    tables: [ProgramArray<MapData>; 2],
    pub(super) tls: TlsLinks,
}

/// What the rest of the agent needs from a successful load.
pub struct Loaded {
    pub probes: Probes,
    pub targets: KernelTargets,
    pub proc_events: RingBuf<MapData>,
    pub net_events: RingBuf<MapData>,
    pub fs_events: RingBuf<MapData>,
    pub sockets: SocketMap,
    pub lost: PerCpuArray<MapData, u64>,
    pub insert_failures: PerCpuArray<MapData, u64>,
}

impl Probes {
    /// Names of the programs currently attached (syscall handlers count once
    /// they are in their dispatch table).
    pub fn attached(&self) -> &[&'static str] {
        &self.attached
    }

    /// Attaches every program; the first refusal stops and is reported.
    /// Handlers go into their tables before the dispatchers start running.
    pub fn attach_all(&mut self) -> Result<(), AgentError> {
        for tp in SCHED_PROGRAMS {
            self.attach_tracepoint(tp)?;
        }
        for handler in syscall_handlers() {
            self.install_handler(handler)?;
        }
        for (program, tracepoint) in SYSCALL_DISPATCHERS {
            let err = |source: ProgramError| program_error(program, source);
            let p: &mut RawTracePoint =
                self.ebpf.program_mut(program).ok_or(AgentError::MissingProgram(program))?.try_into().map_err(err)?;
            p.load().map_err(err)?;
            p.attach(tracepoint).map_err(err)?;
            self.attached.push(program);
            tracing::debug!(program, "attached raw tracepoint {tracepoint}");
        }
        Ok(())
    }

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

    fn attach_tracepoint(&mut self, tp: TracepointProgram) -> Result<(), AgentError> {
        let err = |source: ProgramError| program_error(tp.program, source);
        let program: &mut TracePoint =
            self.ebpf.program_mut(tp.program).ok_or(AgentError::MissingProgram(tp.program))?.try_into().map_err(err)?;
        program.load().map_err(err)?;
        program.attach(tp.category, tp.name).map_err(err)?;
        self.attached.push(tp.program);
        tracing::debug!(program = tp.program, "attached {}:{}", tp.category, tp.name);
        Ok(())
    }

    fn install_handler(&mut self, h: SyscallProgram) -> Result<(), AgentError> {
        let err = |source: ProgramError| program_error(h.program, source);
        let program: &mut RawTracePoint =
            self.ebpf.program_mut(h.program).ok_or(AgentError::MissingProgram(h.program))?.try_into().map_err(err)?;
        program.load().map_err(err)?;
        let (table, name) =
            if h.exit { (&mut self.tables[1], MAP_SYS_EXIT_PROGS) } else { (&mut self.tables[0], MAP_SYS_ENTER_PROGS) };
        table.set(h.nr, program.fd().map_err(err)?, 0).map_err(|source| AgentError::Map { name, source })?;
        self.attached.push(h.program);
        Ok(())
    }
}

pub(super) fn program_error(program: &'static str, source: ProgramError) -> AgentError {
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

/// Sizes of the socket and file event rings, bytes.
pub struct RingSizes {
    pub net: u32,
    pub fs: u32,
}

/// Loads the object into the kernel (programs are not attached yet).
pub fn load(tracefs: &Path, rings: RingSizes) -> Result<Loaded, AgentError> {
    raise_memlock();
    let offsets = format::tracepoint_offsets(tracefs)?;
    tracing::debug!(?offsets, "tracepoint offsets");
    let mut ebpf = EbpfLoader::new()
        .override_global(GLOBAL_TP_OFFSETS, &offsets, true)
        .map_max_entries(MAP_NET_EVENTS, rings.net)
        .map_max_entries(MAP_FS_EVENTS, rings.fs)
        .load(OBJECT)?;
    // The TLS programs are attached later, per process; load them now.
    for up in TLS_PROGRAMS {
        let err = |source: ProgramError| program_error(up.program, source);
        let program: &mut UProbe =
            ebpf.program_mut(up.program).ok_or(AgentError::MissingProgram(up.program))?.try_into().map_err(err)?;
        program.load().map_err(err)?;
    }
    let bits = ebpf.take_map(MAP_TARGET_BITS).ok_or(AgentError::MissingMap(MAP_TARGET_BITS))?;
    let targets = KernelTargets::new(take(&mut ebpf, MAP_TARGETS)?, bits, take(&mut ebpf, MAP_EXEC_MATCH)?)?;
    let tables = [take(&mut ebpf, MAP_SYS_ENTER_PROGS)?, take(&mut ebpf, MAP_SYS_EXIT_PROGS)?];
    let proc_events = take(&mut ebpf, MAP_PROC_EVENTS)?;
    let net_events = take(&mut ebpf, MAP_NET_EVENTS)?;
    let fs_events = take(&mut ebpf, MAP_FS_EVENTS)?;
    let sockets = take(&mut ebpf, MAP_SOCKETS)?;
    let lost = take(&mut ebpf, MAP_LOST)?;
    let insert_failures = take(&mut ebpf, MAP_INSERT_FAILURES)?;
    Ok(Loaded {
        probes: Probes { ebpf, attached: Vec::new(), tables, tls: TlsLinks::default() },
        targets,
        proc_events,
        net_events,
        fs_events,
        sockets,
        lost,
        insert_failures,
    })
}
