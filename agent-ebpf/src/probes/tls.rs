//! TLS plaintext from libssl uprobes. The `_ex` programs also serve the
//! internal function both `SSL_x_ex` and `SSL_x` call where the agent finds
//! it (same arguments, success above 0, the count through the fourth
//! argument). Connections are keyed by the `SSL *`,
//! which works for socket-backed TLS and for asyncio's memory BIOs alike (no
//! socket syscall happens inside SSL_write_ex there). Entry probes park the
//! arguments; return probes copy what was really written or read, whole, in
//! pieces, to the socket-event ring.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use pywats_agent_ebpf::abi::{
    direction, map_slot, role, ConnEvent, DataEvent, EventKind, SockAddr, TlsScratch, SEQ_UNKNOWN, TLS_CONN,
    TLS_MAX_PIECES, TLS_PIECE,
};

use crate::{
    emit::{
        at_most, copy_edges, count_lost, current, forget_seq, header, is_target, next_seq_with, output, output_scratch,
        wakeup, CAPTURE_WHOLE,
    },
    maps::{TlsPending, NET_EVENTS, TLS_PENDING, TLS_SCRATCH},
    parked,
};

#[inline(always)]
fn enter(ctx: &ProbeContext, ex: bool) -> u32 {
    let (tgid, _) = current();
    if !is_target(tgid) {
        return 0;
    }
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    let count_out = if ex { ctx.arg::<u64>(3).unwrap_or(0) } else { 0 };
    // SAFETY: a helper without preconditions.
    let enter_ns = unsafe { bpf_ktime_get_ns() };
    let pending = TlsPending { ssl, buf, count_out, enter_ns };
    let _ = parked::park(&TLS_PENDING, &pending, map_slot::TLS_PENDING);
    0
}

#[inline(always)]
fn exit(ctx: &RetProbeContext, ex: bool, dir: u32) -> u32 {
    let Some(p) = parked::take(&TLS_PENDING) else {
        return 0;
    };
    // The functions return an `int`: the upper half of the register is not
    // part of it.
    let ret: i32 = ctx.ret::<i32>();
    if ret <= 0 {
        return 0;
    }
    let n = if ex {
        if p.count_out == 0 {
            return 0;
        }
        // SAFETY: the helper tolerates bad pointers.
        match unsafe { bpf_probe_read_user(p.count_out as *const u64) } {
            Ok(n) => n,
            Err(_) => return 0,
        }
    } else {
        ret as u64
    };
    emit(&p, n, dir);
    0
}

/// [`STREAM_SEQ`](crate::maps::STREAM_SEQ)'s mode of an HTTP/1 (not HTTP/2)
/// connection: a call is captured like a socket's (a prefix and a suffix).
/// The HTTP/1 parser skips bodies by their length, so most of a large body
/// need not be copied; HTTP/2 needs every frame header, so its calls are
/// captured whole.
const CAPTURE_EDGES: u64 = 1;

/// The mode of a connection whose first bytes are at `buf`: HTTP/2 begins
/// with the client's preface in both directions' first call ("PRI * HTTP/2.0").
/// A connection joined mid-way looks like HTTP/1 here; the agent cannot
/// parse HTTP/2 joined mid-way anyway.
#[inline(always)]
fn mode_of(buf: u64, n: u64) -> u64 {
    if n < 4 {
        return CAPTURE_WHOLE;
    }
    // SAFETY: the helper tolerates bad pointers.
    match unsafe { bpf_probe_read_user(buf as *const [u8; 4]) } {
        Ok(head) if head != *b"PRI " => CAPTURE_EDGES,
        _ => CAPTURE_WHOLE,
    }
}

/// Sends `n` bytes from `p.buf`: for HTTP/1 one event with the first
/// `CAPTURE_PREFIX` and the last `CAPTURE_SUFFIX` bytes, otherwise whole, as
/// consecutive pieces; what does not fit in `TLS_MAX_PIECES` pieces is sent as
/// a gap (a piece with no bytes captured).
#[inline(always)]
fn emit(p: &TlsPending, n: u64, dir: u32) {
    let Some(scratch) = TLS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, used by one program at a time on this CPU.
    let s: &mut TlsScratch = unsafe { &mut *scratch };
    let (tgid, tid) = current();
    let conn_id = p.ssl | TLS_CONN;
    let (base, mode) = next_seq_with(tgid, conn_id, dir, n, || mode_of(p.buf, n));
    if mode == CAPTURE_EDGES {
        emit_edges(p, n, dir, s, base);
        return;
    }
    let mut off: u64 = 0;
    for _ in 0..TLS_MAX_PIECES + 1 {
        if off >= n {
            break;
        }
        let rest = n - off;
        let piece = if rest < TLS_PIECE as u64 { rest } else { TLS_PIECE as u64 };
        let full = off < (TLS_PIECE * TLS_MAX_PIECES) as u64;
        // The last round sends the remainder as a gap.
        let (len, captured) = if full { (piece, at_most(piece, TLS_PIECE as u64).unwrap_or(0)) } else { (rest, 0) };
        let ok = captured == 0
            // SAFETY: captured <= TLS_PIECE < bytes.len(); the helper tolerates bad source pointers.
            || unsafe {
                aya_ebpf::helpers::generated::bpf_probe_read_user(
                    s.bytes.as_mut_ptr().cast(),
                    captured as u32,
                    (p.buf + off) as *const _,
                )
            } == 0;
        let captured = if ok { captured } else { 0 };
        let mut h = header(EventKind::TlsData, tgid, tid);
        h.ret = len as i64;
        h.len = len as u32;
        h.captured = captured as u32;
        s.event = DataEvent {
            header: h,
            conn_id,
            call_start_ns: p.enter_ns,
            seq: if base == SEQ_UNKNOWN { SEQ_UNKNOWN } else { base + off },
            direction: dir as u16,
            role: role::CLIENT as u16,
            prefix_len: captured as u32,
            suffix_len: 0,
            flags: 0,
        };
        if !output_scratch::<DataEvent, _>(&NET_EVENTS, scratch, captured, wakeup(&NET_EVENTS)) {
            count_lost(EventKind::TlsData);
        }
        off += len;
    }
}

/// One event of an HTTP/1 call: its first and last bytes, the rest a gap.
#[inline(always)]
fn emit_edges(p: &TlsPending, n: u64, dir: u32, s: &mut TlsScratch, seq: u64) {
    let (tgid, tid) = current();
    let (prefix, suffix) = copy_edges(&mut s.bytes, p.buf, n, true);
    let mut h = header(EventKind::TlsData, tgid, tid);
    h.ret = n as i64;
    h.len = n as u32;
    h.captured = (prefix + suffix) as u32;
    s.event = DataEvent {
        header: h,
        conn_id: p.ssl | TLS_CONN,
        call_start_ns: p.enter_ns,
        seq,
        direction: dir as u16,
        role: role::CLIENT as u16,
        prefix_len: prefix as u32,
        suffix_len: suffix as u32,
        flags: 0,
    };
    if !output_scratch::<DataEvent, _>(&NET_EVENTS, s as *const TlsScratch, prefix + suffix, wakeup(&NET_EVENTS)) {
        count_lost(EventKind::TlsData);
    }
}

#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, false)
}

#[uretprobe]
pub fn ssl_write_ret(ctx: RetProbeContext) -> u32 {
    exit(&ctx, false, direction::EGRESS)
}

#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, true)
}

#[uretprobe]
pub fn ssl_write_ex_ret(ctx: RetProbeContext) -> u32 {
    exit(&ctx, true, direction::EGRESS)
}

#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, false)
}

#[uretprobe]
pub fn ssl_read_ret(ctx: RetProbeContext) -> u32 {
    exit(&ctx, false, direction::INGRESS)
}

#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, true)
}

#[uretprobe]
pub fn ssl_read_ex_ret(ctx: RetProbeContext) -> u32 {
    exit(&ctx, true, direction::INGRESS)
}

/// The end of a TLS connection.
#[uprobe]
pub fn ssl_free(ctx: ProbeContext) -> u32 {
    let (tgid, tid) = current();
    if !is_target(tgid) {
        return 0;
    }
    let Some(ssl) = ctx.arg::<u64>(0) else {
        return 0;
    };
    forget_seq(tgid, ssl | TLS_CONN);
    let mut h = header(EventKind::TlsClose, tgid, tid);
    h.fd = -1;
    output(
        &NET_EVENTS,
        EventKind::TlsClose,
        ConnEvent { header: h, conn_id: ssl | TLS_CONN, addr: SockAddr::default() },
    );
    0
}
