//! Bytes a process wrote or read, cut into syscalls with gaps and losses, through the
//! HTTP/1 connection parser in both roles. It must never panic, and what it
//! holds stays within the caps whatever the peer sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pywats_agent::net::{
    conn::{Connection, Role},
    http1::Chunk,
};

/// Per-connection bound implied by the HTTP/1 caps: a 16 KiB head per
/// direction (and a trailer, as long), 32 waiting requests of at most ~2 KiB
/// of path each.
const HELD_BOUND: usize = 256 << 10;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else { return };
    for role in [Role::Client, Role::Server] {
        let mut conn = if ctl & 1 == 0 { Connection::new(role, None) } else { Connection::joined_midway(role, None) };
        let (mut done, mut notices) = (Vec::new(), Vec::new());
        let mut rest = rest;
        let mut ts = 0;
        while let Some((&step, tail)) = rest.split_first() {
            // Low bits: piece length; bit 7: direction; bit 6: a gap after the
            // prefix (with ctl bit 2: bytes lost before the piece instead).
            let take = ((step & 0x3f) as usize + 1).min(tail.len());
            let (piece, after) = tail.split_at(take);
            rest = after;
            ts += 1;
            let egress = step & 0x80 != 0;
            if ctl & 4 != 0 && step & 0x40 != 0 {
                conn.lost(egress, u64::from(step) * 977, &mut done, &mut notices);
            }
            let chunk = if ctl & 4 == 0 && step & 0x40 != 0 && piece.len() > 2 {
                let (prefix, suffix) = piece.split_at(piece.len() / 2);
                Chunk { prefix, suffix, len: piece.len() as u64 + (step as u64) * 977, ts_ns: ts }
            } else {
                Chunk::whole(piece, ts)
            };
            conn.data(egress, &chunk, &mut done, &mut notices);
            assert!(conn.held() <= HELD_BOUND, "{} bytes held", conn.held());
            if step == 0 {
                conn.peer_eof(ts, &mut done, &mut notices);
            }
        }
        conn.finish(ts + 1, ctl & 2 != 0, &mut done, &mut notices);
        for x in &done {
            assert!(x.end_ns >= x.start_ns || x.start_ns == 0);
        }
    }
});
