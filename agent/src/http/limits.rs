//! The server's limits and the names under which what they refused is
//! counted (`pywats_agent_limit_hits_total{limit}`, beside the parsers').
//!
//! The agent's clients are a few scrapers and probes; the limits keep
//! anyone else who can reach the port from holding its file descriptors,
//! memory or shutdown: the fd limit is shared with the liveness checks'
//! reads of `/proc` and the uprobes of every target.

use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, Opts};

use crate::{cli::Args, http::deadlines::Deadlines, metrics::Metrics};

/// A TLS handshake must be complete this long after the connection was accepted.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A response that the client reads nothing of for this long ends the connection.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (hyper's read buffer: its minimum is 8 KiB); a
/// longer one is answered 431. Requests have no body worth reading (GET).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Header fields per request; more are answered 431.
pub const MAX_HEADERS: usize = 64;
/// After SIGTERM the server stops accepting, lets requests in progress end
/// for this long, then closes what is left (a half-sent request among them).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// Connections may take at most this fraction (1/N) of the open-file limit.
pub const NOFILE_SHARE: u64 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    pub max_connections: usize,
    /// Connections from one peer (an IPv4 address, an IPv6 /64).
    pub max_connections_per_peer: usize,
    pub deadlines: Deadlines,
}

impl ServerLimits {
    /// From the flags, the connection cap lowered to fit the open-file limit.
    pub fn from_args(args: &Args) -> ServerLimits {
        let requested = args.web_max_connections as usize;
        let max_connections = connection_cap(requested, open_file_limit());
        if max_connections < requested {
            tracing::warn!(
                "--web-max-connections {requested} lowered to {max_connections}: a quarter of the open-file limit \
                 (RLIMIT_NOFILE); raise the limit (LimitNOFILE=) to allow more"
            );
        }
        ServerLimits {
            max_connections,
            max_connections_per_peer: (args.web_max_connections_per_peer as usize).min(max_connections),
            deadlines: Deadlines {
                head: Duration::from_secs(args.web_header_timeout),
                idle: Duration::from_secs(args.web_idle_timeout),
                send: SEND_TIMEOUT,
            },
        }
    }
}

/// The soft RLIMIT_NOFILE, when it is finite.
fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// `requested`, but at most 1/[`NOFILE_SHARE`] of the fd limit (and at least 1).
pub fn connection_cap(requested: usize, nofile: Option<u64>) -> usize {
    match nofile {
        Some(n) => requested.min((n / NOFILE_SHARE).max(1) as usize),
        None => requested,
    }
}

/// A server limit that refused something, or closed something to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerLimit {
    /// A connection past `--web-max-connections` with no connection idle:
    /// accepted and closed at once.
    Connections,
    /// A connection past `--web-max-connections-per-peer` with none of the
    /// peer's connections idle: accepted and closed at once.
    ConnectionsPerPeer,
    /// An idle keep-alive connection closed to admit a new one (either cap).
    IdleEvicted,
    /// No complete request head within `--web-header-timeout`.
    HeaderTimeout,
    /// The client read nothing of a response for [`SEND_TIMEOUT`].
    SendTimeout,
    /// No TLS handshake within [`TLS_HANDSHAKE_TIMEOUT`].
    TlsHandshakeTimeout,
    /// A head over [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`]: 431.
    RequestHead,
    /// A credential not checked because its peer's failure budget was spent: 429.
    AuthFailuresPerPeer,
    /// A credential not checked because the agent's failure budget was spent: 429.
    AuthFailures,
}

impl ServerLimit {
    pub const ALL: [ServerLimit; 9] = [
        ServerLimit::Connections,
        ServerLimit::ConnectionsPerPeer,
        ServerLimit::IdleEvicted,
        ServerLimit::HeaderTimeout,
        ServerLimit::SendTimeout,
        ServerLimit::TlsHandshakeTimeout,
        ServerLimit::RequestHead,
        ServerLimit::AuthFailuresPerPeer,
        ServerLimit::AuthFailures,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ServerLimit::Connections => "http_connections",
            ServerLimit::ConnectionsPerPeer => "http_connections_per_peer",
            ServerLimit::IdleEvicted => "http_idle_evicted",
            ServerLimit::HeaderTimeout => "http_header_timeout",
            ServerLimit::SendTimeout => "http_send_timeout",
            ServerLimit::TlsHandshakeTimeout => "http_tls_handshake_timeout",
            ServerLimit::RequestHead => "http_request_head",
            ServerLimit::AuthFailuresPerPeer => "http_auth_failures_per_peer",
            ServerLimit::AuthFailures => "http_auth_failures",
        }
    }
}

/// The server's own metrics.
#[derive(Clone)]
pub struct ServerMetrics {
    /// Connections open now.
    pub connections: IntGauge,
    reloads: IntCounterVec,
    limit_hits: IntCounterVec,
    /// Renders of `/metrics`, by outcome ([`Render`]).
    renders: IntCounterVec,
    /// bcrypt runs, by result.
    bcrypt: IntCounterVec,
}

/// How a render of `/metrics` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Render {
    /// At least one scrape got it.
    Answered,
    /// Every scrape waiting for it had gone when it was done.
    Abandoned,
    /// Every scrape waiting for it had gone before it began: not rendered.
    Skipped,
}

impl Render {
    const ALL: [Render; 3] = [Render::Answered, Render::Abandoned, Render::Skipped];

    fn name(self) -> &'static str {
        match self {
            Render::Answered => "answered",
            Render::Abandoned => "abandoned",
            Render::Skipped => "skipped",
        }
    }
}

impl ServerMetrics {
    pub fn new(m: &Metrics) -> ServerMetrics {
        let connections = IntGauge::new("pywats_agent_http_connections", "Connections open to the agent's own server.")
            .expect("valid metric definition");
        let reloads = IntCounterVec::new(
            Opts::new(
                "pywats_agent_web_config_reloads_total",
                "Re-reads of the server's TLS and credential files on SIGHUP, by result (a failed one keeps \
                 the configuration in force).",
            ),
            &["result"],
        )
        .expect("valid metric definition");
        let renders = IntCounterVec::new(
            Opts::new(
                "pywats_agent_metrics_renders_total",
                "Renders of /metrics, by outcome: answered, abandoned (every scrape waiting for it had gone), \
                 skipped (they had gone before it began). Scrapes that arrive while a render runs share it.",
            ),
            &["outcome"],
        )
        .expect("valid metric definition");
        let bcrypt = IntCounterVec::new(
            Opts::new(
                "pywats_agent_http_bcrypt_checks_total",
                "Passwords checked with bcrypt, by result (accepted, rejected); remembered ones and those \
                 refused by the failure budget are not checked.",
            ),
            &["result"],
        )
        .expect("valid metric definition");
        m.register(Box::new(connections.clone()));
        m.register(Box::new(reloads.clone()));
        m.register(Box::new(renders.clone()));
        m.register(Box::new(bcrypt.clone()));
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
        }
        for limit in ServerLimit::ALL {
            m.limit_hits.with_label_values(&[limit.name()]);
        }
        for outcome in Render::ALL {
            renders.with_label_values(&[outcome.name()]);
        }
        for result in ["accepted", "rejected"] {
            bcrypt.with_label_values(&[result]);
        }
        ServerMetrics { connections, reloads, limit_hits: m.limit_hits.clone(), renders, bcrypt }
    }

    pub fn rendered(&self, outcome: Render) {
        self.renders.with_label_values(&[outcome.name()]).inc();
    }

    pub fn bcrypt_checked(&self, accepted: bool) {
        self.bcrypt.with_label_values(&[if accepted { "accepted" } else { "rejected" }]).inc();
    }

    pub fn hit(&self, limit: ServerLimit) {
        self.limit_hits.with_label_values(&[limit.name()]).inc();
    }

    pub fn reloaded(&self, ok: bool) {
        self.reloads.with_label_values(&[if ok { "success" } else { "failure" }]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        assert_eq!(connection_cap(64, Some(1024)), 64);
        assert_eq!(connection_cap(1000, Some(1024)), 256);
        assert_eq!(connection_cap(1000, Some(3)), 1);
        assert_eq!(connection_cap(1000, None), 1000);
    }
}
