//! Map definitions; names are the statics' identifiers and match `abi::MAP_*`.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use pywats_agent_ebpf::abi::{Target, LOST_SLOTS, MAX_TARGETS, PROC_EVENTS_BYTES};

#[map]
pub static TARGETS: HashMap<u32, Target> = HashMap::with_max_entries(MAX_TARGETS, 0);

#[map]
pub static PROC_EVENTS: RingBuf = RingBuf::with_byte_size(PROC_EVENTS_BYTES, 0);

#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_SLOTS, 0);
