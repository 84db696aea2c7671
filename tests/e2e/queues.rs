//! Queue and converter metrics against the ground truth of a driver that
//! performs the pyWATS client's file flows with known counts and sleeps.

use std::{path::PathBuf, time::Duration};

use pywats_agent_tests::{agent::Agent, prom::Samples, py::Py, wait_for};
use serde_json::Value;

const TARGET: &str = "station";
/// prometheus_client's default buckets, which the agent uses.
const BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pywats-agent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ask(py: &mut Py, cmd: &str) -> Value {
    serde_json::from_str(&py.ask(cmd)).unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn get(m: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.get(name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"))
}

/// Histogram `name` with `labels` equals the durations the driver measured:
/// same count, same bucket counts, sums within the clock slack (5 ms) per observation.
fn assert_histogram(m: &Samples, name: &str, labels: &[(&str, &str)], truth: &[f64]) {
    assert_eq!(get(m, &format!("{name}_count"), labels), truth.len() as f64, "{name} count");
    let sum = get(m, &format!("{name}_sum"), labels);
    let want: f64 = truth.iter().sum();
    assert!((sum - want).abs() <= pywats_agent_tests::clock_slack() * truth.len() as f64, "{name} sum {sum} vs {want}");
    for le in BUCKETS {
        let le_s = format!("{le}");
        let mut l = labels.to_vec();
        l.push(("le", &le_s));
        let n = truth.iter().filter(|d| **d <= le).count() as f64;
        assert_eq!(get(m, &format!("{name}_bucket"), &l), n, "{name} bucket le={le}");
    }
}

fn durations(v: &Value) -> Vec<f64> {
    v["durations"].as_array().unwrap().iter().map(|d| d.as_f64().unwrap()).collect()
}

fn agent(py: &Py, extra: &[&str]) -> Agent {
    let pid = py.pid().to_string();
    let mut args = vec!["--pid", pid.as_str(), "--target-name", TARGET, "--no-discover"];
    args.extend_from_slice(extra);
    Agent::start(&args)
}

/// Samples once `name{labels}` reached `want` and the agent applied every
/// event the workload caused (later ones included).
fn settle(agent: &Agent, name: &str, labels: &[(&str, &str)], want: f64) -> Samples {
    wait_for(Duration::from_secs(10), name, || (agent.scrape().get(name, labels) == Some(want)).then_some(()));
    agent.settled()
}

fn no_loss(m: &Samples) {
    for (l, v) in m.series("pywats_agent_events_lost_total") {
        assert_eq!(v, 0.0, "lost {l:?}");
    }
    for (l, v) in m.series("pywats_agent_queue_corrections_total") {
        assert_eq!(v, 0.0, "a directory scan had to correct events: {l:?}");
    }
    for (l, v) in m.series("pywats_agent_path_errors_total") {
        assert_eq!(v, 0.0, "{l:?}");
    }
}

#[test]
fn service_queue_flows() {
    let dir = scratch("service");
    let mut py = Py::start("queues.py", &[]);
    let a = agent(&py, &["--queue", &format!("reports={}:service", dir.display())]);
    let truth = ask(&mut py, &format!("service {}", dir.display()));
    let q = [("target", TARGET), ("queue_name", "reports")];
    let m = settle(
        &a,
        "pywats_queue_items_processed_total",
        &[("outcome", "completed")],
        truth["completed"].as_f64().unwrap(),
    );
    assert_eq!(get(&m, "pywats_queue_depth", &q), truth["depth"].as_f64().unwrap());
    assert_eq!(
        get(&m, "pywats_queue_items_processed_total", &[q[0], q[1], ("outcome", "failed")]),
        truth["failed"].as_f64().unwrap()
    );
    assert_eq!(get(&m, "pywats_queue_requeued_total", &[q[0], q[1], ("reason", "recovered")]), 1.0);
    assert_eq!(get(&m, "pywats_queue_requeued_total", &[q[0], q[1], ("reason", "retried")]), 1.0);
    assert_eq!(get(&m, "pywats_queue_items", &[q[0], q[1], ("state", "completed")]), 4.0);
    assert_eq!(get(&m, "pywats_queue_items", &[q[0], q[1], ("state", "processing")]), 0.0);
    assert_histogram(
        &m,
        "pywats_queue_processing_duration_seconds",
        &[q[0], q[1], ("item_type", "report")],
        &durations(&truth),
    );
    no_loss(&m);
}

#[test]
fn persistent_queue_flows() {
    let dir = scratch("persistent");
    let mut py = Py::start("queues.py", &[]);
    let a = agent(&py, &["--queue", &format!("pq={}:persistent", dir.display())]);
    let truth = ask(&mut py, &format!("persistent {}", dir.display()));
    let q = [("target", TARGET), ("queue_name", "pq")];
    let m = settle(&a, "pywats_queue_items_processed_total", &[("outcome", "failed")], 1.0);
    assert_eq!(
        get(&m, "pywats_queue_items_processed_total", &[q[0], q[1], ("outcome", "completed")]),
        truth["completed"].as_f64().unwrap()
    );
    assert_eq!(get(&m, "pywats_queue_depth", &q), truth["depth"].as_f64().unwrap());
    // p1 was deleted after completing, p3 kept: one completed item on disk.
    assert_eq!(get(&m, "pywats_queue_items", &[q[0], q[1], ("state", "completed")]), 1.0);
    assert_histogram(
        &m,
        "pywats_queue_processing_duration_seconds",
        &[q[0], q[1], ("item_type", "wsjf")],
        &durations(&truth),
    );
    no_loss(&m);
}

#[test]
fn agent_started_mid_flight_gets_the_depth_right() {
    let dir = scratch("midflight");
    let mut py = Py::start("queues.py", &[]);
    let before = ask(&mut py, &format!("prepare {}", dir.display()));
    let a = agent(&py, &["--queue", &format!("reports={}", dir.display())]);
    let q = [("target", TARGET), ("queue_name", "reports")];
    let m = a.scrape();
    assert_eq!(get(&m, "pywats_queue_depth", &q), before["queued"].as_f64().unwrap());
    assert_eq!(
        get(&m, "pywats_queue_items", &[q[0], q[1], ("state", "processing")]),
        before["processing"].as_f64().unwrap()
    );
    let truth = ask(&mut py, &format!("finish {}", dir.display()));
    let m = settle(
        &a,
        "pywats_queue_items_processed_total",
        &[("outcome", "completed")],
        truth["completed"].as_f64().unwrap(),
    );
    assert_eq!(get(&m, "pywats_queue_depth", &q), truth["depth"].as_f64().unwrap());
    // The item already processing at start has its start from the file's ctime.
    assert_eq!(get(&m, "pywats_queue_processing_duration_seconds_count", &[q[0], q[1]]), 2.0);
    no_loss(&m);
}

#[test]
fn converter_flows_with_work_in_a_child_process() {
    let root = scratch("converter");
    let [watch, done, error, archive] = ["in", "done", "error", "archive"].map(|d| root.join(d));
    let mut py = Py::start("queues.py", &[]);
    let spec = format!(
        "csv={},done={},error={},archive={}",
        watch.display(),
        done.display(),
        error.display(),
        archive.display()
    );
    std::fs::create_dir_all(&watch).unwrap();
    let a = agent(&py, &["--converter", &spec]);
    let truth = ask(
        &mut py,
        &format!("convert {} {} {} {}", watch.display(), done.display(), error.display(), archive.display()),
    );
    let c = [("target", TARGET), ("converter", "csv")];
    let m =
        settle(&a, "pywats_converter_executions_total", &[("status", "success")], truth["success"].as_f64().unwrap());
    assert_eq!(
        get(&m, "pywats_converter_executions_total", &[c[0], c[1], ("status", "error")]),
        truth["error"].as_f64().unwrap()
    );
    assert_eq!(get(&m, "pywats_converter_in_progress", &c), truth["in_progress"].as_f64().unwrap());
    assert_histogram(&m, "pywats_converter_duration_seconds", &c, &durations(&truth));
    no_loss(&m);
}

#[test]
fn converter_files_there_at_start_and_files_that_vanish() {
    let root = scratch("converter-late");
    let [watch, done, error] = ["in", "done", "error"].map(|d| root.join(d));
    for d in [&watch, &done, &error] {
        std::fs::create_dir_all(d).unwrap();
    }
    for f in ["w1.csv", "w2.csv"] {
        std::fs::write(watch.join(f), "sn,result\n1,pass\n").unwrap();
    }
    let mut py = Py::start("queues.py", &[]);
    let spec = format!("csv={},done={},error={}", watch.display(), done.display(), error.display());
    let a = agent(&py, &["--converter", &spec, "--reconcile-interval", "1"]);
    let c = [("target", TARGET), ("converter", "csv")];
    // Files in the watch folder at start are not in progress.
    assert_eq!(get(&a.scrape(), "pywats_converter_in_progress", &c), 0.0);
    let truth = ask(&mut py, &format!("late {} {}", watch.display(), done.display()));
    let m = settle(&a, "pywats_converter_in_progress", &c, truth["in_progress"].as_f64().unwrap());
    assert_eq!(
        get(&m, "pywats_converter_executions_total", &[c[0], c[1], ("status", "success")]),
        truth["success"].as_f64().unwrap()
    );
    // w1 was read before the agent started: counted, with no duration.
    assert_eq!(get(&m, "pywats_converter_duration_seconds_count", &c), truth["timed"].as_f64().unwrap());
    // The file in progress goes away unseen (this test process is no target):
    // ended on the second re-read that misses it, as a correction.
    std::fs::remove_file(watch.join("v1.csv")).unwrap();
    let vanished = [c[0], c[1], ("reason", "vanished")];
    let m = settle(&a, "pywats_agent_converter_corrections_total", &vanished, 1.0);
    assert_eq!(get(&m, "pywats_converter_in_progress", &c), 0.0);
    assert_eq!(get(&m, "pywats_converter_executions_total", &[c[0], c[1], ("status", "success")]), 2.0);
    assert_eq!(get(&m, "pywats_converter_executions_total", &[c[0], c[1], ("status", "error")]), 0.0);
    assert_eq!(get(&m, "pywats_agent_converter_corrections_total", &[c[0], c[1], ("reason", "expired")]), 0.0);
}

#[test]
fn the_real_persistent_queue() {
    let dir = scratch("realpq");
    let mut py = Py::start("queues.py", &[]);
    let a = agent(&py, &["--queue", &format!("real={}:persistent", dir.display())]);
    let truth = ask(&mut py, &format!("real_pq {}", dir.display()));
    let q = [("target", TARGET), ("queue_name", "real")];
    let m =
        settle(&a, "pywats_queue_items_processed_total", &[("outcome", "failed")], truth["failed"].as_f64().unwrap());
    assert_eq!(
        get(&m, "pywats_queue_items_processed_total", &[q[0], q[1], ("outcome", "completed")]),
        truth["completed"].as_f64().unwrap()
    );
    assert_eq!(get(&m, "pywats_queue_depth", &q), truth["depth"].as_f64().unwrap());
    // Items by state equal the data files the run left.
    let files: Vec<String> =
        truth["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
    for (state, suffix) in [("queued", ".pending.wsjf"), ("completed", ".completed.wsjf"), ("failed", ".failed.wsjf")] {
        let on_disk = files.iter().filter(|f| f.ends_with(suffix)).count() as f64;
        assert_eq!(get(&m, "pywats_queue_items", &[q[0], q[1], ("state", state)]), on_disk, "{state}");
    }
    assert_histogram(
        &m,
        "pywats_queue_processing_duration_seconds",
        &[q[0], q[1], ("item_type", "wsjf")],
        &durations(&truth),
    );
    no_loss(&m);
}

#[test]
fn discovery_from_the_clients_config() {
    let root = scratch("discover");
    let reports = root.join("reports");
    let [watch, done, error] = ["in", "done", "error"].map(|d| root.join(d));
    let config = root.join("config_default.json");
    let json = serde_json::json!({
        "schema_version": "2.0",
        "instance_id": "line-7",
        "service_address": "http://127.0.0.1:1",
        "api_token": "dG9rZW4=",
        "reports_folder": "reports",
        "converters_enabled": true,
        "converters": [{
            "name": "CSV line tester", "module_path": "x.Y", "watch_folder": watch, "done_folder": done,
            "error_folder": error, "pending_folder": "", "post_action": "move", "archive_folder": "", "enabled": true
        }]
    });
    std::fs::write(&config, json.to_string()).unwrap();
    std::fs::create_dir_all(&watch).unwrap();
    let mut py = Py::start("queues.py", &[]);
    let pid = py.pid().to_string();
    // No --target-name: the target takes the client's instance id.
    let a = Agent::start(&["--pid", &pid, "--pywats-config", config.to_str().unwrap()]);
    let truth = ask(&mut py, &format!("service {}", reports.display()));
    let q = [("target", "line-7"), ("queue_name", "reports")];
    let m = settle(
        &a,
        "pywats_queue_items_processed_total",
        &[q[0], q[1], ("outcome", "completed")],
        truth["completed"].as_f64().unwrap(),
    );
    assert_eq!(get(&m, "pywats_queue_depth", &q), truth["depth"].as_f64().unwrap());
    let archive = root.join("unused-archive");
    let conv = ask(
        &mut py,
        &format!("convert {} {} {} {}", watch.display(), done.display(), error.display(), archive.display()),
    );
    let c = [("target", "line-7"), ("converter", "CSV line tester")];
    // The archive folder is not in this config: c5's move there carries the execution along.
    let m = settle(
        &a,
        "pywats_converter_executions_total",
        &[c[0], c[1], ("status", "error")],
        conv["error"].as_f64().unwrap(),
    );
    assert_eq!(
        get(&m, "pywats_converter_executions_total", &[c[0], c[1], ("status", "success")]),
        conv["success"].as_f64().unwrap() - 1.0
    );
    let watches = a.details()["watches"].clone();
    assert_eq!(watches.as_array().unwrap().len(), 2, "{watches}");
}

#[test]
fn missing_folders_are_a_warning() {
    let py = Py::start("queues.py", &[]);
    let a = agent(
        &py,
        &["--queue", "ghost=/nonexistent/pywats/queue", "--converter", "c=/nonexistent/in,done=/nonexistent/d"],
    );
    assert_eq!(a.get("/health/ready").status, 200);
    assert!(a.log().contains("queue directory /nonexistent/pywats/queue does not exist"), "{}", a.log());
    let d = a.details();
    assert_eq!(d["watches"][0]["exists"], false);
}
