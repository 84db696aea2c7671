//! Shared helpers of the programs: target lookup, event output, loss accounting.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    maps::RingBuf,
};
use pywats_agent_ebpf::abi::{EventHeader, EventKind, Target, LOST_SLOTS};

use crate::maps::{LOST, TARGETS};

/// `(tgid, tid)` of the current task.
#[inline(always)]
pub fn current() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

/// The target entry of `tgid`, if it is watched. Cheapest check, so it comes first.
#[inline(always)]
pub fn target_of(tgid: u32) -> Option<Target> {
    // SAFETY: the value is copied out at once.
    unsafe { TARGETS.get(tgid) }.copied()
}

/// A header for an event of the current task.
#[inline(always)]
pub fn header(kind: EventKind, tgid: u32, tid: u32) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        tgid,
        tid,
        fd: -1,
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        ret: 0,
        len: 0,
        captured: 0,
    }
}

/// Writes `event` to `ring`, or counts it as lost under `kind`.
#[inline(always)]
pub fn output<T: 'static>(ring: &RingBuf, kind: EventKind, event: T) {
    match ring.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(0);
        }
        None => count_lost(kind),
    }
}

#[inline(always)]
pub fn count_lost(kind: EventKind) {
    let slot = kind as u32;
    if slot >= LOST_SLOTS {
        return;
    }
    if let Some(n) = LOST.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *n += 1 };
    }
}
