//! Drains a ring buffer on tokio: every record is handed to `handle` as a byte
//! slice while the record is held, and never across an `.await`.

use aya::maps::{MapData, RingBuf};
use tokio::io::{unix::AsyncFd, Interest};

pub async fn drain(ring: RingBuf<MapData>, mut handle: impl FnMut(&[u8])) -> std::io::Result<()> {
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, until
    // it is dropped together with the AsyncFd.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|e| e.into_parts().1)?;
    loop {
        let mut guard = fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        while let Some(record) = ring.next() {
            handle(&record);
        }
        guard.clear_ready();
    }
}
