//! Loads the embedded object, fills in this kernel's tracepoint offsets and
//! attaches the programs. A program the kernel refuses turns off the
//! features that need it (`features.rs`), not the agent.

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
    ebpf::{
        features::{Feature, FeatureReport, Refusal, LOG_LINES},
        format,
        targets::KernelTargets,
        test_refusal,
        tls::TlsLinks,
    },
    error::AgentError,
};

pub(super) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pywats-agent-ebpf"));

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
    /// Programs the kernel would not load or attach: their features are off.
    refused: Vec<Refusal>,
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

    /// Attaches every program. A program the kernel refuses is recorded and
    /// skipped: its features are off ([`Probes::features`]). A refused
    /// handler stays out of its table (its syscall then runs no handler).
    /// Handlers go into their tables before the dispatchers start running.
    pub fn attach_all(&mut self) -> Result<(), AgentError> {
        for tp in SCHED_PROGRAMS {
            self.attach_tracepoint(tp)?;
        }
        for handler in syscall_handlers() {
            self.install_handler(handler)?;
        }
        for (program, tracepoint) in SYSCALL_DISPATCHERS {
            let attached = self.refusable(program, |p| {
                let p: &mut RawTracePoint = p.try_into()?;
                p.load()?;
                p.attach(tracepoint).map(drop)
            })?;
            if attached {
                self.attached.push(program);
                tracing::debug!(program, "attached raw tracepoint {tracepoint}");
            }
        }
        Ok(())
    }

    /// What works on this kernel and what is off, and why.
    pub fn features(&self) -> FeatureReport {
        FeatureReport::new(self.refused.clone())
    }

    /// Programs attached at start when nothing is refused, less the refused
    /// ones: what readiness expects.
    pub fn expected(&self) -> usize {
        all_programs().filter(|p| !self.refused.iter().any(|r| r.program == *p)).count()
    }

    /// Runs `step` (load, attach) on `program`; a refusal is recorded and
    /// logged, and gives `false`. `PYWATS_AGENT_TEST_REFUSE=<program>` makes
    /// the kernel refuse it (see [`test_refusal`]).
    fn refusable(
        &mut self,
        program: &'static str,
        step: impl FnOnce(&mut aya::programs::Program) -> Result<(), ProgramError>,
    ) -> Result<bool, AgentError> {
        let result = if test_refusal::wanted(program) {
            Err(test_refusal::refuse(program))
        } else {
            step(self.ebpf.program_mut(program).ok_or(AgentError::MissingProgram(program))?)
                .map_err(|e| refusal(program, e))
        };
        match result {
            Ok(()) => Ok(true),
            Err(r) => {
                tracing::warn!(program, "the kernel refused program {program}: {}", r.describe());
                self.refused.push(r);
                Ok(false)
            }
        }
    }

    /// Whether the TLS programs loaded (HTTPS and HTTP/2 are on).
    pub(super) fn tls_loaded(&self) -> bool {
        self.refused.iter().all(|r| !Feature::Https.needs(r.program))
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
        let attached = self.refusable(tp.program, |p| {
            let program: &mut TracePoint = p.try_into()?;
            program.load()?;
            program.attach(tp.category, tp.name).map(drop)
        })?;
        if attached {
            self.attached.push(tp.program);
            tracing::debug!(program = tp.program, "attached {}:{}", tp.category, tp.name);
        }
        Ok(())
    }

    fn install_handler(&mut self, h: SyscallProgram) -> Result<(), AgentError> {
        let mut fd = None;
        let loaded = self.refusable(h.program, |p| {
            let program: &mut RawTracePoint = p.try_into()?;
            program.load()?;
            fd = Some(program.fd()?.try_clone()?);
            Ok(())
        })?;
        let (true, Some(fd)) = (loaded, fd) else { return Ok(()) };
        let (table, name) =
            if h.exit { (&mut self.tables[1], MAP_SYS_EXIT_PROGS) } else { (&mut self.tables[0], MAP_SYS_ENTER_PROGS) };
        table.set(h.nr, &fd, 0).map_err(|source| AgentError::Map { name, source })?;
        self.attached.push(h.program);
        Ok(())
    }
}

/// A program error as a refusal: the error on one line, the verifier log's
/// end apart.
fn refusal(program: &'static str, source: ProgramError) -> Refusal {
    match &source {
        ProgramError::LoadError { io_error, verifier_log } => {
            let text = verifier_log.to_string();
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            Refusal {
                program,
                reason: format!("BPF_PROG_LOAD failed: {io_error}"),
                log: lines[lines.len().saturating_sub(LOG_LINES)..].iter().map(|l| l.to_string()).collect(),
            }
        }
        other => Refusal { program, reason: crate::error::chain(other), log: Vec::new() },
    }
}

pub(super) fn program_error(program: &'static str, source: ProgramError) -> AgentError {
    AgentError::Program { program, reason: refusal(program, source).describe() }
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
    let bits = ebpf.take_map(MAP_TARGET_BITS).ok_or(AgentError::MissingMap(MAP_TARGET_BITS))?;
    let targets = KernelTargets::new(take(&mut ebpf, MAP_TARGETS)?, bits, take(&mut ebpf, MAP_EXEC_MATCH)?)?;
    let tables = [take(&mut ebpf, MAP_SYS_ENTER_PROGS)?, take(&mut ebpf, MAP_SYS_EXIT_PROGS)?];
    let proc_events = take(&mut ebpf, MAP_PROC_EVENTS)?;
    let net_events = take(&mut ebpf, MAP_NET_EVENTS)?;
    let fs_events = take(&mut ebpf, MAP_FS_EVENTS)?;
    let sockets = take(&mut ebpf, MAP_SOCKETS)?;
    let lost = take(&mut ebpf, MAP_LOST)?;
    let insert_failures = take(&mut ebpf, MAP_INSERT_FAILURES)?;
    let mut probes = Probes { ebpf, attached: Vec::new(), refused: Vec::new(), tables, tls: TlsLinks::default() };
    // The TLS programs are attached later, per process; load them now. One
    // refused turns HTTPS and HTTP/2 off: the others are not attached.
    for up in TLS_PROGRAMS {
        probes.refusable(up.program, |p| {
            let program: &mut UProbe = p.try_into()?;
            program.load()
        })?;
    }
    Ok(Loaded { probes, targets, proc_events, net_events, fs_events, sockets, lost, insert_failures })
}
