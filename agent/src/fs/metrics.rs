//! Queue and converter metrics: pyWATS's names and labels, plus `target`,
//! items by state, outcomes and the corrections the directory scans made.

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

use crate::metrics::{Metrics, PYWATS_BUCKETS};

#[derive(Clone)]
pub struct FsMetrics {
    pub depth: IntGaugeVec,
    pub items: IntGaugeVec,
    pub processing: HistogramVec,
    pub outcomes: IntCounterVec,
    pub transitions: IntCounterVec,
    pub corrections: IntCounterVec,
    pub executions: IntCounterVec,
    pub converter_duration: HistogramVec,
    pub in_progress: GaugeVec,
    pub path_errors: IntCounterVec,
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
            path_errors: IntCounterVec::new(
                Opts::new("pywats_agent_path_errors_total", "File paths the agent could not use, by reason."),
                &["reason"],
            )
            .expect("valid metric"),
        };
        registry.register(Box::new(m.depth.clone()));
        registry.register(Box::new(m.items.clone()));
        registry.register(Box::new(m.processing.clone()));
        registry.register(Box::new(m.outcomes.clone()));
        registry.register(Box::new(m.transitions.clone()));
        registry.register(Box::new(m.corrections.clone()));
        registry.register(Box::new(m.executions.clone()));
        registry.register(Box::new(m.converter_duration.clone()));
        registry.register(Box::new(m.in_progress.clone()));
        registry.register(Box::new(m.path_errors.clone()));
        m
    }
}
