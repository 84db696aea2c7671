//! The pipeline: events in, metrics out, with every limit counted.

use std::time::SystemTime;

use pywats_agent_ebpf::abi::{EventHeader, EventKind as K};

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
    ts: u64,
}

const SECOND: u64 = 1_000_000_000;

impl Run {
    fn new(limits: ConnLimits, max_endpoints: usize) -> Run {
        let m = HttpMetrics::new(&Metrics::new(SystemTime::UNIX_EPOCH));
        let endpoints = Endpoints::new(&[], max_endpoints).unwrap();
        let net = NetPipeline::new(endpoints, m.clone(), Arc::default(), Arc::default(), limits);
        Run { net, m, ts: 1 }
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

    /// One write (`egress`) or read of the target, as a client, captured whole.
    fn io(&mut self, conn: u64, egress: bool, bytes: &[u8]) {
        self.ts += 1;
        let header = EventHeader {
            kind: K::SockData as u32,
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
        self.net.on_data(K::SockData, &ev, bytes, &[]);
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
    let mut r = Run::new(ConnLimits::default(), 500);
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
    let mut r = Run::new(ConnLimits::default(), 3);
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
    let mut r = Run::new(ConnLimits::default(), 500);
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
    let mut r = Run::new(ConnLimits { max_connections: 3, ..ConnLimits::default() }, 500);
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
    let mut r = Run::new(ConnLimits { idle_ns: 60 * SECOND, ..ConnLimits::default() }, 500);
    r.connect(1);
    r.io(1, true, b"GET /idle HTTP/1.1\r\n\r\n");
    r.connect(2);
    r.net.expire_idle(r.ts + 59 * SECOND);
    assert_eq!(r.hits(Limit::ConnectionIdle), 0);
    r.net.expire_idle(r.ts + 61 * SECOND);
    assert_eq!((r.hits(Limit::ConnectionIdle), r.lost(), r.m.open_connections.get()), (2, 1, 0));
    r.close(1);
    assert_eq!(r.m.connections.with_label_values(&["http1"]).get(), 0);
}

#[test]
fn bytes_held_together_stay_within_the_budget() {
    let mut r = Run::new(ConnLimits { max_buffered: 1 << 20, ..ConnLimits::default() }, 500);
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
