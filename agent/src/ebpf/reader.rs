//! Drains a ring buffer on tokio: every record is handed to `handle` as a byte
//! slice while the record is held, and never across an `.await`; `drained`
//! runs after each pass, when the ring was just emptied.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    time::MissedTickBehavior,
};

/// The kernel wakes the agent only when a ring is a quarter full (see
/// `wakeup` in the kernel programs); in between, records are collected at
/// this interval, in batches.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

pub async fn drain(
    ring: RingBuf<MapData>,
    mut handle: impl FnMut(&[u8]),
    mut drained: impl FnMut(),
) -> std::io::Result<()> {
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, until
    // it is dropped together with the AsyncFd.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|e| e.into_parts().1)?;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ready = fd.readable_mut() => ready?.clear_ready(),
            _ = tick.tick() => {}
        }
        // Readiness is cleared first: a wake-up during the drain is not missed.
        let ring = fd.get_mut();
        while let Some(record) = ring.next() {
            handle(&record);
        }
        drained();
    }
}
