//! HTTP metrics: names, labels and buckets of pyWATS's own module, plus
//! `target`, sizes, and the agent's parse and loss counters for this pipeline.

use std::sync::Arc;

use prometheus::{exponential_buckets, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};

use crate::{
    metrics::{Exemplars, Metrics, PYWATS_BUCKETS},
    net::{
        limits::Limit,
        report::{Correlation, H2Error, ParseError, Protocol},
    },
};

/// `protocol` of `pywats_agent_connections_total` for a connect that failed.
pub const CONNECT_FAILED: &str = "failed";

/// The request-duration histograms, whose buckets carry exemplars.
const DURATION: &str = "pywats_http_request_duration_seconds";
const SERVER_DURATION: &str = "pywats_http_server_request_duration_seconds";
/// Their labels, in the order `with_label_values` takes them.
const DURATION_LABELS: [&str; 3] = ["target", "method", "endpoint"];

/// Which request-duration histogram.
#[derive(Clone, Copy)]
pub enum Side {
    /// Requests the target makes.
    Client,
    /// Requests the target answers.
    Server,
}

#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub retries: IntCounterVec,
    pub errors: IntCounterVec,
    pub request_size: HistogramVec,
    pub response_size: HistogramVec,
    pub server_requests: IntCounterVec,
    pub server_duration: HistogramVec,
    pub parse_errors: IntCounterVec,
    pub connections: IntCounterVec,
    pub open_connections: IntGauge,
    pub skipped_bytes: IntCounterVec,
    pub requests_lost: IntCounterVec,
    pub buffered_bytes: IntGauge,
    /// The agent's shared `pywats_agent_limit_hits_total`.
    pub limit_hits: IntCounterVec,
    exemplars: Arc<Exemplars>,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: Option<Vec<f64>>) -> HistogramVec {
    let mut opts = HistogramOpts::new(name, help);
    opts = opts.buckets(buckets.unwrap_or_else(|| PYWATS_BUCKETS.to_vec()));
    HistogramVec::new(opts, labels).expect("valid metric definition")
}

impl HttpMetrics {
    pub fn new(registry: &Metrics) -> HttpMetrics {
        let sizes = exponential_buckets(64.0, 4.0, 11).expect("valid buckets");
        let m = HttpMetrics {
            requests: counter(
                "pywats_http_requests_total",
                "HTTP requests completed, by method, templated endpoint, outcome and status code.",
                &["target", "method", "endpoint", "status", "code"],
            ),
            // prometheus_client's default buckets, as pyWATS uses them.
            duration: histogram(
                DURATION,
                "HTTP request duration: first request byte written to last response byte read.",
                &DURATION_LABELS,
                None,
            ),
            retries: counter(
                "pywats_http_retries_total",
                "Requests that repeat the target's same request (method, path, body) within a minute after it \
                 failed in a way clients retry (timeout, reset, 429, 5xx), sooner than its own schedule.",
                &["target", "method", "endpoint"],
            ),
            errors: counter(
                "pywats_errors_total",
                "Errors by type and operation.",
                &["target", "error_type", "operation"],
            ),
            request_size: histogram(
                "pywats_http_request_size_bytes",
                "HTTP request size (head and body).",
                &["target", "method", "endpoint"],
                Some(sizes.clone()),
            ),
            response_size: histogram(
                "pywats_http_response_size_bytes",
                "HTTP response size (head and body).",
                &["target", "method", "endpoint"],
                Some(sizes),
            ),
            server_requests: counter(
                "pywats_http_server_requests_total",
                "HTTP requests the target answered (connections it accepted).",
                &["target", "method", "endpoint", "status", "code"],
            ),
            server_duration: histogram(
                SERVER_DURATION,
                "Duration of requests the target answered.",
                &DURATION_LABELS,
                None,
            ),
            parse_errors: counter(
                "pywats_agent_parse_errors_total",
                "Bytes the agent could not parse, by protocol and reason.",
                &["protocol", "reason"],
            ),
            connections: counter(
                "pywats_agent_connections_total",
                "TCP connections of targets, each counted once when it ends: by the protocol it turned out to \
                 speak (http1, http2, other, unknown: closed before any was seen) and whether over TLS; \
                 failed: a connect refused, unreachable or given up.",
                &["protocol", "tls"],
            ),
            open_connections: IntGauge::new(
                "pywats_agent_connections_open",
                "TCP connections of targets being tracked.",
            )
            .expect("valid metric definition"),
            skipped_bytes: counter(
                "pywats_agent_skipped_bytes_total",
                "Bytes not parsed, by reason: unsynced (joined mid-stream, lost sync), lost (events the kernel \
                 could not deliver).",
                &["reason"],
            ),
            requests_lost: counter(
                "pywats_agent_requests_lost_total",
                "Requests seen to start whose outcome or end fell into lost events, or into a connection the \
                 agent stopped tracking (evicted): not recorded, not guessed.",
                &["target", "protocol"],
            ),
            buffered_bytes: IntGauge::new(
                "pywats_agent_connections_buffered_bytes",
                "Bytes the tracked connections hold (partial heads and frames, HPACK tables, waiting requests); \
                 bounded by --max-buffered-mib.",
            )
            .expect("valid metric definition"),
            limit_hits: registry.limit_hits.clone(),
            exemplars: registry.exemplars.clone(),
        };
        // Zero from the start, so dashboards and alerts can take their rate.
        for limit in Limit::ALL {
            m.limit_hits.with_label_values(&[limit.name()]);
        }
        for protocol in [Protocol::Http1, Protocol::Http2, Protocol::Other, Protocol::Unknown] {
            for tls in ["true", "false"] {
                m.connections.with_label_values(&[protocol.name(), tls]);
            }
        }
        m.connections.with_label_values(&[CONNECT_FAILED, "false"]);
        for reason in ParseError::ALL.iter().map(|e| e.name()).chain(["unmatched_response", "not_http"]) {
            m.parse_errors.with_label_values(&["http1", reason]);
        }
        for e in H2Error::ALL {
            m.parse_errors.with_label_values(&["http2", e.name()]);
        }
        for reason in ["unsynced", "lost"] {
            m.skipped_bytes.with_label_values(&[reason]);
        }
        registry.register(Box::new(m.requests.clone()));
        registry.register(Box::new(m.duration.clone()));
        registry.register(Box::new(m.retries.clone()));
        registry.register(Box::new(m.errors.clone()));
        registry.register(Box::new(m.request_size.clone()));
        registry.register(Box::new(m.response_size.clone()));
        registry.register(Box::new(m.server_requests.clone()));
        registry.register(Box::new(m.server_duration.clone()));
        registry.register(Box::new(m.parse_errors.clone()));
        registry.register(Box::new(m.connections.clone()));
        registry.register(Box::new(m.open_connections.clone()));
        registry.register(Box::new(m.skipped_bytes.clone()));
        registry.register(Box::new(m.requests_lost.clone()));
        registry.register(Box::new(m.buffered_bytes.clone()));
        for family in [&m.requests, &m.retries, &m.errors, &m.server_requests, &m.requests_lost] {
            registry.per_target(family.clone());
        }
        for family in [&m.duration, &m.request_size, &m.response_size, &m.server_duration] {
            registry.per_target(family.clone());
        }
        m
    }

    /// Observes a request's duration, with its correlation as the bucket's exemplar.
    pub fn observe_duration(&self, side: Side, series: [&str; 3], seconds: f64, correlation: Option<&Correlation>) {
        let (histogram, family) = match side {
            Side::Client => (&self.duration, DURATION),
            Side::Server => (&self.server_duration, SERVER_DURATION),
        };
        histogram.with_label_values(&series).observe(seconds);
        if let Some(c) = correlation {
            let labels = [0, 1, 2].map(|i| (DURATION_LABELS[i], series[i]));
            self.exemplars.record(family, &PYWATS_BUCKETS, &labels, seconds, c.label(), c.id());
        }
    }
}
