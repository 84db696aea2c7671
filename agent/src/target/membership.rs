//! Which processes are targets, as the socket and file readers need to know
//! before they apply an event. The lifecycle applies process events on its
//! own thread, from its own ring: a reader may meet a process's first socket
//! event before the lifecycle has applied the fork or exec that made it a
//! target. So a reader that meets a process it does not know waits until the
//! lifecycle has applied every process event stamped before that event
//! ([`Membership::applied`]), and then knows for sure: a target (joined), or
//! not one (a process the agent decided against), whose event is ignored.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use crate::{proc::Targets, sync::ReadWrite};

/// How long a reader waits for the lifecycle at most: it applies an event
/// within milliseconds; a liveness round or a join may hold it for tens.
const WAIT: Duration = Duration::from_secs(2);

/// Published by the lifecycle.
#[derive(Default)]
pub struct Membership {
    /// Bumped at every change of who is a target.
    generation: AtomicU64,
    /// Every process event stamped before this (monotonic ns) is applied.
    applied: AtomicU64,
}

impl Membership {
    /// Who is a target changed.
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Every process event stamped before `ns` has been applied.
    pub fn applied(&self, ns: u64) {
        self.applied.fetch_max(ns, Ordering::Release);
    }
}

/// What one reader knows of the targets.
pub struct Settle {
    membership: Arc<Membership>,
    registry: Arc<RwLock<Targets>>,
    generation: u64,
    known: HashSet<u32>,
}

/// Why an event of a process was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown {
    /// The lifecycle applied its events: not a target.
    NotATarget,
    /// The lifecycle did not get that far within [`WAIT`].
    Timeout,
}

impl Unknown {
    pub fn label(self) -> &'static str {
        match self {
            Unknown::NotATarget => "not_a_target",
            Unknown::Timeout => "lifecycle_wait",
        }
    }
}

impl Settle {
    pub fn new(membership: Arc<Membership>, registry: Arc<RwLock<Targets>>) -> Settle {
        Settle { membership, registry, generation: u64::MAX, known: HashSet::new() }
    }

    /// Whether `tgid` is, or lately was, a target, once every process event
    /// stamped before `ts_ns` is applied.
    pub fn check(&mut self, tgid: u32, ts_ns: u64) -> Result<(), Unknown> {
        if self.refresh().contains(&tgid) {
            return Ok(());
        }
        let deadline = Instant::now() + WAIT;
        while self.membership.applied.load(Ordering::Acquire) < ts_ns {
            if Instant::now() >= deadline {
                return Err(Unknown::Timeout);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if self.refresh().contains(&tgid) {
            Ok(())
        } else {
            Err(Unknown::NotATarget)
        }
    }

    fn refresh(&mut self) -> &HashSet<u32> {
        let generation = self.membership.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.known = self.registry.read_locked().named_pids();
            self.generation = generation;
        }
        &self.known
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::tree::ResolvedPid;

    fn process(pid: u32) -> ResolvedPid {
        ResolvedPid { pid, start: 1, uids: (0, 0), comm: "py".into(), exe: String::new(), pod: None }
    }

    #[test]
    fn a_reader_waits_for_the_lifecycle_then_knows() {
        let membership = Arc::new(Membership::default());
        let registry = Arc::new(RwLock::new(Targets::default()));
        let mut settle = Settle::new(membership.clone(), registry.clone());
        registry.write_locked().add(&process(10), None, "a");
        membership.changed();
        membership.applied(100);
        assert_eq!(settle.check(10, 500), Ok(()), "known: no wait");
        assert_eq!(settle.check(11, 50), Err(Unknown::NotATarget), "applied past its time: not a target");
        // The lifecycle applies the fork of 12 (stamped 150) a moment later.
        let (m, r) = (membership.clone(), registry.clone());
        let lifecycle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            r.write_locked().add_child(10, 12, Some(5));
            m.changed();
            m.applied(200);
        });
        assert_eq!(settle.check(12, 150), Ok(()));
        lifecycle.join().unwrap();
    }
}
