//! Per-thread arguments of a call in flight (a syscall, an SSL call), from
//! its entry program to its exit program. A thread keeps its map entry while
//! it lives: the entry is rewritten in place and marked taken, instead of
//! being inserted and deleted for every call (a hash insert and delete were
//! most of a small program's run time). `sched_process_exit` removes the
//! entries of a target's thread as it exits.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, maps::HashMap};

use crate::{
    emit::insert_counted,
    maps::{FsPending, Pending, TlsPending, FS_PENDING, PENDING, TLS_PENDING},
};

/// A value parked per thread, which knows whether it is still to be taken.
pub trait Parked: Copy {
    fn is_parked(&self) -> bool;
    fn mark_taken(&mut self);
}

impl Parked for Pending {
    fn is_parked(&self) -> bool {
        self.op != 0
    }
    fn mark_taken(&mut self) {
        self.op = 0;
    }
}

impl Parked for FsPending {
    fn is_parked(&self) -> bool {
        self.kind != 0
    }
    fn mark_taken(&mut self) {
        self.kind = 0;
    }
}

impl Parked for TlsPending {
    fn is_parked(&self) -> bool {
        self.enter_ns != 0
    }
    fn mark_taken(&mut self) {
        self.enter_ns = 0;
    }
}

/// Parks `value` for the current thread, counting a refused insert under
/// `slot` ([`map_slot`](pywats_agent_ebpf::abi::map_slot)).
#[inline(always)]
pub fn park<V: Parked>(map: &HashMap<u64, V>, value: &V, slot: u32) -> Result<(), i64> {
    let id = bpf_get_current_pid_tgid();
    match map.get_ptr_mut(id) {
        Some(entry) => {
            // SAFETY: a map value; only this thread uses its own entry.
            unsafe { *entry = *value };
            Ok(())
        }
        None => insert_counted(map, &id, value, slot),
    }
}

/// Takes what the current thread parked, if anything.
#[inline(always)]
pub fn take<V: Parked>(map: &HashMap<u64, V>) -> Option<V> {
    let entry = map.get_ptr_mut(bpf_get_current_pid_tgid())?;
    // SAFETY: as above.
    let value = unsafe { *entry };
    if !value.is_parked() {
        return None;
    }
    // SAFETY: as above.
    unsafe { (*entry).mark_taken() };
    Some(value)
}

/// A thread exits: its entries go.
#[inline(always)]
pub fn forget_thread() {
    let id = bpf_get_current_pid_tgid();
    let _ = PENDING.remove(id);
    let _ = FS_PENDING.remove(id);
    let _ = TLS_PENDING.remove(id);
}
