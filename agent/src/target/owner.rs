//! The `lifecycle` thread, owner of [`Lifecycle`]: it applies the kernel's
//! process events as they come and, between them, runs the liveness round
//! (exits the events missed, new `--match` processes, the TLS re-check).

use std::{
    sync::atomic::AtomicBool,
    time::{Duration, Instant, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use pywats_agent_ebpf::abi::{Event, EventKind, CLONE_VM, PROVISIONAL};

use crate::sync::ReadWrite;
use crate::{
    clock::{boottime_secs, monotonic_ns},
    ebpf,
    proc::admission::Rejected,
    readers,
    supervise::{self, Heartbeat},
    target::{liveness, matching, tls::TlsWork, Left, Lifecycle},
};

/// How often targets are checked against procfs (an exit event may have been
/// lost) and `--match` looks for new processes.
pub const LIVENESS_INTERVAL: Duration = Duration::from_secs(2);

fn ticks_per_second() -> f64 {
    procfs::ticks_per_second() as f64
}

/// Runs until `stop` is set.
pub fn run(
    mut life: Lifecycle,
    ring: RingBuf<MapData>,
    stop: &AtomicBool,
    beat: Heartbeat,
    fault: bool,
) -> Result<(), String> {
    let mut next_round = Instant::now() + LIVENESS_INTERVAL;
    // A pass applies every record committed before it began; a record is
    // committed microseconds after it is stamped. So once a pass ends, every
    // process event stamped before the previous pass ended (less a
    // millisecond) is applied.
    let mut previous_end = monotonic_ns();
    let after = |life: &mut Lifecycle| {
        beat.beat();
        let end = monotonic_ns();
        life.membership.applied(previous_end.saturating_sub(1_000_000));
        previous_end = end;
        supervise::stall_injected("lifecycle", stop);
        if Instant::now() >= next_round {
            round(life);
            next_round = Instant::now() + LIVENESS_INTERVAL;
        }
    };
    ebpf::reader::drain(ring, &mut life, proc_event, after, stop, fault)
}

/// One liveness round: exits missed, new `--match` processes (up to
/// `--max-targets` live ones), `--match` targets exited long ago forgotten,
/// the TLS probes re-checked.
fn round(life: &mut Lifecycle) {
    let args = life.args.clone();
    let args = args.as_ref();
    liveness::check(life);
    life.judge_leftovers();
    if !args.matches.is_empty() {
        let known = life.registry.read_locked().known_pids();
        let found = matching::later(args, |pid| known.contains(&pid), &life.admission);
        // A process the kernel took in at its exec is left to that event (or
        // to a later round, were it lost): a busy machine may run this scan
        // between its exec and the reading of its event.
        let found: Vec<_> = found.into_iter().filter(|(_, p)| !life.kernel.is_provisional(p.pid)).collect();
        for (pattern, p) in found {
            if life.registry.read_locked().matched_alive() >= args.max_targets {
                life.admission.reject(&p, &pattern, Rejected::Limit);
                continue;
            }
            let since_start = boottime_secs() - p.start as f64 / ticks_per_second();
            life.join(matching::joining(args, p, pattern));
            life.metrics.adoption_delay.with_label_values(&["scan"]).observe(since_start.max(0.0));
        }
    }
    if let Some(before) = SystemTime::now().checked_sub(Duration::from_secs(args.forget_exited_after)) {
        life.forget_exited(before);
    }
    let live = life.live_processes();
    life.tls.send(TlsWork::Recheck(live));
}

/// One record of the process-event ring.
fn proc_event(life: &mut Lifecycle, record: &[u8]) {
    let Some(decoded) = readers::decode(&life.metrics, record) else { return };
    let Event::Proc(kind, ev) = decoded else {
        return life.metrics.decode_errors.with_label_values(&["wrong_ring"]).inc();
    };
    life.metrics.events.with_label_values(&[kind.name()]).inc();
    let (tgid, ts) = (ev.header.tgid, ev.header.ts_ns);
    match kind {
        EventKind::ProcFork => life.forked(ev.root_tgid, ev.child_tgid, ev.header.ret as u64 & CLONE_VM == 0, ts),
        // The kernel took the process out of its set itself.
        EventKind::ProcExit => life.leave(ev.root_tgid, tgid, ts, Left::Exit),
        EventKind::ProcExec if ev.root_tgid == PROVISIONAL => life.candidate(tgid, ts),
        EventKind::ProcExec => life.exec(ev.root_tgid, tgid, ts),
        // Event::decode only makes Proc of the three kinds above.
        _ => {}
    }
}
