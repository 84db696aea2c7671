//! Every long-running part of the agent (ring readers, the TLS attach
//! threads, the lifecycle thread) is started here and watched: a part that
//! returns or panics is reported once, with its reason, so `/health/ready`
//! turns 503 and the agent exits non-zero after a grace period (systemd and
//! Kubernetes then restart it) instead of going on with a ring nobody reads.
//! A part that still runs but makes no progress (stuck in a lock or a read)
//! stops beating its [`Heartbeat`]: readiness names it.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use prometheus::{core::Collector, proto::MetricFamily, GaugeVec, Opts};

use crate::{clock::monotonic_ns, sync::Locked};

/// A part whose loop has not come round for this long is stuck: each loop
/// comes round at least every 250 ms when idle, and one round of work (a
/// liveness round, a library's TLS probes) takes well under a second.
pub const STALL_AFTER: Duration = Duration::from_secs(10);

/// How long shutdown waits for the parts, all together; a part still running
/// then is left behind (the process exits anyway) and named in the log.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// The progress of one part: it beats at every round of its loop.
#[derive(Clone)]
pub struct Heartbeat(Arc<AtomicU64>);

impl Heartbeat {
    pub fn beat(&self) {
        self.0.store(monotonic_ns(), Ordering::Relaxed);
    }
}

/// The heartbeats of every part, for readiness.
#[derive(Default)]
pub struct Heartbeats(Mutex<Vec<(&'static str, Arc<AtomicU64>)>>);

impl Heartbeats {
    fn add(&self, part: &'static str) -> Heartbeat {
        let last = Arc::new(AtomicU64::new(monotonic_ns()));
        self.0.locked().push((part, last.clone()));
        Heartbeat(last)
    }

    /// Each part with the time since its last beat.
    pub fn ages(&self) -> Vec<(&'static str, Duration)> {
        let now = monotonic_ns();
        self.0
            .locked()
            .iter()
            .map(|(part, last)| (*part, Duration::from_nanos(now.saturating_sub(last.load(Ordering::Relaxed)))))
            .collect()
    }

    /// Parts that have not beaten for [`STALL_AFTER`].
    pub fn stalled(&self) -> Vec<(&'static str, Duration)> {
        self.ages().into_iter().filter(|(_, age)| *age >= STALL_AFTER).collect()
    }
}

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// A part that stopped, and why.
#[derive(Clone, Debug)]
pub struct Stopped {
    pub part: &'static str,
    pub reason: String,
}

pub struct Supervisor {
    tx: UnboundedSender<Stopped>,
    rx: UnboundedReceiver<Stopped>,
    /// Set when the agent shuts down: parts return and are not reported.
    stop: Arc<AtomicBool>,
    threads: Vec<(&'static str, JoinHandle<()>)>,
    heartbeats: Arc<Heartbeats>,
}

/// Test hook: `PYWATS_AGENT_TEST_FAULT=<part>` makes that part fail after its
/// first round, so the tests can show that a dead part is noticed.
pub fn fault_injected(part: &str) -> bool {
    std::env::var("PYWATS_AGENT_TEST_FAULT").is_ok_and(|p| p == part)
}

/// Test hook: `PYWATS_AGENT_TEST_STALL=<part>` makes that part stop making
/// progress after its first round (it sleeps until shutdown, beating no
/// more), so the tests can show that a stuck part is noticed.
pub fn stall_injected(part: &str, stop: &AtomicBool) {
    if std::env::var("PYWATS_AGENT_TEST_STALL").is_ok_and(|p| p == part) {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `pywats_agent_part_idle_seconds{part}`: the time since each part's last
/// beat, read at scrape time.
pub struct HeartbeatAges {
    beats: Arc<Heartbeats>,
    ages: GaugeVec,
}

impl HeartbeatAges {
    pub fn new(beats: Arc<Heartbeats>) -> HeartbeatAges {
        let ages = GaugeVec::new(
            Opts::new(
                "pywats_agent_part_idle_seconds",
                "Seconds since each part of the agent (ring readers, lifecycle, TLS attach) last came round \
                 its loop; past 10 the part is stuck and /health/ready answers 503.",
            ),
            &["part"],
        )
        .expect("valid metric definition");
        HeartbeatAges { beats, ages }
    }
}

impl Collector for HeartbeatAges {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.ages.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for (part, age) in self.beats.ages() {
            self.ages.with_label_values(&[part]).set(age.as_secs_f64());
        }
        self.ages.collect()
    }
}

impl Supervisor {
    pub fn new() -> Supervisor {
        let (tx, rx) = unbounded_channel();
        Supervisor { tx, rx, stop: Arc::new(AtomicBool::new(false)), threads: Vec::new(), heartbeats: Arc::default() }
    }

    /// Every part's heartbeat, for readiness.
    pub fn heartbeats(&self) -> Arc<Heartbeats> {
        self.heartbeats.clone()
    }

    /// The flag parts poll to know the agent is shutting down.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Runs `body` on a thread of its own, with the heartbeat it must beat at
    /// every round of its loop; its end (an error, a panic, or returning
    /// while the agent is not shutting down) is reported.
    pub fn thread(
        &mut self,
        part: &'static str,
        body: impl FnOnce(Heartbeat) -> Result<(), String> + Send + 'static,
    ) -> std::io::Result<()> {
        let (tx, stop) = (self.tx.clone(), self.stop.clone());
        let beat = self.heartbeats.add(part);
        let handle = std::thread::Builder::new().name(part.into()).spawn(move || {
            let reason = match catch_unwind(AssertUnwindSafe(|| body(beat))) {
                Ok(Ok(())) if stop.load(Ordering::Relaxed) => return,
                Ok(Ok(())) => "ended".to_string(),
                Ok(Err(e)) => e,
                Err(panic) => format!("panicked: {}", panic_message(&panic)),
            };
            let _ = tx.send(Stopped { part, reason });
        })?;
        self.threads.push((part, handle));
        Ok(())
    }

    /// The first part that stopped.
    pub async fn stopped(&mut self) -> Stopped {
        match self.rx.recv().await {
            Some(s) => s,
            // Unreachable: the supervisor holds a sender itself.
            None => std::future::pending().await,
        }
    }

    /// Asks every part to return and waits for them, for at most
    /// [`SHUTDOWN_DEADLINE`] in all; returns the parts left running.
    pub fn shut_down(self) -> Vec<&'static str> {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + SHUTDOWN_DEADLINE;
        let mut left = Vec::new();
        for (part, t) in self.threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("{part} did not stop within {}s: exiting without it", SHUTDOWN_DEADLINE.as_secs());
                left.push(part);
            }
        }
        left
    }
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor::new()
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_part_that_fails_panics_or_ends_is_reported() {
        let mut s = Supervisor::new();
        s.thread("failing", |_| Err("ring gone".into())).unwrap();
        let first = s.stopped().await;
        assert_eq!((first.part, first.reason.as_str()), ("failing", "ring gone"));
        s.thread("panicking", |_| panic!("bad record")).unwrap();
        let second = s.stopped().await;
        assert_eq!((second.part, second.reason.as_str()), ("panicking", "panicked: bad record"));
        s.thread("ending", |_| Ok(())).unwrap();
        assert_eq!(s.stopped().await.reason, "ended");
        let stop = s.stop_flag();
        s.thread("polite", move |beat| {
            while !stop.load(Ordering::Relaxed) {
                beat.beat();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Ok(())
        })
        .unwrap();
        assert!(s.heartbeats().stalled().is_empty());
        assert!(s.shut_down().is_empty());
    }

    #[test]
    fn a_part_that_stops_beating_is_stalled_and_shutdown_leaves_a_stuck_one() {
        let mut s = Supervisor::new();
        let stuck = Arc::new(AtomicBool::new(false));
        let release = stuck.clone();
        s.thread("stuck", move |_| {
            while !release.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Ok(())
        })
        .unwrap();
        let beats = s.heartbeats();
        let last = beats.0.locked()[0].1.clone();
        last.store(monotonic_ns() - STALL_AFTER.as_nanos() as u64 - 1, Ordering::Relaxed);
        assert_eq!(beats.stalled().into_iter().map(|(p, _)| p).collect::<Vec<_>>(), ["stuck"]);
        assert_eq!(s.shut_down(), ["stuck"]);
        stuck.store(true, Ordering::Relaxed);
    }
}
