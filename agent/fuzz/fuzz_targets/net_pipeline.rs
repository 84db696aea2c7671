//! The whole socket pipeline under events a hostile peer (and a lossy
//! kernel) could produce: connects, accepts, closes and resets, data over
//! sockets and libssl in both roles with gaps and lost bytes, process exits,
//! time passing. Small caps make evictions frequent. It must never panic;
//! the connections tracked and the bytes they hold stay within the caps, and
//! every label value is from its bounded set.
#![no_main]

use std::{sync::Arc, time::SystemTime};

use libfuzzer_sys::fuzz_target;
use prometheus::core::Collector;
use pywats_agent::{
    metrics::Metrics,
    net::{
        conn::Role,
        endpoint::Endpoints,
        limits::{NetLimits, MAX_ENDPOINT_LABEL},
        metrics::HttpMetrics,
        NetPipeline,
    },
};
use pywats_agent_ebpf::abi::{direction, role, ConnEvent, DataEvent, EventHeader, EventKind, SEQ_UNKNOWN};

const LIMITS: NetLimits = NetLimits { max_connections: 4, idle_ns: 1_000_000_000, max_buffered: 256 << 10, max_series: 64 };
const METHODS: [&str; 10] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "other"];

struct Feed<'a> {
    net: NetPipeline,
    m: HttpMetrics,
    ts: u64,
    /// Stream offsets per (connection, direction); a loss skips some.
    seq: [[u64; 2]; 8],
    data: &'a [u8],
}

impl Feed<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn conn(&mut self, kind: EventKind, tgid: u32, conn: u64, ret: i64) {
        let header = EventHeader { kind: kind as u32, tgid, ts_ns: self.ts, ret, ..Default::default() };
        self.net.on_conn(kind, &ConnEvent { header, conn_id: conn, ..Default::default() });
    }

    /// One data event: a length byte and that many captured bytes, then,
    /// with `gap`, a byte saying how many bytes after them were not captured.
    fn io(&mut self, kind: EventKind, tgid: u32, conn: u64, egress: bool, gap: bool, ret: Option<i64>) {
        let Some(n) = self.byte() else { return };
        let (prefix, rest) = self.data.split_at(usize::from(n).min(self.data.len()));
        self.data = rest;
        let gap = if gap { u64::from(self.byte().unwrap_or(0)) * 97 } else { 0 };
        let len = prefix.len() as u64 + gap;
        let seq = &mut self.seq[conn as usize][usize::from(!egress)];
        let header = EventHeader {
            kind: kind as u32,
            tgid,
            ts_ns: self.ts,
            ret: ret.unwrap_or(len as i64),
            len: len as u32,
            ..Default::default()
        };
        let ev = DataEvent {
            header,
            conn_id: conn,
            call_start_ns: self.ts - 1,
            seq: if conn == 5 { SEQ_UNKNOWN } else { *seq },
            direction: if egress { direction::EGRESS } else { direction::INGRESS } as u16,
            role: if conn % 2 == 0 { role::CLIENT } else { role::SERVER } as u16,
            ..Default::default()
        };
        *seq += len;
        self.net.on_data(kind, &ev, prefix, &[]);
    }
}

// Ops: the low 4 bits pick what happens, bits 4-6 the connection (even:
// the target is the client), bit 7 a variant. Connections 6 and 7 belong to
// a second process.
fuzz_target!(|data: &[u8]| {
    let registry = Metrics::new(SystemTime::UNIX_EPOCH);
    let m = HttpMetrics::new(&registry);
    let endpoints = Endpoints::new(&[], 3).expect("valid routes");
    let net = NetPipeline::new(endpoints, m.clone(), Arc::default(), Arc::default(), LIMITS, Arc::default());
    let mut f = Feed { net, m, ts: 1_000, seq: [[0; 2]; 8], data };
    while let Some(op) = f.byte() {
        f.ts += 1_000;
        let conn = u64::from(op >> 4 & 7);
        let tgid = if conn >= 6 { 8 } else { 7 };
        let variant = op & 0x80 != 0;
        match op & 0x0f {
            0 => f.conn(EventKind::SockConnect, tgid, conn, if variant { -111 } else { 0 }),
            1 => f.conn(EventKind::SockAccept, tgid, conn, 0),
            2 => f.conn(if variant { EventKind::TlsClose } else { EventKind::SockClose }, tgid, conn, 0),
            3 | 4 => f.io(EventKind::SockData, tgid, conn, op & 0x0f == 3, variant, None),
            5 | 6 => f.io(EventKind::TlsData, tgid, conn, op & 0x0f == 5, variant, None),
            7 => f.io(EventKind::SockData, tgid, conn, false, false, Some(if variant { 0 } else { -104 })),
            8 => {
                f.net.process_exited(if variant { 8 } else { 7 }, f.ts);
                f.net.drained();
                f.net.drained();
            }
            9 => {
                // Bytes the kernel could not deliver.
                let n = u64::from(f.byte().unwrap_or(0)) * 131;
                f.seq[conn as usize][usize::from(variant)] += n;
            }
            10 => {
                f.ts += 2_000_000_000;
                f.net.expire_idle(f.ts);
            }
            11 => f.net.seed(tgid, conn, Role::Client, ([127, 0, 0, 1], 80).into()),
            _ => f.net.drained(),
        }
        assert!(f.m.open_connections.get() as usize <= LIMITS.max_connections);
        assert!(f.m.buffered_bytes.get() as usize <= LIMITS.max_buffered);
    }
    // Every label value of every request series is from its bounded set.
    for family in f.m.requests.collect().iter().chain(&f.m.server_requests.collect()) {
        for series in family.get_metric() {
            let label = |name: &str| {
                let pair = series.get_label().iter().find(|l| l.name() == name).expect("label present");
                pair.value().to_string()
            };
            let (method, code, endpoint) = (label("method"), label("code"), label("endpoint"));
            assert!(METHODS.contains(&method.as_str()), "{method:?}");
            let registered = code.parse::<u16>().is_ok_and(|c| (100..600).contains(&c));
            assert!(code == "other" || code == "none" || registered, "{code:?}");
            assert!(endpoint.len() <= MAX_ENDPOINT_LABEL, "{endpoint:?}");
        }
    }
});
