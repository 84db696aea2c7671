//! Drains a ring buffer on a thread of its own: every record is handed to
//! `handle` as a byte slice while the record is held; `drained` runs after each
//! pass, when the ring was just emptied. A thread, not an async task, so that a
//! busy ring can never starve the HTTP server or the lifecycle thread.

use std::{
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
};

use aya::maps::{MapData, RingBuf};

/// The kernel wakes the agent only when a ring is a quarter full (see
/// `wakeup` in the kernel programs); in between, records are collected at
/// this interval, in batches.
const POLL_INTERVAL_MS: i32 = 10;
/// While a ring stays empty the interval doubles up to this: each wake-up
/// costs a reader about 25 µs of CPU on a VM, and three readers at 10 ms
/// were most of the agent's idle CPU. Records are stamped in the kernel, so
/// collecting them later changes no measurement; a burst still wakes the
/// reader at a quarter full, and the first records after a quiet spell wait
/// at most this long.
const IDLE_POLL_INTERVAL_MS: i32 = 160;

/// Runs until `stop` is set; an error of `poll(2)` ends it. `handle` and
/// `drained` share `state`. With `fault` (a test hook) it fails after its
/// first pass.
pub fn drain<S>(
    mut ring: RingBuf<MapData>,
    state: &mut S,
    mut handle: impl FnMut(&mut S, &[u8]),
    mut drained: impl FnMut(&mut S),
    stop: &AtomicBool,
    fault: bool,
) -> Result<(), String> {
    let fd = ring.as_raw_fd();
    let mut interval = POLL_INTERVAL_MS;
    while !stop.load(Ordering::Relaxed) {
        let mut ready = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; the ring keeps its fd open.
        if unsafe { libc::poll(&mut ready, 1, interval) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("poll on the ring buffer: {e}"));
            }
        }
        let mut any = false;
        while let Some(record) = ring.next() {
            handle(state, &record);
            any = true;
        }
        interval = if any { POLL_INTERVAL_MS } else { (interval * 2).min(IDLE_POLL_INTERVAL_MS) };
        drained(state);
        if fault {
            return Err("fault injected (PYWATS_AGENT_TEST_FAULT)".into());
        }
    }
    Ok(())
}
