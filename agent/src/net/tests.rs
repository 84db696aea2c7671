//! The pipeline: events in, metrics out, with every limit counted.

use std::time::SystemTime;

use pywats_agent_ebpf::abi::{EventHeader, EventKind as K, TLS_CONN};

use super::*;
use crate::{
    metrics::Metrics,
    net::limits::{HTTP1_MAX_PENDING, MAX_ENDPOINT_LABEL},
};

#[test]
fn offsets_reveal_exactly_what_was_lost() {
    let mut next = Some(0);
    assert_eq!(lost_before(&mut next, 0, 100), 0);
    assert_eq!(lost_before(&mut next, 100, 50), 0);
    // Events for bytes 150..400 never arrived.
    assert_eq!(lost_before(&mut next, 400, 10), 250);
    assert_eq!(next, Some(410));
    // The kernel's entry restarted: re-base, nothing lost.
    assert_eq!(lost_before(&mut next, 0, 5), 0);
    assert_eq!(next, Some(5));
    // Unknown offsets claim nothing and leave the next one unchecked.
    assert_eq!(lost_before(&mut next, SEQ_UNKNOWN, 5), 0);
    assert_eq!(lost_before(&mut next, 900, 5), 0);
    assert_eq!(next, Some(905));
}

struct Run {
    net: NetPipeline,
    m: HttpMetrics,
    deps: Arc<Mutex<Dependencies>>,
    ts: u64,
}

const SECOND: u64 = 1_000_000_000;

impl Run {
    fn new(limits: NetLimits, max_endpoints: usize) -> Run {
        let m = HttpMetrics::new(&Metrics::new(SystemTime::UNIX_EPOCH));
        let endpoints = Endpoints::new(&[], max_endpoints).unwrap();
        let deps = Arc::new(Mutex::new(Dependencies::default()));
        let net = NetPipeline::new(endpoints, m.clone(), Arc::default(), Arc::default(), limits, deps.clone());
        Run { net, m, deps, ts: 1 }
    }

    fn connect(&mut self, conn: u64) {
        self.ts += 1;
        let header = EventHeader { kind: K::SockConnect as u32, tgid: 7, ts_ns: self.ts, ..Default::default() };
        self.net.on_conn(K::SockConnect, &ConnEvent { header, conn_id: conn, ..Default::default() });
    }

    fn close(&mut self, conn: u64) {
        self.ts += 1;
        let header = EventHeader { kind: K::SockClose as u32, tgid: 7, ts_ns: self.ts, ..Default::default() };
        self.net.on_conn(K::SockClose, &ConnEvent { header, conn_id: conn, ..Default::default() });
    }

    /// A connect (`ret` 0, -EINPROGRESS or -errno) or close of `conn` to `addr`.
    fn conn_event(&mut self, kind: K, conn: u64, ret: i64, addr: SockAddr) {
        self.ts += 1;
        let header = EventHeader { kind: kind as u32, tgid: 7, ts_ns: self.ts, ret, ..Default::default() };
        self.net.on_conn(kind, &ConnEvent { header, conn_id: conn, addr });
    }

    /// One write (`egress`) or read of the target, as a client, captured whole.
    fn io(&mut self, conn: u64, egress: bool, bytes: &[u8]) {
        self.io_of(K::SockData, conn, egress, bytes)
    }

    fn io_of(&mut self, kind: K, conn: u64, egress: bool, bytes: &[u8]) {
        self.ts += 1;
        let header = EventHeader {
            kind: kind as u32,
            tgid: 7,
            ts_ns: self.ts,
            ret: bytes.len() as i64,
            len: bytes.len() as u32,
            ..Default::default()
        };
        let ev = DataEvent {
            header,
            conn_id: conn,
            call_start_ns: self.ts,
            seq: SEQ_UNKNOWN,
            direction: if egress { direction::EGRESS } else { direction::INGRESS } as u16,
            role: role::CLIENT as u16,
            ..Default::default()
        };
        self.net.on_data(kind, &ev, bytes, &[]);
    }

    /// The one dependency of `server`: (state, consecutive failures, last error).
    fn dependency(&self, server: &str) -> (&'static str, u64, Option<&'static str>) {
        let views = self.deps.locked().views(self.ts);
        let v = views.iter().find(|v| v.server == server).unwrap_or_else(|| panic!("{server}: {views:?}"));
        (v.state, v.consecutive_failures, v.last_error)
    }

    fn exchange(&mut self, conn: u64, method: &str, path: &str, code: u16) {
        self.io(conn, true, format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        self.io(conn, false, format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes());
    }

    fn requests(&self, method: &str, endpoint: &str, status: &str, code: &str) -> u64 {
        self.m.requests.with_label_values(&["unknown", method, endpoint, status, code]).get()
    }

    fn hits(&self, limit: Limit) -> u64 {
        self.m.limit_hits.with_label_values(&[limit.name()]).get()
    }

    fn lost(&self) -> u64 {
        self.m.requests_lost.with_label_values(&["unknown", "http1"]).get()
    }
}

#[test]
fn codes_and_methods_outside_the_standard_sets_are_other_and_counted() {
    let mut r = Run::new(NetLimits::default(), 500);
    r.connect(1);
    for code in 200..500 {
        r.exchange(1, "GET", "/codes", code);
    }
    r.exchange(1, "BREW", "/codes", 200);
    r.exchange(1, "propfind", "/codes", 200);
    // 300 codes: 48 registered ones, the rest under `other`, success and error apart.
    assert_eq!(r.requests("GET", "/codes", "success", "other"), 200 - 19);
    assert_eq!(r.requests("GET", "/codes", "error", "other"), 100 - 29);
    assert_eq!(r.requests("GET", "/codes", "success", "226"), 1);
    assert_eq!(r.requests("other", "/codes", "success", "200"), 2);
    assert_eq!(r.hits(Limit::StatusCode), 300 - 48);
    assert_eq!(r.hits(Limit::Method), 2);
    let errors = r.m.errors.with_label_values(&["unknown", "http_4xx", "GET /codes"]).get();
    assert_eq!(errors, 100);
}

#[test]
fn endpoints_are_capped_per_target_and_role_and_by_length() {
    let mut r = Run::new(NetLimits::default(), 3);
    r.connect(1);
    for path in ["/a", "/b", "/c", "/d", "/e"] {
        r.exchange(1, "GET", path, 200);
    }
    let long = format!("/{}", ["seg"; MAX_ENDPOINT_LABEL / 4 + 1].join("/"));
    r.exchange(1, "GET", &long, 200);
    assert_eq!(r.requests("GET", "/c", "success", "200"), 1);
    assert_eq!(r.requests("GET", "other", "success", "200"), 3);
    assert_eq!((r.hits(Limit::Endpoints), r.hits(Limit::EndpointLength)), (2, 1));
}

#[test]
fn pending_requests_are_capped() {
    let mut r = Run::new(NetLimits::default(), 500);
    r.connect(1);
    // Requests whose responses never come (say, the response stream lost sync).
    for _ in 0..HTTP1_MAX_PENDING + 10 {
        r.io(1, true, b"GET /x HTTP/1.1\r\n\r\n");
    }
    assert_eq!(r.hits(Limit::Http1Pending), 10);
    r.close(1);
    let abandoned = r.m.errors.with_label_values(&["unknown", "timeout", "GET /x"]).get();
    assert_eq!(abandoned, HTTP1_MAX_PENDING as u64);
}

#[test]
fn connections_past_the_cap_are_evicted_least_recent_first() {
    let mut r = Run::new(NetLimits { max_connections: 3, ..NetLimits::default() }, 500);
    for conn in 1..=5 {
        r.connect(conn);
        r.io(conn, true, b"GET /wait HTTP/1.1\r\n\r\n");
    }
    // 1 and 2 were evicted, with their waiting requests.
    assert_eq!((r.hits(Limit::Connections), r.lost()), (2, 2));
    assert_eq!(r.m.open_connections.get(), 3);
    r.io(5, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.requests("GET", "/wait", "success", "200"), 1);
    // An evicted connection's next bytes start it again, mid-way.
    r.exchange(1, "GET", "/again", 200);
    assert_eq!(r.requests("GET", "/again", "success", "200"), 1);
    assert_eq!(r.hits(Limit::Connections), 3);
}

#[test]
fn idle_connections_expire_their_late_close_is_ignored() {
    let mut r = Run::new(NetLimits { idle_ns: 60 * SECOND, ..NetLimits::default() }, 500);
    r.connect(1);
    r.io(1, true, b"GET /idle HTTP/1.1\r\n\r\n");
    r.connect(2);
    r.net.expire_idle(r.ts + 59 * SECOND);
    assert_eq!(r.hits(Limit::ConnectionIdle), 0);
    r.net.expire_idle(r.ts + 61 * SECOND);
    assert_eq!((r.hits(Limit::ConnectionIdle), r.lost(), r.m.open_connections.get()), (2, 1, 0));
    r.close(1);
    assert_eq!(r.m.connections.with_label_values(&["http1", "false"]).get(), 0);
}

#[test]
fn bytes_held_together_stay_within_the_budget() {
    let mut r = Run::new(NetLimits { max_buffered: 1 << 20, ..NetLimits::default() }, 500);
    let mut half = b"GET /x HTTP/1.1\r\nX: ".to_vec();
    half.resize(12_000, b'a');
    for conn in 0..1000 {
        r.connect(conn);
        r.io(conn, true, &half);
        assert!(r.m.buffered_bytes.get() <= 1 << 20, "{}", r.m.buffered_bytes.get());
    }
    let evicted = r.hits(Limit::BufferedBytes);
    assert!(evicted > 900, "{evicted}");
    assert_eq!(r.m.open_connections.get() as u64, 1000 - evicted);
}

fn v4(port: u16) -> SockAddr {
    let mut addr = [0; 16];
    addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    SockAddr { family: AF_INET, port, addr, ..Default::default() }
}

#[test]
fn connect_outcomes_and_exchanges_feed_dependency_health() {
    let mut r = Run::new(NetLimits::default(), 500);
    let (server, none) = (v4(8080), SockAddr::default());
    // A blocking connect refused.
    r.conn_event(K::SockConnect, 1, -111, server);
    assert_eq!(r.dependency("127.0.0.1:8080"), ("down", 1, Some("connection_refused")));
    // A non-blocking one: SO_ERROR's report carries no address, the connect had it.
    r.conn_event(K::SockConnect, 2, -EINPROGRESS, server);
    r.conn_event(K::SockConnect, 2, -111, none);
    assert_eq!(r.dependency("127.0.0.1:8080"), ("down", 2, Some("connection_refused")));
    // Closed before its outcome was known: the client gave up.
    r.conn_event(K::SockConnect, 3, -EINPROGRESS, server);
    r.conn_event(K::SockClose, 3, 0, none);
    assert_eq!(r.dependency("127.0.0.1:8080"), ("down", 3, Some("timeout")));
    let errors = r.m.errors.clone();
    let connect_errors = |e: &str| errors.with_label_values(&["unknown", e, "connect"]).get();
    assert_eq!((connect_errors("connection_refused"), connect_errors("timeout")), (2, 1));
    // Connected (SO_ERROR 0), then a 503 and an answer.
    r.conn_event(K::SockConnect, 4, -EINPROGRESS, server);
    r.conn_event(K::SockConnect, 4, 0, none);
    r.exchange(4, "GET", "/a", 503);
    assert_eq!(r.dependency("127.0.0.1:8080"), ("down", 4, Some("http_503")));
    r.exchange(4, "GET", "/a", 404);
    assert_eq!(r.dependency("127.0.0.1:8080"), ("up", 0, Some("http_503")));
    // One report's 500 is a failed request of a server that answers: up.
    r.exchange(4, "POST", "/api/Report/WSJF", 500);
    assert_eq!(r.dependency("127.0.0.1:8080"), ("up", 0, Some("http_503")));
    for (code, error) in [(502, "http_502"), (504, "http_504")] {
        r.exchange(4, "POST", "/api/Report/WSJF", code);
        assert_eq!(r.dependency("127.0.0.1:8080").2, Some(error));
    }
    assert_eq!(r.dependency("127.0.0.1:8080").0, "down");
    r.conn_event(K::SockClose, 4, 0, none);
    assert_eq!(connect_errors("timeout"), 1, "a connected socket's close is no timeout");
    // Three connections failed, one spoke HTTP/1.
    let connections = |p: &str| r.m.connections.with_label_values(&[p, "false"]).get();
    assert_eq!((connections("failed"), connections("http1")), (3, 1));
}

#[test]
fn each_connection_counts_once_by_what_it_spoke() {
    let mut r = Run::new(NetLimits::default(), 500);
    let hello = [0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5];
    // HTTPS: the socket's ciphertext and libssl's plaintext are one connection.
    r.conn_event(K::SockConnect, 1, 0, v4(8443));
    r.io(1, true, &hello);
    let ssl = TLS_CONN | 0x5000;
    r.io_of(K::TlsData, ssl, true, b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
    r.io_of(K::TlsData, ssl, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    r.conn_event(K::TlsClose, ssl, 0, SockAddr::default());
    r.close(1);
    // A handshake that failed: TLS, nothing seen inside.
    r.conn_event(K::SockConnect, 2, 0, v4(8443));
    r.io(2, true, &hello);
    r.close(2);
    // Plain HTTP/1, and one closed before a byte.
    r.connect(3);
    r.exchange(3, "GET", "/p", 200);
    r.close(3);
    r.connect(4);
    r.close(4);
    let c = |p: &str, tls: &str| r.m.connections.with_label_values(&[p, tls]).get();
    assert_eq!((c("http1", "true"), c("unknown", "true"), c("http1", "false"), c("unknown", "false")), (1, 1, 1, 1));
    let total: u64 = prometheus::core::Collector::collect(&r.m.connections)[0]
        .get_metric()
        .iter()
        .map(|m| m.get_counter().get_value() as u64)
        .sum();
    assert_eq!(total, 4);
}

#[test]
fn a_tls_connection_takes_the_server_of_its_threads_handshake() {
    let mut r = Run::new(NetLimits::default(), 500);
    r.conn_event(K::SockConnect, 1, 0, v4(8443));
    r.io(1, true, &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]);
    let ssl = TLS_CONN | 0x5000;
    r.io_of(K::TlsData, ssl, true, b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
    r.io_of(K::TlsData, ssl, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.dependency("127.0.0.1:8443"), ("up", 0, None));
    // The hint was used once: a later TLS connection of the thread without a handshake has no server.
    r.io_of(K::TlsData, ssl + 1, true, b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
    r.io_of(K::TlsData, ssl + 1, false, b"HTTP/1.1 500 E\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.dependency("127.0.0.1:8443"), ("up", 0, None));
    assert_eq!(r.deps.locked().views(r.ts).len(), 1);
}
