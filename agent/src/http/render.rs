//! `/metrics`, rendered once for all the scrapes that ask at the same time.
//!
//! A render reads `/proc` for every target and encodes every series (MiBs
//! with many endpoints), so it runs on a blocking thread, one at a time: a
//! scrape that arrives while one runs waits for it and gets its body. The
//! families are gathered once per render and encoded once per format the
//! waiting scrapes asked for (the text format, OpenMetrics), each encoding
//! compressed once per compression asked for (none, gzip, zstd): the bodies
//! are the same for every scrape that passed the auth layer. A scrape whose
//! client goes away stops waiting (hyper drops it); a render that nobody
//! waits for any more when its thread starts is skipped, one already
//! running ends and its bodies are dropped. So a flood of scrapes that hang
//! up holds at most one render's memory and one thread.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use axum::body::Bytes;
use tokio::sync::watch;

use crate::{
    http::{
        limits::{Render, ServerMetrics},
        negotiate::{Encoding, Format, Variant},
    },
    metrics::Metrics,
    sync::Locked,
};

/// What one render made: a body per variant asked for (`None`: its
/// compression failed, logged).
type Bodies = Arc<HashMap<Variant, Option<Bytes>>>;

/// The render in progress: its number, where its bodies will be, and the
/// variants asked for so far.
struct Flight {
    number: u64,
    bodies: watch::Receiver<Option<Bodies>>,
    wants: Vec<Variant>,
}

pub struct Renderer {
    metrics: Arc<Metrics>,
    server: ServerMetrics,
    running: Mutex<Option<Flight>>,
    /// Numbers the renders, so that one ending clears only itself.
    next: AtomicU64,
}

impl Renderer {
    pub fn new(metrics: Arc<Metrics>, server: ServerMetrics) -> Arc<Renderer> {
        Arc::new(Renderer { metrics, server, running: Mutex::new(None), next: AtomicU64::new(0) })
    }

    /// The exposition in `variant`: of the render in progress, else of a
    /// new one. `None` if the render failed (a panic, logged by the panic hook).
    pub async fn body(self: &Arc<Self>, variant: Variant) -> Option<Bytes> {
        let mut done = self.join(variant);
        let bodies = done.wait_for(Option::is_some).await.ok()?;
        bodies.as_ref()?.get(&variant).cloned().flatten()
    }

    fn join(self: &Arc<Self>, variant: Variant) -> watch::Receiver<Option<Bodies>> {
        let mut running = self.running.locked();
        // A flight whose sender is gone without clearing it (its thread never
        // ran: the runtime is shutting down) is not joined.
        if let Some(flight) = running.as_mut().filter(|f| f.bodies.has_changed().is_ok()) {
            if !flight.wants.contains(&variant) {
                flight.wants.push(variant);
            }
            return flight.bodies.clone();
        }
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        *running = Some(Flight { number, bodies: rx.clone(), wants: vec![variant] });
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.render(number, tx));
        rx
    }

    fn render(&self, number: u64, tx: watch::Sender<Option<Bodies>>) {
        // However this ends (a panic too), the next scrape starts a new render.
        let _clear = Clear { running: &self.running, number };
        {
            let mut running = self.running.locked();
            // Only the copy in `running` is left: every scrape that asked has gone.
            if tx.receiver_count() <= 1 {
                *running = None;
                self.server.rendered(Render::Skipped);
                return;
            }
        }
        let families = self.metrics.gather();
        let mut encoded: HashMap<Format, Bytes> = HashMap::new();
        let mut bodies = HashMap::new();
        while let Some(variant) = self.next_wanted(number, &bodies) {
            let plain = encoded
                .entry(variant.format)
                .or_insert_with(|| {
                    Bytes::from(match variant.format {
                        Format::Text => Metrics::text(&families),
                        Format::OpenMetrics => self.metrics.openmetrics(&families),
                    })
                })
                .clone();
            let body = match variant.encoding {
                Encoding::Identity => Some(plain),
                encoding => encoding
                    .apply(&plain)
                    .map(Bytes::from)
                    .map_err(|e| tracing::warn!("compressing /metrics ({encoding:?}): {e}"))
                    .ok(),
            };
            bodies.insert(variant, body);
        }
        let outcome = if tx.send(Some(Arc::new(bodies))).is_ok() { Render::Answered } else { Render::Abandoned };
        self.server.rendered(outcome);
    }

    /// A variant the flight `number` was asked for and `made` lacks. When
    /// there is none, the flight is cleared under the same lock, before its
    /// bodies go out: a scrape that joined while they were made (the flight
    /// stays in place meanwhile, so no second render starts) has its variant
    /// made too, and one that comes after starts afresh.
    fn next_wanted(&self, number: u64, made: &HashMap<Variant, Option<Bytes>>) -> Option<Variant> {
        let mut running = self.running.locked();
        let flight = running.as_ref().filter(|f| f.number == number)?;
        let next = flight.wants.iter().find(|v| !made.contains_key(v)).copied();
        if next.is_none() {
            *running = None;
        }
        next
    }
}

struct Clear<'a> {
    running: &'a Mutex<Option<Flight>>,
    number: u64,
}

impl Drop for Clear<'_> {
    fn drop(&mut self) {
        let mut running = self.running.locked();
        if running.as_ref().is_some_and(|f| f.number == self.number) {
            *running = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::AtomicUsize,
        time::{Duration, SystemTime},
    };

    use prometheus::{
        core::{Collector, Desc},
        proto::MetricFamily,
    };

    use super::*;

    const TEXT: Variant = Variant { format: Format::Text, encoding: Encoding::Identity };

    /// A collector that takes its time, and counts its calls.
    struct Slow(Arc<AtomicUsize>);

    impl Collector for Slow {
        fn desc(&self) -> Vec<&Desc> {
            Vec::new()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            std::thread::sleep(Duration::from_millis(300));
            self.0.fetch_add(1, Ordering::Relaxed);
            Vec::new()
        }
    }

    fn renderer() -> (Arc<Renderer>, Arc<Metrics>, Arc<AtomicUsize>) {
        let metrics = Arc::new(Metrics::new(SystemTime::now()));
        let calls = Arc::new(AtomicUsize::new(0));
        metrics.register(Box::new(Slow(calls.clone())));
        let server = ServerMetrics::new(&metrics);
        (Renderer::new(metrics.clone(), server), metrics, calls)
    }

    /// A count of renders, read by rendering outside the renderer (the slow collector runs once more).
    fn renders(metrics: &Metrics, outcome: &str) -> String {
        let text = metrics.render();
        let line = format!("pywats_agent_metrics_renders_total{{outcome=\"{outcome}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&line)).unwrap_or("missing").to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_at_the_same_time_share_one_render() {
        let (r, metrics, calls) = renderer();
        let mut scrapes = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let r = r.clone();
            scrapes.spawn(async move { r.body(TEXT).await });
        }
        let texts: Vec<Bytes> = scrapes.join_all().await.into_iter().map(|t| t.expect("a text")).collect();
        assert!(texts.iter().all(|t| t == &texts[0] && t.starts_with(b"# HELP")));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        // Done: the next scrape gets a render of its own.
        assert!(r.body(TEXT).await.is_some());
        assert_eq!(calls.load(Ordering::Relaxed), 2);
        // Counted just after the text is out: give the render's thread that moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(renders(&metrics, "answered"), "2");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_asking_for_other_formats_and_compressions_share_one_render() {
        let (r, _, calls) = renderer();
        let variants = [Format::Text, Format::OpenMetrics].into_iter().flat_map(|format| {
            [Encoding::Identity, Encoding::Gzip, Encoding::Zstd].map(|encoding| Variant { format, encoding })
        });
        let mut scrapes = tokio::task::JoinSet::new();
        for v in variants.clone().chain(variants) {
            let r = r.clone();
            scrapes.spawn(async move { (v, r.body(v).await.expect("a body")) });
        }
        let bodies = scrapes.join_all().await;
        assert_eq!(calls.load(Ordering::Relaxed), 1, "one gather for all twelve");
        for (v, body) in &bodies {
            let plain = match v.encoding {
                Encoding::Identity => body.to_vec(),
                Encoding::Gzip => {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out).unwrap();
                    out
                }
                Encoding::Zstd => zstd::decode_all(&body[..]).unwrap(),
            };
            let text = String::from_utf8(plain).unwrap();
            match v.format {
                Format::Text => assert!(text.starts_with("# HELP") && !text.contains("# EOF"), "{v:?}"),
                Format::OpenMetrics => assert!(text.starts_with("# TYPE") && text.ends_with("# EOF\n"), "{v:?}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_render_whose_scrapes_left_is_dropped_and_not_repeated() {
        let (r, metrics, calls) = renderer();
        for _ in 0..5 {
            // Each gives up while the first render runs: they all wait for that one.
            assert!(tokio::time::timeout(Duration::from_millis(50), r.body(TEXT)).await.is_err());
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert_eq!(renders(&metrics, "abandoned"), "1");
        assert_eq!(renders(&metrics, "answered"), "0");
    }
}
