//! Kernel programs of pywats-agent. Built for `bpfel-unknown-none` by
//! `agent/build.rs`; the agent embeds the resulting object.
#![no_std]
#![no_main]
// Atomic bit operations on map values (the target bit set): `core::sync::atomic`
// offers no fetch_or on the BPF target.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod emit;
mod globals;
mod maps;
mod parked;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: the verifier rejects programs that could panic.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
