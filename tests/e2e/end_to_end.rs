//! The real, unmodified pyWATS client (pywats-api 0.6.0rc1) doing its work
//! against a WATS-like server, with the agent attached: every metric is
//! compared with the server's counts and the workload's own ground truth.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use pywats_agent_tests::{agent::Agent, free_port, http, prom::Samples, py, py::Py, tls, unix_now, wait_for};
use serde_json::Value;

const TOKEN: &str = "ZTJlOnRva2Vu";
const TARGET: &str = "station";

/// The agent's documented template for the paths the client uses.
fn template(path: &str) -> String {
    match path.strip_prefix("/api/Report/Wsjf/") {
        Some(_) => "/api/Report/Wsjf/{report_id}".into(),
        None => path.into(),
    }
}

fn get(m: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.get(name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"))
}

fn durations(items: &Value, status: &[&str]) -> Vec<f64> {
    items
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| status.contains(&i["status"].as_str().unwrap()))
        .map(|i| i["duration"].as_f64().unwrap())
        .collect()
}

/// A histogram's count equals the truth's and its sum is within the clock slack (5 ms) per observation.
fn assert_durations(m: &Samples, name: &str, labels: &[(&str, &str)], truth: &[f64]) {
    assert_eq!(get(m, &format!("{name}_count"), labels), truth.len() as f64, "{name} {labels:?} count");
    let sum = get(m, &format!("{name}_sum"), labels);
    let want: f64 = truth.iter().sum();
    assert!(
        (sum - want).abs() <= pywats_agent_tests::clock_slack() * truth.len() as f64,
        "{name} {labels:?}: sum {sum} vs {want}"
    );
}

/// A histogram's count equals the truth's and its sum lies within the sum of
/// the truth's brackets (each observation's lowest and highest possible
/// duration, `min`/`max`), give or take the clock slack per observation.
fn assert_duration_brackets(m: &Samples, name: &str, labels: &[(&str, &str)], items: &Value, status: &[&str]) {
    let chosen: Vec<&Value> =
        items.as_array().unwrap().iter().filter(|i| status.contains(&i["status"].as_str().unwrap())).collect();
    assert_eq!(get(m, &format!("{name}_count"), labels), chosen.len() as f64, "{name} {labels:?} count");
    let sum = get(m, &format!("{name}_sum"), labels);
    let low: f64 = chosen.iter().map(|i| i["min"].as_f64().unwrap()).sum();
    let high: f64 = chosen.iter().map(|i| i["max"].as_f64().unwrap()).sum();
    let tol = pywats_agent_tests::clock_slack() * chosen.len() as f64;
    assert!(low - tol <= sum && sum <= high + tol, "{name} {labels:?}: sum {sum} outside [{low}, {high}]");
}

/// How the client reaches the server.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Http,
    /// HTTPS, HTTP/1.1 (the server offers no h2).
    Https,
    /// HTTPS, HTTP/2 by ALPN (the client enables http2).
    H2,
}

fn run(rounds: u32, fail_every: u32, mode: Mode) {
    let port = free_port();
    let (cert, key) = tls::cert();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let port_s = port.to_string();
    let fail = fail_every.to_string();
    let mut server_args = vec![port_s.as_str(), TOKEN, "--fail-every", fail.as_str()];
    match mode {
        Mode::Http => {}
        Mode::Https => server_args.extend(["--tls", cert, key]),
        Mode::H2 => server_args.extend(["--tls", cert, key, "--h2"]),
    }
    let _server = Py::start("wats_server.py", &server_args);
    let work: PathBuf = std::env::temp_dir().join(format!("pywats-e2e-{}-{rounds}-{mode:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let scheme = if mode == Mode::Http { "http" } else { "https" };
    let url = format!("{scheme}://127.0.0.1:{port}");
    let rounds_s = rounds.to_string();
    // The client verifies the server's certificate: it trusts the test's own.
    let (mut client, first) = Py::spawn_env(
        "wats_workload.py",
        &["--url", &url, "--token", TOKEN, "--workdir", work.to_str().unwrap(), "--rounds", &rounds_s, "--wait"],
        &[("SSL_CERT_FILE", cert)],
    );
    let pid = first.strip_prefix("pid ").unwrap_or_else(|| panic!("workload said {first:?}")).to_string();
    let watches = py::workload_watches(&work);
    let mut args = vec!["--pid", &pid, "--target-name", TARGET, "--no-discover"];
    args.extend(watches.iter().map(String::as_str));
    let agent = Agent::start(&args);
    if mode != Mode::Http {
        agent.wait_tls_probed();
    }
    let started = unix_now();
    let line = client.ask("go");
    let truth: Value =
        serde_json::from_str(line.strip_prefix("truth ").unwrap_or_else(|| panic!("workload said {line:?}"))).unwrap();

    // The server's counts, by (method, endpoint, code).
    let counts_text =
        if mode == Mode::Http { http::get(port, "/__counts").unwrap().body } else { tls::get(port, "/__counts") };
    let counts: Value = serde_json::from_str(&counts_text).unwrap();
    let mut server: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for row in counts["counts"].as_array().unwrap() {
        let key = (row[0].as_str().unwrap().to_string(), template(row[1].as_str().unwrap()), row[2].to_string());
        *server.entry(key).or_default() += row[3].as_f64().unwrap();
    }
    let total: f64 = server.values().sum();
    let m = wait_for(Duration::from_secs(20), "the agent to count every request", || {
        let m = agent.scrape();
        let seen: f64 = m.series("pywats_http_requests_total").iter().map(|(_, v)| v).sum();
        (seen >= total).then_some(m)
    });
    let mut seen: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for (l, v) in m.series("pywats_http_requests_total") {
        assert_eq!(l["target"], TARGET);
        let ok = l["code"].parse::<u16>().is_ok_and(|c| c < 400);
        assert_eq!(l["status"], if ok { "success" } else { "error" });
        *seen.entry((l["method"].clone(), l["endpoint"].clone(), l["code"].clone())).or_default() += v;
    }
    assert_eq!(seen, server, "requests per (method, endpoint, code): agent vs server");

    // The client's own view agrees with the server's (a check of the harness).
    let client_total: f64 = truth["http"].as_array().unwrap().iter().map(|h| h["requests"].as_f64().unwrap()).sum();
    assert_eq!(client_total, total);

    // Each histogram's _count equals its counter.
    let mut per_endpoint: BTreeMap<(String, String), f64> = BTreeMap::new();
    for ((method, endpoint, _), n) in &server {
        *per_endpoint.entry((method.clone(), endpoint.clone())).or_default() += n;
    }
    for ((method, endpoint), n) in &per_endpoint {
        let l = [("target", TARGET), ("method", method.as_str()), ("endpoint", endpoint.as_str())];
        assert_eq!(get(&m, "pywats_http_request_duration_seconds_count", &l), *n, "{method} {endpoint}");
    }
    let failed_posts = truth["reports"]["failed"].as_f64().unwrap();
    let errors: f64 = m
        .series("pywats_errors_total")
        .iter()
        .filter(|(l, _)| l["error_type"].starts_with("http_"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(errors, failed_posts);

    // Dependency health: the client's one server, under its socket address
    // whatever the transport (a TLS connection takes its thread's handshake's).
    let server_label = format!("127.0.0.1:{port}");
    let dep = [("target", TARGET), ("dependency", "http"), ("server", server_label.as_str())];
    assert_eq!(m.series("pywats_dependency_up").len(), 1, "{:?}", m.series("pywats_dependency_up"));
    let (up, failures) =
        (get(&m, "pywats_dependency_up", &dep), get(&m, "pywats_dependency_consecutive_failures", &dep));
    assert!(failures <= failed_posts && up == f64::from(failures == 0.0), "up {up}, {failures} failures");
    if failed_posts == 0.0 {
        assert_eq!(up, 1.0);
    }
    let last = get(&m, "pywats_dependency_last_success_timestamp_seconds", &dep);
    assert!(started <= last && last <= unix_now(), "last success {last} outside the run");
    assert_eq!(get(&m, "pywats_dependency_stale", &dep), 0.0);

    // Queues and the converter, against the workload's ground truth.
    let settle = |name: &str, labels: &[(&str, &str)], want: f64| {
        wait_for(Duration::from_secs(10), name, || {
            (agent.scrape().get(name, labels).unwrap_or(0.0) == want).then_some(())
        });
        agent.settled()
    };
    let (pq, sq, conv) = (&truth["persistent_queue"], &truth["service_queue"], &truth["converter"]);
    let m = settle(
        "pywats_converter_executions_total",
        &[("converter", "csv"), ("status", "error")],
        conv["error"].as_f64().unwrap(),
    );
    let c = [("target", TARGET), ("converter", "csv")];
    assert_eq!(
        get(&m, "pywats_converter_executions_total", &[c[0], c[1], ("status", "success")]),
        conv["done"].as_f64().unwrap()
    );
    assert_eq!(get(&m, "pywats_converter_in_progress", &c), 0.0);
    assert_duration_brackets(&m, "pywats_converter_duration_seconds", &c, &conv["items"], &["done", "error"]);

    for (queue, t, item_type, left) in [("pq", pq, "wsjf", "pending"), ("reports", sq, "report", "queued")] {
        let q = [("target", TARGET), ("queue_name", queue)];
        for outcome in ["completed", "failed"] {
            let n = m.get("pywats_queue_items_processed_total", &[q[0], q[1], ("outcome", outcome)]).unwrap_or(0.0);
            assert_eq!(n, t[outcome].as_f64().unwrap(), "{queue} {outcome}");
        }
        assert_eq!(get(&m, "pywats_queue_depth", &q), t[left].as_f64().unwrap(), "{queue} depth");
        let l = [q[0], q[1], ("item_type", item_type)];
        assert_durations(
            &m,
            "pywats_queue_processing_duration_seconds",
            &l,
            &durations(&t["items"], &["completed", "failed"]),
        );
    }

    for name in [
        "pywats_agent_events_lost_total",
        "pywats_agent_queue_corrections_total",
        "pywats_agent_path_errors_total",
        "pywats_agent_parse_errors_total",
    ] {
        for (l, v) in m.series(name) {
            assert_eq!(v, 0.0, "{name} {l:?}");
        }
    }
    // The protocol the client really spoke.
    let protocol = if mode == Mode::H2 { "http2" } else { "http1" };
    let tls = if mode == Mode::Http { "false" } else { "true" };
    let open =
        agent.details()["connections"].as_array().unwrap().iter().filter(|c| c["protocol"] == protocol).count() as f64;
    let closed = m.get("pywats_agent_connections_total", &[("protocol", protocol), ("tls", tls)]).unwrap_or(0.0);
    assert!(open + closed >= 1.0, "{mode:?}: no {protocol} connection seen");
    // The client process itself is watched: its procfs gauges are there.
    assert!(get(&m, "pywats_process_threads", &[("target", TARGET)]) >= 1.0);
    if fail_every > 0 {
        dashboards_use_only_metrics_the_agent_exports(&m);
    }
    client.ask("exit");
    let _ = std::fs::remove_dir_all(&work);
}

/// Every metric the Grafana dashboard and the alert rules in deploy/ query is
/// one this run exported (a few appear only once their event has happened:
/// those must at least be names the agent has).
fn dashboards_use_only_metrics_the_agent_exports(m: &Samples) {
    const AFTER_FIRST_EVENT: [&str; 1] = ["pywats_http_retries_total"];
    let binary = std::fs::read(pywats_agent_tests::agent::bin()).unwrap();
    let root = pywats_agent_tests::root().join("deploy");
    for file in ["grafana/pywats-agent.json", "prometheus/alerts.yml"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        // Recording rules (`station:pywats_…:ratio_rate5m`, fleet.yml) are not
        // the agent's: fleet_rules.rs tests them.
        let mut names: Vec<&str> = text
            .match_indices("pywats_")
            .filter(|(i, _)| !text[..*i].ends_with(':'))
            .map(|(i, _)| {
                let end =
                    text[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(text.len(), |n| i + n);
                &text[i..end]
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        assert!(names.len() > 5, "{file}: {names:?}");
        for name in names {
            if AFTER_FIRST_EVENT.contains(&name) {
                let needle = name.as_bytes();
                assert!(binary.windows(needle.len()).any(|w| w == needle), "{file}: {name} is no metric of the agent");
            } else {
                assert!(!m.series(name).is_empty(), "{file} queries {name}, which the agent did not export");
            }
        }
    }
}

#[test]
fn real_client_all_flows_match_ground_truth() {
    run(2, 0, Mode::Http);
}

#[test]
fn real_client_with_failing_submissions() {
    run(2, 3, Mode::Http);
}

#[test]
fn real_client_over_https() {
    run(2, 3, Mode::Https);
}

#[test]
fn real_client_over_https_http2() {
    run(2, 3, Mode::H2);
}
