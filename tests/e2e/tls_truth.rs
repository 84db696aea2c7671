//! TLS request durations against a ground truth that is not the Python
//! client's clock: a C client (`tests/c/tls_client.c`) linking the system
//! libssl calls `SSL_write`/`SSL_read` itself (the agent's non-_ex probes) and
//! times every request with CLOCK_MONOTONIC, the clock of the kernel's
//! `bpf_ktime_get_ns`: from just before the `SSL_write` that carries its first
//! byte to just after the `SSL_read` that returns its last response byte.
//! Over HTTP/1.1 keep-alive and HTTP/2 (one stream at a time, then concurrent
//! streams), every request the agent records is compared with it by
//! X-Request-ID, and the counts with what the server answered.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use pywats_agent_tests::{agent::Agent, free_port, prom::Samples, py::Py, tls, tls::Hypercorn, wait_for};
use serde_json::Value;

/// The C client's Authorization token: the agent must never show it.
const SECRET: &str = "Yy1jbGllbnQ6dHJ1dGgtc2VjcmV0";
const TARGET: &str = "c-client";

/// `tests/c/tls_client.c`, compiled once per test run. It loads libssl with
/// dlopen, so no OpenSSL headers are needed; `cc` is there because Rust links with it.
fn client_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("pywats-agent-tls-client-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let bin = dir.join("tls_client");
            let out = Command::new("cc")
                .args(["-O2", "-Wall", "-Wextra", "-o"])
                .arg(&bin)
                .arg(pywats_agent_tests::root().join("tests/c/tls_client.c"))
                .arg("-ldl")
                .output()
                .expect("run cc");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && stderr.is_empty(), "cc tests/c/tls_client.c:\n{stderr}");
            bin
        })
        .clone()
}

/// One request as the C client made and timed it.
#[derive(Debug)]
struct Made {
    id: String,
    method: String,
    path: String,
    code: u16,
    start_ns: u64,
    end_ns: u64,
}

impl Made {
    fn client_ms(&self) -> f64 {
        (self.end_ns - self.start_ns) as f64 / 1e6
    }
}

struct CClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl CClient {
    /// Starts the client (`h1` or `h2`) and waits until it has loaded libssl;
    /// it makes no TLS call before [`CClient::run`].
    fn start(mode: &str, port: u16) -> CClient {
        let mut child = Command::new(client_binary())
            .args([mode, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn tls_client");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut client = CClient { child, stdin, stdout };
        assert_eq!(client.line(), "ready", "tls_client did not start");
        client
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).expect("read tls_client stdout");
        if l.is_empty() {
            panic!("tls_client ended early ({:?}); its message is above", self.child.wait());
        }
        l.trim().to_string()
    }

    /// Runs the plan: the requests made, and the TLS data events its SSL calls produced.
    fn run(&mut self) -> (Vec<Made>, f64) {
        writeln!(self.stdin, "go").and_then(|_| self.stdin.flush()).expect("write tls_client stdin");
        let mut made = Vec::new();
        loop {
            let line = self.line();
            let f: Vec<&str> = line.split(' ').collect();
            match f[..] {
                ["tls_events", n] => {
                    assert_eq!(self.line(), "done");
                    return (made, n.parse().unwrap());
                }
                [id, method, path, code, start, end] => made.push(Made {
                    id: id.into(),
                    method: method.into(),
                    path: path.into(),
                    code: code.parse().unwrap(),
                    start_ns: start.parse().unwrap(),
                    end_ns: end.parse().unwrap(),
                }),
                _ => panic!("unexpected line from tls_client: {line}"),
            }
        }
    }
}

impl Drop for CClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Numbers in a path become `{id}` (the agent's documented heuristic).
fn template(path: &str) -> String {
    path.split('/')
        .map(|s| if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) { "{id}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

type Counts = BTreeMap<(String, String, String), f64>;

/// What the server answered (asked from a helper process, never the client),
/// and its whole answer.
fn server_counts(port: u16) -> (Counts, Value) {
    let body: Value = serde_json::from_str(&tls::get(port, "/__counts")).unwrap();
    let mut out = BTreeMap::new();
    for row in body["counts"].as_array().unwrap() {
        let key = (row[0].as_str().unwrap().to_string(), template(row[1].as_str().unwrap()), row[2].to_string());
        *out.entry(key).or_insert(0.0) += row[3].as_f64().unwrap();
    }
    (out, body)
}

fn agent_counts(m: &Samples) -> Counts {
    let mut out = BTreeMap::new();
    for (l, v) in m.series("pywats_http_requests_total") {
        assert_eq!(l["target"], TARGET);
        *out.entry((l["method"].clone(), l["endpoint"].clone(), l["code"].clone())).or_insert(0.0) += v;
    }
    out
}

/// Attaches the agent to the waiting client, runs the plan (`planned`
/// requests), and checks the agent against the client's clock and the
/// server's counts. Returns what the server said it answered.
fn check(label: &str, mut client: CClient, server_port: u16, planned: usize) -> Value {
    let agent = Agent::start(&[
        "--pid",
        &client.pid().to_string(),
        "--target-name",
        TARGET,
        "--no-discover",
        "--debug-requests",
    ]);
    // TLS probes are attached per process: the client (libssl mapped) exists.
    agent.wait_tls_probed();
    let (made, tls_events) = client.run();
    assert_eq!(made.len(), planned, "requests the C client made");
    let (truth, server) = server_counts(server_port);
    assert_eq!(truth.values().sum::<f64>() as usize, made.len(), "the server answered every request once");
    wait_for(Duration::from_secs(20), "every request counted", || {
        (agent_counts(&agent.scrape()).values().sum::<f64>() >= made.len() as f64).then_some(())
    });
    let m = agent.settled();
    assert_eq!(agent_counts(&m), truth, "pywats_http_requests_total per (method, endpoint, code)");
    // Every SSL call's plaintext reached the agent: the non-_ex probes saw them all.
    assert_eq!(m.get("pywats_agent_events_total", &[("kind", "tls_data")]), Some(tls_events), "TLS data events");
    for name in
        ["pywats_agent_events_lost_total", "pywats_agent_parse_errors_total", "pywats_agent_requests_lost_total"]
    {
        for (l, v) in m.series(name) {
            assert_eq!(v, 0.0, "{name} {l:?}");
        }
    }

    let recent: Value = serde_json::from_str(&agent.get("/debug/requests").body).unwrap();
    let by_id: BTreeMap<&str, &Value> =
        recent["requests"].as_array().unwrap().iter().filter_map(|r| Some((r["request_id"].as_str()?, r))).collect();
    let show = std::env::var_os("PYWATS_SHOW_DURATIONS").is_some();
    // Client minus agent, in ms, per request.
    let mut diffs: Vec<(f64, &Made)> = Vec::new();
    let mut outside = Vec::new();
    for r in &made {
        let seen = by_id.get(r.id.as_str()).unwrap_or_else(|| panic!("{} missing from /debug/requests", r.id));
        assert_eq!(seen["method"], r.method.as_str(), "{r:?}");
        assert_eq!(seen["endpoint"], template(&r.path).as_str(), "{r:?}");
        assert_eq!(seen["code"], r.code.to_string().as_str(), "{r:?}");
        let (client_ms, agent_ms) = (r.client_ms(), seen["duration_ms"].as_f64().unwrap());
        let diff = client_ms - agent_ms;
        if show {
            eprintln!("{} {:5} {:32} client {client_ms:9.3} ms  agent {agent_ms:9.3} ms", r.id, r.method, r.path);
        }
        if diff.abs() > 1.0 && diff.abs() > 0.05 * client_ms {
            outside.push(format!("{} {} {}: client {client_ms:.3} ms, agent {agent_ms:.3} ms", r.id, r.method, r.path));
        }
        diffs.push((diff, r));
    }
    diffs.sort_by(|a, b| a.0.abs().total_cmp(&b.0.abs()));
    let (median, (worst, w)) = (diffs[diffs.len() / 2].0.abs(), diffs[diffs.len() - 1]);
    let (lo, hi) = diffs.iter().fold((f64::MAX, f64::MIN), |(lo, hi), d| (lo.min(d.0), hi.max(d.0)));
    eprintln!(
        "{label}: {} requests; |client − agent| median {:.1} µs, worst {:.1} µs ({} {}: client {:.3} ms); \
         client − agent from {:.1} to {:.1} µs",
        made.len(),
        median * 1e3,
        worst.abs() * 1e3,
        w.id,
        w.path,
        w.client_ms(),
        lo * 1e3,
        hi * 1e3
    );
    assert!(outside.is_empty(), "durations beyond 1 ms and 5% of the C client's clock:\n{}", outside.join("\n"));

    for path in ["/metrics", "/health/details", "/debug/requests"] {
        assert!(!agent.get(path).body.contains(SECRET), "{path} leaks the Authorization value");
    }
    assert!(!agent.log().contains(SECRET), "the agent's log leaks the Authorization value");
    server
}

#[test]
fn tls_truth_http1_durations_match_the_c_client() {
    let port = free_port();
    let (cert, key) = tls::cert();
    let _server =
        Py::start("http_server.py", &[&port.to_string(), "--tls", cert.to_str().unwrap(), key.to_str().unwrap()]);
    let client = CClient::start("h1", port);
    let server = check("HTTP/1.1 over TLS", client, port, 48);
    let total: f64 = server["auth"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
    assert_eq!(server["auth"][format!("Basic {SECRET}")].as_f64(), Some(total), "the token was sent every time");
}

#[test]
fn tls_truth_http2_durations_match_the_c_client() {
    let port = free_port();
    let _server = Hypercorn::start(port);
    let client = CClient::start("h2", port);
    check("HTTP/2 over TLS", client, port, 50);
}
