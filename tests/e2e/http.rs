//! HTTP/1 request metrics against ground truth: a loopback server counts what
//! it answered, Python clients (http.client, urllib, httpx) measure each
//! request; the agent watches only the client process.

use std::{collections::BTreeMap, time::Duration};

use pywats_agent_tests::{agent::Agent, free_port, http, prom::Samples, py::Py, wait_for};
use serde_json::Value;

const SECRET: &str = "cHl3YXRzOnMzY3JldC10b2tlbi12YWx1ZQ==";
const TARGET: &str = "station";

/// The test's own reading of an endpoint template for `/mix/<code>/<size>/<mode>/<tag>`:
/// numbers become `{id}` (the agent's documented heuristic), words stay.
/// The client's [least, most] seconds, in ms.
fn bracket_ms(bracket: &Value) -> (f64, f64) {
    (bracket[0].as_f64().unwrap() * 1e3, bracket[1].as_f64().unwrap() * 1e3)
}

/// The agent's clock and the client's are the same (CLOCK_MONOTONIC), read
/// in the kernel at the syscalls and in the client around them: the agent's
/// duration lies inside the client's bracket, up to the clocks' reading
/// granularity (20 µs).
fn assert_in_bracket(agent_ms: f64, bracket: &Value, what: &str) {
    let (least, most) = bracket_ms(bracket);
    assert!(
        agent_ms >= least - 0.02 && agent_ms <= most + 0.02,
        "{what}: agent {agent_ms:.3} ms, outside the client's {least:.3} … {most:.3} ms"
    );
}
fn template(path: &str) -> String {
    path.split('/')
        .map(|s| if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) { "{id}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

struct Setup {
    server_port: u16,
    tls: bool,
    _server: Py,
    client: Py,
}

fn setup() -> Setup {
    setup_with(false)
}

/// The server and the client, over HTTPS (HTTP/1.1) when `tls`.
fn setup_with(tls: bool) -> Setup {
    let server_port = free_port();
    let port = server_port.to_string();
    let server = if tls {
        let (cert, key) = pywats_agent_tests::tls::cert();
        Py::start("http_server.py", &[&port, "--tls", cert.to_str().unwrap(), key.to_str().unwrap()])
    } else {
        Py::start("http_server.py", &[&port])
    };
    let mut args = vec![port.as_str()];
    if tls {
        args.push("--tls");
    }
    let client = Py::start("http_client.py", &args);
    Setup { server_port, tls, _server: server, client }
}

fn agent_for(client: &Py) -> Agent {
    Agent::start(&["--pid", &client.pid().to_string(), "--target-name", TARGET, "--debug-requests"])
}

/// What the server answered: (method, endpoint template, code) → count.
fn server_counts(port: u16, tls: bool) -> (BTreeMap<(String, String, String), f64>, Value) {
    // Asked from this process (or a helper for HTTPS), never from the watched client.
    let text =
        if tls { pywats_agent_tests::tls::get(port, "/__counts") } else { http::get(port, "/__counts").unwrap().body };
    let body: Value = serde_json::from_str(&text).unwrap();
    let mut out = BTreeMap::new();
    for row in body["counts"].as_array().unwrap() {
        let key = (row[0].as_str().unwrap().to_string(), template(row[1].as_str().unwrap()), row[2].to_string());
        *out.entry(key).or_insert(0.0) += row[3].as_f64().unwrap();
    }
    (out, body["auth"].clone())
}

/// The agent's requests_total for the target: (method, endpoint, code) → count.
fn agent_counts(m: &Samples) -> BTreeMap<(String, String, String), f64> {
    let mut out = BTreeMap::new();
    for (l, v) in m.series("pywats_http_requests_total") {
        assert_eq!(l["target"], TARGET);
        let code: u16 = l["code"].parse().unwrap_or(0);
        let status = if (1..400).contains(&code) { "success" } else { "error" };
        assert_eq!(l["status"], status, "{l:?}");
        *out.entry((l["method"].clone(), l["endpoint"].clone(), l["code"].clone())).or_insert(0.0) += v;
    }
    out
}

fn assert_no_loss(m: &Samples) {
    for (l, v) in m.series("pywats_agent_events_lost_total") {
        assert_eq!(v, 0.0, "events lost: {l:?}");
    }
    for (l, v) in m.series("pywats_agent_event_decode_errors_total") {
        assert_eq!(v, 0.0, "decode errors: {l:?}");
    }
}

fn wait_total(agent: &Agent, total: f64) -> Samples {
    wait_for(Duration::from_secs(20), "the agent to count every request", || {
        let seen: f64 = agent.scrape().series("pywats_http_requests_total").iter().map(|(_, v)| v).sum();
        (seen >= total).then_some(())
    });
    agent.settled()
}

#[test]
fn counts_durations_and_errors_match_the_server_and_clients() {
    check_plan(setup());
}

/// The same over HTTPS: plaintext from the libssl probes; the ciphertext on the
/// sockets is recognised as TLS and not counted as a parse error.
#[test]
fn https_http1_counts_durations_and_errors() {
    check_plan(setup_with(true));
}

/// TLS data events seen and lost, once seen + lost reaches what the client
/// says its SSL calls produced.
fn tls_events(agent: &Agent, client: &mut Py) -> (f64, f64, f64) {
    let expected: f64 = client.ask("tls_events").parse().unwrap();
    let (seen, lost) = wait_for(Duration::from_secs(20), "every TLS event seen or counted lost", || {
        let m = agent.scrape();
        let seen = m.get("pywats_agent_events_total", &[("kind", "tls_data")]).unwrap_or(0.0);
        let lost = m.get("pywats_agent_events_lost_total", &[("kind", "tls_data")]).unwrap_or(0.0);
        (seen + lost >= expected).then_some((seen, lost))
    });
    (expected, seen, lost)
}

fn check_plan(mut s: Setup) {
    let agent = agent_for(&s.client);
    if s.tls {
        agent.wait_tls_probed();
    }
    let made: Vec<Value> = serde_json::from_str(&s.client.ask("plan")).unwrap();
    let (truth, auth) = server_counts(s.server_port, s.tls);
    let total: f64 = truth.values().sum();
    assert_eq!(total as usize, made.len());
    assert_eq!(auth[format!("Basic {SECRET}")], made.len(), "the server saw the token on every request");

    let m = wait_total(&agent, total);
    assert_eq!(agent_counts(&m), truth, "pywats_http_requests_total per (method, endpoint, code)");

    // Each histogram's _count equals its counter.
    let mut by_endpoint: BTreeMap<(String, String), f64> = BTreeMap::new();
    for ((method, endpoint, _), v) in &truth {
        *by_endpoint.entry((method.clone(), endpoint.clone())).or_default() += v;
    }
    for ((method, endpoint), n) in &by_endpoint {
        let l = [("target", TARGET), ("method", method.as_str()), ("endpoint", endpoint.as_str())];
        assert_eq!(m.get("pywats_http_request_duration_seconds_count", &l), Some(*n), "{method} {endpoint}");
        assert_eq!(m.get("pywats_http_request_size_bytes_count", &l), Some(*n), "{method} {endpoint}");
        // prometheus_client's default buckets (drop-in for pyWATS dashboards).
        for le in ["0.005", "0.075", "0.75", "7.5", "10", "+Inf"] {
            let mut b = l.to_vec();
            b.push(("le", le));
            assert!(m.get("pywats_http_request_duration_seconds_bucket", &b).is_some(), "bucket {le}");
        }
    }

    // Errors by class.
    let count_codes =
        |lo: u64, hi: u64| made.iter().filter(|r| (lo..hi).contains(&r["code"].as_u64().unwrap())).count();
    let errors = |t: &str| -> f64 {
        m.series("pywats_errors_total").iter().filter(|(l, _)| l["error_type"] == t).map(|(_, v)| v).sum()
    };
    assert_eq!(errors("http_4xx"), count_codes(400, 500) as f64);
    assert_eq!(errors("http_5xx"), count_codes(500, 600) as f64);

    // Per request: the agent's code and endpoint, and its duration within the
    // bracket the client's clock gives around its socket calls.
    let recent: Value = serde_json::from_str(&agent.get("/debug/requests").body).unwrap();
    let by_id: BTreeMap<&str, &Value> =
        recent["requests"].as_array().unwrap().iter().filter_map(|r| Some((r["request_id"].as_str()?, r))).collect();
    let mut widest = 0.0f64;
    for r in &made {
        let id = r["id"].as_str().unwrap();
        let seen = by_id.get(id).unwrap_or_else(|| panic!("request {id} missing from /debug/requests"));
        assert_eq!(seen["code"].as_str().unwrap(), r["code"].to_string(), "{r}");
        assert_eq!(seen["method"], r["method"], "{r}");
        assert_eq!(seen["endpoint"].as_str().unwrap(), template(r["path"].as_str().unwrap()), "{r}");
        let agent_ms = seen["duration_ms"].as_f64().unwrap();
        let (least, most) = bracket_ms(&r["seconds"]);
        widest = widest.max(most - least);
        if std::env::var_os("PYWATS_SHOW_DURATIONS").is_some() {
            eprintln!(
                "{:12} {:6} {:36} client {least:9.3}…{most:9.3} agent {agent_ms:9.3}",
                r["client"].as_str().unwrap(),
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap()
            );
        }
        assert_in_bracket(agent_ms, &r["seconds"], &format!("{} {}", r["client"], r["path"]));
    }
    eprintln!("{} requests; widest client bracket {widest:.3} ms", made.len());
    assert_no_loss(&m);
    if s.tls {
        // One event per 8 KiB piece of every SSL read and write the client made.
        let (expected, seen, lost) = tls_events(&agent, &mut s.client);
        assert_eq!((seen, lost), (expected, 0.0), "TLS data events (seen, lost)");
    }
    for (l, v) in m.series("pywats_agent_parse_errors_total") {
        assert_eq!(v, 0.0, "parse errors {l:?}");
    }
    for path in ["/metrics", "/health/details", "/debug/requests"] {
        assert!(!agent.get(path).body.contains(SECRET), "{path} leaks the Authorization value");
    }
}

#[test]
fn refused_connections_and_garbage_are_counted_not_fatal() {
    let mut s = setup();
    let agent = agent_for(&s.client);
    let closed = free_port();
    assert_eq!(s.client.ask(&format!("refused {closed}")), "\"URLError\"");
    assert_eq!(s.client.ask("garbage"), "\"ok\"");
    let m = wait_for(Duration::from_secs(10), "the parse error", || {
        let m = agent.scrape();
        m.get("pywats_agent_parse_errors_total", &[("protocol", "http1"), ("reason", "not_http")]).map(|_| m)
    });
    assert_eq!(m.get("pywats_agent_parse_errors_total", &[("protocol", "http1"), ("reason", "not_http")]), Some(1.0));
    assert_eq!(
        m.get(
            "pywats_errors_total",
            &[("target", TARGET), ("error_type", "connection_refused"), ("operation", "connect")]
        ),
        Some(1.0)
    );
    assert!(m.series("pywats_http_requests_total").is_empty(), "garbage is not a request");
    assert_eq!(agent.get("/health/ready").status, 200, "the agent is still healthy");
    assert_no_loss(&m);
}

#[test]
fn connections_open_before_attach_are_measured() {
    let mut s = setup();
    assert_eq!(s.client.ask("open"), "\"ok\"");
    let agent = agent_for(&s.client);
    s.client.ask("more 5");
    let m = wait_total(&agent, 5.0);
    let l = [("target", TARGET), ("method", "GET"), ("endpoint", "/mix/{id}/{id}/cl/more"), ("code", "200")];
    assert_eq!(m.get("pywats_http_requests_total", &l), Some(5.0));
    assert!(m.get("pywats_http_requests_total", &[("endpoint", "/mix/{id}/{id}/cl/open")]).is_none());
    let details = agent.details();
    let conns = details["connections"].as_array().unwrap();
    let remote = format!("127.0.0.1:{}", s.server_port);
    assert!(conns.iter().any(|c| c["remote"] == remote.as_str()), "{conns:?}");
}

#[test]
fn no_secret_in_any_output() {
    let mut s = setup();
    let agent = agent_for(&s.client);
    let made: Vec<Value> = serde_json::from_str(&s.client.ask("plan")).unwrap();
    wait_total(&agent, made.len() as f64);
    for path in ["/metrics", "/health/details", "/debug/requests", "/health"] {
        let body = agent.get(path).body;
        assert!(!body.contains(SECRET), "{path} leaks the Authorization value");
        assert!(!body.contains("q-secret"), "{path} leaks a query string");
    }
    let log = agent.log();
    assert!(!log.is_empty());
    assert!(!log.contains(SECRET) && !log.contains("q-secret"), "the log leaks a secret");
}

#[test]
fn sustained_load_without_loss() {
    let mut s = setup();
    let agent = agent_for(&s.client);
    let n = 5000;
    let seconds: f64 = s.client.ask(&format!("load {n}")).parse().unwrap();
    let m = wait_total(&agent, n as f64);
    let l = [("target", TARGET), ("method", "GET"), ("endpoint", "/mix/{id}/{id}/cl/load"), ("code", "200")];
    assert_eq!(m.get("pywats_http_requests_total", &l), Some(n as f64));
    let events: f64 = m.series("pywats_agent_events_total").iter().map(|(_, v)| v).sum();
    eprintln!(
        "{n} requests in {seconds:.2} s: {:.0} requests/s, {:.0} events/s, 0 lost",
        n as f64 / seconds,
        events / seconds
    );
    assert_no_loss(&m);
}

/// Honest loss accounting: with the agent stopped while the client moves more
/// plaintext than the ring holds, every TLS data event the probes produced is
/// either seen or counted as lost, exactly, under its own kind. The stream
/// offsets in the events turn the loss into gaps of known length: bodies are
/// skipped by length, a request whose answer fell into the loss is counted as
/// lost (never timed with a guess), and the connection's next requests are
/// counted exactly.
#[test]
fn tls_events_lost_while_the_agent_is_stopped_are_counted() {
    let mut s = setup_with(true);
    let agent = agent_for(&s.client);
    agent.wait_tls_probed();
    assert_eq!(s.client.ask("open"), "\"ok\"");
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill").args([sig, &agent.pid().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    // 24 × 2 MiB of plaintext, plus the ciphertext's socket events, against a 16 MiB ring.
    let answer = s.client.ask("bulk 24");
    signal("-CONT");
    let bulk: Vec<Value> = serde_json::from_str(&answer).unwrap();
    let (expected, seen, lost) = tls_events(&agent, &mut s.client);
    eprintln!("TLS data events: {expected} produced, {seen} seen, {lost} counted lost");
    assert!(lost > 0.0, "the ring never filled: {seen} of {expected} seen");
    assert_eq!(seen + lost, expected, "every TLS data event is seen or counted lost");

    s.client.ask("more 10");
    let endpoint = |tag: &str| format!("/mix/{{id}}/{{id}}/cl/{tag}");
    let m = wait_for(Duration::from_secs(20), "the requests after the loss", || {
        let m = agent.scrape();
        m.get("pywats_http_requests_total", &[("endpoint", &endpoint("more"))]).filter(|&n| n >= 10.0).map(|_| m)
    });
    let count = |tag: &str| m.get("pywats_http_requests_total", &[("endpoint", &endpoint(tag)), ("code", "200")]);
    assert_eq!(count("more"), Some(10.0), "the connection is back in sync after the loss");
    assert_eq!(count("open"), Some(1.0));
    for (l, v) in m.series("pywats_http_requests_total") {
        assert_eq!(l["code"], "200", "no request was given a wrong outcome: {l:?} {v}");
    }
    // Every bulk request the agent recorded is timed as the client timed it.
    let recent: Value = serde_json::from_str(&agent.get("/debug/requests").body).unwrap();
    let by_id: BTreeMap<&str, f64> = recent["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| Some((r["request_id"].as_str()?, r["duration_ms"].as_f64()?)))
        .collect();
    let mut recorded = 0.0;
    for b in &bulk {
        if let Some(agent_ms) = by_id.get(b[0].as_str().unwrap()) {
            recorded += 1.0;
            assert_in_bracket(*agent_ms, &b[1], &b.to_string());
        }
    }
    assert_eq!(count("bulk").unwrap_or(0.0), recorded);
    let lost_requests = m.get("pywats_agent_requests_lost_total", &[("protocol", "http1")]).unwrap_or(0.0);
    let unmatched =
        m.get("pywats_agent_parse_errors_total", &[("protocol", "http1"), ("reason", "unmatched_response")]);
    let lost_bytes = m.get("pywats_agent_skipped_bytes_total", &[("reason", "lost")]).unwrap_or(0.0);
    eprintln!(
        "bulk: {recorded} of 24 recorded, {lost_requests} counted lost, unmatched responses {unmatched:?}; \
         {lost_bytes} plaintext bytes lost"
    );
    assert!(recorded + lost_requests <= 24.0 && lost_requests > 0.0 && lost_bytes > 0.0);
}
