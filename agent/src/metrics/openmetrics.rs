//! The OpenMetrics 1.0 text exposition of the gathered families, with the
//! exemplars of histogram buckets, ending in `# EOF`. The `prometheus`
//! crate writes only the Prometheus text format and has no exemplars.
//!
//! Series are named as in the text format, so a scraper that switches
//! formats keeps its series: a counter's family is its name without
//! `_total` and its sample is the name; `le` values are written as the text
//! format writes them (`0.005`, `1`, `+Inf`).

use std::fmt::Write as _;

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

use crate::metrics::exemplars::{Exemplar, Exemplars};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// OpenMetrics escapes `\`, `"` and newlines, in help text as in label values.
fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn number(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

fn labels(out: &mut String, pairs: &[LabelPair], extra: Option<(&str, &str)>) {
    if pairs.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let all = pairs.iter().map(|p| (p.name(), p.value())).chain(extra);
    for (i, (name, value)) in all.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape(out, value);
        out.push('"');
    }
    out.push('}');
}

/// One sample line: name, labels, value, the metric's timestamp (seconds)
/// if it has one, and an exemplar.
fn sample(out: &mut String, name: &str, m: &Metric, extra: Option<(&str, &str)>, value: f64, ex: Option<&Exemplar>) {
    out.push_str(name);
    labels(out, m.get_label(), extra);
    out.push(' ');
    number(out, value);
    if m.timestamp_ms() != 0 {
        out.push(' ');
        number(out, m.timestamp_ms() as f64 / 1000.0);
    }
    if let Some(e) = ex {
        // The id is `[A-Za-z0-9._:-]` only: nothing to escape.
        let _ = write!(out, " # {{{}=\"{}\"}} ", e.label, e.id);
        number(out, e.value);
        let _ = write!(out, " {:.3}", e.at);
    }
    out.push('\n');
}

fn metadata(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
    if !help.is_empty() {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        escape(out, help);
        out.push('\n');
    }
}

/// The exposition of `families`, with the exemplars `store` holds.
pub fn encode(families: &[MetricFamily], store: &Exemplars) -> String {
    let with_exemplars = store.families();
    let mut out = String::with_capacity(families.len() * 256);
    for f in families {
        let name = f.name();
        match f.get_field_type() {
            MetricType::COUNTER => {
                // OpenMetrics names a counter's family without `_total`; one
                // named otherwise keeps its name as an untyped family.
                match name.strip_suffix("_total") {
                    Some(family) => metadata(&mut out, family, "counter", f.help()),
                    None => metadata(&mut out, name, "unknown", f.help()),
                }
                for m in f.get_metric() {
                    sample(&mut out, name, m, None, m.get_counter().get_value(), None);
                }
            }
            MetricType::GAUGE => {
                metadata(&mut out, name, "gauge", f.help());
                for m in f.get_metric() {
                    sample(&mut out, name, m, None, m.get_gauge().get_value(), None);
                }
            }
            // The crate makes no untyped metrics (its text encoder refuses them).
            MetricType::UNTYPED => metadata(&mut out, name, "unknown", f.help()),
            MetricType::SUMMARY => {
                metadata(&mut out, name, "summary", f.help());
                for m in f.get_metric() {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        let quantile = q.quantile().to_string();
                        sample(&mut out, name, m, Some(("quantile", &quantile)), q.value(), None);
                    }
                    sample(&mut out, &format!("{name}_sum"), m, None, s.sample_sum(), None);
                    sample(&mut out, &format!("{name}_count"), m, None, s.sample_count() as f64, None);
                }
            }
            MetricType::HISTOGRAM => {
                metadata(&mut out, name, "histogram", f.help());
                let (bucket, sum, count) = (format!("{name}_bucket"), format!("{name}_sum"), format!("{name}_count"));
                let lookup = with_exemplars.contains(&name);
                for m in f.get_metric() {
                    let h = m.get_histogram();
                    let exemplars = if lookup { store.of_series(name, m.get_label()) } else { None };
                    let exemplar = |i: usize| exemplars.as_ref().and_then(|e| e.get(i)).and_then(Option::as_ref);
                    let mut inf_seen = false;
                    for (i, b) in h.get_bucket().iter().enumerate() {
                        let bound = b.upper_bound();
                        inf_seen |= bound == f64::INFINITY;
                        let le = if bound == f64::INFINITY { "+Inf".to_string() } else { bound.to_string() };
                        sample(&mut out, &bucket, m, Some(("le", &le)), b.cumulative_count() as f64, exemplar(i));
                    }
                    if !inf_seen {
                        let inf = exemplar(h.get_bucket().len());
                        sample(&mut out, &bucket, m, Some(("le", "+Inf")), h.get_sample_count() as f64, inf);
                    }
                    sample(&mut out, &sum, m, None, h.get_sample_sum(), None);
                    sample(&mut out, &count, m, None, h.get_sample_count() as f64, None);
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use prometheus::{core::Collector, Counter, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

    use super::*;

    fn store() -> Exemplars {
        Exemplars::new(IntCounter::new("t_refused_total", "test").unwrap())
    }

    #[test]
    fn counters_gauges_and_histograms_with_exemplars() {
        let requests =
            IntCounterVec::new(Opts::new("t_requests_total", "Requests, \"quoted\"\nand \\."), &["code"]).unwrap();
        requests.with_label_values(&["a\"b\\c\nd"]).inc_by(3);
        let gauge = Gauge::new("t_depth", "Depth.").unwrap();
        gauge.set(f64::INFINITY);
        let odd = Counter::new("t_odd", "A counter without _total.").unwrap();
        odd.inc();
        let h = HistogramVec::new(HistogramOpts::new("t_seconds", "Durations.").buckets(vec![0.1, 1.0]), &["target"])
            .unwrap();
        h.with_label_values(&["st1"]).observe(0.05);
        h.with_label_values(&["st1"]).observe(5.0);
        h.with_label_values(&["st2"]).observe(0.5);
        let e = store();
        e.record("t_seconds", &[0.1, 1.0], &[("target", "st1")], 0.05, "request_id", "r-1");
        e.record("t_seconds", &[0.1, 1.0], &[("target", "st1")], 5.0, "trace_id", "abc");
        // As the registry gathers them: families by name, series by labels.
        let registry = prometheus::Registry::new();
        for c in [Box::new(requests) as Box<dyn Collector>, Box::new(gauge), Box::new(odd), Box::new(h)] {
            registry.register(c).unwrap();
        }
        let text = encode(&registry.gather(), &e);
        let at = |id: &str| {
            let line = text.lines().find(|l| l.contains(id)).unwrap();
            line.rsplit(' ').next().unwrap().to_string()
        };
        let expected = format!(
            "# TYPE t_depth gauge\n\
             # HELP t_depth Depth.\n\
             t_depth +Inf\n\
             # TYPE t_odd unknown\n\
             # HELP t_odd A counter without _total.\n\
             t_odd 1\n\
             # TYPE t_requests counter\n\
             # HELP t_requests Requests, \\\"quoted\\\"\\nand \\\\.\n\
             t_requests_total{{code=\"a\\\"b\\\\c\\nd\"}} 3\n\
             # TYPE t_seconds histogram\n\
             # HELP t_seconds Durations.\n\
             t_seconds_bucket{{target=\"st1\",le=\"0.1\"}} 1 # {{request_id=\"r-1\"}} 0.05 {}\n\
             t_seconds_bucket{{target=\"st1\",le=\"1\"}} 1\n\
             t_seconds_bucket{{target=\"st1\",le=\"+Inf\"}} 2 # {{trace_id=\"abc\"}} 5 {}\n\
             t_seconds_sum{{target=\"st1\"}} 5.05\n\
             t_seconds_count{{target=\"st1\"}} 2\n\
             t_seconds_bucket{{target=\"st2\",le=\"0.1\"}} 0\n\
             t_seconds_bucket{{target=\"st2\",le=\"1\"}} 1\n\
             t_seconds_bucket{{target=\"st2\",le=\"+Inf\"}} 1\n\
             t_seconds_sum{{target=\"st2\"}} 0.5\n\
             t_seconds_count{{target=\"st2\"}} 1\n\
             # EOF\n",
            at("r-1"),
            at("abc")
        );
        assert_eq!(text, expected);
        assert!(at("r-1").parse::<f64>().unwrap() > 1.7e9);
    }

    #[test]
    fn an_empty_registry_is_just_the_end() {
        assert_eq!(encode(&[], &store()), "# EOF\n");
    }
}
