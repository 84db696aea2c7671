//! Which processes are targets: the ones named at start, those `--match`
//! finds later (adopted with their children, sockets and queues), and the
//! liveness loop that notices exits the kernel's events did not report.

use std::{collections::BTreeSet, path::Path, time::Duration};

use crate::sync::{Locked, ReadWrite};
use crate::{
    cli::Args,
    clock::monotonic_ns,
    ebpf::KernelTargets,
    error::AgentError,
    events::{self, Handler},
    metrics::RateLimitedLog,
    net::dependency::service_addresses,
    proc::{
        admission::Admission,
        identity::{self, Liveness, ProcId, Stat},
        targets::name_targets,
        tree, Targets,
    },
    seeding::seed_sockets,
    specs::client_config,
    tls_attach::TlsWork,
};

/// How often targets are checked against procfs, in case an exit event was lost.
pub const LIVENESS_INTERVAL: Duration = Duration::from_secs(2);

/// One round of the liveness loop: exits missed, new `--match` processes,
/// and the TLS probes re-checked against what the targets map.
pub fn liveness_round(args: &Args, h: &Handler) {
    check_liveness(h);
    if !args.matches.is_empty() {
        adopt_matches(args, h);
    }
    h.tls.send(TlsWork::Recheck(live_processes(h)));
}

/// Checks what the operator asked for, before touching the kernel, and finds
/// the processes `--match` names now (those `admission` allows).
pub fn resolve_targets(args: &Args, admission: &Admission) -> Result<Targets, AgentError> {
    if args.pids.is_empty() && args.matches.is_empty() {
        return Err(AgentError::NoTarget);
    }
    if args.matches.iter().any(|p| p.trim().is_empty()) {
        return Err(AgentError::Config("--match needs a non-empty pattern".into()));
    }
    let resolved =
        args.pids.iter().map(|&pid| tree::resolve_target(&args.proc_root, pid)).collect::<Result<Vec<_>, _>>()?;
    let names = name_targets(&resolved, &args.target_names)?;
    let mut targets = Targets::new(&resolved, &names);
    targets.set_patterns(args.matches.clone());
    if !args.matches.is_empty() {
        let users: Vec<String> = admission.users().iter().map(|u| u.to_string()).collect();
        tracing::info!("--match adopts processes of uid {} only", users.join(", "));
    }
    for (pattern, p) in new_matches(args, &targets, admission) {
        let name = targets.add_matched(&p, &pattern, p.default_name());
        tracing::info!(target_name = %name, "pid {} matches {pattern:?}", p.pid);
    }
    for p in targets.patterns().iter().filter(|p| !targets.iter().any(|t| t.alive && t.pattern.as_ref() == Some(p))) {
        tracing::info!("no process matches {p:?} yet: looking again every {}s", LIVENESS_INTERVAL.as_secs());
    }
    Ok(targets)
}

/// Processes a `--match` pattern names that are not watched yet and that
/// `admission` allows. Everything is read between two reads of the start
/// time: a pid reused meanwhile is not judged by another process's traits.
fn new_matches(args: &Args, targets: &Targets, admission: &Admission) -> Vec<(String, tree::ResolvedPid)> {
    let own = tree::own_lineage(&args.proc_root);
    let mut out: Vec<(String, tree::ResolvedPid)> = Vec::new();
    let mut matching = BTreeSet::new();
    for pattern in &args.matches {
        let taken = |pid: u32| targets.knows(pid) || out.iter().any(|(_, p)| p.pid == pid);
        for pid in tree::matching(&args.proc_root, pattern, &own, taken) {
            matching.insert(pid);
            let Ok(p) = tree::resolve_target(&args.proc_root, pid) else { continue };
            let still = tree::cmdline(&args.proc_root, pid).is_some_and(|c| c.contains(pattern.as_str()));
            if still && admission.admit(&p, pattern) && p.id().check(&args.proc_root) == Liveness::Alive {
                out.push((pattern.clone(), p));
            }
        }
    }
    admission.retain(&matching);
    out
}

/// Starts watching processes `--match` found after the start: a client
/// (re)started later. Its descendants, open sockets and (when discovery is
/// on) its config's queues and converters come with it.
fn adopt_matches(args: &Args, h: &Handler) {
    let found = new_matches(args, &h.targets.read_locked(), &h.admission);
    for (pattern, p) in found {
        let config = client_config(args, p.pid).unwrap_or_else(|e| {
            tracing::warn!("{e}");
            None
        });
        let wanted = config.as_ref().and_then(|c| c.instance.clone()).unwrap_or_else(|| p.default_name().to_string());
        let name = h.targets.write_locked().add_matched(&p, &pattern, &wanted);
        // Resolved before any lock is taken: a name lookup may wait on DNS.
        if let Some(addrs) = config.as_ref().and_then(|c| c.service.as_deref()).map(service_addresses) {
            h.net.locked().set_service(&name, addrs);
        }
        let mut map = h.kernel_targets.locked();
        let mut ids = vec![p.id()];
        let mut ok = map.insert(p.pid, p.pid).is_ok();
        for child in tree::descendants(&args.proc_root, p.pid) {
            ok &= map.insert(child.pid, p.pid).is_ok();
            events::log(&h.targets.write_locked().add_child(p.pid, child.pid, Some(child.start)));
            ids.push(child);
        }
        drop(map);
        for &id in &ids {
            h.tls.send(TlsWork::Adopted(id));
        }
        let tgids: Vec<u32> = ids.iter().map(|id| id.pid).collect();
        if !ok {
            h.metrics.collector_errors.with_label_values(&["target_map"]).inc();
            tracing::warn!(target_name = %name, "the kernel's target map refused pid {} or a child", p.pid);
        }
        let mut sockets = h.sockets.locked();
        let mut net = h.net.locked();
        // Just inserted: no exec counted yet.
        if let Err(e) = seed_sockets(&mut sockets, &mut net, &tgids, &args.proc_root, |_| 0) {
            tracing::warn!(target_name = %name, "open sockets of pid {}: {e}", p.pid);
        }
        drop((net, sockets));
        let mut fs = h.fs.locked();
        if let Some(c) = config {
            let queues = c.queues.into_iter().map(|q| (q, name.clone())).collect();
            let converters = c.converters.into_iter().map(|q| (q, name.clone())).collect();
            fs.extend(queues, converters);
        }
        // Watches from the flags and the TOML file meant for every client.
        fs.adopt(&name);
        drop(fs);
        tracing::info!(target_name = %name, "pid {} ({}) matches {pattern:?}: watching it", p.pid, p.exe);
    }
}

/// Puts the current descendants of every target into the kernel's target set.
pub fn seed_children(map: &mut KernelTargets, targets: &mut Targets, proc_root: &Path) -> Result<(), AgentError> {
    let roots: Vec<u32> = targets.iter().map(|t| t.pid).collect();
    for root in roots {
        for child in tree::descendants(proc_root, root) {
            map.insert(child.pid, root)?;
            events::log(&targets.add_child(root, child.pid, Some(child.start)));
        }
    }
    Ok(())
}

/// Every live process of every target whose start time is known: roots and their children.
pub fn live_processes(h: &Handler) -> Vec<ProcId> {
    h.targets.read_locked().live_processes()
}

/// Why the liveness check could not read a process, logged at most once a minute.
static UNREADABLE: RateLimitedLog = RateLimitedLog::new(Duration::from_secs(60));

/// Marks target processes that are gone (their exit event may have been
/// lost) or whose pid now names another process. A process whose `/proc`
/// entry cannot be read for another reason is kept: the error is counted.
fn check_liveness(handler: &Handler) {
    // (root, pid, start time when known)
    let watched: Vec<(u32, u32, Option<u64>)> = handler
        .targets
        .read_locked()
        .iter()
        .filter(|t| t.alive)
        .flat_map(|t| {
            let children = t.children.with_starts().map(|(pid, start)| (t.pid, pid, start));
            std::iter::once((t.pid, t.pid, Some(t.start))).chain(children)
        })
        .collect();
    for (root, pid, start) in watched {
        let now = identity::stat(&handler.proc_root, pid);
        let verdict = match (start, now) {
            (Some(start), now) => identity::judge(start, now),
            // A child whose start time its fork event could not read: learnt now.
            (None, Stat::Running { start }) => {
                handler.targets.write_locked().set_child_start(root, pid, start);
                Liveness::Alive
            }
            (None, now) => identity::judge(0, now),
        };
        match verdict {
            Liveness::Alive => {}
            Liveness::Unknown(kind) => {
                handler.metrics.proc_read_errors.with_label_values(&[kind.label()]).inc();
                UNREADABLE.warn(format_args!(
                    "cannot tell whether pid {pid} still runs ({}): still watching it",
                    kind.label()
                ));
            }
            Liveness::Exited | Liveness::Reused => {
                let change = handler.targets.write_locked().exited(root, pid);
                // The kernel drops exited processes from its set itself; a
                // reused pid is there only if a target forked it, and stays.
                if verdict == Liveness::Exited {
                    handler.kernel_targets.locked().remove(pid);
                } else {
                    tracing::info!("pid {pid} belongs to another process now: the watched one has exited");
                }
                // Its TLS probes go at the re-check that follows.
                handler.process_gone(pid, monotonic_ns());
                events::log(&change);
            }
        }
    }
}
