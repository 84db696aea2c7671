//! Wiring: validate the targets, load and attach the probes, follow events,
//! serve metrics until SIGINT/SIGTERM, then detach.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, SystemTime},
};

use pywats_agent_ebpf::abi::{role, sock_state, EventKind, SockInfo, SockKey, MAP_SOCKETS};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    cli::Args,
    clock::monotonic_ns,
    ebpf::{
        self,
        loader::{self, SocketMap},
        KernelTargets,
    },
    error::AgentError,
    events::{self, Handler},
    fs::{
        config::{self as fs_config, FileConfig},
        discover,
        metrics::FsMetrics,
        FsPipeline,
    },
    http::{self, AgentStatus, Shared},
    metrics::{LostEvents, Metrics, ProgramStats},
    net::{
        conn::Role,
        endpoint::Endpoints,
        metrics::HttpMetrics,
        recent::Recent,
        seed::{existing_tcp, Existing},
        NetPipeline, SEEDED_CONN,
    },
    proc::{sampler::ProcSampler, targets::name_targets, tree, Targets},
    tls_attach::{self, TlsWork},
};

/// How often targets are checked against procfs, in case an exit event was lost.
const LIVENESS_INTERVAL: Duration = Duration::from_secs(2);

/// Queues and converters the pyWATS client's own config names, per target.
/// A target without `--target-name` takes the client's instance id as its name.
fn discover(args: &Args, targets: &mut Targets) -> Result<FsPipelineSpec, AgentError> {
    let mut out = FsPipelineSpec { queues: Vec::new(), converters: Vec::new() };
    let pids: Vec<(u32, usize)> = targets.iter().enumerate().map(|(i, t)| (t.pid, i)).collect();
    for (pid, index) in pids {
        let found = match client_config(args, pid) {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            // A config the operator named must work; one we only guessed may not.
            Err(e) if args.pywats_config.is_some() => return Err(AgentError::Config(e)),
            Err(e) => {
                tracing::warn!("{e}");
                continue;
            }
        };
        if let Some(instance) = &found.instance {
            if index >= args.target_names.len() && targets.rename(pid, instance) {
                tracing::info!("target pid {pid} is pyWATS instance {instance:?}");
            }
        }
        let name = targets.iter().find(|t| t.pid == pid).map(|t| t.name.clone()).unwrap_or_default();
        tracing::info!(
            target_name = %name,
            "pyWATS config {}: {} queue(s), {} converter(s)",
            found.config.display(),
            found.queues.len(),
            found.converters.len()
        );
        out.queues.extend(found.queues.into_iter().map(|q| (q, name.clone())));
        out.converters.extend(found.converters.into_iter().map(|c| (c, name.clone())));
    }
    Ok(out)
}

/// The pyWATS client config of `pid`; `None` when discovery is off or there is none.
fn client_config(args: &Args, pid: u32) -> Result<Option<discover::Discovered>, String> {
    if args.no_discover {
        return Ok(None);
    }
    let Some(path) = discover::find(&args.proc_root, pid, args.pywats_config.as_deref()) else { return Ok(None) };
    discover::read(&args.proc_root, pid, &path).map(Some)
}

/// Queues and converters from the config file and the flags, each with the
/// name of the target it belongs to.
fn watches(args: &Args, file: FileConfig, targets: &Targets) -> Result<FsPipelineSpec, AgentError> {
    let first = targets.iter().next().map(|t| t.name.clone()).unwrap_or_default();
    let owner = |t: Option<String>| -> Result<String, AgentError> {
        match t {
            Some(t) if targets.iter().any(|x| x.name == t) => Ok(t),
            Some(t) => Err(AgentError::Config(format!("no target named {t:?}"))),
            None => Ok(first.clone()),
        }
    };
    let mut queues = Vec::new();
    let flags = args
        .queues
        .iter()
        .map(|q| fs_config::parse_queue_flag(q))
        .collect::<Result<Vec<_>, _>>()
        .map_err(AgentError::Config)?;
    for q in file.queue.into_iter().chain(flags) {
        let spec = q.spec().map_err(AgentError::Config)?;
        let target = owner(spec.target.clone())?;
        queues.push((spec, target));
    }
    let mut converters = Vec::new();
    let flags = args
        .converters
        .iter()
        .map(|c| fs_config::parse_converter_flag(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(AgentError::Config)?;
    for c in file.converter.into_iter().chain(flags) {
        let (spec, target) = c.spec().map_err(AgentError::Config)?;
        converters.push((spec, owner(target)?));
    }
    Ok(FsPipelineSpec { queues, converters })
}

struct FsPipelineSpec {
    queues: Vec<(fs_config::QueueSpec, String)>,
    converters: Vec<(crate::fs::converter::ConverterSpec, String)>,
}

/// Checks what the operator asked for, before touching the kernel, and finds
/// the processes `--match` names now.
pub fn resolve_targets(args: &Args) -> Result<Targets, AgentError> {
    if args.pids.is_empty() && args.matches.is_empty() {
        return Err(AgentError::NoTarget);
    }
    if args.matches.iter().any(|p| p.trim().is_empty()) {
        return Err(AgentError::Config("--match needs a non-empty pattern".into()));
    }
    let resolved = args.pids.iter().map(|&pid| tree::resolve(&args.proc_root, pid)).collect::<Result<Vec<_>, _>>()?;
    let names = name_targets(&resolved, &args.target_names)?;
    let mut targets = Targets::new(&resolved, &names);
    targets.set_patterns(args.matches.clone());
    for (pattern, p) in new_matches(args, &targets) {
        let name = targets.add_matched(&p, &pattern, &p.comm);
        tracing::info!(target_name = %name, "pid {} matches {pattern:?}", p.pid);
    }
    for p in targets.patterns().iter().filter(|p| !targets.iter().any(|t| t.alive && t.pattern.as_ref() == Some(p))) {
        tracing::info!("no process matches {p:?} yet: looking again every {}s", LIVENESS_INTERVAL.as_secs());
    }
    Ok(targets)
}

/// Processes a `--match` pattern names that are not watched yet.
fn new_matches(args: &Args, targets: &Targets) -> Vec<(String, tree::ResolvedPid)> {
    let own = tree::own_lineage(&args.proc_root);
    let mut out: Vec<(String, tree::ResolvedPid)> = Vec::new();
    for pattern in &args.matches {
        let taken = |pid: u32| targets.knows(pid) || out.iter().any(|(_, p)| p.pid == pid);
        for pid in tree::matching(&args.proc_root, pattern, &own, taken) {
            if let Ok(p) = tree::resolve(&args.proc_root, pid) {
                out.push((pattern.clone(), p));
            }
        }
    }
    out
}

/// Starts watching processes `--match` found after the start: a client
/// (re)started later. Its descendants, open sockets and (when discovery is
/// on) its config's queues and converters come with it.
fn adopt_matches(args: &Args, h: &Handler, map: &Mutex<KernelTargets>) {
    let found = new_matches(args, &h.targets.read().expect("targets lock"));
    for (pattern, p) in found {
        let config = client_config(args, p.pid).unwrap_or_else(|e| {
            tracing::warn!("{e}");
            None
        });
        let wanted = config.as_ref().and_then(|c| c.instance.clone()).unwrap_or_else(|| p.comm.clone());
        let name = h.targets.write().expect("targets lock").add_matched(&p, &pattern, &wanted);
        let mut map = map.lock().expect("target map lock");
        let mut tgids = vec![p.pid];
        let mut ok = map.insert(p.pid, p.pid).is_ok();
        for child in tree::descendants(&args.proc_root, p.pid) {
            ok &= map.insert(child, p.pid).is_ok();
            events::log(&h.targets.write().expect("targets lock").add_child(p.pid, child));
            tgids.push(child);
        }
        drop(map);
        for &pid in &tgids {
            h.tls.send(TlsWork::Process { pid, reported_ns: None });
        }
        if !ok {
            h.metrics.collector_errors.with_label_values(&["target_map"]).inc();
            tracing::warn!(target_name = %name, "the kernel's target map refused pid {} or a child", p.pid);
        }
        let mut sockets = h.sockets.lock().expect("socket map lock");
        if let Err(e) = seed_sockets(&mut sockets, &mut h.net.lock().expect("net lock"), &tgids, &args.proc_root) {
            tracing::warn!(target_name = %name, "open sockets of pid {}: {e}", p.pid);
        }
        drop(sockets);
        if let Some(c) = config {
            let queues = c.queues.into_iter().map(|q| (q, name.clone())).collect();
            let converters = c.converters.into_iter().map(|q| (q, name.clone())).collect();
            h.fs.lock().expect("fs lock").extend(queues, converters);
        }
        tracing::info!(target_name = %name, "pid {} ({}) matches {pattern:?}: watching it", p.pid, p.exe);
    }
}

fn kernel_release(proc_root: &Path) -> String {
    std::fs::read_to_string(proc_root.join("sys/kernel/osrelease")).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Puts the current descendants of every target into the kernel's target set.
fn seed_children(map: &mut KernelTargets, targets: &mut Targets, proc_root: &Path) -> Result<(), AgentError> {
    let roots: Vec<u32> = targets.iter().map(|t| t.pid).collect();
    for root in roots {
        for child in tree::descendants(proc_root, root) {
            map.insert(child, root)?;
            events::log(&targets.add_child(root, child));
        }
    }
    Ok(())
}

/// Connection ids of sockets found open: above those the kernel hands out.
static NEXT_SEEDED: AtomicU64 = AtomicU64::new(SEEDED_CONN);

/// Registers the TCP sockets processes already hold, in the kernel and the pipeline.
fn seed_sockets(
    sockets: &mut SocketMap,
    net: &mut NetPipeline,
    tgids: &[u32],
    proc_root: &Path,
) -> Result<(), AgentError> {
    for &tgid in tgids {
        for existing in existing_tcp(proc_root, tgid) {
            let (fd, info) = match existing {
                Existing::Listening { fd } => {
                    (fd, SockInfo { conn_id: 0, state: sock_state::CREATED, role: role::UNKNOWN })
                }
                Existing::Connected { fd, remote, role: r } => {
                    let id = NEXT_SEEDED.fetch_add(1, Ordering::Relaxed) + 1;
                    net.seed(tgid, id, r, remote);
                    let kernel_role = if r == Role::Server { role::SERVER } else { role::CLIENT };
                    (fd, SockInfo { conn_id: id, state: sock_state::CONNECTED, role: kernel_role })
                }
            };
            sockets
                .insert(SockKey { tgid, fd }, info, 0)
                .map_err(|source| AgentError::Map { name: MAP_SOCKETS, source })?;
        }
    }
    Ok(())
}

/// Every live process of every target: roots and their children.
fn live_processes(h: &Handler) -> Vec<u32> {
    h.targets
        .read()
        .expect("targets lock")
        .iter()
        .filter(|t| t.alive)
        .flat_map(|t| std::iter::once(t.pid).chain(t.children.iter().copied()))
        .collect()
}

/// Marks targets whose process is gone (their exit event may have been lost).
fn check_liveness(handler: &Handler, map: &Mutex<KernelTargets>) {
    let gone: Vec<u32> = handler
        .targets
        .read()
        .expect("targets lock")
        .iter()
        .filter(|t| t.alive && tree::resolve(&handler.proc_root, t.pid).is_err())
        .map(|t| t.pid)
        .collect();
    for pid in gone {
        let change = handler.targets.write().expect("targets lock").exited(pid, pid);
        map.lock().expect("target map lock").remove(pid);
        handler.process_gone(pid, monotonic_ns());
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
    let mut file = match &args.config {
        Some(path) => fs_config::read_file(path).map_err(AgentError::Config)?,
        None => FileConfig::default(),
    };
    let routes: Vec<String> = args.routes.iter().cloned().chain(std::mem::take(&mut file.route)).collect();
    let endpoints = Endpoints::new(&routes, args.max_endpoints).map_err(AgentError::InvalidRoute)?;
    let mut fs_spec = discover(&args, &mut targets)?;
    let configured = watches(&args, file, &targets)?;
    fs_spec.queues.extend(configured.queues);
    fs_spec.converters.extend(configured.converters);
    ebpf::privileges::check(&args.proc_root)?;
    let tracefs = ebpf::tracefs::ensure()?;

    let loader::Loaded { mut probes, targets: mut target_map, proc_events, net_events, fs_events, mut sockets, lost } =
        loader::load(&tracefs, loader::RingSizes { net: args.net_ring_kib * 1024, fs: args.fs_ring_kib * 1024 })?;
    // Roots go into the map before attaching (so the first fork is seen), the
    // descendant scan after (so a fork racing the attach is found by the scan).
    for t in targets.iter() {
        target_map.insert(t.pid, t.pid)?;
    }
    probes.attach_all()?;
    seed_children(&mut target_map, &mut targets, &args.proc_root)?;

    let metrics = Arc::new(Metrics::new(started));
    for kind in EventKind::ALL {
        metrics.events.with_label_values(&[kind.name()]);
    }
    metrics.programs_attached.set(probes.attached().len() as i64);
    let targets = Arc::new(RwLock::new(targets));
    let recent = Arc::new(Mutex::new(Recent::default()));
    let mut net =
        NetPipeline::new(endpoints, HttpMetrics::new(&metrics), recent.clone(), targets.clone(), args.conn_limits());
    let tgids: Vec<u32> = targets
        .read()
        .expect("targets lock")
        .iter()
        .flat_map(|t| std::iter::once(t.pid).chain(t.children.iter().copied()))
        .collect();
    seed_sockets(&mut sockets, &mut net, &tgids, &args.proc_root)?;
    let net = Arc::new(Mutex::new(net));
    let fs = FsPipeline::new(fs_spec.queues, fs_spec.converters, FsMetrics::new(&metrics), args.proc_root.clone());
    let fs = Arc::new(Mutex::new(fs));

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
        programs_expected: loader::all_programs().count(),
        programs_attached: RwLock::new(probes.attached().to_vec()),
        tls_libraries: RwLock::new(Vec::new()),
    });
    let probes = Arc::new(Mutex::new(probes));
    let tls = tls_attach::start(probes.clone(), status.clone(), metrics.clone(), args.proc_root.clone())?;
    let handler = Handler {
        targets: targets.clone(),
        metrics: metrics.clone(),
        net: net.clone(),
        sockets: Arc::new(Mutex::new(sockets)),
        fs: fs.clone(),
        proc_root: Arc::new(args.proc_root.clone()),
        tls,
    };
    for pid in live_processes(&handler) {
        handler.tls.send(TlsWork::Process { pid, reported_ns: None });
    }
    let shared = Shared { targets, metrics, lost, status: status.clone(), recent, net: net.clone(), fs: fs.clone() };

    let proc_reader = {
        let h = handler.clone();
        tokio::spawn(ebpf::reader::drain(proc_events, move |record| h.proc(record), || {}))
    };
    let net_reader = {
        let h = handler.clone();
        let net = net.clone();
        tokio::spawn(ebpf::reader::drain(
            net_events,
            move |record| h.net(record),
            move || net.lock().expect("net lock").drained(),
        ))
    };
    // The directories are re-read right after the file ring was drained, in
    // the same task: a re-read must not see renames whose events are still
    // waiting in the ring (they arrive in batches), or it would "correct"
    // state that is only late.
    let fs_reader = {
        let h = handler.clone();
        let every = Duration::from_secs(args.reconcile_interval.max(1));
        let mut next = std::time::Instant::now() + every;
        let after = move || {
            if std::time::Instant::now() >= next {
                fs.lock().expect("fs lock").reconcile(false);
                next = std::time::Instant::now() + every;
            }
        };
        tokio::spawn(ebpf::reader::drain(fs_events, move |record| h.fs(record), after))
    };
    let target_map = Mutex::new(target_map);
    if args.program_stats {
        if let Some(stats) = ProgramStats::new(probes.clone()) {
            shared.metrics.register(Box::new(stats));
        }
    }
    let listen = args.listen;
    let liveness = tokio::spawn(async move {
        let mut tick = tokio::time::interval(LIVENESS_INTERVAL);
        loop {
            tick.tick().await;
            check_liveness(&handler, &target_map);
            if !args.matches.is_empty() {
                adopt_matches(&args, &handler, &target_map);
            }
            handler.tls.send(TlsWork::Recheck(live_processes(&handler)));
        }
    });

    let served = http::serve(listen, shared, shutdown_signal()).await;
    proc_reader.abort();
    net_reader.abort();
    fs_reader.abort();
    liveness.abort();
    drop(probes);
    tracing::info!("programs detached");
    served
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
