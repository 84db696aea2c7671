//! Health endpoints. Ready means: every program of the features that are on
//! attached (a feature this kernel refused is off, not a fault: the details
//! say why) and every `--pid` target alive. A `--match` pattern without a
//! live process is not a problem: on a node without a pyWATS client there is
//! nothing to watch (a DaemonSet runs there too); `/health/details` says
//! `idle`, and a client that was watched and exited shows as an exited
//! target (`pywats_agent_targets`).

use std::time::SystemTime;

use axum::{extract::State, http::StatusCode, Json};
use pywats_agent_ebpf::abi::EventKind;
use serde_json::{json, Value};

use crate::{
    clock::monotonic_ns,
    http::state::Shared,
    sync::{Locked, ReadWrite},
};

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Why the agent is not ready; empty when it is.
fn problems(s: &Shared) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(stopped) = &*s.status.stopped.read_locked() {
        out.push(format!("{} stopped ({}); the agent is exiting", stopped.part, stopped.reason));
    }
    let attached = s.status.programs_attached.read_locked().len();
    if attached < s.status.programs_expected {
        out.push(format!("{attached} of {} programs attached", s.status.programs_expected));
    }
    for (part, age) in s.heartbeats.stalled() {
        out.push(format!("{part} has made no progress for {}s", age.as_secs()));
    }
    out.extend(s.targets.read_locked().problems());
    out
}

pub async fn live() -> &'static str {
    "ok\n"
}

pub async fn ready(State(s): State<Shared>) -> (StatusCode, String) {
    let problems = problems(&s);
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", problems.join("; ")))
    }
}

pub async fn summary(State(s): State<Shared>) -> (StatusCode, Json<Value>) {
    let problems = problems(&s);
    let code = if problems.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let status = if problems.is_empty() { "healthy" } else { "unhealthy" };
    (code, Json(json!({ "status": status, "problems": problems })))
}

pub async fn details(State(s): State<Shared>) -> (StatusCode, Json<Value>) {
    let problems = problems(&s);
    let code = if problems.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let now = SystemTime::now();
    let (targets, watching, idle_patterns) = {
        let all = s.targets.read_locked();
        let list: Vec<Value> = all
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "pid": t.pid,
                    "alive": t.alive,
                    "exe": t.exe,
                    "pattern": t.pattern,
                    "pod": t.pod,
                    "children": t.children.iter().collect::<Vec<_>>(),
                    "exited_at": t.exited_at.map(unix),
                })
            })
            .collect();
        // `idle`: running fine with no live process to watch.
        let watching = if all.iter().any(|t| t.alive) { "watching" } else { "idle" };
        (list, watching, all.idle_patterns().iter().map(|p| p.to_string()).collect::<Vec<_>>())
    };
    let seen: serde_json::Map<String, Value> = EventKind::ALL
        .iter()
        .map(|k| (k.name().to_string(), json!(s.metrics.events.with_label_values(&[k.name()]).get())))
        .collect();
    let lost: serde_json::Map<String, Value> =
        s.lost.totals().into_iter().map(|(kind, n)| (kind.name().to_string(), json!(n))).collect();
    // One lock at a time (see `target`): each section is read on its own.
    let connections = s.net.locked().connections();
    let dependencies = s.deps.locked().views(monotonic_ns());
    let watches = s.fs.locked().watches();
    let programs_attached = s.status.programs_attached.read_locked().clone();
    let tls_libraries = s.status.tls_libraries.read_locked().clone();
    let tls_probes = s.status.tls_probes.read_locked().clone();
    let parts: serde_json::Map<String, Value> =
        s.heartbeats.ages().into_iter().map(|(part, age)| (part.to_string(), json!(age.as_secs_f64()))).collect();
    let body = json!({
        "status": if problems.is_empty() { "healthy" } else { "unhealthy" },
        "problems": problems,
        "version": env!("CARGO_PKG_VERSION"),
        "start_time": unix(s.status.started),
        "uptime_seconds": now.duration_since(s.status.started).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        "kernel_release": s.status.kernel_release,
        "node": s.status.node,
        "targets": targets,
        "watching": watching,
        "idle_patterns": idle_patterns,
        "programs_attached": programs_attached,
        "features": s.status.features.json(),
        "tls_libraries": tls_libraries,
        "tls_probes": tls_probes,
        "events": { "seen": seen, "lost": lost },
        "connections": connections,
        "dependencies": dependencies,
        "watches": watches,
        "parts_idle_seconds": parts,
    });
    (code, Json(body))
}
