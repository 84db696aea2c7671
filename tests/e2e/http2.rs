//! HTTPS with HTTP/2: httpx (sync, and asyncio with memory BIOs) with
//! http2=True against hypercorn; counts from the server, durations from the
//! client, plaintext from the libssl probes.

use std::{collections::BTreeMap, time::Duration};

use pywats_agent_tests::{agent::Agent, free_port, prom::Samples, py::Py, tls, tls::Hypercorn, wait_for};
use serde_json::Value;

const SECRET: &str = "cHl3YXRzOmgyLXNlY3JldA==";
const TARGET: &str = "station";

fn template(path: &str) -> String {
    path.split('/')
        .map(|s| if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) { "{id}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

fn server_counts(port: u16) -> BTreeMap<(String, String, String), f64> {
    let body: Value = serde_json::from_str(&tls::get(port, "/__counts")).unwrap();
    let mut out = BTreeMap::new();
    for row in body["counts"].as_array().unwrap() {
        let key = (row[0].as_str().unwrap().to_string(), template(row[1].as_str().unwrap()), row[2].to_string());
        *out.entry(key).or_insert(0.0) += row[3].as_f64().unwrap();
    }
    out
}

fn agent_counts(m: &Samples) -> BTreeMap<(String, String, String), f64> {
    let mut out = BTreeMap::new();
    for (l, v) in m.series("pywats_http_requests_total") {
        if l["code"] != "none" {
            *out.entry((l["method"].clone(), l["endpoint"].clone(), l["code"].clone())).or_insert(0.0) += v;
        }
    }
    out
}

fn start() -> (u16, Hypercorn, Py, Agent) {
    let port = free_port();
    let server = Hypercorn::start(port);
    let client = Py::start("h2_client.py", &[&port.to_string()]);
    let agent = Agent::start(&[
        "--pid",
        &client.pid().to_string(),
        "--target-name",
        TARGET,
        "--no-discover",
        "--debug-requests",
    ]);
    agent.wait_tls_probed();
    (port, server, client, agent)
}

fn wait_total(agent: &Agent, total: f64) -> Samples {
    wait_for(Duration::from_secs(20), "every request counted", || {
        (agent_counts(&agent.scrape()).values().sum::<f64>() >= total).then_some(())
    });
    agent.settled()
}

#[test]
fn http2_sync_and_async_match_server_and_client() {
    let (port, _server, mut client, agent) = start();
    let made: Vec<Value> = serde_json::from_str(&client.ask("sync")).unwrap();
    let concurrent: Vec<Value> = serde_json::from_str(&client.ask("async 40")).unwrap();
    let truth = server_counts(port);
    let total: f64 = truth.values().sum();
    assert_eq!(total as usize, made.len() + concurrent.len());
    let m = wait_total(&agent, total);
    assert_eq!(agent_counts(&m), truth, "requests per (method, endpoint, code)");

    // Per request, by correlation id: code, endpoint, and the duration within
    // 1 ms or 5% of the client's own clock (concurrent streams included).
    let recent: Value = serde_json::from_str(&agent.get("/debug/requests").body).unwrap();
    let by_id: BTreeMap<&str, &Value> =
        recent["requests"].as_array().unwrap().iter().filter_map(|r| Some((r["request_id"].as_str()?, r))).collect();
    let mut worst = 0.0f64;
    for r in made.iter().chain(&concurrent) {
        let seen = by_id.get(r[3].as_str().unwrap()).unwrap_or_else(|| panic!("{r} not in /debug/requests"));
        assert_eq!(seen["code"].as_str().unwrap(), r[2].to_string(), "{r}");
        assert_eq!(seen["endpoint"].as_str().unwrap(), template(r[1].as_str().unwrap()), "{r}");
        let (client_ms, agent_ms) = (r[4].as_f64().unwrap() * 1e3, seen["duration_ms"].as_f64().unwrap());
        let diff = (client_ms - agent_ms).abs();
        worst = worst.max(diff);
        assert!(diff <= 1.0 || diff <= 0.05 * client_ms, "{r}: client {client_ms:.3} ms, agent {agent_ms:.3} ms");
    }
    eprintln!("{} HTTP/2 requests ({} concurrent); worst duration difference {worst:.3} ms", total, concurrent.len());
    // The TLS connections were recognised as HTTP/2 (open ones on the health page, closed ones counted).
    let open =
        agent.details()["connections"].as_array().unwrap().iter().filter(|c| c["protocol"] == "http2").count() as f64;
    let closed = m.get("pywats_agent_connections_total", &[("protocol", "http2"), ("tls", "true")]).unwrap_or(0.0);
    assert!(open + closed >= 2.0, "HTTP/2 connections: {open} open, {closed} closed");
    for name in ["pywats_agent_parse_errors_total", "pywats_agent_events_lost_total"] {
        for (l, v) in m.series(name) {
            assert_eq!(v, 0.0, "{name} {l:?}");
        }
    }
    for path in ["/metrics", "/health/details", "/debug/requests"] {
        let body = agent.get(path).body;
        assert!(!body.contains(SECRET) && !body.contains("h2-query"), "{path} leaks a secret");
    }
    assert!(!agent.log().contains(SECRET));
}

/// A stream the client gave up on (its timeout) counts as an error without a
/// status code once its connection is gone (here: the process ends).
#[test]
fn a_stream_the_client_gives_up_is_an_error() {
    let (_port, _server, mut client, agent) = start();
    assert_eq!(client.ask("cancel"), "\"ReadTimeout\"");
    client.ask("exit");
    let m = wait_for(Duration::from_secs(10), "the abandoned stream", || {
        let m = agent.scrape();
        m.get("pywats_http_requests_total", &[("endpoint", "/slow/{id}/c"), ("code", "none")]).map(|_| m)
    });
    assert_eq!(m.get("pywats_http_requests_total", &[("endpoint", "/slow/{id}/c"), ("status", "error")]), Some(1.0));
    let errors: f64 = m
        .series("pywats_errors_total")
        .iter()
        .filter(|(l, _)| l["operation"] == "GET /slow/{id}/c")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(errors, 1.0);
}

/// RST_STREAM and GOAWAY from a server that sends them on purpose: the reset
/// stream and the stream the GOAWAY left unanswered are errors without a code;
/// httpx's retry of the latter on a new connection is a request of its own.
#[test]
fn rst_stream_and_goaway_from_the_server() {
    let port = free_port();
    let (cert, key) = tls::cert();
    let _server = Py::start("h2_fault_server.py", &[&port.to_string(), cert.to_str().unwrap(), key.to_str().unwrap()]);
    let mut client = Py::start("h2_client.py", &[&port.to_string()]);
    let agent = Agent::start(&[
        "--pid",
        &client.pid().to_string(),
        "--target-name",
        TARGET,
        "--no-discover",
        "--debug-requests",
    ]);
    agent.wait_tls_probed();
    let seen: Value = serde_json::from_str(&client.ask("faults")).unwrap();
    assert_eq!(seen["/rst/f2"], "RemoteProtocolError");
    assert_eq!(seen["/goaway/f3"], 200);
    let body: Value = serde_json::from_str(&tls::get(port, "/__counts")).unwrap();
    let mut truth: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for row in body["counts"].as_array().unwrap() {
        let outcome = row[2].as_str().unwrap();
        let code = if outcome.parse::<u16>().is_ok() { outcome } else { "none" };
        *truth
            .entry((row[0].as_str().unwrap().into(), template(row[1].as_str().unwrap()), code.into()))
            .or_default() += row[3].as_f64().unwrap();
    }
    let total: f64 = truth.values().sum();
    let m = wait_for(Duration::from_secs(10), "every stream counted", || {
        let m = agent.scrape();
        (m.series("pywats_http_requests_total").iter().map(|(_, v)| v).sum::<f64>() >= total).then_some(m)
    });
    let mut seen_by_agent: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for (l, v) in m.series("pywats_http_requests_total") {
        *seen_by_agent.entry((l["method"].clone(), l["endpoint"].clone(), l["code"].clone())).or_default() += v;
    }
    assert_eq!(seen_by_agent, truth);
    let error = |t: &str, op: &str| m.get("pywats_errors_total", &[("error_type", t), ("operation", op)]);
    assert_eq!(error("stream_reset", "GET /rst/f2"), Some(1.0));
    assert_eq!(error("connection_closed", "GET /goaway/f3"), Some(1.0));
    for (l, v) in m.series("pywats_agent_parse_errors_total") {
        assert_eq!(v, 0.0, "{l:?}");
    }
}
