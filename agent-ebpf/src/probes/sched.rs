//! Process lifecycle: keeps the target set (children join, exits leave) and
//! reports it to the agent.
//!
//! `task:task_newtask` is used for creation rather than `sched_process_fork`
//! because it carries `clone_flags`, so threads (CLONE_THREAD) are told from
//! processes here, in the kernel, without a task_struct read.

use aya_ebpf::{helpers::bpf_get_current_comm, macros::tracepoint, programs::TracePointContext};
use pywats_agent_ebpf::abi::{map_slot, EventKind, ProcEvent, Target, CLONE_THREAD, EXEC_PREFIXES, PROVISIONAL};

use crate::{
    emit::{current, header, insert_counted, output_now, set_target_bit, target_of},
    globals::tp_offsets,
    maps::{EXEC_MATCH, PROC_EVENTS, TARGETS},
    parked,
};

#[tracepoint(category = "task", name = "task_newtask")]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let _ = try_newtask(&ctx);
    0
}

fn try_newtask(ctx: &TracePointContext) -> Result<(), i64> {
    let (tgid, tid) = current();
    let Some(target) = target_of(tgid) else {
        return Ok(());
    };
    parked::forget_thread();
    let off = tp_offsets();
    // SAFETY: offsets come from this kernel's tracepoint format.
    let flags: u64 = unsafe { ctx.read_at(off.newtask_clone_flags as usize) }.map_err(i64::from)?;
    if flags & CLONE_THREAD != 0 {
        return Ok(());
    }
    // SAFETY: as above.
    let child: i32 = unsafe { ctx.read_at(off.newtask_pid as usize) }.map_err(i64::from)?;
    let child = child as u32;
    let entry = Target { root_tgid: target.root_tgid, exec_gen: 0 };
    insert_counted(&TARGETS, &child, &entry, map_slot::TARGETS)?;
    set_target_bit(child, true);
    // The agent probes a forked child's libssl unless it shares its parent's
    // memory until exec (vfork, posix_spawn): it tells by the clone flags.
    let mut h = header(EventKind::ProcFork, tgid, tid);
    h.ret = flags as i64;
    output_now(
        &PROC_EVENTS,
        EventKind::ProcFork,
        ProcEvent { header: h, root_tgid: target.root_tgid, child_tgid: child },
    );
    Ok(())
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current();
    let root = match target_of(tgid) {
        Some(target) => {
            // Socket-map entries made before this exec are stale from now on.
            if let Some(t) = TARGETS.get_ptr_mut(tgid) {
                // SAFETY: a map value; only exec of this very process writes it.
                unsafe { (*t).exec_gen = (*t).exec_gen.wrapping_add(1) };
            }
            target.root_tgid
        }
        // Taken in provisionally: the agent judges it at this event, and
        // nothing it does meanwhile is missed.
        None if exec_matches() => {
            let entry = Target { root_tgid: PROVISIONAL, exec_gen: 0 };
            if insert_counted(&TARGETS, &tgid, &entry, map_slot::TARGETS).is_err() {
                return 0;
            }
            set_target_bit(tgid, true);
            PROVISIONAL
        }
        None => return 0,
    };
    output_now(
        &PROC_EVENTS,
        EventKind::ProcExec,
        ProcEvent { header: header(EventKind::ProcExec, tgid, tid), root_tgid: root, child_tgid: tgid },
    );
    0
}

/// Whether the name the process now runs under starts with a prefix of
/// `EXEC_MATCH` (empty unless the agent runs with `--match`).
#[inline(always)]
fn exec_matches() -> bool {
    let Some(first) = EXEC_MATCH.get(0) else { return false };
    if first.active == 0 {
        return false;
    }
    let Ok(comm) = bpf_get_current_comm() else { return false };
    for slot in 0..EXEC_PREFIXES {
        let Some(p) = EXEC_MATCH.get(slot) else { return false };
        if p.active == 0 {
            return false;
        }
        let differs = comm.iter().zip(p.bytes.iter()).enumerate().any(|(i, (c, b))| (i as u32) < p.len && c != b);
        if !differs {
            return true;
        }
    }
    false
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

fn try_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let (tgid, tid) = current();
    let Some(target) = target_of(tgid) else {
        return Ok(());
    };
    parked::forget_thread();
    let off = tp_offsets();
    let last_thread = if off.exit_group_dead != 0 {
        // SAFETY: offset from this kernel's tracepoint format.
        let dead: u8 = unsafe { ctx.read_at(off.exit_group_dead as usize) }.map_err(i64::from)?;
        dead != 0
    } else {
        // Older kernels lack group_dead: the leader's exit stands for the process.
        tid == tgid
    };
    if !last_thread {
        return Ok(());
    }
    set_target_bit(tgid, false);
    let _ = TARGETS.remove(tgid);
    output_now(
        &PROC_EVENTS,
        EventKind::ProcExit,
        ProcEvent { header: header(EventKind::ProcExit, tgid, tid), root_tgid: target.root_tgid, child_tgid: tgid },
    );
    Ok(())
}
