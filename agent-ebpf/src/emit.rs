//! Shared helpers of the programs: target lookup, event output, loss accounting.

use aya_ebpf::helpers::generated as gen;
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    maps::RingBuf,
};
use pywats_agent_ebpf::abi::{
    map_slot, EventHeader, EventKind, Target, CAPTURE_PREFIX, CAPTURE_SUFFIX, LOST_SLOTS, SEQ_UNKNOWN,
};

use crate::maps::{ConnKey, LOST, MAP_INSERT_FAILURES, STREAM_SEQ, TARGETS, TARGET_BITS};

/// `(tgid, tid)` of the current task.
#[inline(always)]
pub fn current() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

/// Whether `tgid` is watched: one inlined array read, so every other task on
/// the host is turned away in a few instructions.
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    match TARGET_BITS.get(tgid >> 6) {
        Some(word) => *word & (1u64 << (tgid & 63)) != 0,
        None => false,
    }
}

/// The target entry of `tgid`, if it is watched.
#[inline(always)]
pub fn target_of(tgid: u32) -> Option<Target> {
    if !is_target(tgid) {
        return None;
    }
    // SAFETY: the value is copied out at once.
    unsafe { TARGETS.get(tgid) }.copied()
}

/// Marks `tgid` watched (`true`) or not in the bit set. Atomic: the agent
/// changes other bits of the same word concurrently.
#[inline(always)]
pub fn set_target_bit(tgid: u32, on: bool) {
    let Some(word) = TARGET_BITS.get_ptr_mut(tgid >> 6) else {
        return;
    };
    let bit = 1u64 << (tgid & 63);
    // SAFETY: a valid map value pointer; atomic read-modify-write.
    unsafe {
        if on {
            core::intrinsics::atomic_or::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(word, bit);
        } else {
            core::intrinsics::atomic_and::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(word, !bit);
        }
    }
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

/// `bpf_ringbuf_query` / `bpf_ringbuf_submit` flags (linux/bpf.h).
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_RING_SIZE: u64 = 1;
const BPF_RB_NO_WAKEUP: u64 = 1;
pub const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Submit flags: the agent is woken only once a quarter of the ring is full
/// (it also drains every few milliseconds). Waking it for every event cost the
/// watched process a context switch per syscall on a busy machine.
#[inline(always)]
pub fn wakeup(ring: &RingBuf) -> u64 {
    if ring.query(BPF_RB_AVAIL_DATA) * 4 >= ring.query(BPF_RB_RING_SIZE) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Writes `event` to `ring`, or counts it as lost under `kind`.
#[inline(always)]
pub fn output<T: 'static>(ring: &RingBuf, kind: EventKind, event: T) {
    submit(ring, kind, event, wakeup(ring));
}

/// Like [`output`], waking the agent at once: process events are rare, and
/// the agent attaches a new process's TLS probes as soon as it hears of it.
#[inline(always)]
pub fn output_now<T: 'static>(ring: &RingBuf, kind: EventKind, event: T) {
    submit(ring, kind, event, BPF_RB_FORCE_WAKEUP);
}

#[inline(always)]
fn submit<T: 'static>(ring: &RingBuf, kind: EventKind, event: T, flags: u64) {
    match ring.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(flags);
        }
        None => count_lost(kind),
    }
}

/// `v` if it is at most `max`, bounded where the verifier sees it. 6.1's
/// verifier loses bounds that LLVM proved (it refused a size it could not
/// bound: "R3 min value is negative, either use unsigned or 'var &= const'"
/// at `bpf_ringbuf_output`), and follows branches that cannot both be taken
/// with registers linked to `v`, where a pointer plus such a value became a
/// scalar. So `v` goes through an opaque copy (LLVM cannot drop what follows
/// as redundant), is masked (new bounds, from the mask alone) and compared.
/// Callers pass values already at most `max`: the mask never cuts one.
#[inline(always)]
pub fn at_most(v: u64, max: u64) -> Option<u64> {
    let mask = (max + 1).next_power_of_two() - 1;
    // SAFETY: a volatile read of a local.
    let v = unsafe { core::ptr::read_volatile(&v) } & mask;
    (v <= max).then_some(v)
}

/// Writes an event assembled in a per-CPU scratch value `S` to `ring`: its
/// head `H` and the `captured` bytes right after it. Returns whether the ring
/// took it.
#[inline(always)]
pub fn output_scratch<H, S>(ring: &RingBuf, scratch: *const S, captured: u64, flags: u64) -> bool {
    let room = (core::mem::size_of::<S>() - core::mem::size_of::<H>()) as u64;
    let Some(captured) = at_most(captured, room) else {
        return false;
    };
    let total = core::mem::size_of::<H>() as u64 + captured;
    // SAFETY: total <= size_of::<S>(); the slice views the scratch value.
    let bytes = unsafe { core::slice::from_raw_parts(scratch.cast::<u8>(), total as usize) };
    ring.output::<[u8]>(bytes, flags).is_ok()
}

/// Copies the edges of the `len` user bytes at `buf` into `dst`: the first
/// `CAPTURE_PREFIX`, then (with `tail`, and only if there are more) the last
/// `CAPTURE_SUFFIX` right after them. Returns the lengths copied, (prefix,
/// suffix); (0, 0) when the bytes cannot be read.
#[inline(always)]
pub fn copy_edges<const N: usize>(dst: &mut [u8; N], buf: u64, len: u64, tail: bool) -> (u64, u64) {
    const { assert!(N >= (CAPTURE_PREFIX + CAPTURE_SUFFIX) as usize) };
    let Some(prefix) = at_most(len.min(CAPTURE_PREFIX as u64), CAPTURE_PREFIX as u64) else {
        return (0, 0);
    };
    // SAFETY: prefix <= CAPTURE_PREFIX <= N; the helper tolerates bad source pointers.
    if unsafe { gen::bpf_probe_read_user(dst.as_mut_ptr().cast(), prefix as u32, buf as *const _) } != 0 {
        return (0, 0);
    }
    if !tail || len <= CAPTURE_PREFIX as u64 {
        return (prefix, 0);
    }
    let Some(suffix) = at_most((len - CAPTURE_PREFIX as u64).min(CAPTURE_SUFFIX as u64), CAPTURE_SUFFIX as u64) else {
        return (prefix, 0);
    };
    // SAFETY: prefix + suffix <= CAPTURE_PREFIX + CAPTURE_SUFFIX <= N.
    let at = unsafe { dst.as_mut_ptr().add(prefix as usize) };
    // SAFETY: as above.
    if unsafe { gen::bpf_probe_read_user(at.cast(), suffix as u32, (buf + len - suffix) as *const _) } != 0 {
        return (prefix, 0);
    }
    (prefix, suffix)
}

/// Counts an insert the kernel refused into the map of `slot` ([`map_slot`]).
#[inline(always)]
pub fn count_insert_failure(slot: u32) {
    if let Some(n) = MAP_INSERT_FAILURES.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *n += 1 };
    }
}

/// Inserts into a hash map, counting a refusal under `slot`.
#[inline(always)]
pub fn insert_counted<K, V>(map: &aya_ebpf::maps::HashMap<K, V>, key: &K, value: &V, slot: u32) -> Result<(), i64> {
    map.insert(key, value, 0).map_err(|e| {
        count_insert_failure(slot);
        i64::from(e)
    })
}

/// The exec generation of target `tgid` (see [`Target::exec_gen`]).
#[inline(always)]
pub fn exec_gen(tgid: u32) -> u32 {
    // SAFETY: the value is copied out at once.
    unsafe { TARGETS.get(tgid) }.map(|t| t.exec_gen).unwrap_or(0)
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

/// `BPF_NOEXIST`: insert only if absent.
const NOEXIST: u64 = 1;

/// The stream offset of `n` bytes about to be reported on a connection in
/// direction `dir`, advancing it; [`SEQ_UNKNOWN`] if the map refused.
#[inline(always)]
pub fn next_seq(tgid: u32, conn_id: u64, dir: u32, n: u64) -> u64 {
    next_seq_with(tgid, conn_id, dir, n, || CAPTURE_WHOLE).0
}

/// [`STREAM_SEQ`]'s mode of a connection whose calls are captured whole.
pub const CAPTURE_WHOLE: u64 = 0;

/// Like [`next_seq`], also returning the connection's capture mode, which
/// `first` decides when the connection's first bytes are seen.
#[inline(always)]
pub fn next_seq_with(tgid: u32, conn_id: u64, dir: u32, n: u64, first: impl FnOnce() -> u64) -> (u64, u64) {
    let key = ConnKey { tgid, _pad: 0, conn_id };
    // One lookup per event; the entry is made at a connection's first bytes.
    let found = STREAM_SEQ.get_ptr_mut(key).or_else(|| {
        if STREAM_SEQ.insert(key, [0, 0, first()], NOEXIST).is_err() {
            count_insert_failure(map_slot::STREAM_SEQ);
        }
        STREAM_SEQ.get_ptr_mut(key)
    });
    let Some(state) = found else {
        return (SEQ_UNKNOWN, CAPTURE_WHOLE);
    };
    // SAFETY: a map value; a thread racing on the same connection and
    // direction could only make the agent see a gap that is not there.
    let slot = unsafe { &mut (*state)[(dir & 1) as usize] };
    let seq = *slot;
    *slot = seq + n;
    // SAFETY: as above.
    (seq, unsafe { (*state)[2] })
}

/// A connection ended: its offsets go.
#[inline(always)]
pub fn forget_seq(tgid: u32, conn_id: u64) {
    let _ = STREAM_SEQ.remove(ConnKey { tgid, _pad: 0, conn_id });
}
