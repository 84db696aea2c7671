//! Wiring: validate the targets, load and attach the probes, follow events,
//! serve metrics until SIGINT/SIGTERM, then detach.

use std::{
    path::Path,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use pywats_agent_ebpf::abi::EventKind;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    adopt::{self, live_processes, resolve_targets, seed_children},
    capabilities,
    cli::Args,
    ebpf::{self, loader, Probes},
    error::AgentError,
    events::Handler,
    fs::{
        config::{self as fs_config, FileConfig},
        metrics::FsMetrics,
        worker_status::WorkerStatus,
        FsPipeline,
    },
    http::{self, AgentStatus, Shared},
    metrics::{LostEvents, LostEventsHandle, MapInsertFailures, Metrics, ProgramStats},
    net::{
        dependency::{service_addresses, Dependencies, DependencyGauges},
        endpoint::Endpoints,
        metrics::HttpMetrics,
        recent::Recent,
        NetPipeline,
    },
    proc::{
        admission::{self, Admission},
        identity::ReadError,
        sampler::ProcSampler,
    },
    seeding::seed_sockets,
    specs::{discover, watches},
    supervise::{self, Supervisor},
    sync::{Locked, ReadWrite},
    tls_attach::{self, TlsWork},
};

/// How long a stopped part is shown on `/health/ready` before the agent exits:
/// long enough for a probe or a scrape to see the reason.
const STOPPED_GRACE: Duration = Duration::from_secs(5);

fn kernel_release(proc_root: &Path) -> String {
    std::fs::read_to_string(proc_root.join("sys/kernel/osrelease")).map(|s| s.trim().to_string()).unwrap_or_default()
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

/// Loads and attaches, drops the capabilities no later step needs, starts
/// the parts, then serves until a signal or a part stops.
pub fn run(args: Args) -> Result<(), AgentError> {
    let started = SystemTime::now();
    // SIGHUP re-reads the web config once the server runs; until then its
    // default action would end the agent while it loads.
    // SAFETY: sets the disposition of one signal to "ignore"; no handler runs.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    // The server's access first: a bad file is the operator's to fix (exit 2),
    // found before anything is loaded into the kernel (and read while the
    // agent still has every capability).
    let access_files =
        http::access::AccessFiles { web_config: args.web_config.clone(), token_file: args.auth_token_file.clone() };
    let access = access_files.load().map_err(AgentError::WebConfig)?;
    let server = http::ServerConfig {
        listen: args.listen,
        files: access_files,
        access,
        routes: http::RouteOptions { debug_requests: args.debug_requests, auth_probes: args.auth_probes },
        limits: http::limits::ServerLimits::from_args(&args),
    };
    let admission =
        Admission::new(&args.match_users, &args.match_exes, &admission::config_files(args.pywats_config.as_deref()))?;
    let mut targets = resolve_targets(&args, &admission)?;
    let mut file = match &args.config {
        Some(path) => fs_config::read_file(path).map_err(AgentError::Config)?,
        None => FileConfig::default(),
    };
    let routes: Vec<String> = args.routes.iter().cloned().chain(std::mem::take(&mut file.route)).collect();
    let endpoints = Endpoints::new(&routes, args.max_endpoints).map_err(AgentError::InvalidRoute)?;
    let mut fs_spec = discover(&args, &mut targets)?;
    let (configured, templates) = watches(&args, file, &targets)?;
    fs_spec.queues.extend(configured.queues);
    fs_spec.converters.extend(configured.converters);
    ebpf::privileges::check(&args.proc_root)?;
    let tracefs = ebpf::tracefs::ensure()?;

    let loader::Loaded {
        mut probes,
        targets: mut target_map,
        proc_events,
        net_events,
        fs_events,
        mut sockets,
        lost,
        insert_failures,
    } = loader::load(&tracefs, loader::RingSizes { net: args.net_ring_kib * 1024, fs: args.fs_ring_kib * 1024 })?;
    // Roots go into the map before attaching (so the first fork is seen), the
    // descendant scan after (so a fork racing the attach is found by the scan).
    for t in targets.iter() {
        target_map.insert(t.pid, t.pid)?;
    }
    probes.attach_all()?;
    let features = probes.features();
    features.log();
    features.check(&args.require)?;
    seed_children(&mut target_map, &mut targets, &args.proc_root)?;

    let metrics = Arc::new(Metrics::new(started));
    for kind in EventKind::ALL {
        metrics.events.with_label_values(&[kind.name()]);
    }
    for kind in ReadError::ALL {
        metrics.proc_read_errors.with_label_values(&[kind.label()]);
    }
    metrics.programs_attached.set(probes.attached().len() as i64);
    metrics.register(Box::new(features.gauge()));
    metrics.register(Box::new(admission.metric()));
    let targets = Arc::new(RwLock::new(targets));
    let recent = Arc::new(Mutex::new(Recent::default()));
    let deps = Arc::new(Mutex::new(Dependencies::new(Duration::from_secs(args.dependency_window))));
    for (target, address) in &fs_spec.services {
        deps.locked().set_service(target, service_addresses(address));
    }
    metrics.register(Box::new(DependencyGauges::new(deps.clone())));
    let mut net = NetPipeline::new(
        endpoints,
        HttpMetrics::new(&metrics),
        recent.clone(),
        targets.clone(),
        args.conn_limits(),
        deps.clone(),
    );
    let tgids: Vec<u32> =
        targets.read_locked().iter().flat_map(|t| std::iter::once(t.pid).chain(t.children.iter())).collect();
    seed_sockets(&mut sockets, &mut net, &tgids, &args.proc_root, |tgid| target_map.exec_gen(tgid))?;
    let net = Arc::new(Mutex::new(net));
    let mut fs = FsPipeline::new(
        fs_spec.queues,
        fs_spec.converters,
        templates,
        FsMetrics::new(&metrics),
        args.proc_root.clone(),
        targets.clone(),
    );
    let matched: Vec<String> =
        targets.read_locked().iter().filter(|t| t.pattern.is_some()).map(|t| t.name.clone()).collect();
    for name in matched {
        fs.adopt(&name);
    }
    let fs = Arc::new(Mutex::new(fs));
    metrics.register(Box::new(WorkerStatus::new(fs.clone(), args.queue_stall_secs)));

    let lost = Arc::new(LostEvents::new(lost));
    metrics.register(Box::new(LostEventsHandle(lost.clone())));
    metrics.register(Box::new(MapInsertFailures::new(insert_failures)));
    let sampler = ProcSampler::new(targets.clone(), args.proc_root.clone(), metrics.collector_errors.clone());
    for t in targets.read_locked().iter() {
        sampler.prime(t.pid);
        tracing::info!(target_name = %t.name, "watching pid {} ({}) and {} child process(es)", t.pid, t.exe, t.children.len());
    }
    metrics.register(Box::new(sampler));

    let status = Arc::new(AgentStatus {
        started,
        kernel_release: kernel_release(&args.proc_root),
        node: args.node_name.clone().unwrap_or_default(),
        programs_expected: probes.expected(),
        features,
        programs_attached: RwLock::new(probes.attached().to_vec()),
        tls_libraries: RwLock::new(Vec::new()),
        tls_probes: RwLock::new(Vec::new()),
        stopped: RwLock::new(None),
    });
    let probes = Arc::new(Mutex::new(probes));
    // Turning the kernel's statistics on needs CAP_SYS_ADMIN: before the drop.
    let program_stats = if args.program_stats { ProgramStats::new(probes.clone()) } else { None };
    // Everything that needs more privilege is done, and no thread runs yet
    // (capabilities are per thread, copied to the threads a thread starts).
    if args.keep_capabilities {
        tracing::info!("--keep-capabilities: keeping every capability the agent started with");
    } else {
        capabilities::drop_unneeded(args.listen.port())?;
    }
    let mut parts = Supervisor::new();
    let tls = tls_attach::start(&mut parts, probes.clone(), status.clone(), metrics.clone(), args.proc_root.clone())?;
    let handler = Handler {
        targets: targets.clone(),
        metrics: metrics.clone(),
        net: net.clone(),
        sockets: Arc::new(Mutex::new(sockets)),
        fs: fs.clone(),
        proc_root: Arc::new(args.proc_root.clone()),
        tls,
        kernel_targets: Arc::new(Mutex::new(target_map)),
        admission: Arc::new(admission),
    };
    for id in live_processes(&handler) {
        handler.tls.send(TlsWork::Adopted(id));
    }
    let shared =
        Shared { targets, metrics, lost, status: status.clone(), recent, net: net.clone(), fs: fs.clone(), deps };

    let stop = parts.stop_flag();
    {
        let (h, stop) = (handler.clone(), stop.clone());
        parts.thread("proc_reader", move || {
            let fault = supervise::fault_injected("proc_reader");
            ebpf::reader::drain(proc_events, |record| h.proc(record), || {}, &stop, fault)
        })?;
    }
    {
        let (h, net, stop) = (handler.clone(), net.clone(), stop.clone());
        parts.thread("net_reader", move || {
            let fault = supervise::fault_injected("net_reader");
            ebpf::reader::drain(net_events, |record| h.net(record), || net.locked().drained(), &stop, fault)
        })?;
    }
    // The directories are re-read right after the file ring was drained, on
    // the same thread: a re-read must not see renames whose events are still
    // waiting in the ring (they arrive in batches), or it would "correct"
    // state that is only late. The folders are read without the fs lock.
    {
        let (h, stop) = (handler.clone(), stop.clone());
        let every = Duration::from_secs(args.reconcile_interval.max(1));
        parts.thread("fs_reader", move || {
            let mut next = std::time::Instant::now() + every;
            let after = || {
                if std::time::Instant::now() >= next {
                    let plan = fs.locked().scan_plan();
                    let scanned = plan.read();
                    fs.locked().apply_scan(scanned);
                    next = std::time::Instant::now() + every;
                }
            };
            let fault = supervise::fault_injected("fs_reader");
            ebpf::reader::drain(fs_events, |record| h.fs(record), after, &stop, fault)
        })?;
    }
    if let Some(stats) = program_stats {
        shared.metrics.register(Box::new(stats));
    }
    {
        let stop = stop.clone();
        parts.thread("liveness", move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                adopt::liveness_round(&args, &handler);
                sleep_unless(&stop, adopt::LIVENESS_INTERVAL);
            }
            Ok(())
        })?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| AgentError::Io(std::io::Error::other(format!("cannot start the runtime: {e}"))))?;
    runtime.block_on(serve(server, shared, parts, probes, status))
}

/// Serves until a signal, or until a part stops: then reports it for a grace
/// period (readiness 503 with the reason) and exits non-zero.
async fn serve(
    server: http::ServerConfig,
    shared: Shared,
    mut parts: Supervisor,
    probes: Arc<Mutex<Probes>>,
    status: Arc<AgentStatus>,
) -> Result<(), AgentError> {
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = stopped_rx => {}
        }
    };
    let server = tokio::spawn(http::serve(server, shared, shutdown));
    let failure = tokio::select! {
        served = server => {
            parts.shut_down();
            drop(probes);
            tracing::info!("programs detached");
            return served.unwrap_or_else(|e| Err(AgentError::Io(std::io::Error::other(e))));
        }
        stopped = parts.stopped() => stopped,
    };
    tracing::error!(
        part = failure.part,
        "{} stopped: {}; exiting in {}s",
        failure.part,
        failure.reason,
        STOPPED_GRACE.as_secs()
    );
    *status.stopped.write_locked() = Some(failure.clone());
    tokio::time::sleep(STOPPED_GRACE).await;
    let _ = stopped_tx.send(());
    parts.shut_down();
    drop(probes);
    Err(AgentError::PartStopped { part: failure.part, reason: failure.reason })
}

/// Sleeps `d` in short steps, returning early once `stop` is set (steps of
/// 200 ms: shutdown waits at most that long for it, and an idle agent wakes
/// for it 5 times a second).
fn sleep_unless(stop: &std::sync::atomic::AtomicBool, d: Duration) {
    let step = Duration::from_millis(200);
    let mut left = d;
    while !left.is_zero() && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(step.min(left));
        left = left.saturating_sub(step);
    }
}
