//! The agent against peers it does not control and load it did not choose:
//! a hostile HTTP/2 server, a server answering hundreds of status codes,
//! tens of thousands of half-open connections, closes lost in a full ring.
//! Each overflow is compared with what the peers did (their own counts, the
//! kernel's lost-event counts), memory and CPU with /proc.

use std::{collections::BTreeMap, time::Duration};

use pywats_agent_tests::{agent::Agent, free_port, proc::status_field, prom::Samples, py::Py, tls, wait_for};
use serde_json::Value;

const TARGET: &str = "station";
const MIB: f64 = 1024.0 * 1024.0;

fn rss_bytes(pid: u32) -> f64 {
    status_field(pid, "VmRSS").expect("VmRSS") as f64 * 1024.0
}

/// User and system CPU time of a process, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name start at field 3; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("comm").1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn limit(m: &Samples, name: &str) -> f64 {
    m.get("pywats_agent_limit_hits_total", &[("limit", name)]).unwrap_or_else(|| panic!("no limit {name}"))
}

fn sum(m: &Samples, name: &str) -> f64 {
    m.series(name).iter().map(|(_, v)| v).sum()
}

fn assert_no_loss(m: &Samples) {
    assert_eq!(sum(m, "pywats_agent_events_lost_total"), 0.0, "events lost: counts would not be exact");
}

fn watch(client: &Py, extra: &[&str]) -> Agent {
    let pid = client.pid().to_string();
    let mut args = vec!["--pid", &pid, "--target-name", TARGET, "--no-discover"];
    args.extend_from_slice(extra);
    Agent::start(&args)
}

/// CONTINUATION floods, a table size update to 2^28, a 1 MiB HEADERS frame
/// and a 60 KiB header block of one-byte Huffman strings, each on its own
/// connection, twice: every one is counted under its limit, the agent stays
/// within 32 MiB of growth and 2 s of CPU, stays ready, and still counts the
/// plain request that follows exactly.
#[test]
fn a_hostile_http2_server_costs_bounded_memory_and_cpu_and_every_overflow_is_counted() {
    let port = free_port();
    let (cert, key) = tls::cert();
    let _server =
        Py::start("hostile_h2_server.py", &[&port.to_string(), cert.to_str().unwrap(), key.to_str().unwrap()]);
    let mut client = Py::start("h2_raw_client.py", &[&port.to_string()]);
    let agent = watch(&client, &[]);
    agent.wait_tls_probed();
    // A first connection: what the agent allocates once is not growth.
    client.ask("get /ok");
    agent.settled();
    let (rss0, cpu0) = (rss_bytes(agent.pid()), cpu_seconds(agent.pid()));

    let hostile = ["/flood/32", "/table", "/huffman-frame/1024", "/huffman-block/60"];
    let mut read = 0u64;
    for path in hostile.iter().chain(&hostile).chain(&["/ok"]) {
        read += client.ask(&format!("get {path}")).parse::<u64>().unwrap();
    }
    let m = agent.settled();
    let (rss1, cpu1) = (rss_bytes(agent.pid()), cpu_seconds(agent.pid()));

    let served: BTreeMap<String, f64> = serde_json::from_str(&tls::get(port, "/__counts")).unwrap();
    let n = |s: &str| served.get(s).copied().unwrap_or(0.0);
    eprintln!(
        "{:.1} MiB read by the client; agent: RSS {:.1} -> {:.1} MiB, {:.3} s CPU; served {served:?}",
        read as f64 / MIB,
        rss0 / MIB,
        rss1 / MIB,
        cpu1 - cpu0
    );
    assert_no_loss(&m);
    assert_eq!((n("flood"), n("table"), n("huffman-frame"), n("huffman-block"), n("ok")), (2.0, 2.0, 2.0, 2.0, 2.0));
    assert_eq!(limit(&m, "h2_header_block"), n("flood") + n("huffman-frame"));
    assert_eq!(limit(&m, "h2_header_table"), n("table"));
    assert_eq!(limit(&m, "h2_header_fields"), n("huffman-block"));
    // Each hostile response ends its stream undecoded, counted, never guessed.
    let undecodable =
        m.get("pywats_agent_parse_errors_total", &[("protocol", "http2"), ("reason", "undecodable_headers")]);
    assert_eq!(undecodable, Some(n("flood") + n("table") + n("huffman-frame") + n("huffman-block")));
    assert_eq!(sum(&m, "pywats_http_requests_total"), n("ok"));
    assert_eq!(m.get("pywats_http_requests_total", &[("endpoint", "/ok"), ("code", "200")]), Some(n("ok")));
    assert!(rss1 - rss0 <= 32.0 * MIB, "agent grew by {:.1} MiB", (rss1 - rss0) / MIB);
    assert!(cpu1 - cpu0 < 2.0, "agent used {:.2} s of CPU", cpu1 - cpu0);
    assert_eq!(agent.get("/health/ready").status, 200);
}

/// Every status code in the IANA registry (RFC 9110 and later), including
/// those marked unused: the `code` values that stay themselves.
fn registered(code: u64) -> bool {
    matches!(code, 100..=103 | 200..=208 | 226 | 300..=308 | 400..=418 | 421..=426 | 428 | 429 | 431 | 451 | 500..=508 | 510 | 511)
}

/// One endpoint answering 300 distinct codes and a client sending unusual
/// methods: the endpoint has at most 100 series, and every request is still
/// counted, the unregistered ones under `other`, with the status (success or
/// error) its real code gave.
#[test]
fn three_hundred_status_codes_and_unusual_methods_make_bounded_series_and_keep_counts() {
    let port = free_port();
    let server = Py::start("labels_server.py", &[&port.to_string()]);
    let mut client = Py::start("labels_client.py", &[&port.to_string()]);
    let agent = watch(&client, &[]);
    assert_eq!(client.ask("codes 200 499"), "300");
    assert_eq!(client.ask("methods GET,POST,BREW,PROPFIND,MKCOL,PATCH,PURGE,LOCK"), "8");
    let m = agent.settled();

    let served: Vec<Value> =
        serde_json::from_str(&pywats_agent_tests::http::get(port, "/__counts").unwrap().body).unwrap();
    drop(server);
    let standard = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
    let mut truth: BTreeMap<(String, String, String, String), f64> = BTreeMap::new();
    let (mut unregistered, mut unusual) = (0.0, 0.0);
    for row in &served {
        let (method, path, code, n) =
            (row[0].as_str().unwrap(), row[1].as_str().unwrap(), row[2].as_u64().unwrap(), row[3].as_f64().unwrap());
        let endpoint = if path.starts_with("/codes/") { "/codes/{id}" } else { path };
        let method = if standard.contains(&method) { method.to_string() } else { "other".to_string() };
        let status = if code >= 400 { "error" } else { "success" };
        let label = if registered(code) { code.to_string() } else { "other".to_string() };
        unregistered += if registered(code) { 0.0 } else { n };
        unusual += if method == "other" { n } else { 0.0 };
        *truth.entry((method, endpoint.to_string(), status.to_string(), label)).or_default() += n;
    }
    let mut seen: BTreeMap<(String, String, String, String), f64> = BTreeMap::new();
    for (l, v) in m.series("pywats_http_requests_total") {
        *seen
            .entry((l["method"].clone(), l["endpoint"].clone(), l["status"].clone(), l["code"].clone()))
            .or_default() += v;
    }
    assert_eq!(seen, truth);
    let codes_series = seen.keys().filter(|k| k.1 == "/codes/{id}").count();
    eprintln!(
        "300 codes: {codes_series} series; {unregistered} requests with code `other`, {unusual} with method `other`"
    );
    assert!(codes_series <= 100, "{codes_series} series for one endpoint");
    assert_eq!((unregistered, unusual), (252.0, 5.0));
    assert_eq!(limit(&m, "status_code"), unregistered);
    assert_eq!(limit(&m, "method"), unusual);
    assert_no_loss(&m);
}

/// 20000 connections left with half a request head (held by three child
/// processes of the client; one process may hold 20000 files here): the agent
/// tracks `--max-connections` (4096) of them, evicts and counts the rest, and
/// its memory stays bounded.
#[test]
fn twenty_thousand_half_open_heads_are_bounded_and_evictions_counted() {
    let port = free_port();
    let _sink = Py::start("sink_server.py", &[&port.to_string(), "3"]);
    let mut client = Py::start("partial_heads.py", &[&port.to_string()]);
    let agent = watch(&client, &[]);
    agent.settled();
    let rss0 = rss_bytes(agent.pid());
    assert_eq!(client.ask("open 20000 1000"), "20000");
    let m = agent.settled();
    let rss1 = rss_bytes(agent.pid());
    let buffered = m.get("pywats_agent_connections_buffered_bytes", &[]).unwrap();
    eprintln!(
        "20000 half heads: {} tracked, {} evicted; {:.1} MiB buffered; agent RSS {:.1} -> {:.1} MiB",
        m.get("pywats_agent_connections_open", &[]).unwrap(),
        limit(&m, "connections"),
        buffered / MIB,
        rss0 / MIB,
        rss1 / MIB
    );
    assert_no_loss(&m);
    assert_eq!(m.get("pywats_agent_connections_open", &[]), Some(4096.0));
    assert_eq!(limit(&m, "connections"), 20000.0 - 4096.0);
    assert_eq!(limit(&m, "buffered_bytes"), 0.0);
    assert!(buffered <= 16.0 * MIB);
    assert!(rss1 - rss0 <= 32.0 * MIB, "agent grew by {:.1} MiB", (rss1 - rss0) / MIB);
    // Half heads are no requests: nothing was lost with the evicted connections.
    assert_eq!(sum(&m, "pywats_agent_requests_lost_total"), 0.0);

    assert_eq!(client.ask("close"), "20000");
    let m = wait_for(Duration::from_secs(30), "every connection closed", || {
        let m = agent.settled();
        (m.get("pywats_agent_connections_open", &[]) == Some(0.0)).then_some(m)
    });
    assert_eq!(limit(&m, "connections"), 20000.0 - 4096.0);
    assert_eq!(agent.get("/health/ready").status, 200);
}

/// Connections whose close event the kernel could not deliver (the agent is
/// stopped while a flood fills its ring, then they close): each ends either
/// by its close or, lost, by idle expiry, counted, exactly once.
#[test]
fn connections_whose_close_was_lost_expire_and_are_counted() {
    let port = free_port();
    let _sink = Py::start("sink_server.py", &[&port.to_string(), "1"]);
    let mut client = Py::start("partial_heads.py", &[&port.to_string()]);
    let agent = watch(&client, &["--net-ring-kib", "64", "--connection-idle-secs", "5"]);
    assert_eq!(client.ask("open 300 10"), "300");
    let m = agent.settled();
    assert_no_loss(&m);
    assert_eq!(m.get("pywats_agent_connections_open", &[]), Some(300.0));
    let rss0 = rss_bytes(agent.pid());

    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill").args([sig, &agent.pid().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    // 400 KiB of writes against a 64 KiB ring, then every connection closes.
    assert_eq!(client.ask("flood 100"), "ok");
    assert_eq!(client.ask("close"), "301");
    signal("-CONT");
    let m = wait_for(Duration::from_secs(30), "every connection to end", || {
        let m = agent.settled();
        (m.get("pywats_agent_connections_open", &[]) == Some(0.0)).then_some(m)
    });
    let lost_closes = m.get("pywats_agent_events_lost_total", &[("kind", "sock_close")]).unwrap();
    let expired = limit(&m, "connection_idle");
    let closed = sum(&m, "pywats_agent_connections_total");
    eprintln!("301 connections: {closed} closed, {expired} expired; {lost_closes} close events lost");
    assert!(lost_closes > 0.0, "the ring never filled");
    assert_eq!(closed + expired, 301.0, "each connection ended exactly once");
    assert_eq!(expired, lost_closes, "exactly those whose close was lost expired");
    assert!(rss_bytes(agent.pid()) - rss0 <= 32.0 * MIB);
    assert_eq!(agent.get("/health/ready").status, 200);
}
