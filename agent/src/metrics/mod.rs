//! The agent's registry and its own `pywats_agent_*` metrics. Each component
//! registers its collectors here and keeps cheap handles to what it updates.

pub mod exemplars;
mod lost;
pub mod openmetrics;
mod process;
mod programs;
mod ratelimit;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use prometheus::{
    core::{Collector, MetricVec, MetricVecBuilder},
    proto::MetricFamily,
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use pywats_agent_ebpf::abi::EventKind;

use crate::sync::Locked;

pub use exemplars::Exemplars;
pub use lost::{LostEvents, LostEventsHandle, MapInsertFailures};
pub use process::ProcessMetrics;
pub use programs::ProgramStats;
pub use ratelimit::RateLimitedLog;

/// prometheus_client's default histogram buckets, which pyWATS's own module
/// uses (the Rust crate's defaults lack .075, .75 and 7.5).
pub const PYWATS_BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/// A family whose series carry a `target` label: a forgotten target's
/// series go with it.
pub trait TargetSeries: Send + Sync {
    fn forget(&self, target: &str);
}

impl<T: MetricVecBuilder> TargetSeries for MetricVec<T> {
    fn forget(&self, target: &str) {
        let Some(names) = self.desc().first().map(|d| d.variable_labels.clone()) else { return };
        for family in self.collect() {
            for m in family.get_metric() {
                let labels: HashMap<&str, &str> = m.get_label().iter().map(|l| (l.name(), l.value())).collect();
                if labels.get("target") == Some(&target) {
                    let values: Vec<&str> =
                        names.iter().map(|n| labels.get(n.as_str()).copied().unwrap_or("")).collect();
                    let _ = self.remove_label_values(&values);
                }
            }
        }
    }
}

pub struct Metrics {
    registry: Registry,
    /// The families with a `target` label.
    per_target: Mutex<Vec<Box<dyn TargetSeries>>>,
    pub events: IntCounterVec,
    pub decode_errors: IntCounterVec,
    pub programs_attached: IntGauge,
    pub http_requests: IntCounterVec,
    pub collector_errors: IntCounterVec,
    pub tls_processes: IntGauge,
    pub tls_attach: Histogram,
    /// Caps that refused something, by `limit`: every component counts its own here.
    pub limit_hits: IntCounterVec,
    /// Liveness reads of `/proc/<pid>` that failed for another reason than
    /// "no such process", by errno: the process was kept.
    pub proc_read_errors: IntCounterVec,
    /// Processes that became targets, by how: `pid` (named at start) or `match`.
    pub targets_joined: IntCounterVec,
    /// Events of processes that are not targets (any more), not applied.
    pub events_ignored: IntCounterVec,
    /// Processes the kernel took in at their exec, by what became of them.
    pub exec_candidates: IntCounterVec,
    /// From a process's exec (or start) to its joining, by how it was found.
    pub adoption_delay: prometheus::HistogramVec,
    /// Exemplars of the request-duration histograms, for OpenMetrics scrapes.
    pub exemplars: Arc<Exemplars>,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

impl Metrics {
    pub fn new(start: SystemTime) -> Metrics {
        let registry = Registry::new();
        let build_info =
            IntGaugeVec::new(Opts::new("pywats_agent_build_info", "Build of the running agent."), &["version"])
                .expect("valid metric definition");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let start_time =
            IntGauge::new("pywats_agent_start_time_seconds", "Start time of the agent, seconds since the epoch.")
                .expect("valid metric definition");
        start_time.set(start.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0));
        let limit_hits = counter(
            "pywats_agent_limit_hits_total",
            "Things a cap refused, by limit: evicted connections, skipped header blocks and heads, label \
             values turned into `other`, … (see the developer guide).",
            &["limit"],
        );
        let exemplars = Arc::new(Exemplars::new(limit_hits.with_label_values(&["exemplars"])));
        let metrics = Metrics {
            events: counter("pywats_agent_events_total", "Events received from the kernel, by kind.", &["kind"]),
            decode_errors: counter(
                "pywats_agent_event_decode_errors_total",
                "Ring-buffer records that could not be decoded, by reason.",
                &["reason"],
            ),
            programs_attached: IntGauge::new("pywats_agent_programs_attached", "eBPF programs currently attached.")
                .expect("valid metric definition"),
            http_requests: counter(
                "pywats_agent_http_requests_total",
                "Requests to the agent's own endpoints, by path and status code.",
                &["path", "code"],
            ),
            collector_errors: counter(
                "pywats_agent_collector_errors_total",
                "Failed reads of a collector (the scrape goes on without them).",
                &["collector"],
            ),
            tls_processes: IntGauge::new(
                "pywats_agent_tls_probed_processes",
                "Target processes whose libssl calls are probed (TLS probes are attached per process).",
            )
            .expect("valid metric definition"),
            tls_attach: Histogram::with_opts(
                HistogramOpts::new(
                    "pywats_agent_tls_attach_seconds",
                    "From the kernel's report of a new target process to its TLS probes in place: TLS calls \
                     the process makes sooner are not seen.",
                )
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
            )
            .expect("valid metric definition"),
            limit_hits,
            proc_read_errors: counter(
                "pywats_agent_proc_read_errors_total",
                "Reads of a watched process's /proc entry that failed for another reason than \"no such \
                 process\" (e.g. emfile: the agent's fd limit), by kind: the process stays watched.",
                &["kind"],
            ),
            targets_joined: counter(
                "pywats_agent_targets_joined_total",
                "Processes that became targets, by how: pid (given by --pid) or match (found by --match, at \
                 start or later; a restarted client joins again).",
                &["how"],
            ),
            events_ignored: counter(
                "pywats_agent_events_ignored_total",
                "Events not applied because their process is not a target, by kind and reason: not_a_target (a \
                 process the agent decided against, or one forgotten), lifecycle_wait (the agent's lifecycle \
                 thread did not apply the process's own events within 2 s).",
                &["kind", "reason"],
            ),
            exec_candidates: counter(
                "pywats_agent_exec_candidates_total",
                "Processes the kernel took in at their exec because their name begins like an allowed \
                 executable's, by outcome: adopted (their command line matched and they were allowed) or \
                 released (not a target: every Python started on the host while --match is on, by default) or \
                 gone (exited before the agent could read its command line: if it was a client, what it did is \
                 not counted).",
                &["outcome"],
            ),
            adoption_delay: prometheus::HistogramVec::new(
                HistogramOpts::new(
                    "pywats_agent_adoption_delay_seconds",
                    "From a --match process's exec to the agent watching it, by how it was found: exec (taken \
                     in by the kernel at its exec, nothing it did missed) or scan (found by the 2 s look at \
                     /proc, from its start: what it did before is not seen).",
                )
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
                &["how"],
            )
            .expect("valid metric definition"),
            exemplars,
            registry,
            per_target: Mutex::default(),
        };
        metrics.per_target(metrics.exemplars.clone());
        for how in ["pid", "match"] {
            metrics.targets_joined.with_label_values(&[how]);
        }
        for how in ["exec", "scan"] {
            metrics.adoption_delay.with_label_values(&[how]);
        }
        for outcome in ["adopted", "released", "gone"] {
            metrics.exec_candidates.with_label_values(&[outcome]);
        }
        for reason in ["short", "unknown_kind", "bad_length", "wrong_ring"] {
            metrics.decode_errors.with_label_values(&[reason]);
        }
        // Every collector that counts its failures here (target/, the sampler).
        for collector in ["target_map", "socket_seed", "resolve", "tls_attach_queue", "tls_attach", "procfs"] {
            metrics.collector_errors.with_label_values(&[collector]);
        }
        // What the socket and file readers may ignore (process events never are).
        let ignorable = EventKind::ALL
            .into_iter()
            .filter(|k| !matches!(k, EventKind::ProcFork | EventKind::ProcExec | EventKind::ProcExit));
        for kind in ignorable {
            for reason in ["not_a_target", "lifecycle_wait"] {
                metrics.events_ignored.with_label_values(&[kind.name(), reason]);
            }
        }

        metrics.register(Box::new(build_info));
        metrics.register(Box::new(start_time));
        metrics.register(Box::new(metrics.events.clone()));
        metrics.register(Box::new(metrics.decode_errors.clone()));
        metrics.register(Box::new(metrics.programs_attached.clone()));
        metrics.register(Box::new(metrics.http_requests.clone()));
        metrics.register(Box::new(metrics.collector_errors.clone()));
        metrics.register(Box::new(metrics.tls_processes.clone()));
        metrics.register(Box::new(metrics.tls_attach.clone()));
        metrics.register(Box::new(metrics.limit_hits.clone()));
        metrics.register(Box::new(metrics.proc_read_errors.clone()));
        metrics.register(Box::new(metrics.targets_joined.clone()));
        metrics.register(Box::new(metrics.events_ignored.clone()));
        metrics.register(Box::new(metrics.adoption_delay.clone()));
        metrics.register(Box::new(metrics.exec_candidates.clone()));
        metrics.register(Box::new(crate::fs::root::REFUSED.clone()));
        metrics
    }

    /// Notes a family whose series carry a `target` label (registered too).
    pub fn per_target(&self, family: impl TargetSeries + 'static) {
        self.per_target.locked().push(Box::new(family));
    }

    /// Removes every series of a target that is gone.
    pub fn forget_target(&self, target: &str) {
        for family in self.per_target.locked().iter() {
            family.forget(target);
        }
    }

    /// Registers a component's collector. Names are fixed in code, so a clash is a bug.
    pub fn register(&self, c: Box<dyn Collector>) {
        self.registry.register(c).expect("metric names are unique");
    }

    /// Every family registered, read now (collectors read `/proc` and kernel maps).
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }

    /// The Prometheus text exposition of gathered families.
    pub fn text(families: &[MetricFamily]) -> Vec<u8> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(families, &mut buf).expect("text encoding into memory");
        buf
    }

    /// The OpenMetrics exposition of gathered families, with exemplars.
    pub fn openmetrics(&self, families: &[MetricFamily]) -> Vec<u8> {
        openmetrics::encode(families, &self.exemplars).into_bytes()
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        String::from_utf8(Self::text(&self.gather())).expect("text encoder writes UTF-8")
    }

    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_self_metrics() {
        let m = Metrics::new(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1700000000));
        m.events.with_label_values(&["proc_fork"]).inc();
        let text = m.render();
        assert!(text.contains("pywats_agent_start_time_seconds 1700000000"), "{text}");
        assert!(text.contains("pywats_agent_events_total{kind=\"proc_fork\"} 1"), "{text}");
        assert!(text.contains(&format!("pywats_agent_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));
        assert_eq!(TextEncoder::new().format_type(), "text/plain; version=0.0.4");
    }

    #[test]
    fn a_forgotten_targets_series_go_and_the_others_stay() {
        let m = Metrics::new(SystemTime::now());
        let requests = counter("t_requests_total", "test", &["method", "target", "code"]);
        let durations = prometheus::HistogramVec::new(HistogramOpts::new("t_seconds", "test"), &["target"]).unwrap();
        m.register(Box::new(requests.clone()));
        m.register(Box::new(durations.clone()));
        m.per_target(requests.clone());
        m.per_target(durations.clone());
        for (method, target, code) in [("GET", "a", "200"), ("POST", "a", "500"), ("GET", "b", "200")] {
            requests.with_label_values(&[method, target, code]).inc();
            durations.with_label_values(&[target]).observe(0.1);
        }
        m.forget_target("a");
        let text = m.render();
        assert!(!text.contains("target=\"a\""), "{text}");
        assert!(text.contains("t_requests_total{code=\"200\",method=\"GET\",target=\"b\"} 1"), "{text}");
        assert!(text.contains("t_seconds_count{target=\"b\"} 1"), "{text}");
    }
}
