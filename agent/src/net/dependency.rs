//! Dependency health: whether each server a target talks to is available,
//! judged only from the outcomes of the calls the target itself makes (the
//! agent sends nothing of its own).
//!
//! Unavailability is told apart from a failing request: a server that
//! answers one report with a 500 is up (that request failed, and counts as
//! an error in `pywats_http_requests_total`); a server that cannot be
//! reached, does not answer, or whose gateway says it is not there is down.
//!
//! The rule, per (target, server):
//! * a *call* is an HTTP exchange the target made as a client, or a TCP
//!   connect that failed;
//! * a call *found the server unavailable* on a refused, unreachable or
//!   timed-out connect (a non-blocking connect whose socket was closed before
//!   its outcome was known counts as timed out), a reset (of the connection
//!   or of an HTTP/2 stream), a close by the server before the response, a
//!   request the target gave up waiting for (a client timeout), or a 502, 503
//!   or 504 (a gateway or the server saying it is not there); any other
//!   response, a 500 among them, is *answered*;
//! * `up` is 1 when the latest call (by the time it ended) was answered, 0
//!   when it found the server unavailable; `consecutive_failures` counts the
//!   calls that found it unavailable since the latest answered one;
//! * a dependency without a call in the last `--dependency-window` seconds
//!   is *stale*: `pywats_dependency_stale` is 1 and `up` keeps its last
//!   value, so that a client that stopped calling is not reported down.
//!
//! Events reach the agent in batches and from several connections, so an
//! outcome may arrive after a later one: each is placed by the time its call
//! ended, never by when the agent heard of it.

use std::{
    collections::{BTreeMap, HashMap},
    net::{SocketAddr, ToSocketAddrs},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    GaugeVec, IntGaugeVec, Opts,
};

use crate::{clock::monotonic_ns, sync::Locked};

/// Servers tracked per target. A pyWATS client talks to one WATS server;
/// the room is for proxies, redirects and DNS answers that change. Past it
/// the stale server called longest ago makes room, else the new one is not
/// tracked (both counted as `pywats_agent_limit_hits_total{limit="dependencies"}`).
pub const MAX_PER_TARGET: usize = 64;

/// Why a call found the server unavailable. Named as `error_type` in
/// `pywats_errors_total` (connects) and as `last_error` in `/health/details`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Refused,
    Unreachable,
    Timeout,
    ConnectError,
    Reset,
    Closed,
    StreamReset,
    /// 502 Bad Gateway.
    BadGateway,
    /// 503 Service Unavailable.
    Unavailable,
    /// 504 Gateway Timeout.
    GatewayTimeout,
}

impl Failure {
    /// A failed `connect()`'s errno.
    pub fn from_errno(errno: i64) -> Failure {
        match errno {
            111 => Failure::Refused,
            110 => Failure::Timeout,
            101 | 113 => Failure::Unreachable,
            _ => Failure::ConnectError,
        }
    }

    /// A response's status code, when it says the server is not available.
    pub fn from_status(code: u16) -> Option<Failure> {
        match code {
            502 => Some(Failure::BadGateway),
            503 => Some(Failure::Unavailable),
            504 => Some(Failure::GatewayTimeout),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Failure::Refused => "connection_refused",
            Failure::Unreachable => "unreachable",
            Failure::Timeout => "timeout",
            Failure::ConnectError => "connect_error",
            Failure::Reset => "connection_reset",
            Failure::Closed => "connection_closed",
            Failure::StreamReset => "stream_reset",
            Failure::BadGateway => "http_502",
            Failure::Unavailable => "http_503",
            Failure::GatewayTimeout => "http_504",
        }
    }
}

/// What the server is to the client: its WATS service (the address in the
/// client's config), or any other HTTP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Wats,
    Http,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Wats => "wats",
            Kind::Http => "http",
        }
    }
}

/// `up`, `down` or `stale`, as `/health/details` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Up,
    Down,
    Stale,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Stale => "stale",
        }
    }
}

#[derive(Clone, Debug)]
struct Dependency {
    kind: Kind,
    /// End of the latest call (CLOCK_MONOTONIC ns, the kernel's event clock).
    last_call_ns: u64,
    last_success_ns: Option<u64>,
    last_failure_ns: Option<u64>,
    /// Why the latest failed call failed.
    last_error: Option<Failure>,
    consecutive_failures: u64,
}

/// One dependency as seen at a moment, for the metrics and `/health/details`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct View {
    pub target: String,
    pub dependency: &'static str,
    pub server: String,
    pub state: &'static str,
    /// The latest call was answered (kept while stale).
    #[serde(skip)]
    pub up: bool,
    #[serde(skip)]
    pub stale: bool,
    /// Seconds since the epoch; `None`: never answered.
    pub last_success: Option<f64>,
    pub last_error: Option<&'static str>,
    pub consecutive_failures: u64,
    pub last_call_seconds_ago: f64,
}

/// The dependencies of every target.
#[derive(Debug)]
pub struct Dependencies {
    window_ns: u64,
    /// Ordered so that the health page lists them stably.
    deps: BTreeMap<(String, SocketAddr), Dependency>,
    per_target: HashMap<String, usize>,
    /// Per target: the addresses of its WATS service.
    services: HashMap<String, Vec<SocketAddr>>,
    /// The wall clock (seconds since the epoch) at monotonic 0, read once:
    /// a timestamp converted at each scrape from two clock reads would move
    /// by fractions of a microsecond from one scrape to the next.
    wall_at_zero: f64,
}

/// The default `--dependency-window`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

impl Default for Dependencies {
    fn default() -> Dependencies {
        Dependencies::new(DEFAULT_WINDOW)
    }
}

impl Dependencies {
    pub fn new(window: Duration) -> Dependencies {
        Dependencies {
            window_ns: window.as_nanos() as u64,
            deps: BTreeMap::new(),
            per_target: HashMap::new(),
            services: HashMap::new(),
            wall_at_zero: wall_at_zero(),
        }
    }

    /// The addresses of `target`'s WATS service (from its client config).
    /// Servers already tracked at one of them become `wats`.
    pub fn set_service(&mut self, target: &str, addrs: Vec<SocketAddr>) {
        for ((t, server), d) in self.deps.iter_mut() {
            if t == target {
                d.kind = if addrs.contains(server) { Kind::Wats } else { Kind::Http };
            }
        }
        self.services.insert(target.to_string(), addrs);
    }

    /// A target that is gone.
    pub fn forget(&mut self, target: &str) {
        self.deps.retain(|(t, _), _| t != target);
        self.per_target.remove(target);
        self.services.remove(target);
    }

    fn kind(&self, target: &str, server: &SocketAddr) -> Kind {
        match self.services.get(target) {
            Some(addrs) if addrs.contains(server) => Kind::Wats,
            _ => Kind::Http,
        }
    }

    /// A call of `target` to `server` that ended at `end_ns`. False when a
    /// cap was hit (a stale dependency evicted, or this one not tracked).
    pub fn record(&mut self, target: &str, server: SocketAddr, outcome: Result<(), Failure>, end_ns: u64) -> bool {
        let key = (target.to_string(), server);
        let mut within = true;
        if !self.deps.contains_key(&key) {
            if self.per_target.get(target).copied().unwrap_or(0) >= MAX_PER_TARGET {
                within = false;
                if !self.evict_stale(target, end_ns) {
                    return false;
                }
            }
            let kind = self.kind(target, &server);
            let fresh = Dependency {
                kind,
                last_call_ns: end_ns,
                last_success_ns: None,
                last_failure_ns: None,
                last_error: None,
                consecutive_failures: 0,
            };
            self.deps.insert(key.clone(), fresh);
            *self.per_target.entry(target.to_string()).or_default() += 1;
        }
        let Some(d) = self.deps.get_mut(&key) else { return within };
        d.last_call_ns = d.last_call_ns.max(end_ns);
        let after_success = d.last_success_ns.is_none_or(|s| end_ns >= s);
        let after_failure = d.last_failure_ns.is_none_or(|f| end_ns >= f);
        match outcome {
            Ok(()) => {
                if after_success {
                    d.last_success_ns = Some(end_ns);
                }
                if after_failure {
                    d.consecutive_failures = 0;
                }
            }
            Err(e) => {
                if after_success {
                    d.consecutive_failures += 1;
                }
                if after_failure {
                    d.last_failure_ns = Some(end_ns);
                    d.last_error = Some(e);
                }
            }
        }
        within
    }

    /// Makes room for a new server of `target`: the stale one called longest ago goes.
    fn evict_stale(&mut self, target: &str, now_ns: u64) -> bool {
        let oldest = self
            .deps
            .iter()
            .filter(|((t, _), d)| t == target && now_ns.saturating_sub(d.last_call_ns) > self.window_ns)
            .min_by_key(|(_, d)| d.last_call_ns)
            .map(|(k, _)| k.clone());
        let Some(key) = oldest else { return false };
        self.deps.remove(&key);
        if let Some(n) = self.per_target.get_mut(target) {
            *n -= 1;
        }
        true
    }

    /// Every dependency as of `now_ns` (monotonic).
    pub fn views(&self, now_ns: u64) -> Vec<View> {
        let wall = |ns: u64| Some(self.wall_at_zero + ns as f64 / 1e9);
        self.deps
            .iter()
            .map(|((target, server), d)| {
                let ago = now_ns.saturating_sub(d.last_call_ns);
                let stale = ago > self.window_ns;
                let up = d.consecutive_failures == 0;
                let state = match (stale, up) {
                    (true, _) => State::Stale,
                    (false, true) => State::Up,
                    (false, false) => State::Down,
                };
                View {
                    target: target.clone(),
                    dependency: d.kind.name(),
                    server: server.to_string(),
                    state: state.name(),
                    up,
                    stale,
                    last_success: d.last_success_ns.and_then(wall),
                    last_error: d.last_error.map(Failure::name),
                    consecutive_failures: d.consecutive_failures,
                    last_call_seconds_ago: ago as f64 / 1e9,
                }
            })
            .collect()
    }
}

/// Seconds since the epoch at CLOCK_MONOTONIC 0.
fn wall_at_zero() -> f64 {
    let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    wall - monotonic_ns() as f64 / 1e9
}

/// The socket addresses of a WATS service address from the client's config
/// (`https://wats.example.com`, `http://10.0.0.5:8080/`): an IP literal as
/// is, a name resolved now, in the agent's view of DNS. Credentials in the
/// URL are dropped unread; errors name the host only.
pub fn service_addresses(url: &str) -> Vec<SocketAddr> {
    let url = url.trim();
    let (default_port, rest) = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (80, rest),
        Some((_, rest)) => (443, rest),
        None => (443, url),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return Vec::new(),
        },
        None => match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        },
    };
    let Ok(port) = port.map_or(Ok(default_port), str::parse::<u16>) else { return Vec::new() };
    if host.is_empty() {
        return Vec::new();
    }
    match (host, port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            tracing::warn!("the WATS service host {host:?} does not resolve ({e}): its calls count as `http`");
            Vec::new()
        }
    }
}

/// `pywats_dependency_*`, computed at scrape time (staleness depends on the clock).
pub struct DependencyGauges {
    deps: Arc<Mutex<Dependencies>>,
    up: IntGaugeVec,
    stale: IntGaugeVec,
    last_success: GaugeVec,
    failures: IntGaugeVec,
}

impl DependencyGauges {
    pub fn new(deps: Arc<Mutex<Dependencies>>) -> DependencyGauges {
        let labels = &["target", "dependency", "server"];
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
        DependencyGauges {
            deps,
            up: gauge(
                "pywats_dependency_up",
                "1 when the target's latest call to the server was answered (any response but 502, 503, 504: \
                 a 500 is a failed request, not a server down), 0 when it found the server unavailable \
                 (refused, unreachable, timed out, reset, 502, 503, 504); kept while stale.",
            ),
            stale: gauge(
                "pywats_dependency_stale",
                "1 when the target made no call to the server within --dependency-window: `up` is then its \
                 last value, not a current one.",
            ),
            last_success: GaugeVec::new(
                Opts::new(
                    "pywats_dependency_last_success_timestamp_seconds",
                    "When the latest answered call to the server ended, seconds since the epoch (0: never).",
                ),
                labels,
            )
            .expect("valid metric"),
            failures: gauge(
                "pywats_dependency_consecutive_failures",
                "Calls that found the server unavailable since the latest answered one.",
            ),
        }
    }
}

impl Collector for DependencyGauges {
    fn desc(&self) -> Vec<&Desc> {
        [self.up.desc(), self.stale.desc(), self.last_success.desc(), self.failures.desc()].concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // The lock also serialises reset-then-fill between concurrent scrapes.
        let deps = self.deps.locked();
        let views = deps.views(monotonic_ns());
        self.up.reset();
        self.stale.reset();
        self.last_success.reset();
        self.failures.reset();
        for v in &views {
            let l = [v.target.as_str(), v.dependency, v.server.as_str()];
            self.up.with_label_values(&l).set(i64::from(v.up));
            self.stale.with_label_values(&l).set(i64::from(v.stale));
            self.last_success.with_label_values(&l).set(v.last_success.unwrap_or(0.0));
            self.failures.with_label_values(&l).set(v.consecutive_failures as i64);
        }
        [self.up.collect(), self.stale.collect(), self.last_success.collect(), self.failures.collect()].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn one(d: &Dependencies, now_ns: u64) -> View {
        let v = d.views(now_ns);
        assert_eq!(v.len(), 1, "{v:?}");
        v.into_iter().next().unwrap()
    }

    #[test]
    fn the_latest_call_decides_and_failures_are_counted_since_the_latest_success() {
        let mut d = Dependencies::new(Duration::from_secs(60));
        d.wall_at_zero = 989.0;
        let s = addr("127.0.0.1:8080");
        assert!(d.record("t", s, Ok(()), 10 * S));
        let v = one(&d, 11 * S);
        assert_eq!((v.state, v.up, v.consecutive_failures, v.last_error), ("up", true, 0, None));
        // The wall clock read 989 s at monotonic 0: the success at 10 s ended at 999 s.
        assert_eq!(v.last_success, Some(999.0));
        for (i, e) in [Failure::Refused, Failure::Refused, Failure::Unavailable].into_iter().enumerate() {
            d.record("t", s, Err(e), (20 + i as u64) * S);
        }
        let v = one(&d, 23 * S);
        assert_eq!((v.state, v.up, v.consecutive_failures, v.last_error), ("down", false, 3, Some("http_503")));
        assert_eq!(v.dependency, "http");
        d.record("t", s, Ok(()), 30 * S);
        let v = one(&d, 30 * S);
        assert_eq!((v.state, v.consecutive_failures, v.last_error), ("up", 0, Some("http_503")));
    }

    #[test]
    fn outcomes_heard_late_are_placed_by_when_their_call_ended() {
        let mut d = Dependencies::new(Duration::from_secs(60));
        let s = addr("127.0.0.1:1");
        d.record("t", s, Err(Failure::Timeout), 50 * S);
        // A success that ended before the failure does not make it up.
        d.record("t", s, Ok(()), 40 * S);
        let v = one(&d, 51 * S);
        assert_eq!((v.state, v.consecutive_failures), ("down", 1));
        // A failure between the two still follows the success.
        d.record("t", s, Err(Failure::Reset), 45 * S);
        assert_eq!(one(&d, 51 * S).consecutive_failures, 2);
        assert_eq!(one(&d, 51 * S).last_error, Some("timeout"));
        // A failure older than a later success is not counted.
        d.record("t", s, Ok(()), 60 * S);
        d.record("t", s, Err(Failure::Reset), 55 * S);
        assert_eq!((one(&d, 61 * S).state, one(&d, 61 * S).consecutive_failures), ("up", 0));
    }

    #[test]
    fn without_calls_in_the_window_a_dependency_is_stale_not_down() {
        let mut d = Dependencies::new(Duration::from_secs(60));
        d.record("t", addr("127.0.0.1:1"), Err(Failure::Refused), 100 * S);
        assert_eq!(one(&d, 160 * S).state, "down");
        let v = one(&d, 161 * S);
        assert_eq!((v.state, v.stale, v.up, v.last_success), ("stale", true, false, None));
        d.record("t", addr("127.0.0.1:1"), Ok(()), 170 * S);
        assert_eq!(one(&d, 170 * S).state, "up");
    }

    #[test]
    fn the_wats_service_is_named_and_servers_per_target_are_capped() {
        let mut d = Dependencies::new(Duration::from_secs(60));
        let wats = addr("10.0.0.5:443");
        d.record("t", wats, Ok(()), S);
        d.set_service("t", vec![wats]);
        d.record("other", wats, Ok(()), S);
        let v = d.views(S);
        let kinds: Vec<_> = v.iter().map(|v| (v.target.as_str(), v.dependency)).collect();
        assert_eq!(kinds, [("other", "http"), ("t", "wats")]);
        for port in 1..MAX_PER_TARGET as u16 {
            assert!(d.record("t", SocketAddr::new(wats.ip(), port), Ok(()), 2 * S + u64::from(port)));
        }
        // Full, nothing stale: refused.
        assert!(!d.record("t", addr("10.0.0.9:1"), Ok(()), 10 * S));
        assert_eq!(d.views(10 * S).len(), MAX_PER_TARGET + 1);
        // The stale one called longest ago makes room (counted as a cap hit).
        assert!(!d.record("t", addr("10.0.0.9:1"), Ok(()), 70 * S));
        let v = d.views(70 * S);
        assert_eq!(v.len(), MAX_PER_TARGET + 1);
        assert!(!v.iter().any(|v| v.server == "10.0.0.5:443" && v.target == "t"));
        assert!(v.iter().any(|v| v.server == "10.0.0.9:1"));
        // Known servers are never refused.
        assert!(d.record("t", addr("10.0.0.9:1"), Ok(()), 71 * S));
    }

    #[test]
    fn service_addresses_from_config_urls() {
        let a = |s: &str| service_addresses(s);
        assert_eq!(a("https://10.0.0.5"), [addr("10.0.0.5:443")]);
        assert_eq!(a("http://127.0.0.1:8080/api?x=1"), [addr("127.0.0.1:8080")]);
        assert_eq!(a("https://user:secret@127.0.0.1:9443/"), [addr("127.0.0.1:9443")]);
        assert_eq!(a("http://[::1]:81"), [addr("[::1]:81")]);
        assert_eq!(a("127.0.0.1"), [addr("127.0.0.1:443")]);
        assert!(a("https://").is_empty());
        assert!(a("https://127.0.0.1:notaport").is_empty());
        assert!(a("http://localhost:80").iter().all(|s| s.ip().is_loopback() && s.port() == 80));
    }
}
