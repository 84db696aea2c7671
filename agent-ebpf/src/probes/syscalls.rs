//! The raw `sys_enter`/`sys_exit` tracepoints: every syscall on the host
//! passes here. A task that is not a target leaves after one inlined array
//! read; a target's syscall goes by tail call to the handler registered for
//! its number (`probes/net.rs`, `probes/fs.rs`), if any.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use pywats_agent_ebpf::abi::{SYSCALL_REGS, SYSCALL_SLOTS};

use crate::{
    emit::is_target,
    maps::{SYS_ENTER_PROGS, SYS_EXIT_PROGS},
};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_sys_enter(ctx: RawTracePointContext) -> i32 {
    if !is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        return 0;
    }
    // sys_enter(struct pt_regs *regs, long id)
    let nr: u64 = ctx.arg(1);
    if nr < SYSCALL_SLOTS as u64 {
        // SAFETY: an empty slot makes the tail call fall through.
        unsafe { SYS_ENTER_PROGS.tail_call(&ctx, nr as u32) };
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn raw_sys_exit(ctx: RawTracePointContext) -> i32 {
    if !is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        return 0;
    }
    // sys_exit(struct pt_regs *regs, long ret): the number is in the saved
    // registers (x86_64 `orig_ax`, arm64 `syscallno`).
    let regs: u64 = ctx.arg(0);
    // SAFETY: the helper checks the kernel address; pt_regs outlives the call.
    let Ok(nr) = (unsafe { bpf_probe_read_kernel((regs + SYSCALL_REGS.nr as u64) as *const u32) }) else {
        return 0;
    };
    if nr < SYSCALL_SLOTS {
        // SAFETY: as above.
        unsafe { SYS_EXIT_PROGS.tail_call(&ctx, nr) };
    }
    0
}

#[inline(always)]
fn regs_field(ctx: &RawTracePointContext, offset: u32) -> Result<u64, i64> {
    let regs: u64 = ctx.arg(0);
    // SAFETY: the helper checks the kernel address; pt_regs outlives the call.
    unsafe { bpf_probe_read_kernel((regs + offset as u64) as *const u64) }.map_err(i64::from)
}

/// Syscall argument `n` (0..6) of the syscall this handler runs for, at its
/// entry (arm64 overwrites x0 with the result before `sys_exit`).
#[inline(always)]
pub fn arg(ctx: &RawTracePointContext, n: usize) -> Result<u64, i64> {
    regs_field(ctx, *SYSCALL_REGS.args.get(n).ok_or(-1i64)?)
}

/// Syscall arguments 0..3 in one read (they lie next to each other in
/// `pt_regs`, `abi::SyscallRegs`): every helper call costs (this VM returns
/// from calls the slow way, see the developer guide).
#[inline(always)]
pub fn args3(ctx: &RawTracePointContext) -> Result<[u64; 3], i64> {
    let regs: u64 = ctx.arg(0);
    // SAFETY: the helper checks the kernel address; pt_regs outlives the call.
    let [a, b, c] = unsafe { bpf_probe_read_kernel((regs + SYSCALL_REGS.args3_at as u64) as *const [u64; 3]) }
        .map_err(i64::from)?;
    Ok(if SYSCALL_REGS.args3_reversed { [c, b, a] } else { [a, b, c] })
}

/// The syscall's result (exit handlers only).
#[inline(always)]
pub fn ret(ctx: &RawTracePointContext) -> i64 {
    ctx.arg::<u64>(1) as i64
}
