//! Globals the agent overrides at load time.

use pywats_agent_ebpf::abi::TracepointOffsets;

#[unsafe(no_mangle)]
static TP_OFFSETS: TracepointOffsets = TracepointOffsets::DEFAULT;

/// Reads the offsets through a volatile load so the compiler keeps the global
/// (the loader rewrites its value in the object's .rodata).
#[inline(always)]
pub fn tp_offsets() -> TracepointOffsets {
    // SAFETY: a valid static; volatile only prevents constant folding.
    unsafe { core::ptr::read_volatile(&TP_OFFSETS) }
}
