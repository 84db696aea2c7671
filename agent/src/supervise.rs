//! Every long-running part of the agent (ring readers, the TLS attach
//! threads, the liveness loop) is started here and watched: a part that
//! returns or panics is reported once, with its reason, so `/health/ready`
//! turns 503 and the agent exits non-zero after a grace period (systemd and
//! Kubernetes then restart it) instead of going on with a ring nobody reads.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

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
    threads: Vec<JoinHandle<()>>,
}

/// Test hook: `PYWATS_AGENT_TEST_FAULT=<part>` makes that part fail after its
/// first round, so the tests can show that a dead part is noticed.
pub fn fault_injected(part: &str) -> bool {
    std::env::var("PYWATS_AGENT_TEST_FAULT").is_ok_and(|p| p == part)
}

impl Supervisor {
    pub fn new() -> Supervisor {
        let (tx, rx) = unbounded_channel();
        Supervisor { tx, rx, stop: Arc::new(AtomicBool::new(false)), threads: Vec::new() }
    }

    /// The flag parts poll to know the agent is shutting down.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Runs `body` on a thread of its own; its end (an error, a panic, or
    /// returning while the agent is not shutting down) is reported.
    pub fn thread(
        &mut self,
        part: &'static str,
        body: impl FnOnce() -> Result<(), String> + Send + 'static,
    ) -> std::io::Result<()> {
        let (tx, stop) = (self.tx.clone(), self.stop.clone());
        let handle = std::thread::Builder::new().name(part.into()).spawn(move || {
            let reason = match catch_unwind(AssertUnwindSafe(body)) {
                Ok(Ok(())) if stop.load(Ordering::Relaxed) => return,
                Ok(Ok(())) => "ended".to_string(),
                Ok(Err(e)) => e,
                Err(panic) => format!("panicked: {}", panic_message(&panic)),
            };
            let _ = tx.send(Stopped { part, reason });
        })?;
        self.threads.push(handle);
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

    /// Asks every part to return and waits for them.
    pub fn shut_down(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
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
        s.thread("failing", || Err("ring gone".into())).unwrap();
        let first = s.stopped().await;
        assert_eq!((first.part, first.reason.as_str()), ("failing", "ring gone"));
        s.thread("panicking", || panic!("bad record")).unwrap();
        let second = s.stopped().await;
        assert_eq!((second.part, second.reason.as_str()), ("panicking", "panicked: bad record"));
        s.thread("ending", || Ok(())).unwrap();
        assert_eq!(s.stopped().await.reason, "ended");
        let stop = s.stop_flag();
        s.thread("polite", move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Ok(())
        })
        .unwrap();
        s.shut_down();
    }
}
