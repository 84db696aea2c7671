//! Wiring: validate the targets, load and attach the probes, follow events,
//! serve metrics until SIGINT/SIGTERM, then detach.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use pywats_agent_ebpf::abi::{EventKind, Target, SCHED_PROGRAMS};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    cli::Args,
    ebpf::{self, loader, TargetMap},
    error::AgentError,
    events,
    http::{self, AgentStatus, Shared},
    metrics::{LostEvents, Metrics},
    proc::{sampler::ProcSampler, targets::name_targets, tree, Targets},
};

/// How often targets are checked against procfs, in case an exit event was lost.
const LIVENESS_INTERVAL: Duration = Duration::from_secs(2);

/// Checks what the operator asked for, before touching the kernel.
pub fn resolve_targets(args: &Args) -> Result<Targets, AgentError> {
    if args.pids.is_empty() {
        return Err(AgentError::NoTarget);
    }
    let resolved = args.pids.iter().map(|&pid| tree::resolve(&args.proc_root, pid)).collect::<Result<Vec<_>, _>>()?;
    let names = name_targets(&resolved, &args.target_names)?;
    Ok(Targets::new(&resolved, &names))
}

fn kernel_release(proc_root: &Path) -> String {
    std::fs::read_to_string(proc_root.join("sys/kernel/osrelease")).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Puts every target and its current descendants into the kernel's target set.
fn seed(map: &mut TargetMap, targets: &mut Targets, proc_root: &Path) -> Result<(), AgentError> {
    let roots: Vec<u32> = targets.iter().map(|t| t.pid).collect();
    for &root in &roots {
        insert(map, root, root)?;
    }
    for root in roots {
        for child in tree::descendants(proc_root, root) {
            insert(map, child, root)?;
            events::log(&targets.add_child(root, child));
        }
    }
    Ok(())
}

fn insert(map: &mut TargetMap, tgid: u32, root: u32) -> Result<(), AgentError> {
    map.insert(tgid, Target { root_tgid: root, flags: 0 }, 0)
        .map_err(|source| AgentError::Map { name: pywats_agent_ebpf::abi::MAP_TARGETS, source })
}

/// Marks targets whose process is gone (their exit event may have been lost).
fn check_liveness(targets: &RwLock<Targets>, map: &Mutex<TargetMap>, proc_root: &Path) {
    let gone: Vec<u32> = targets
        .read()
        .expect("targets lock")
        .iter()
        .filter(|t| t.alive && tree::resolve(proc_root, t.pid).is_err())
        .map(|t| t.pid)
        .collect();
    for pid in gone {
        let change = targets.write().expect("targets lock").exited(pid, pid);
        let _ = map.lock().expect("target map lock").remove(&pid);
        events::log(&change);
    }
}

async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: detaching"),
        _ = int.recv() => tracing::info!("SIGINT: detaching"),
    }
}

pub async fn run(args: Args) -> Result<(), AgentError> {
    let started = SystemTime::now();
    let mut targets = resolve_targets(&args)?;
    ebpf::privileges::check(&args.proc_root)?;
    let tracefs = ebpf::tracefs::ensure()?;

    let loader::Loaded { mut probes, targets: mut target_map, proc_events, lost } = loader::load(&tracefs)?;
    seed_roots_then_attach(&mut probes, &mut target_map, &mut targets, &args.proc_root)?;

    let proc_root: Arc<PathBuf> = Arc::new(args.proc_root.clone());
    let metrics = Arc::new(Metrics::new(started));
    for kind in EventKind::ALL {
        metrics.events.with_label_values(&[kind.name()]);
    }
    metrics.programs_attached.set(probes.attached().len() as i64);
    let targets = Arc::new(RwLock::new(targets));
    let lost = Arc::new(LostEvents::new(lost));
    metrics.register(Box::new(LostEventsHandle(lost.clone())));
    let sampler = ProcSampler::new(targets.clone(), args.proc_root.clone(), metrics.collector_errors.clone());
    for t in targets.read().expect("targets lock").iter() {
        sampler.prime(t.pid);
        tracing::info!(target_name = %t.name, "watching pid {} ({}) and {} child process(es)", t.pid, t.exe, t.children.len());
    }
    metrics.register(Box::new(sampler));

    let status = Arc::new(AgentStatus {
        started,
        kernel_release: kernel_release(&args.proc_root),
        programs_expected: SCHED_PROGRAMS.len(),
        programs_attached: RwLock::new(probes.attached().to_vec()),
    });
    let shared = Shared { targets: targets.clone(), metrics: metrics.clone(), lost, status };

    let reader = {
        let (targets, metrics, proc_root) = (targets.clone(), metrics.clone(), proc_root.clone());
        tokio::spawn(ebpf::reader::drain(proc_events, move |record| {
            events::handle(record, &targets, &metrics, &proc_root)
        }))
    };
    let target_map = Arc::new(Mutex::new(target_map));
    let liveness = {
        let (targets, proc_root) = (targets.clone(), proc_root.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LIVENESS_INTERVAL);
            loop {
                tick.tick().await;
                check_liveness(&targets, &target_map, &proc_root);
            }
        })
    };

    let served = http::serve(args.listen, shared, shutdown_signal()).await;
    reader.abort();
    liveness.abort();
    drop(probes);
    tracing::info!("programs detached");
    served
}

/// Roots go into the map before attaching (so the first fork is seen), the
/// descendant scan after (so a fork racing the attach is found by the scan).
fn seed_roots_then_attach(
    probes: &mut ebpf::Probes,
    map: &mut TargetMap,
    targets: &mut Targets,
    proc_root: &Path,
) -> Result<(), AgentError> {
    for t in targets.iter() {
        insert(map, t.pid, t.pid)?;
    }
    probes.attach_all()?;
    seed(map, targets, proc_root)
}

/// Lets the shared `LostEvents` be registered while health keeps reading it.
struct LostEventsHandle(Arc<LostEvents>);

impl prometheus::core::Collector for LostEventsHandle {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }
    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}
