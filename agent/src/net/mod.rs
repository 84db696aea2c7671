//! Requests from socket events: connections, HTTP/1 and HTTP/2 framing,
//! endpoint templating, and the metrics they feed. Everything a peer can
//! make grow is capped (`limits`), and what a cap refused is counted.

pub mod conn;
pub mod dependency;
pub mod endpoint;
pub mod hpack;
pub mod http1;
pub mod http1_conn;
pub mod http2;
pub mod labels;
pub mod limits;
pub mod metrics;
pub mod recent;
pub mod report;
pub mod report_id;
pub mod retry;
pub mod seed;
pub mod sockets;
pub mod table;
pub mod tls_link;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex, RwLock},
};

use pywats_agent_ebpf::abi::{
    direction, role, ConnEvent, DataEvent, EventKind, SockAddr, AF_INET, AF_INET6, EINPROGRESS, SEQ_UNKNOWN,
};

use crate::sync::{Locked, ReadWrite};
use crate::{
    clock::monotonic_ns,
    net::{
        conn::{Connection, Role},
        dependency::{Dependencies, Failure},
        endpoint::Endpoints,
        http1::Chunk,
        labels::{LabelSets, OTHER},
        limits::{Limit, NetLimits},
        metrics::{HttpMetrics, Side},
        recent::{Recent, RecentRequest},
        report::{Exchange, Notice, Outcome, Protocol},
        retry::Retries,
        table::{ConnTable, Key, Tracked},
        tls_link::TlsLinks,
    },
    proc::Targets,
};

/// Marks conn ids the agent made up for connections open before it attached.
pub const SEEDED_CONN: u64 = 1 << 63;

fn socket_addr(a: &SockAddr) -> Option<SocketAddr> {
    let ip = match a.family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(a.addr[0], a.addr[1], a.addr[2], a.addr[3])),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(a.addr)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, a.port))
}

/// How an exchange ended, for dependency health: whether it found the
/// server unavailable (a 500 is a failed request of a server that answers).
fn call_result(outcome: Outcome) -> Result<(), Failure> {
    match outcome {
        Outcome::Response(c) => Failure::from_status(c).map_or(Ok(()), Err),
        Outcome::Abandoned => Err(Failure::Timeout),
        Outcome::PeerClosed => Err(Failure::Closed),
        Outcome::Reset => Err(Failure::Reset),
        Outcome::StreamReset => Err(Failure::StreamReset),
    }
}

/// Bytes lost before an event at offset `seq` of `len` bytes (events the
/// kernel could not deliver), advancing the expected offset. An offset below
/// the expected one (the kernel's entry aged out and restarted) re-bases.
fn lost_before(next: &mut Option<u64>, seq: u64, len: u64) -> u64 {
    let lost = match *next {
        Some(want) if seq != SEQ_UNKNOWN && seq > want => seq - want,
        _ => 0,
    };
    *next = (seq != SEQ_UNKNOWN).then(|| seq + len);
    lost
}

/// Summary of a live connection for `/health/details`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConnSummary {
    pub target: String,
    pub tgid: u32,
    pub fd: Option<u32>,
    pub role: &'static str,
    pub protocol: &'static str,
    pub remote: Option<String>,
    pub requests: u64,
}

pub struct NetPipeline {
    conns: ConnTable,
    endpoints: Endpoints,
    label_sets: LabelSets,
    retries: Retries,
    metrics: HttpMetrics,
    recent: Arc<Mutex<Recent>>,
    targets: Arc<RwLock<Targets>>,
    done: Vec<Exchange>,
    notices: Vec<Notice>,
    exits: Exits,
    deps: Arc<Mutex<Dependencies>>,
    /// The sockets on which threads began TLS handshakes, for the plaintext
    /// connections libssl shows.
    tls_links: TlsLinks,
}

/// Connections of exited processes, waiting for the socket events made before
/// the exit: (connection, exit time).
#[derive(Default)]
struct Exits {
    /// Heard during the current drain pass.
    queued: Vec<((u32, u64), u64)>,
    /// Heard before the current pass began: ended when it ends.
    ready: Vec<((u32, u64), u64)>,
}

impl NetPipeline {
    pub fn new(
        endpoints: Endpoints,
        metrics: HttpMetrics,
        recent: Arc<Mutex<Recent>>,
        targets: Arc<RwLock<Targets>>,
        limits: NetLimits,
        deps: Arc<Mutex<Dependencies>>,
    ) -> NetPipeline {
        NetPipeline {
            conns: ConnTable::new(limits),
            endpoints,
            label_sets: LabelSets::new(limits.max_series),
            retries: Retries::default(),
            metrics,
            recent,
            targets,
            done: Vec::new(),
            notices: Vec::new(),
            exits: Exits::default(),
            deps,
            tls_links: TlsLinks::default(),
        }
    }

    /// A call of `target` to `server` ended: dependency health, with its cap counted.
    fn call(&self, target: &str, server: Option<SocketAddr>, result: Result<(), Failure>, end_ns: u64) {
        let Some(server) = server else { return };
        if !self.deps.locked().record(target, server, result, end_ns) {
            self.limit(Limit::Dependencies);
        }
    }

    fn target_of(&self, tgid: u32) -> String {
        let targets = self.targets.read_locked();
        targets.name_of(tgid).unwrap_or("unknown").to_string()
    }

    /// A process of a target whose sockets are about to be seeded (it
    /// joined, or called exec): the target's counters whose labels are all
    /// known start at 0, so dashboards and alerts can take their rate.
    pub fn seeding(&self, tgid: u32) {
        let target = self.target_of(tgid);
        for protocol in [Protocol::Http1, Protocol::Http2] {
            self.metrics.requests_lost.with_label_values(&[&target, protocol.name()]);
        }
    }

    fn open(&mut self, tgid: u32, conn_id: u64, conn: Connection, ts_ns: u64) {
        let target = self.target_of(tgid);
        if let Some(evicted) = self.conns.insert((tgid, conn_id), target, conn, ts_ns) {
            self.evict(evicted);
        }
        self.gauges();
    }

    fn gauges(&self) {
        self.metrics.open_connections.set(self.conns.count() as i64);
        self.metrics.buffered_bytes.set(self.conns.held() as i64);
    }

    /// The agent stops tracking a connection to stay within a cap: counted,
    /// and its waiting requests are counted as lost.
    fn evict(&mut self, (mut t, limit): (Tracked, Limit)) {
        self.limit(limit);
        tracing::debug!(target_name = %t.target, "stopped tracking a {} connection: {}", t.conn.protocol().name(), limit.name());
        t.conn.abandon(&mut self.notices);
        self.flush(&t.target, t.conn.role, t.conn.remote);
    }

    /// A connection that existed before the agent attached.
    pub fn seed(&mut self, tgid: u32, conn_id: u64, role: Role, remote: SocketAddr) {
        self.open(tgid, conn_id, Connection::joined_midway(role, Some(remote)), monotonic_ns());
    }

    pub fn on_conn(&mut self, kind: EventKind, ev: &ConnEvent) {
        let key = (ev.header.tgid, ev.conn_id);
        let ret = ev.header.ret;
        match kind {
            EventKind::SockConnect if ret == 0 || ret == -EINPROGRESS => {
                match self.conns.touch(&key, ev.header.ts_ns) {
                    // SO_ERROR told the outcome of a non-blocking connect.
                    Some(t) => t.conn.connecting = false,
                    None => {
                        let mut conn = Connection::new(Role::Client, socket_addr(&ev.addr));
                        conn.connecting = ret == -EINPROGRESS;
                        self.open(key.0, key.1, conn, ev.header.ts_ns);
                    }
                }
            }
            EventKind::SockConnect => {
                // A non-blocking connect's failure (from SO_ERROR) carries no
                // address: the connection made at EINPROGRESS has it.
                let (target, remote) = match self.conns.remove(&key) {
                    Some(t) => (t.target, t.conn.remote),
                    None => (self.target_of(key.0), socket_addr(&ev.addr)),
                };
                self.gauges();
                self.connect_failed(&target, remote, Failure::from_errno(-ret), ev.header.ts_ns);
                tracing::debug!(target_name = %target, remote = ?remote, "connect failed: errno {}", -ret);
            }
            EventKind::SockAccept => {
                self.open(key.0, key.1, Connection::new(Role::Server, socket_addr(&ev.addr)), ev.header.ts_ns)
            }
            EventKind::SockClose => self.close(key, ev.header.ts_ns, false),
            EventKind::TlsClose => self.close(key, ev.header.ts_ns, false),
            EventKind::ProcFork
            | EventKind::ProcExec
            | EventKind::ProcExit
            | EventKind::SockData
            | EventKind::TlsData
            | EventKind::FsOpen
            | EventKind::FsRename
            | EventKind::FsUnlink => {}
        }
    }

    /// A connect failed, or was given up before its outcome was known: a
    /// connection that failed.
    fn connect_failed(&self, target: &str, remote: Option<SocketAddr>, failure: Failure, ts_ns: u64) {
        self.metrics.errors.with_label_values(&[target, failure.name(), "connect"]).inc();
        self.metrics.connections.with_label_values(&[metrics::CONNECT_FAILED, "false"]).inc();
        self.call(target, remote, Err(failure), ts_ns);
    }

    fn close(&mut self, key: Key, ts_ns: u64, reset: bool) {
        let Some(mut t) = self.conns.remove(&key) else {
            return;
        };
        self.gauges();
        if t.conn.protocol() == Protocol::Tls {
            self.tls_links.socket_gone(key.0, key.1);
        }
        if t.conn.connecting {
            // Closed before SO_ERROR or any byte told whether it connected:
            // the client gave up waiting (its connect timeout).
            self.connect_failed(&t.target, t.conn.remote, Failure::Timeout, ts_ns);
        } else if let Some((protocol, tls)) = t.conn.counted_as() {
            self.metrics.connections.with_label_values(&[protocol.name(), if tls { "true" } else { "false" }]).inc();
        }
        t.conn.finish(ts_ns, reset, &mut self.done, &mut self.notices);
        let skipped = t.conn.skipped();
        if skipped > 0 {
            self.metrics.skipped_bytes.with_label_values(&["unsynced"]).inc_by(skipped);
        }
        self.flush(&t.target, t.conn.role, t.conn.remote);
    }

    /// Feeds one data event. True when it showed that the socket's bytes are
    /// of no use (TLS ciphertext, not HTTP), so the kernel can stop copying them.
    pub fn on_data(&mut self, kind: EventKind, ev: &DataEvent, prefix: &[u8], suffix: &[u8]) -> bool {
        let key = (ev.header.tgid, ev.conn_id);
        let ts = ev.header.ts_ns;
        if !self.conns.contains(&key) {
            // Connect event lost, a socket seeded in the kernel only, or a
            // connection evicted: join mid-way.
            let role = if ev.role as u32 == role::SERVER { Role::Server } else { Role::Client };
            let conn = if kind == EventKind::TlsData {
                let mut c = Connection::tls(role);
                if let Some((socket, peer)) = self.tls_links.take(key.0, ev.header.tid) {
                    c.remote = peer;
                    if let Some(t) = self.conns.get_mut(&(key.0, socket)) {
                        t.conn.decrypted();
                    }
                }
                c
            } else {
                Connection::joined_midway(role, None)
            };
            self.open(key.0, key.1, conn, ts);
        }
        let egress = ev.direction as u32 == direction::EGRESS;
        let ret = ev.header.ret;
        if ret < 0 {
            self.close(key, ts, true);
            return false;
        }
        let Some(t) = self.conns.touch(&key, ts) else { return false };
        let was_unknown = t.conn.protocol() == Protocol::Unknown;
        if ret > 0 {
            t.conn.connecting = false;
        }
        if ret == 0 {
            t.conn.peer_eof(ts, &mut self.done, &mut self.notices);
        } else {
            // What a client writes is timed from when the call began (a request
            // starts when it is handed over, however long the write blocks);
            // everything else from when its call returned.
            let ts_ns = if egress && t.conn.role == Role::Client { ev.call_start_ns } else { ts };
            let lost = lost_before(&mut t.next_seq[usize::from(!egress)], ev.seq, ret as u64);
            if lost > 0 && t.conn.protocol().is_useful() {
                self.metrics.skipped_bytes.with_label_values(&["lost"]).inc_by(lost);
                t.conn.lost(egress, lost, &mut self.done, &mut self.notices);
            }
            let chunk = Chunk { prefix, suffix, len: ret as u64, ts_ns };
            t.conn.data(egress, &chunk, &mut self.done, &mut self.notices);
        }
        let useless = was_unknown && !t.conn.protocol().is_useful();
        // The first TLS record on a socket: the thread that wrote or read it
        // runs the handshake, and the plaintext after it.
        let handshake = was_unknown && t.conn.protocol() == Protocol::Tls;
        let peer = t.conn.remote;
        // Most reads and writes finish nothing: no per-event copies then.
        if !self.done.is_empty() || !self.notices.is_empty() {
            let (target, role, remote) = (t.target.clone(), t.conn.role, t.conn.remote);
            self.flush(&target, role, remote);
        }
        if handshake && !self.tls_links.began(key.0, ev.header.tid, key.1, peer) {
            self.limit(Limit::TlsPeers);
        }
        for evicted in self.conns.account(&key) {
            self.evict(evicted);
        }
        self.gauges();
        useless
    }

    /// A process of a target exited: its sockets closed without close().
    /// A process exited, or called exec (which closed its CLOEXEC sockets
    /// without a `close()`): the connections it has now end, once the socket
    /// events it made before are applied. The exit is heard at once, those
    /// events in the next drain of the socket ring, so it waits for the end of
    /// the first drain pass that started after it ([`NetPipeline::drained`]).
    pub fn process_exited(&mut self, tgid: u32, ts_ns: u64) {
        let keys = self.conns.keys_of(tgid);
        self.exits.queued.extend(keys.into_iter().map(|key| (key, ts_ns)));
    }

    /// A target that is gone: what is kept per target name (endpoint label
    /// values, label sets, failures awaiting a retry) goes.
    pub fn forget_target(&mut self, target: &str) {
        self.endpoints.forget(target);
        self.label_sets.forget(target);
        self.retries.forget(target);
    }

    /// A drain pass of the socket ring ended: exits queued before it began
    /// are applied, those queued during it wait for the next pass; idle
    /// connections are evicted.
    pub fn drained(&mut self) {
        for (key, ts_ns) in std::mem::take(&mut self.exits.ready) {
            if self.conns.contains(&key) {
                self.close(key, ts_ns, false);
            }
        }
        self.exits.ready = std::mem::take(&mut self.exits.queued);
        self.expire_idle(monotonic_ns());
    }

    /// Evicts connections without events for longer than the idle limit.
    pub fn expire_idle(&mut self, now_ns: u64) {
        let expired = self.conns.expire(now_ns);
        if !expired.is_empty() {
            for evicted in expired {
                self.evict(evicted);
            }
            self.gauges();
        }
    }

    pub fn connections(&self) -> Vec<ConnSummary> {
        self.conns
            .iter()
            .take(100)
            .map(|(&(tgid, _), t)| ConnSummary {
                target: t.target.clone(),
                tgid,
                fd: None,
                role: match t.conn.role {
                    Role::Client => "client",
                    Role::Server => "server",
                },
                protocol: t.conn.protocol().name(),
                remote: t.conn.remote.map(|a| a.to_string()),
                requests: t.conn.exchanges,
            })
            .collect()
    }

    fn flush(&mut self, target: &str, role: Role, remote: Option<SocketAddr>) {
        for n in self.notices.drain(..) {
            let (protocol, reason) = match n {
                Notice::Parse(e) => ("http1", e.name()),
                Notice::UnmatchedResponse => ("http1", "unmatched_response"),
                Notice::NotHttp => ("http1", "not_http"),
                Notice::Http2(e) => ("http2", e.name()),
                Notice::RequestLost(protocol) => {
                    self.metrics.requests_lost.with_label_values(&[target, protocol.name()]).inc();
                    continue;
                }
                Notice::Limit(limit) => {
                    self.metrics.limit_hits.with_label_values(&[limit.name()]).inc();
                    continue;
                }
            };
            self.metrics.parse_errors.with_label_values(&[protocol, reason]).inc();
        }
        let done = std::mem::take(&mut self.done);
        for x in &done {
            self.record(target, role, remote, x);
        }
        self.done = done;
        self.done.clear();
    }

    fn limit(&self, limit: Limit) {
        self.metrics.limit_hits.with_label_values(&[limit.name()]).inc();
    }

    /// The `code` label: a registered status code, else `other`.
    fn code_label(&self, code: u16) -> String {
        labels::code(code).unwrap_or_else(|| {
            self.limit(Limit::StatusCode);
            OTHER.to_string()
        })
    }

    fn record(&mut self, target: &str, role: Role, remote: Option<SocketAddr>, x: &Exchange) {
        let endpoint = self.endpoints.label(target, role, &x.path).unwrap_or_else(|limit| {
            self.limit(limit);
            OTHER.to_string()
        });
        let method = labels::method(&x.method).unwrap_or_else(|| {
            self.limit(Limit::Method);
            OTHER
        });
        // Status and error type come from the code itself, so a code that
        // becomes `other` still counts as the success or error it was.
        let (code, error_type, outcome) = match x.outcome {
            Outcome::Response(c) if c >= 500 => (self.code_label(c), Some("http_5xx"), "response"),
            Outcome::Response(c) if c >= 400 => (self.code_label(c), Some("http_4xx"), "response"),
            Outcome::Response(c) => (self.code_label(c), None, "response"),
            Outcome::Abandoned => ("none".to_string(), Some("timeout"), "abandoned"),
            Outcome::PeerClosed => ("none".to_string(), Some("connection_closed"), "peer_closed"),
            Outcome::Reset => ("none".to_string(), Some("connection_reset"), "reset"),
            Outcome::StreamReset => ("none".to_string(), Some("stream_reset"), "stream_reset"),
        };
        let status = if error_type.is_some() { "error" } else { "success" };
        let (method, endpoint, code) = if self.label_sets.admit(target, role, method, &endpoint, &code) {
            (method, endpoint, code)
        } else {
            self.limit(Limit::TargetSeries);
            (OTHER, OTHER.to_string(), OTHER.to_string())
        };
        let seconds = x.end_ns.saturating_sub(x.start_ns) as f64 / 1e9;
        let series = [target, method, endpoint.as_str()];
        let retry = match role {
            Role::Client => {
                self.metrics.requests.with_label_values(&[target, method, &endpoint, status, &code]).inc();
                self.metrics.observe_duration(Side::Client, series, seconds, x.correlation.as_ref());
                self.metrics.request_size.with_label_values(&series).observe(x.request_bytes as f64);
                if matches!(x.outcome, Outcome::Response(_)) {
                    self.metrics.response_size.with_label_values(&series).observe(x.response_bytes as f64);
                }
                if let Some(e) = error_type {
                    self.metrics.errors.with_label_values(&[target, e, &format!("{method} {endpoint}")]).inc();
                }
                self.call(target, remote, call_result(x.outcome), x.end_ns);
                let key = retry::key(target, &x.method, &x.path, x.body_digest);
                let recorded = self.retries.record(key, x.start_ns, x.end_ns, retry::retryable(x.outcome));
                if recorded.forgotten > 0 {
                    self.metrics
                        .limit_hits
                        .with_label_values(&[Limit::RetryKeys.name()])
                        .inc_by(recorded.forgotten as u64);
                }
                if recorded.retry {
                    self.metrics.retries.with_label_values(&series).inc();
                }
                recorded.retry
            }
            Role::Server => {
                self.metrics.server_requests.with_label_values(&[target, method, &endpoint, status, &code]).inc();
                self.metrics.observe_duration(Side::Server, series, seconds, x.correlation.as_ref());
                false
            }
        };
        self.recent.locked().push(RecentRequest {
            target: target.to_string(),
            method: method.to_string(),
            endpoint,
            status,
            code,
            outcome,
            duration_ms: seconds * 1e3,
            request_bytes: x.request_bytes,
            response_bytes: x.response_bytes,
            remote: remote.map(|a| a.to_string()),
            request_id: x.correlation.as_ref().map(|c| c.id().to_string()),
            retry,
        });
    }
}

#[cfg(test)]
mod tests;
