//! Drains a ring buffer on a thread of its own: every record is handed to
//! `handle` as a byte slice while the record is held; `drained` runs after each
//! pass, when the ring was just emptied. A thread, not an async task, so that a
//! busy ring can never starve the HTTP server or the liveness loop.

use std::{
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
};

use aya::maps::{MapData, RingBuf};

/// The kernel wakes the agent only when a ring is a quarter full (see
/// `wakeup` in the kernel programs); in between, records are collected at
/// this interval, in batches.
const POLL_INTERVAL_MS: i32 = 10;

/// Runs until `stop` is set; an error of `poll(2)` ends it. With `fault`
/// (a test hook) it fails after its first pass.
pub fn drain(
    mut ring: RingBuf<MapData>,
    mut handle: impl FnMut(&[u8]),
    mut drained: impl FnMut(),
    stop: &AtomicBool,
    fault: bool,
) -> Result<(), String> {
    let fd = ring.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        let mut ready = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; the ring keeps its fd open.
        if unsafe { libc::poll(&mut ready, 1, POLL_INTERVAL_MS) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("poll on the ring buffer: {e}"));
            }
        }
        while let Some(record) = ring.next() {
            handle(&record);
        }
        drained();
        if fault {
            return Err("fault injected (PYWATS_AGENT_TEST_FAULT)".into());
        }
    }
    Ok(())
}
