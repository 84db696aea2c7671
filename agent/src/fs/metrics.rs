//! Queue and converter metrics: pyWATS's names and labels, plus `target`,
//! items by state, outcomes, the corrections the directory scans made and
//! what the caps refused.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use crate::{
    fs::{preset::State, queue::Outcome},
    metrics::{Metrics, PYWATS_BUCKETS},
};

#[derive(Clone)]
pub struct FsMetrics {
    pub depth: IntGaugeVec,
    pub items: IntGaugeVec,
    pub processing: HistogramVec,
    pub outcomes: IntCounterVec,
    pub transitions: IntCounterVec,
    pub corrections: IntCounterVec,
    pub queue_untracked: IntCounterVec,
    pub executions: IntCounterVec,
    pub converter_duration: HistogramVec,
    pub in_progress: GaugeVec,
    pub converter_corrections: IntCounterVec,
    pub converter_untracked: IntCounterVec,
    pub path_errors: IntCounterVec,
}

/// One queue's series, looked up once when its watch begins: an event then
/// costs a few atomic operations instead of hashing label values.
pub struct QueueSeries {
    pub depth: IntGauge,
    /// By [`State::index`].
    pub items: [IntGauge; 4],
    completed: IntCounter,
    failed: IntCounter,
    pub recovered: IntCounter,
    pub retried: IntCounter,
    pub processing: Histogram,
    pub corrections: IntCounter,
    pub untracked: IntCounter,
}

impl QueueSeries {
    pub fn outcome(&self, o: Outcome) -> &IntCounter {
        match o {
            Outcome::Completed => &self.completed,
            Outcome::Failed => &self.failed,
        }
    }
}

/// One converter's series, looked up once when its watch begins.
pub struct ConverterSeries {
    pub success: IntCounter,
    pub error: IntCounter,
    pub duration: Histogram,
    pub in_progress: Gauge,
    pub vanished: IntCounter,
    pub expired: IntCounter,
    pub untracked: IntCounter,
}

impl FsMetrics {
    pub fn new(registry: &Metrics) -> FsMetrics {
        let q = &["target", "queue_name"];
        let m = FsMetrics {
            depth: IntGaugeVec::new(Opts::new("pywats_queue_depth", "Items waiting in the queue (queued/pending)."), q)
                .expect("valid metric"),
            items: IntGaugeVec::new(
                Opts::new("pywats_queue_items", "Items in the queue directory by state."),
                &["target", "queue_name", "state"],
            )
            .expect("valid metric"),
            processing: HistogramVec::new(
                HistogramOpts::new(
                    "pywats_queue_processing_duration_seconds",
                    "Queue item processing: processing start to completed/failed.",
                )
                .buckets(PYWATS_BUCKETS.to_vec()),
                &["target", "queue_name", "item_type"],
            )
            .expect("valid metric"),
            outcomes: IntCounterVec::new(
                Opts::new("pywats_queue_items_processed_total", "Queue items that finished processing, by outcome."),
                &["target", "queue_name", "outcome"],
            )
            .expect("valid metric"),
            transitions: IntCounterVec::new(
                Opts::new(
                    "pywats_queue_requeued_total",
                    "Items put back to queued: `recovered` (stuck in processing) or `retried` (after failing).",
                ),
                &["target", "queue_name", "reason"],
            )
            .expect("valid metric"),
            corrections: IntCounterVec::new(
                Opts::new(
                    "pywats_agent_queue_corrections_total",
                    "Items whose state a directory scan corrected (events missed or lost).",
                ),
                q,
            )
            .expect("valid metric"),
            queue_untracked: IntCounterVec::new(
                Opts::new(
                    "pywats_agent_queue_items_untracked_total",
                    "Queue items not tracked because the queue already held the most items the agent tracks \
                     (counted at each event and each directory scan that met one).",
                ),
                q,
            )
            .expect("valid metric"),
            executions: IntCounterVec::new(
                Opts::new("pywats_converter_executions_total", "Converter executions, one per input file, by status."),
                &["target", "converter", "status"],
            )
            .expect("valid metric"),
            converter_duration: HistogramVec::new(
                HistogramOpts::new(
                    "pywats_converter_duration_seconds",
                    "Input file picked up to moved to done/archive/error or deleted.",
                )
                .buckets(PYWATS_BUCKETS.to_vec()),
                &["target", "converter"],
            )
            .expect("valid metric"),
            in_progress: GaugeVec::new(
                Opts::new("pywats_converter_in_progress", "Input files picked up and not finished yet."),
                &["target", "converter"],
            )
            .expect("valid metric"),
            converter_corrections: IntCounterVec::new(
                Opts::new(
                    "pywats_agent_converter_corrections_total",
                    "Converter executions ended without success or error: `vanished` (the file went away unseen) \
                     or `expired` (in progress too long).",
                ),
                &["target", "converter", "reason"],
            )
            .expect("valid metric"),
            converter_untracked: IntCounterVec::new(
                Opts::new(
                    "pywats_agent_converter_untracked_total",
                    "Converter input files not tracked because the converter already held the most files the agent \
                     tracks.",
                ),
                &["target", "converter"],
            )
            .expect("valid metric"),
            path_errors: IntCounterVec::new(
                Opts::new("pywats_agent_path_errors_total", "File paths the agent could not use, by reason."),
                &["reason"],
            )
            .expect("valid metric"),
        };
        // Zero from the start, so dashboards and alerts can take their rate.
        for reason in ["unresolved", "truncated"] {
            m.path_errors.with_label_values(&[reason]);
        }
        registry.register(Box::new(m.depth.clone()));
        registry.register(Box::new(m.items.clone()));
        registry.register(Box::new(m.processing.clone()));
        registry.register(Box::new(m.outcomes.clone()));
        registry.register(Box::new(m.transitions.clone()));
        registry.register(Box::new(m.corrections.clone()));
        registry.register(Box::new(m.queue_untracked.clone()));
        registry.register(Box::new(m.executions.clone()));
        registry.register(Box::new(m.converter_duration.clone()));
        registry.register(Box::new(m.in_progress.clone()));
        registry.register(Box::new(m.converter_corrections.clone()));
        registry.register(Box::new(m.converter_untracked.clone()));
        registry.register(Box::new(m.path_errors.clone()));
        for family in [&m.depth, &m.items] {
            registry.per_target(family.clone());
        }
        for family in [&m.outcomes, &m.transitions, &m.corrections, &m.queue_untracked, &m.executions] {
            registry.per_target(family.clone());
        }
        for family in [&m.converter_corrections, &m.converter_untracked] {
            registry.per_target(family.clone());
        }
        registry.per_target(m.processing.clone());
        registry.per_target(m.converter_duration.clone());
        registry.per_target(m.in_progress.clone());
        m
    }

    pub fn queue(&self, target: &str, name: &str, item_type: &str) -> QueueSeries {
        let l = [target, name];
        let with = |v: &IntCounterVec, extra: &str| v.with_label_values(&[target, name, extra]);
        QueueSeries {
            depth: self.depth.with_label_values(&l),
            items: State::ALL.map(|st| self.items.with_label_values(&[target, name, st.name()])),
            completed: with(&self.outcomes, Outcome::Completed.name()),
            failed: with(&self.outcomes, Outcome::Failed.name()),
            recovered: with(&self.transitions, "recovered"),
            retried: with(&self.transitions, "retried"),
            processing: self.processing.with_label_values(&[target, name, item_type]),
            corrections: self.corrections.with_label_values(&l),
            untracked: self.queue_untracked.with_label_values(&l),
        }
    }

    pub fn converter(&self, target: &str, name: &str) -> ConverterSeries {
        let l = [target, name];
        let with = |v: &IntCounterVec, extra: &str| v.with_label_values(&[target, name, extra]);
        ConverterSeries {
            success: with(&self.executions, "success"),
            error: with(&self.executions, "error"),
            duration: self.converter_duration.with_label_values(&l),
            in_progress: self.in_progress.with_label_values(&l),
            vanished: with(&self.converter_corrections, "vanished"),
            expired: with(&self.converter_corrections, "expired"),
            untracked: self.converter_untracked.with_label_values(&l),
        }
    }
}
