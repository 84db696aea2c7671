//! Plaintext bytes from libssl, cut into calls with gaps, through the
//! connection parser: HTTP/2 frames and HPACK (and HTTP/1, whichever the
//! first bytes choose). It must never panic, and what it holds stays within
//! the caps whatever the server sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pywats_agent::net::{
    conn::{Connection, Role},
    http1::Chunk,
    http2::PREFACE,
};

/// See `http2_server.rs`.
const HELD_BOUND: usize = 2 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let mut conn = Connection::tls(Role::Client);
    let (mut done, mut notices) = (Vec::new(), Vec::new());
    if ctl & 1 == 0 {
        // Start as a fresh HTTP/2 connection.
        conn.data(true, &Chunk::whole(PREFACE, 0), &mut done, &mut notices);
    }
    let mut rest = rest;
    let mut ts = 0;
    while let Some((&step, tail)) = rest.split_first() {
        let take = ((step & 0x3f) as usize * 4 + 1).min(tail.len());
        let (piece, after) = tail.split_at(take);
        rest = after;
        ts += 1;
        // Bit 6: a gap after the piece (with ctl bit 2: bytes lost before it instead).
        if ctl & 4 != 0 && step & 0x40 != 0 {
            conn.lost(step & 0x80 != 0, u64::from(step), &mut done, &mut notices);
        }
        let chunk = if ctl & 4 == 0 && step & 0x40 != 0 {
            Chunk { prefix: piece, suffix: &[], len: piece.len() as u64 + u64::from(step), ts_ns: ts }
        } else {
            Chunk::whole(piece, ts)
        };
        conn.data(step & 0x80 != 0, &chunk, &mut done, &mut notices);
        assert!(conn.held() <= HELD_BOUND, "{} bytes held", conn.held());
    }
    conn.finish(ts + 1, ctl & 2 != 0, &mut done, &mut notices);
});
