//! The liveness round: target processes whose exit the kernel's events did
//! not report (a lost event), and pids that name another process now.

use std::time::Duration;

use crate::sync::ReadWrite;
use crate::{
    clock::monotonic_ns,
    metrics::RateLimitedLog,
    proc::identity::{self, Liveness, Stat},
    target::{Left, Lifecycle},
};

/// Why the liveness check could not read a process, logged at most once a minute.
static UNREADABLE: RateLimitedLog = RateLimitedLog::new(Duration::from_secs(60));

/// Ends target processes that are gone or whose pid now names another
/// process. A process whose `/proc` entry cannot be read for another reason
/// is kept: the error is counted.
pub fn check(life: &mut Lifecycle) {
    // (root, pid, start time when known)
    let watched: Vec<(u32, u32, Option<u64>)> = life
        .registry
        .read_locked()
        .iter()
        .filter(|t| t.alive)
        .flat_map(|t| {
            let children = t.children.with_starts().map(|(pid, start)| (t.pid, pid, start));
            std::iter::once((t.pid, t.pid, Some(t.start))).chain(children)
        })
        .collect();
    for (root, pid, start) in watched {
        let now = identity::stat(&life.args.proc_root, pid);
        let verdict = match (start, now) {
            (Some(start), now) => identity::judge(start, now),
            // A child whose start time its fork event could not read: learnt now.
            (None, Stat::Running { start }) => {
                life.registry.write_locked().set_child_start(root, pid, start);
                Liveness::Alive
            }
            (None, now) => identity::judge(0, now),
        };
        match verdict {
            Liveness::Alive => {}
            Liveness::Unknown(kind) => {
                life.metrics.proc_read_errors.with_label_values(&[kind.label()]).inc();
                UNREADABLE.warn(format_args!(
                    "cannot tell whether pid {pid} still runs ({}): still watching it",
                    kind.label()
                ));
            }
            // The kernel drops exited processes from its set itself (this
            // one's exit event was lost on the way); a reused pid is there
            // only if a target forked it, and stays.
            Liveness::Exited => life.leave(root, pid, monotonic_ns(), Left::Missed(start)),
            Liveness::Reused => {
                tracing::info!("pid {pid} belongs to another process now: the watched one has exited");
                life.leave(root, pid, monotonic_ns(), Left::Reused(start));
            }
        }
    }
}
