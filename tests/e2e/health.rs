//! Dependency health and queue worker status against what the client did: a
//! real Python client (httpx, as pyWATS uses it) calling a loopback server
//! that is killed, restarted and made to fail, counting its own outcomes; a
//! queue driver whose item sticks in processing, timed by this test's clock.

use std::{path::PathBuf, time::Duration};

use pywats_agent_tests::{agent::Agent, free_port, monotonic_ns, prom::Samples, promtool, py::Py, unix_now, wait_for};
use serde_json::Value;

const TARGET: &str = "station";
/// `--dependency-window` of these tests: long enough for the checks after a
/// batch of calls on a loaded machine, short enough to wait out.
const WINDOW_SECS: u64 = 10;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pywats-agent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn server(port: u16, tls: bool) -> Py {
    let port = port.to_string();
    if tls {
        let (cert, key) = pywats_agent_tests::tls::cert();
        Py::start("http_server.py", &[&port, "--tls", cert.to_str().unwrap(), key.to_str().unwrap()])
    } else {
        Py::start("http_server.py", &[&port])
    }
}

/// What the client reported for a batch of calls.
struct Calls {
    ok: u64,
    failed: u64,
    errors: Vec<String>,
    /// Wall clock around the batch.
    started: f64,
    ended: f64,
}

fn calls(client: &mut Py, n: u32, path: &str) -> Calls {
    let v: Value = serde_json::from_str(&client.ask(&format!("calls {n} {path}"))).unwrap();
    Calls {
        ok: v["ok"].as_u64().unwrap(),
        failed: v["failed"].as_u64().unwrap(),
        errors: v["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect(),
        started: v["started"].as_f64().unwrap(),
        ended: v["ended"].as_f64().unwrap(),
    }
}

/// The dependency's gauges: (up, stale, consecutive failures, last success).
fn gauges(m: &Samples, l: &[(&str, &str)]) -> Option<(f64, f64, f64, f64)> {
    Some((
        m.get("pywats_dependency_up", l)?,
        m.get("pywats_dependency_stale", l)?,
        m.get("pywats_dependency_consecutive_failures", l)?,
        m.get("pywats_dependency_last_success_timestamp_seconds", l)?,
    ))
}

/// Samples once the dependency shows `failures` consecutive failures after
/// the agent applied every event (later ones included).
fn settle(agent: &Agent, l: &[(&str, &str)], failures: f64) -> Samples {
    wait_for(Duration::from_secs(10), "the dependency's consecutive failures", || {
        gauges(&agent.scrape(), l).filter(|g| g.2 == failures).map(|_| ())
    });
    agent.settled()
}

/// The dependency's entry in `/health/details`.
fn details(agent: &Agent, server: &str) -> Value {
    let d = agent.details();
    let deps = d["dependencies"].as_array().expect("dependencies listed").clone();
    assert_eq!(deps.len(), 1, "{deps:?}");
    assert_eq!((deps[0]["target"].as_str(), deps[0]["server"].as_str()), (Some(TARGET), Some(server)));
    deps[0].clone()
}

/// The latest answered call ended within the batch that made it (1 ms for
/// the agent's conversion of the kernel's monotonic stamps to wall time).
fn assert_success_within(last_success: f64, batch: &Calls) {
    assert!(
        batch.started - 0.001 <= last_success && last_success <= batch.ended + 0.001,
        "last success {last_success} outside the calls {}..{}",
        batch.started,
        batch.ended
    );
}

fn dependency_follows_the_clients_calls(tls: bool) {
    let port = free_port();
    let mut srv = Some(server(port, tls));
    // The client's config names the server as its WATS service (and a reports queue).
    let dir = scratch(if tls { "deps-tls" } else { "deps" });
    let scheme = if tls { "https" } else { "http" };
    let config = dir.join("config.json");
    let body = serde_json::json!({
        "instance_id": TARGET,
        "service_address": format!("{scheme}://127.0.0.1:{port}"),
        "reports_folder": dir.join("reports"),
    });
    std::fs::create_dir_all(dir.join("reports")).unwrap();
    std::fs::write(&config, body.to_string()).unwrap();
    let port_s = port.to_string();
    let mut client_args = vec![port_s.as_str()];
    if tls {
        client_args.push("--tls");
    }
    let mut client = Py::start("dependency_client.py", &client_args);
    let window = WINDOW_SECS.to_string();
    let pid = client.pid().to_string();
    let agent = Agent::start(&[
        "--pid",
        &pid,
        "--target-name",
        TARGET,
        "--pywats-config",
        config.to_str().unwrap(),
        "--dependency-window",
        &window,
    ]);
    if tls {
        agent.wait_tls_probed();
    }
    let server_label = format!("127.0.0.1:{port}");
    let l = [("target", TARGET), ("dependency", "wats"), ("server", server_label.as_str())];

    // Answered calls: up.
    let batch = calls(&mut client, 3, "/mix/200/10/cl");
    assert_eq!((batch.ok, batch.failed), (3, 0));
    let m = settle(&agent, &l, 0.0);
    let (up, stale, failures, last_success) = gauges(&m, &l).unwrap();
    assert_eq!((up, stale, failures), (1.0, 0.0, 0.0));
    assert_success_within(last_success, &batch);
    let d = details(&agent, &server_label);
    assert_eq!(
        (d["state"].as_str(), d["dependency"].as_str(), &d["last_error"]),
        (Some("up"), Some("wats"), &Value::Null)
    );

    // The server killed: every call refused, down within the window.
    srv.take().unwrap().kill();
    let down = calls(&mut client, 4, "/mix/200/10/cl");
    assert_eq!((down.ok, down.failed), (0, 4), "{:?}", down.errors);
    assert!(down.errors.iter().all(|e| e == "ConnectError"), "{:?}", down.errors);
    let m = settle(&agent, &l, down.failed as f64);
    let (up, stale, _, still) = gauges(&m, &l).unwrap();
    assert_eq!((up, stale, still), (0.0, 0.0, last_success), "down, not stale; the last success stays");
    let refused = [("target", TARGET), ("error_type", "connection_refused"), ("operation", "connect")];
    assert_eq!(m.get("pywats_errors_total", &refused), Some(down.failed as f64));
    let d = details(&agent, &server_label);
    assert_eq!((d["state"].as_str(), d["last_error"].as_str()), (Some("down"), Some("connection_refused")));
    assert_eq!(d["consecutive_failures"].as_u64(), Some(down.failed));
    assert!(unix_now() - down.ended < WINDOW_SECS as f64, "checked within the window");

    // The server back: up again.
    srv = Some(server(port, tls));
    let back = calls(&mut client, 2, "/mix/200/10/cl");
    assert_eq!((back.ok, back.failed), (2, 0));
    let m = settle(&agent, &l, 0.0);
    let (up, stale, _, last_success) = gauges(&m, &l).unwrap();
    assert_eq!((up, stale), (1.0, 0.0));
    assert_success_within(last_success, &back);

    // 503 answers: the server says it is not there.
    let errors = calls(&mut client, 3, "/mix/503/0/cl");
    assert_eq!((errors.ok, errors.failed), (0, 3));
    let m = settle(&agent, &l, errors.failed as f64);
    assert_eq!(gauges(&m, &l).unwrap().0, 0.0);
    let d = details(&agent, &server_label);
    assert_eq!((d["state"].as_str(), d["last_error"].as_str()), (Some("down"), Some("http_503")));
    // 500 answers are requests that failed at a server that answers: up,
    // and the failed requests are counted as such.
    let failing = calls(&mut client, 3, "/mix/500/0/cl");
    assert_eq!((failing.ok, failing.failed), (0, 3));
    let m = settle(&agent, &l, 0.0);
    assert_eq!(gauges(&m, &l).unwrap().0, 1.0);
    let five_hundreds: f64 = m
        .series("pywats_http_requests_total")
        .iter()
        .filter(|(l, _)| l["code"] == "500" && l["status"] == "error")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(five_hundreds, failing.failed as f64);
    assert_eq!(details(&agent, &server_label)["state"].as_str(), Some("up"));
    let fine = calls(&mut client, 1, "/mix/204/0/cl");
    assert_eq!(fine.ok, 1);
    let m = settle(&agent, &l, 0.0);
    assert_eq!(gauges(&m, &l).unwrap().0, 1.0);

    // The exposition with the new families passes Prometheus's own checks.
    let text = agent.get("/metrics").body;
    for family in ["pywats_dependency_up{", "pywats_dependency_stale{", "pywats_queue_stalled{"] {
        assert!(text.contains(family), "{family} missing");
    }
    promtool::check_metrics(&text);
    // Nothing secret on the page: no query strings, no auth header.
    assert!(!serde_json::to_string(&agent.details()).unwrap().contains('?'));

    if !tls {
        // No call for a window: stale, not down; `up` keeps its last value.
        let quiet = wait_for(Duration::from_secs(WINDOW_SECS + 10), "the dependency to go stale", || {
            let m = agent.scrape();
            gauges(&m, &l).filter(|g| g.1 == 1.0)
        });
        assert_eq!((quiet.0, quiet.2), (1.0, 0.0));
        assert!(unix_now() - fine.ended >= WINDOW_SECS as f64);
        assert_eq!(details(&agent, &server_label)["state"].as_str(), Some("stale"));
    }
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dependency_up_down_and_stale_follow_the_clients_calls() {
    dependency_follows_the_clients_calls(false);
}

/// Over HTTPS the libssl probes see an `SSL *`, not a socket: the TLS
/// connection takes its server from its thread's handshake, so answered
/// calls and refused connects land on the same dependency.
#[test]
fn https_dependency_up_down_follow_the_clients_calls() {
    dependency_follows_the_clients_calls(true);
}

fn ask(py: &mut Py, cmd: &str) {
    assert_eq!(py.ask(cmd), "\"ok\"", "{cmd}");
}

/// A scrape bracketed by this test's monotonic clock: the agent's "now" lies within.
fn scrape_between(agent: &Agent) -> (Samples, u64, u64) {
    let before = monotonic_ns();
    let m = agent.scrape();
    (m, before, monotonic_ns())
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// `value` (seconds) lies within [lo, hi] (ns).
fn assert_between(what: &str, value: f64, lo: u64, hi: u64) {
    assert!(secs(lo) <= value && value <= secs(hi), "{what}: {value} outside {}..{}", secs(lo), secs(hi));
}

#[test]
fn a_queue_item_stuck_in_processing_stalls_its_queue() {
    let dir = scratch("stall");
    // Queued before the agent starts: its first read dates it by the file's ctime
    // (the kernel stamps it from a clock up to a tick behind: 20 ms of slack).
    let (w0, _) = (unix_now(), std::fs::write(dir.join("early.queued"), "{}").unwrap());
    let w1 = unix_now();
    let mut py = Py::start("queues.py", &[]);
    let pid = py.pid().to_string();
    let queue = format!("reports={}:service", dir.display());
    let stall_secs = 2u64;
    let stall = stall_secs.to_string();
    let agent = Agent::start(&[
        "--pid",
        &pid,
        "--target-name",
        TARGET,
        "--no-discover",
        "--queue",
        &queue,
        "--queue-stall-secs",
        &stall,
    ]);
    let q = [("target", TARGET), ("queue_name", "reports")];
    let oldest = |m: &Samples| m.get("pywats_queue_oldest_item_age_seconds", &q).unwrap();
    let processing = |m: &Samples| m.get("pywats_queue_processing_item_age_seconds", &q).unwrap();
    let stalled = |m: &Samples| m.get("pywats_queue_stalled", &q).unwrap();
    let items = |state: &str, n: f64| {
        let l = [("target", TARGET), ("queue_name", "reports"), ("state", state)];
        wait_for(Duration::from_secs(10), state, || {
            (agent.scrape().get("pywats_queue_items", &l) == Some(n)).then_some(())
        });
        agent.settled();
    };
    let (w2, m, w3) = (unix_now(), agent.scrape(), unix_now());
    let age = oldest(&m);
    assert!(w2 - w1 <= age && age <= w3 - w0 + 0.02, "early: {age} outside {}..{}", w2 - w1, w3 - w0);
    assert_eq!((processing(&m), stalled(&m)), (0.0, 0.0));

    // One item queued by the target, then the early one taken into processing.
    let b0 = monotonic_ns();
    ask(&mut py, &format!("enqueue {} a", dir.display()));
    let b1 = monotonic_ns();
    let p0 = monotonic_ns();
    ask(&mut py, &format!("move {} early .queued .processing", dir.display()));
    let p1 = monotonic_ns();
    items("processing", 1.0);
    let (m, s0, s1) = scrape_between(&agent);
    assert_between("oldest queued", oldest(&m), s0 - b1, s1 - b0);
    let first = processing(&m);
    assert_between("processing", first, s0 - p1, s1 - p0);
    if s1 - p0 < stall_secs * 1_000_000_000 {
        assert_eq!(stalled(&m), 0.0);
    }

    // Stuck past the threshold: stalled, and the age keeps growing.
    std::thread::sleep(Duration::from_nanos(
        (p1 + (stall_secs * 1_000_000_000 + 500_000_000)).saturating_sub(monotonic_ns()),
    ));
    let (m, s0, s1) = scrape_between(&agent);
    let second = processing(&m);
    assert_between("processing", second, s0 - p1, s1 - p0);
    assert!(second > first + 0.5, "the age grows: {first} then {second}");
    assert_eq!(stalled(&m), 1.0);
    let (m, s0, s1) = scrape_between(&agent);
    assert_between("processing", processing(&m), s0 - p1, s1 - p0);
    assert!(processing(&m) >= second);
    assert_eq!(stalled(&m), 1.0);

    // Finished: cleared; the queued item is still the oldest waiting.
    ask(&mut py, &format!("move {} early .processing .completed", dir.display()));
    items("completed", 1.0);
    let (m, s0, s1) = scrape_between(&agent);
    assert_eq!((processing(&m), stalled(&m)), (0.0, 0.0));
    assert_between("oldest queued", oldest(&m), s0 - b1, s1 - b0);
    // Nothing waiting: 0.
    ask(&mut py, &format!("move {} a .queued .processing", dir.display()));
    items("processing", 1.0);
    assert_eq!(oldest(&agent.scrape()), 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}
