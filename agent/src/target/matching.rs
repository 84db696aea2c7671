//! Which processes become targets: those `--pid` names at start, and those a
//! `--match` pattern finds, at start and at every liveness round after.

use std::collections::{BTreeSet, HashMap};

use crate::{
    cli::Args,
    error::AgentError,
    proc::{
        admission::{Admission, Rejected},
        identity::Liveness,
        k8s::PodIdentity,
        targets::name_targets,
        tree::{self, ResolvedPid},
    },
    target::{config, owner::LIVENESS_INTERVAL, Joining},
};

/// Checks what the operator asked for, before touching the kernel, and
/// returns the processes to join at start: the `--pid` ones (named by
/// `--target-name`, else their client's instance id, else their process
/// name), then those `--match` finds now.
pub fn at_start(args: &Args, admission: &Admission) -> Result<Vec<Joining>, AgentError> {
    if args.pids.is_empty() && args.matches.is_empty() {
        return Err(AgentError::NoTarget);
    }
    if args.matches.iter().any(|p| p.trim().is_empty()) {
        return Err(AgentError::Config("--match needs a non-empty pattern".into()));
    }
    let resolved =
        args.pids.iter().map(|&pid| tree::resolve_target(&args.proc_root, pid)).collect::<Result<Vec<_>, _>>()?;
    let mut names = name_targets(&resolved, &args.target_names)?;
    let mut out = Vec::new();
    for (i, p) in resolved.into_iter().enumerate() {
        let config = match config::client_config(args, p.pid) {
            Ok(c) => c,
            // A config the operator named must work; one we only guessed may not.
            Err(e) if args.pywats_config.is_some() => return Err(AgentError::Config(e)),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        };
        if let Some(instance) = config.as_ref().and_then(|c| c.instance.clone()) {
            if i >= args.target_names.len() && !names.contains(&instance) {
                tracing::info!("target pid {} is pyWATS instance {instance:?}", p.pid);
                names[i] = instance;
            }
        }
        out.push(Joining { process: p, pattern: None, name: names[i].clone(), config, exec_ns: None });
    }
    if !args.matches.is_empty() {
        let users: Vec<String> = admission.users().iter().map(|u| u.to_string()).collect();
        tracing::info!("--match adopts processes of uid {} only", users.join(", "));
    }
    let taken = |pid: u32| out.iter().any(|j: &Joining| j.process.pid == pid);
    let found = new_matches(args, taken, admission);
    for (i, (pattern, p)) in found.into_iter().enumerate() {
        if i < args.max_targets {
            out.push(joining(args, p, pattern));
        } else {
            admission.reject(&p, &pattern, Rejected::Limit);
        }
    }
    for p in args.matches.iter().filter(|p| !out.iter().any(|j| j.pattern.as_ref() == Some(*p))) {
        tracing::info!("no process matches {p:?} yet: looking again every {}s", LIVENESS_INTERVAL.as_secs());
    }
    Ok(out)
}

/// Processes `--match` found since the last look, not watched yet, with the
/// pattern that found them.
pub fn later(args: &Args, known: impl Fn(u32) -> bool, admission: &Admission) -> Vec<(String, ResolvedPid)> {
    new_matches(args, known, admission)
}

/// A process `pattern` found joins under its client's instance id, else its
/// pod's or process's name.
pub fn joining(args: &Args, p: ResolvedPid, pattern: String) -> Joining {
    let config = config::guessed(args, p.pid);
    let name = config.as_ref().and_then(|c| c.instance.clone()).unwrap_or_else(|| p.default_name().to_string());
    Joining { process: p, pattern: Some(pattern), name, config, exec_ns: None }
}

/// Processes a `--match` pattern names that are not watched yet and that
/// `admission` allows (the topmost of those in a tree: a wrapper that is no
/// Python interpreter does not hide the client it started). Everything is
/// read between two reads of the start time: a pid reused meanwhile is not
/// judged by another process's traits.
fn new_matches(args: &Args, watched: impl Fn(u32) -> bool, admission: &Admission) -> Vec<(String, ResolvedPid)> {
    let own = tree::own_lineage(&args.proc_root);
    let mut out: Vec<(String, ResolvedPid)> = Vec::new();
    let mut matching = BTreeSet::new();
    for pattern in &args.matches {
        let mut admitted = HashMap::new();
        let taken = |pid: u32| watched(pid) || out.iter().any(|(_, p)| p.pid == pid);
        let admit = |pid: u32| {
            matching.insert(pid);
            // Only procfs is read before the process is admitted.
            let Ok(p) = tree::resolve(&args.proc_root, pid) else { return false };
            let ok = admission.admit(&p, pattern);
            if ok {
                admitted.insert(pid, p);
            }
            ok
        };
        for pid in tree::matching(&args.proc_root, pattern, &own, taken, admit) {
            let Some(mut p) = admitted.remove(&pid) else { continue };
            let still = tree::cmdline(&args.proc_root, pid).is_some_and(|c| c.contains(pattern.as_str()));
            p.pod = PodIdentity::read(&args.proc_root, pid);
            if still && p.id().check(&args.proc_root) == Liveness::Alive {
                out.push((pattern.clone(), p));
            }
        }
    }
    admission.retain(&matching);
    out
}

/// What the agent makes of a process the kernel took in at its exec.
pub enum AtExec {
    /// Its command line holds `pattern` and `admission` allows it.
    Join(String, ResolvedPid),
    /// Not a target (or not allowed: counted by `admission`).
    NotATarget,
    /// It exited before its command line could be read: nothing it did is
    /// known to have been a target's.
    Gone,
}

/// Judges a process the kernel took in at its exec by its new command line.
pub fn at_exec(args: &Args, pid: u32, admission: &Admission) -> AtExec {
    // An exited process (a zombie too) has no command line.
    let Some(cmd) = tree::cmdline(&args.proc_root, pid) else { return AtExec::Gone };
    let Some(pattern) = args.matches.iter().find(|p| cmd.contains(p.as_str())) else { return AtExec::NotATarget };
    if tree::own_lineage(&args.proc_root).contains(&pid) {
        return AtExec::NotATarget;
    }
    let Ok(mut p) = tree::resolve(&args.proc_root, pid) else { return AtExec::Gone };
    if !admission.admit(&p, pattern) {
        return AtExec::NotATarget;
    }
    p.pod = PodIdentity::read(&args.proc_root, pid);
    match p.id().check(&args.proc_root) {
        Liveness::Alive => AtExec::Join(pattern.clone(), p),
        _ => AtExec::Gone,
    }
}
