//! HTTP/2 in the server role: a target that accepted the connection reads
//! requests a client it does not control chose (the preface, then frames
//! and HPACK), cut into calls with gaps and losses, over libssl or a plain
//! socket. It must never panic, and what it holds stays within the caps
//! whatever the client sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pywats_agent::net::{
    conn::{Connection, Role},
    http1::Chunk,
    http2::PREFACE,
};

/// Per-connection bound implied by the HTTP/2 caps: per direction a frame
/// (16 KiB), a header block (64 KiB) and an HPACK table (64 KiB of entries,
/// values kept cut), plus 256 streams of at most ~2.3 KiB of strings each.
const HELD_BOUND: usize = 2 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let mut conn = if ctl & 8 == 0 { Connection::tls(Role::Server) } else { Connection::new(Role::Server, None) };
    let (mut done, mut notices) = (Vec::new(), Vec::new());
    if ctl & 1 == 0 {
        // The client's preface, read by the target.
        conn.data(false, &Chunk::whole(PREFACE, 0), &mut done, &mut notices);
    }
    let mut rest = rest;
    let mut ts = 0;
    while let Some((&step, tail)) = rest.split_first() {
        let take = ((step & 0x3f) as usize * 4 + 1).min(tail.len());
        let (piece, after) = tail.split_at(take);
        rest = after;
        ts += 1;
        // Bit 7: the target writes (responses); else it reads (requests).
        let egress = step & 0x80 != 0;
        if ctl & 4 != 0 && step & 0x40 != 0 {
            conn.lost(egress, u64::from(step), &mut done, &mut notices);
        }
        let chunk = if ctl & 4 == 0 && step & 0x40 != 0 {
            Chunk { prefix: piece, suffix: &[], len: piece.len() as u64 + u64::from(step), ts_ns: ts }
        } else {
            Chunk::whole(piece, ts)
        };
        conn.data(egress, &chunk, &mut done, &mut notices);
        assert!(conn.held() <= HELD_BOUND, "{} bytes held", conn.held());
    }
    conn.finish(ts + 1, ctl & 2 != 0, &mut done, &mut notices);
    for x in &done {
        assert!(x.end_ns >= x.start_ns);
        assert!(x.path.len() <= pywats_agent::net::limits::MAX_PATH + 3);
    }
});
