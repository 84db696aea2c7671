//! Wiring: validate the targets, load and attach the probes, follow events,
//! serve metrics until SIGINT/SIGTERM, then detach.

use std::{
    path::Path,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use pywats_agent_ebpf::abi::EventKind;
use tokio::signal::unix::{signal, SignalKind};

use crate::sync::{Locked, ReadWrite};
use crate::{
    capabilities,
    cli::Args,
    ebpf::{self, loader, Probes},
    error::AgentError,
    fs::{
        config::{self as fs_config, FileConfig},
        metrics::FsMetrics,
        watches::watches,
        worker_status::WorkerStatus,
        FsPipeline,
    },
    http::{self, AgentStatus, Shared},
    metrics::{LostEvents, LostEventsHandle, MapInsertFailures, Metrics, ProgramStats},
    net::{
        dependency::{Dependencies, DependencyGauges},
        endpoint::Endpoints,
        metrics::HttpMetrics,
        recent::Recent,
        NetPipeline,
    },
    proc::{
        admission::{self, Admission},
        identity::ReadError,
        sampler::ProcSampler,
        Targets,
    },
    readers::{FsReader, NetReader},
    supervise::{self, Supervisor},
    target::{
        self, matching,
        membership::{Membership, Settle},
        tls, Lifecycle,
    },
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
    let joining = matching::at_start(&args, &admission)?;
    let mut file = match &args.config {
        Some(path) => fs_config::read_file(path).map_err(AgentError::Config)?,
        None => FileConfig::default(),
    };
    let routes: Vec<String> = args.routes.iter().cloned().chain(std::mem::take(&mut file.route)).collect();
    let endpoints = Endpoints::new(&routes, args.max_endpoints).map_err(AgentError::InvalidRoute)?;
    let names: Vec<String> = joining.iter().map(|j| j.name.clone()).collect();
    let first_pid = joining.iter().find(|j| j.pattern.is_none()).map(|j| j.name.as_str());
    let templates = watches(&args, file, &names, first_pid)?;
    ebpf::privileges::check(&args.proc_root)?;
    let tracefs = ebpf::tracefs::ensure()?;

    let loader::Loaded {
        mut probes,
        targets: mut kernel,
        proc_events,
        net_events,
        fs_events,
        sockets,
        lost,
        insert_failures,
    } = loader::load(&tracefs, loader::RingSizes { net: args.net_ring_kib * 1024, fs: args.fs_ring_kib * 1024 })?;
    probes.attach_all()?;
    let features = probes.features();
    features.log();
    features.check(&args.require)?;
    // With --match, the kernel takes in processes that exec an allowed
    // executable at once; the lifecycle judges them (`Lifecycle::candidate`).
    if !args.matches.is_empty() {
        kernel.take_in_at_exec(&admission.exec_prefixes())?;
    }

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
    let mut registry = Targets::default();
    registry.set_patterns(args.matches.clone());
    let targets = Arc::new(RwLock::new(registry));
    let recent = Arc::new(Mutex::new(Recent::default()));
    let deps = Arc::new(Mutex::new(Dependencies::new(Duration::from_secs(args.dependency_window))));
    metrics.register(Box::new(DependencyGauges::new(deps.clone())));
    let net = Arc::new(Mutex::new(NetPipeline::new(
        endpoints,
        HttpMetrics::new(&metrics),
        recent.clone(),
        targets.clone(),
        args.net_limits(),
        deps.clone(),
    )));
    let sockets = Arc::new(Mutex::new(sockets));
    let fs = Arc::new(Mutex::new(FsPipeline::new(
        Vec::new(),
        Vec::new(),
        templates,
        FsMetrics::new(&metrics),
        args.proc_root.clone(),
        targets.clone(),
    )));
    metrics.register(Box::new(WorkerStatus::new(fs.clone(), args.queue_stall_secs)));

    let lost = Arc::new(LostEvents::new(lost));
    metrics.register(Box::new(LostEventsHandle(lost.clone())));
    metrics.register(Box::new(MapInsertFailures::new(insert_failures)));
    let sampler = ProcSampler::new(targets.clone(), args.proc_root.clone(), metrics.collector_errors.clone());
    let baselines = sampler.baselines();
    metrics.register(Box::new(sampler));
    metrics.register(Box::new(crate::metrics::ProcessMetrics::new(&args.proc_root, metrics.collector_errors.clone())));

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
    let tls = tls::start(&mut parts, probes.clone(), status.clone(), metrics.clone(), args.proc_root.clone())?;
    let membership = Arc::new(Membership::default());
    let args = Arc::new(args);
    let mut life = Lifecycle {
        args: args.clone(),
        registry: targets.clone(),
        kernel,
        net: net.clone(),
        sockets: sockets.clone(),
        tls: tls.clone(),
        fs: fs.clone(),
        sampler: baselines,
        deps: deps.clone(),
        metrics: metrics.clone(),
        admission,
        membership: membership.clone(),
        leftovers: Default::default(),
    };
    // The programs are attached: a child forked from now on is reported,
    // and one forked before is found by the scan each join makes.
    for j in joining {
        life.join(j);
    }
    let shared = Shared {
        targets: targets.clone(),
        metrics: metrics.clone(),
        lost,
        status: status.clone(),
        recent,
        net: net.clone(),
        fs: fs.clone(),
        deps,
        heartbeats: parts.heartbeats(),
    };

    let stop = parts.stop_flag();
    {
        let stop = stop.clone();
        parts.thread("lifecycle", move |beat| {
            let fault = supervise::fault_injected("lifecycle");
            target::owner::run(life, proc_events, &stop, beat, fault)
        })?;
    }
    {
        let settle = Settle::new(membership.clone(), targets.clone());
        let reader = NetReader { metrics: metrics.clone(), net, sockets, settle };
        let stop = stop.clone();
        parts.thread("net_reader", move |beat| {
            let fault = supervise::fault_injected("net_reader");
            let drained = |r: &mut NetReader| {
                beat.beat();
                supervise::stall_injected("net_reader", &stop);
                r.net.locked().drained();
            };
            ebpf::reader::drain(net_events, &mut { reader }, |r, record| r.record(record), drained, &stop, fault)
        })?;
    }
    // The directories are re-read right after the file ring was drained, on
    // the same thread: a re-read must not see renames whose events are still
    // waiting in the ring (they arrive in batches), or it would "correct"
    // state that is only late. The folders are read without the fs lock.
    {
        let settle = Settle::new(membership, targets.clone());
        let mut reader = FsReader { metrics, fs, targets, tls, proc_root: args.proc_root.clone(), settle };
        let (stop, every) = (stop.clone(), Duration::from_secs(args.reconcile_interval.max(1)));
        parts.thread("fs_reader", move |beat| {
            let mut next = std::time::Instant::now() + every;
            let drained = |r: &mut FsReader| {
                beat.beat();
                supervise::stall_injected("fs_reader", &stop);
                if std::time::Instant::now() >= next {
                    let plan = r.fs.locked().scan_plan();
                    let scanned = plan.read();
                    r.fs.locked().apply_scan(scanned);
                    next = std::time::Instant::now() + every;
                }
            };
            let fault = supervise::fault_injected("fs_reader");
            ebpf::reader::drain(fs_events, &mut reader, |r, record| r.record(record), drained, &stop, fault)
        })?;
    }
    if let Some(stats) = program_stats {
        shared.metrics.register(Box::new(stats));
    }
    shared.metrics.register(Box::new(supervise::HeartbeatAges::new(parts.heartbeats())));

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
            shut_down(parts, probes);
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
    shut_down(parts, probes);
    Err(AgentError::PartStopped { part: failure.part, reason: failure.reason })
}

/// Stops the parts (each within the deadline) and detaches the programs:
/// a part left stuck may hold the probes, and then the process's exit
/// detaches them.
fn shut_down(parts: Supervisor, probes: Arc<Mutex<Probes>>) {
    let left = parts.shut_down();
    if left.is_empty() {
        drop(probes);
        tracing::info!("programs detached");
    }
}
