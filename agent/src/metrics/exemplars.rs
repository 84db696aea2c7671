//! Exemplars of histogram buckets: for each series and bucket, the latest
//! observation that carried an id (a request's correlation or trace id, a
//! report's id), shown in the OpenMetrics exposition after the bucket's
//! sample. The `prometheus` crate has no exemplars, so the agent keeps
//! them here, keyed as the gathered families name their series.
//!
//! Bounded: one exemplar per bucket of at most [`MAX_SERIES`] series; a
//! new series past it gets none, counted in
//! `pywats_agent_limit_hits_total{limit="exemplars"}`. A forgotten target's
//! series go with it.

use std::{collections::HashMap, sync::Mutex, time::SystemTime};

use prometheus::{proto::LabelPair, IntCounter};

use crate::{metrics::TargetSeries, sync::Locked};

/// Histogram series with exemplars, all families together.
pub const MAX_SERIES: usize = 4096;
/// OpenMetrics: an exemplar's label names and values together, in characters.
pub const MAX_LABEL_CHARS: usize = 128;

#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    /// `request_id`, `trace_id` or `report_id`.
    pub label: &'static str,
    /// Already restricted to `[A-Za-z0-9._:-]`.
    pub id: String,
    pub value: f64,
    /// Seconds since the epoch.
    pub at: f64,
}

/// One family's exemplars: its label names sorted (as the gathered series
/// list them), its bucket bounds, and per series (its label values in that
/// order, joined) one slot per bucket and one for `+Inf`.
struct Family {
    names: Vec<String>,
    bounds: Vec<f64>,
    series: HashMap<String, Vec<Option<Exemplar>>>,
}

pub struct Exemplars {
    families: Mutex<HashMap<&'static str, Family>>,
    /// The shared `pywats_agent_limit_hits_total{limit="exemplars"}`.
    refused: IntCounter,
}

/// Label values joined in the order of their sorted names. A value with the
/// separator in it could only make two series share exemplars.
fn key<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut key = String::new();
    for (i, v) in values.enumerate() {
        if i > 0 {
            key.push('\u{0}');
        }
        key.push_str(v);
    }
    key
}

impl Exemplars {
    pub fn new(refused: IntCounter) -> Exemplars {
        Exemplars { families: Mutex::default(), refused }
    }

    /// Notes the observation `value` of the series `labels` (names and
    /// values, any order) of the histogram `family` with buckets `bounds`.
    /// An id too long for OpenMetrics' limit is not kept.
    pub fn record(
        &self,
        family: &'static str,
        bounds: &[f64],
        labels: &[(&str, &str)],
        value: f64,
        label: &'static str,
        id: &str,
    ) {
        if label.len() + id.chars().count() > MAX_LABEL_CHARS {
            return;
        }
        let mut sorted = labels.to_vec();
        sorted.sort_unstable_by_key(|(name, _)| *name);
        let series_key = key(sorted.iter().map(|(_, v)| *v));
        let at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let exemplar = Exemplar { label, id: id.to_string(), value, at };
        let mut families = self.families.locked();
        let total: usize = families.values().map(|f| f.series.len()).sum();
        let f = families.entry(family).or_insert_with(|| Family {
            names: sorted.iter().map(|(n, _)| n.to_string()).collect(),
            bounds: bounds.to_vec(),
            series: HashMap::new(),
        });
        // By the bounds the family began with: a family's buckets are fixed in code.
        let bucket = f.bounds.iter().position(|b| value <= *b).unwrap_or(f.bounds.len());
        match f.series.get_mut(&series_key) {
            Some(slots) => slots[bucket] = Some(exemplar),
            None if total >= MAX_SERIES => self.refused.inc(),
            None => {
                let mut slots = vec![None; f.bounds.len() + 1];
                slots[bucket] = Some(exemplar);
                f.series.insert(series_key, slots);
            }
        }
    }

    /// The families that have exemplars (so the encoder looks up no others).
    pub fn families(&self) -> Vec<&'static str> {
        self.families.locked().keys().copied().collect()
    }

    /// The exemplars of one series, one slot per bucket then `+Inf`, by the
    /// gathered series' labels (sorted by name, as the registry gives them).
    pub fn of_series(&self, family: &str, labels: &[LabelPair]) -> Option<Vec<Option<Exemplar>>> {
        self.families.locked().get(family)?.series.get(&key(labels.iter().map(LabelPair::value))).cloned()
    }
}

impl TargetSeries for Exemplars {
    fn forget(&self, target: &str) {
        for f in self.families.locked().values_mut() {
            let Some(at) = f.names.iter().position(|n| n == "target") else { continue };
            f.series.retain(|k, _| k.split('\u{0}').nth(at) != Some(target));
        }
    }
}

/// Lets the registry's list of per-target families hold the shared store.
impl TargetSeries for std::sync::Arc<Exemplars> {
    fn forget(&self, target: &str) {
        self.as_ref().forget(target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [0.1, 1.0, 10.0];

    fn pairs(labels: &[(&str, &str)]) -> Vec<LabelPair> {
        let mut sorted = labels.to_vec();
        sorted.sort_unstable_by_key(|(n, _)| *n);
        sorted
            .into_iter()
            .map(|(n, v)| {
                let mut p = LabelPair::default();
                p.set_name(n.to_string());
                p.set_value(v.to_string());
                p
            })
            .collect()
    }

    fn store() -> Exemplars {
        Exemplars::new(IntCounter::new("t_refused_total", "test").unwrap())
    }

    /// Series with exemplars, all families together.
    fn series(e: &Exemplars) -> usize {
        e.families.locked().values().map(|f| f.series.len()).sum()
    }

    #[test]
    fn the_latest_observation_of_each_bucket_is_kept() {
        let e = store();
        let labels = [("target", "st1"), ("method", "POST"), ("endpoint", "/api/Report/WSJF")];
        e.record("h", &BOUNDS, &labels, 0.05, "report_id", "r-1");
        e.record("h", &BOUNDS, &labels, 0.07, "request_id", "r-2");
        e.record("h", &BOUNDS, &labels, 5.0, "trace_id", "t-3");
        e.record("h", &BOUNDS, &labels, 50.0, "report_id", "r-4");
        let slots = e.of_series("h", &pairs(&labels)).unwrap();
        let ids: Vec<Option<&str>> = slots.iter().map(|s| s.as_ref().map(|x| x.id.as_str())).collect();
        assert_eq!(ids, [Some("r-2"), None, Some("t-3"), Some("r-4")]);
        assert_eq!(slots[0].as_ref().unwrap().label, "request_id");
        assert_eq!(slots[0].as_ref().unwrap().value, 0.07);
        assert!(e.of_series("h", &pairs(&[("target", "st2"), ("method", "POST"), ("endpoint", "/x")])).is_none());
        assert!(e.of_series("other", &pairs(&labels)).is_none());
    }

    #[test]
    fn ids_past_the_openmetrics_limit_are_not_kept() {
        let e = store();
        let labels = [("target", "st1")];
        e.record("h", &BOUNDS, &labels, 0.05, "report_id", &"x".repeat(MAX_LABEL_CHARS - 9));
        e.record("h", &BOUNDS, &labels, 0.5, "report_id", &"x".repeat(MAX_LABEL_CHARS - 8));
        let slots = e.of_series("h", &pairs(&labels)).unwrap();
        assert!(slots[0].is_some() && slots[1].is_none());
    }

    #[test]
    fn series_past_the_cap_are_refused_and_counted_and_targets_forgotten() {
        let e = store();
        for i in 0..MAX_SERIES + 10 {
            let target = if i % 2 == 0 { "a" } else { "b" };
            e.record("h", &BOUNDS, &[("target", target), ("endpoint", &format!("/e{i}"))], 0.5, "request_id", "r");
        }
        assert_eq!(series(&e), MAX_SERIES);
        assert_eq!(e.refused.get(), 10);
        e.forget("a");
        assert_eq!(series(&e), MAX_SERIES / 2);
        assert!(e.of_series("h", &pairs(&[("target", "b"), ("endpoint", "/e1")])).is_some());
        assert!(e.of_series("h", &pairs(&[("target", "a"), ("endpoint", "/e0")])).is_none());
    }
}
