//! Retries as clients make them, with the real pyWATS client and a WATS-like
//! server (tests/py/retry_client.py, wats_server.py): none for a client that
//! never retries, however many 404s and 500s it hits for other ids or bodies
//! or asks again on a schedule; with pyWATS's retries on, exactly the
//! attempts it logged, per method and endpoint. The requests themselves
//! equal the server's counts, and each connection is counted once.

use std::{collections::BTreeMap, time::Duration};

use pywats_agent_tests::{agent::Agent, free_port, http, prom::Samples, py::Py, tls, wait_for};
use serde_json::Value;

const TOKEN: &str = "cmV0cnk6dG9rZW4=";
const TARGET: &str = "station";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Http,
    Https,
    H2,
}

fn template(path: &str) -> String {
    match path.strip_prefix("/api/Report/Wsjf/") {
        Some(_) => "/api/Report/Wsjf/{report_id}".into(),
        None => path.into(),
    }
}

/// What a run left: the agent's samples, the client's truth, the server's
/// counts per (method, endpoint, code) and the connections it was sent on.
struct Run {
    m: Samples,
    truth: Value,
    server: BTreeMap<(String, String, String), f64>,
    connections: f64,
}

fn run(mode: &str, server_flags: &[&str], transport: Transport) -> Run {
    let port = free_port();
    let (cert, key) = tls::cert();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let port_s = port.to_string();
    let mut args = vec![port_s.as_str(), TOKEN];
    args.extend(server_flags);
    match transport {
        Transport::Http => {}
        Transport::Https => args.extend(["--tls", cert, key]),
        Transport::H2 => args.extend(["--tls", cert, key, "--h2"]),
    }
    let _server = Py::start("wats_server.py", &args);
    let scheme = if transport == Transport::Http { "http" } else { "https" };
    let url = format!("{scheme}://127.0.0.1:{port}");
    let (mut client, first) = Py::spawn_env(
        "retry_client.py",
        &["--url", &url, "--token", TOKEN, "--mode", mode],
        &[("SSL_CERT_FILE", cert)],
    );
    let pid = first.strip_prefix("pid ").unwrap_or_else(|| panic!("client said {first:?}")).to_string();
    let agent = Agent::start(&["--pid", &pid, "--target-name", TARGET, "--no-discover"]);
    if transport != Transport::Http {
        agent.wait_tls_probed();
    }
    let line = client.ask("go");
    let truth: Value = serde_json::from_str(line.strip_prefix("truth ").unwrap_or_else(|| panic!("{line:?}"))).unwrap();
    let counts = if transport == Transport::Http {
        http::get(port, "/__counts").unwrap().body
    } else {
        tls::get(port, "/__counts")
    };
    let counts: Value = serde_json::from_str(&counts).unwrap();
    let mut server = BTreeMap::new();
    for row in counts["counts"].as_array().unwrap() {
        let key = (row[0].as_str().unwrap().to_string(), template(row[1].as_str().unwrap()), row[2].to_string());
        *server.entry(key).or_default() += row[3].as_f64().unwrap();
    }
    let total: f64 = server.values().sum();
    wait_for(Duration::from_secs(20), "the agent to count every request", || {
        let seen: f64 = agent.scrape().series("pywats_http_requests_total").iter().map(|(_, v)| v).sum();
        (seen >= total).then_some(())
    });
    // The client goes: its connections end, each is counted once.
    client.send("exit");
    let m = wait_for(Duration::from_secs(20), "the client's connections to end", || {
        let m = agent.settled();
        (m.get("pywats_agent_connections_open", &[]) == Some(0.0)).then_some(m)
    });
    Run { m, truth, server, connections: counts["connections"].as_f64().unwrap() }
}

/// Checks common to every run: the requests equal the server's, every
/// connection the server saw is counted once, as what it spoke, and none failed.
fn requests_and_connections(r: &Run, transport: Transport) {
    let mut seen: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for (l, v) in r.m.series("pywats_http_requests_total") {
        assert_eq!(l["target"], TARGET);
        *seen.entry((l["method"].clone(), l["endpoint"].clone(), l["code"].clone())).or_default() += v;
    }
    assert_eq!(seen, r.server, "requests per (method, endpoint, code): agent vs server");
    let (protocol, tls) = match transport {
        Transport::Http => ("http1", "false"),
        Transport::Https => ("http1", "true"),
        Transport::H2 => ("http2", "true"),
    };
    let mut counted: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (l, v) in r.m.series("pywats_agent_connections_total").into_iter().filter(|(_, v)| *v > 0.0) {
        counted.insert((l["protocol"].clone(), l["tls"].clone()), v);
    }
    let want = BTreeMap::from([((protocol.to_string(), tls.to_string()), r.connections)]);
    assert_eq!(counted, want, "connections by (protocol, tls): agent vs the server's");
}

/// The agent's retries per (method, endpoint).
fn retries(m: &Samples) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for (l, v) in m.series("pywats_http_retries_total").into_iter().filter(|(_, v)| *v > 0.0) {
        assert_eq!(l["target"], TARGET);
        *out.entry((l["method"].clone(), l["endpoint"].clone())).or_default() += v;
    }
    out
}

#[test]
fn a_client_that_never_retries_has_no_retries() {
    // 500s for every second report submitted, for every report fetched, and
    // for every third version check.
    let flags =
        ["--fail-every", "2", "--get-fail-first", "1000", "--get-fail-code", "500", "--version-fail-every", "3"];
    let r = run("never", &flags, Transport::Http);
    assert_eq!(r.truth["retries_logged"], serde_json::json!([]), "the client retried: {}", r.truth);
    requests_and_connections(&r, Transport::Http);
    let count = |method: &str, endpoint: &str, code: &str| {
        r.server.get(&(method.into(), endpoint.into(), code.into())).copied().unwrap_or(0.0)
    };
    // What it hit, by the server's count: 404s (19: ten ids, one asked for on
    // a schedule), 500s for other bodies, other ids, and a scheduled check.
    assert_eq!(count("GET", "/api/Report/Wsjf/{report_id}", "404"), 19.0);
    assert_eq!(count("POST", "/api/Report/WSJF", "500"), 3.0);
    assert_eq!(count("GET", "/api/Report/Wsjf/{report_id}", "500"), 3.0);
    assert_eq!(count("GET", "/api/App/Version", "500"), 3.0);
    assert_eq!(retries(&r.m), BTreeMap::new(), "retries counted for a client that never retries");
    // The server answered all along: its 500s are failed requests, not a server down.
    let up = r.m.series("pywats_dependency_up");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].1, 1.0, "{up:?}");
}

/// pyWATS with its retries on: each fetch gets two 503s before the report
/// (two retries each), and a version check that gets a 500 is retried
/// before the next one is due.
fn pywats_retries_are_counted_as_it_logged_them(transport: Transport) {
    let flags = ["--fail-every", "2", "--get-fail-first", "2", "--version-fail-every", "3"];
    let r = run("retry", &flags, transport);
    requests_and_connections(&r, transport);
    let mut logged: BTreeMap<(String, String), f64> = BTreeMap::new();
    for row in r.truth["retries_logged"].as_array().unwrap() {
        let key = (row[0].as_str().unwrap().to_string(), template(row[1].as_str().unwrap()));
        *logged.entry(key).or_default() += row[2].as_f64().unwrap();
    }
    let total: f64 = logged.values().sum();
    assert_eq!(Some(total), r.truth["retry_stats"].as_f64(), "the client's log vs its own statistics");
    assert!(total >= 8.0, "the client retried too little to tell anything: {}", r.truth);
    assert_eq!(retries(&r.m), logged, "retries per (method, endpoint): agent vs what pyWATS logged");
}

#[test]
fn pywats_retries_over_https_are_counted_as_it_logged_them() {
    pywats_retries_are_counted_as_it_logged_them(Transport::Https);
}

#[test]
fn pywats_retries_over_http2_are_counted_as_it_logged_them() {
    pywats_retries_are_counted_as_it_logged_them(Transport::H2);
}
