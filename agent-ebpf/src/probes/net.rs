//! Socket syscalls of targets: which fds are TCP connections, and the bytes
//! they carry.
//!
//! Handlers run by tail call from `probes/syscalls.rs`, for targets only.
//! Enter handlers filter ("tracked socket") and park the arguments per
//! thread; exit handlers see the result, so only what the kernel accepted is
//! reported, with the true byte count.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use pywats_agent_ebpf::abi::{
    data_flags, direction, map_slot, role, sock_state, ConnEvent, DataEvent, DataScratch, EventKind, SockAddr,
    SockInfo, SockKey, AF_INET, AF_INET6, ECONNRESET, EINPROGRESS, EPIPE, SEQ_UNKNOWN, SOCK_STREAM, SOCK_TYPE_MASK,
    SOL_SOCKET, SO_ERROR,
};

use super::syscalls::{arg, args3, ret};
use crate::{
    emit::{
        copy_edges, count_lost, current, exec_gen, forget_seq, header, insert_counted, next_seq, output,
        output_scratch, wakeup,
    },
    maps::{Pending, NET_EVENTS, PENDING, SCRATCH, SOCKETS},
    parked,
};

/// The syscalls, as stored in a parked [`Pending`].
mod op {
    pub const SOCKET: u32 = 1;
    pub const CONNECT: u32 = 2;
    pub const ACCEPT: u32 = 3;
    pub const GETSOCKOPT: u32 = 4;
    pub const WRITE: u32 = 5;
    pub const READ: u32 = 6;
    pub const WRITEV: u32 = 7;
    pub const READV: u32 = 8;
    pub const SENDMSG: u32 = 9;
    pub const RECVMSG: u32 = 10;
}

/// The tracked socket at `fd`, unless the entry predates the process's last
/// exec (then it is stale and goes).
#[inline(always)]
fn sock(tgid: u32, fd: u64) -> (SockKey, Option<SockInfo>) {
    sock_where(tgid, fd, |_| true)
}

/// Like [`sock`], for a socket in a state `wanted` accepts. The exec check
/// (a second map lookup) is made only for such a socket: most syscalls on
/// other entries (TLS ciphertext) just return.
#[inline(always)]
fn sock_where(tgid: u32, fd: u64, wanted: impl FnOnce(&SockInfo) -> bool) -> (SockKey, Option<SockInfo>) {
    let key = SockKey { tgid, fd: fd as u32 };
    // SAFETY: the value is copied out at once.
    let Some(info) = (unsafe { SOCKETS.get(key) }).copied() else {
        return (key, None);
    };
    if !wanted(&info) {
        return (key, None);
    }
    if info.exec_gen != exec_gen(tgid) {
        let _ = SOCKETS.remove(key);
        return (key, None);
    }
    (key, Some(info))
}

/// Records a socket of the current process, under its current exec generation.
#[inline(always)]
fn track(tgid: u32, fd: u32, conn_id: u64, state: u32, role: u32) -> Result<(), i64> {
    let info = SockInfo { conn_id, state, role, exec_gen: exec_gen(tgid), _pad: 0 };
    insert_counted(&SOCKETS, &SockKey { tgid, fd }, &info, map_slot::SOCKETS)
}

#[inline(always)]
fn park(p: Pending) -> Result<(), i64> {
    parked::park(&PENDING, &p, map_slot::PENDING)
}

/// Takes the parked arguments of this thread's syscall, if it was of `op`.
#[inline(always)]
fn unpark(op: u32) -> Option<Pending> {
    parked::take(&PENDING).filter(|p| p.op == op)
}

/// Reads a user `struct sockaddr_in{,6}` into a [`SockAddr`]; family 0 when unreadable.
#[inline(always)]
fn read_sockaddr(ptr: u64) -> SockAddr {
    let mut out = SockAddr::default();
    if ptr == 0 {
        return out;
    }
    // sockaddr_in: family u16, port u16 (network order), addr [u8; 4];
    // sockaddr_in6: family u16, port u16, flowinfo u32, addr [u8; 16].
    // SAFETY: bpf_probe_read_user tolerates bad pointers.
    let Ok(head) = (unsafe { bpf_probe_read_user(ptr as *const [u16; 2]) }) else {
        return out;
    };
    out.family = head[0];
    out.port = u16::from_be(head[1]);
    if out.family == AF_INET {
        if let Ok(a) = unsafe { bpf_probe_read_user((ptr + 4) as *const [u8; 4]) } {
            out.addr[..4].copy_from_slice(&a);
        }
    } else if out.family == AF_INET6 {
        if let Ok(a) = unsafe { bpf_probe_read_user((ptr + 8) as *const [u8; 16]) } {
            out.addr = a;
        }
    }
    out
}

#[inline(always)]
fn conn_event(kind: EventKind, tgid: u32, tid: u32, fd: u32, ret: i64, conn_id: u64, addr: SockAddr) {
    let mut h = header(kind, tgid, tid);
    h.fd = fd as i32;
    h.ret = ret;
    output(&NET_EVENTS, kind, ConnEvent { header: h, conn_id, addr });
}

// ---- socket(): remember TCP sockets so connect/accept know them.

#[raw_tracepoint]
pub fn sys_enter_socket(ctx: RawTracePointContext) -> i32 {
    let _ = try_enter_socket(&ctx);
    0
}

fn try_enter_socket(ctx: &RawTracePointContext) -> Result<(), i64> {
    let family = arg(ctx, 0)? as u16;
    let kind = arg(ctx, 1)?;
    if (family != AF_INET && family != AF_INET6) || kind & SOCK_TYPE_MASK != SOCK_STREAM {
        return Ok(());
    }
    park(Pending { op: op::SOCKET, ..Pending::EMPTY })
}

#[raw_tracepoint]
pub fn sys_exit_socket(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit_socket(&ctx);
    0
}

fn try_exit_socket(ctx: &RawTracePointContext) -> Result<(), i64> {
    if unpark(op::SOCKET).is_none() {
        return Ok(());
    }
    let fd = ret(ctx);
    if fd < 0 {
        return Ok(());
    }
    let (tgid, _) = current();
    track(tgid, fd as u32, 0, sock_state::CREATED, role::UNKNOWN)
}

// ---- connect(): a client connection, or a refused one.

#[raw_tracepoint]
pub fn sys_enter_connect(ctx: RawTracePointContext) -> i32 {
    let _ = try_enter_connect(&ctx);
    0
}

fn try_enter_connect(ctx: &RawTracePointContext) -> Result<(), i64> {
    let (tgid, _) = current();
    let fd = arg(ctx, 0)?;
    if sock(tgid, fd).1.is_none() {
        return Ok(());
    }
    park(Pending { op: op::CONNECT, fd: fd as u32, addr: read_sockaddr(arg(ctx, 1)?), ..Pending::EMPTY })
}

#[raw_tracepoint]
pub fn sys_exit_connect(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit_connect(&ctx);
    0
}

fn try_exit_connect(ctx: &RawTracePointContext) -> Result<(), i64> {
    let Some(p) = unpark(op::CONNECT) else {
        return Ok(());
    };
    let r = ret(ctx);
    let (tgid, tid) = current();
    // SAFETY: helper without preconditions.
    let conn_id = unsafe { bpf_ktime_get_ns() };
    if r == 0 || r == -EINPROGRESS {
        let state = if r == 0 { sock_state::CONNECTED } else { sock_state::CONNECTING };
        track(tgid, p.fd, conn_id, state, role::CLIENT)?;
    }
    conn_event(EventKind::SockConnect, tgid, tid, p.fd, r, conn_id, p.addr);
    Ok(())
}

// ---- getsockopt(SO_ERROR): the outcome of a non-blocking connect.

#[raw_tracepoint]
pub fn sys_enter_getsockopt(ctx: RawTracePointContext) -> i32 {
    let _ = try_enter_getsockopt(&ctx);
    0
}

fn try_enter_getsockopt(ctx: &RawTracePointContext) -> Result<(), i64> {
    let (tgid, _) = current();
    let fd = arg(ctx, 0)?;
    let Some(info) = sock(tgid, fd).1 else {
        return Ok(());
    };
    if info.state != sock_state::CONNECTING || arg(ctx, 1)? != SOL_SOCKET || arg(ctx, 2)? != SO_ERROR {
        return Ok(());
    }
    park(Pending { op: op::GETSOCKOPT, fd: fd as u32, buf: arg(ctx, 3)?, conn_id: info.conn_id, ..Pending::EMPTY })
}

#[raw_tracepoint]
pub fn sys_exit_getsockopt(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit_getsockopt(&ctx);
    0
}

fn try_exit_getsockopt(ctx: &RawTracePointContext) -> Result<(), i64> {
    let Some(p) = unpark(op::GETSOCKOPT) else {
        return Ok(());
    };
    if ret(ctx) != 0 {
        return Ok(());
    }
    // SAFETY: bpf_probe_read_user tolerates bad pointers.
    let err = unsafe { bpf_probe_read_user(p.buf as *const i32) }.map_err(i64::from)?;
    let (tgid, tid) = current();
    // A failed connect stops being a connection; its close is still seen.
    let state = if err == 0 { sock_state::CONNECTED } else { sock_state::CREATED };
    track(tgid, p.fd, p.conn_id, state, role::CLIENT)?;
    conn_event(EventKind::SockConnect, tgid, tid, p.fd, -(err as i64), p.conn_id, SockAddr::default());
    Ok(())
}

// ---- accept()/accept4(): a server-side connection.

#[raw_tracepoint]
pub fn sys_enter_accept(ctx: RawTracePointContext) -> i32 {
    let _ = try_enter_accept(&ctx);
    0
}

#[raw_tracepoint]
pub fn sys_enter_accept4(ctx: RawTracePointContext) -> i32 {
    let _ = try_enter_accept(&ctx);
    0
}

fn try_enter_accept(ctx: &RawTracePointContext) -> Result<(), i64> {
    let (tgid, _) = current();
    let fd = arg(ctx, 0)?;
    if sock(tgid, fd).1.is_none() {
        return Ok(());
    }
    park(Pending { op: op::ACCEPT, fd: fd as u32, buf: arg(ctx, 1)?, ..Pending::EMPTY })
}

#[raw_tracepoint]
pub fn sys_exit_accept(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit_accept(&ctx);
    0
}

#[raw_tracepoint]
pub fn sys_exit_accept4(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit_accept(&ctx);
    0
}

fn try_exit_accept(ctx: &RawTracePointContext) -> Result<(), i64> {
    let Some(p) = unpark(op::ACCEPT) else {
        return Ok(());
    };
    let fd = ret(ctx);
    if fd < 0 {
        return Ok(());
    }
    let (tgid, tid) = current();
    // SAFETY: helper without preconditions.
    let conn_id = unsafe { bpf_ktime_get_ns() };
    track(tgid, fd as u32, conn_id, sock_state::CONNECTED, role::SERVER)?;
    conn_event(EventKind::SockAccept, tgid, tid, fd as u32, 0, conn_id, read_sockaddr(p.buf));
    Ok(())
}

// ---- close(): the connection ends; the fd may be reused.

#[raw_tracepoint]
pub fn sys_enter_close(ctx: RawTracePointContext) -> i32 {
    let _ = try_enter_close(&ctx);
    0
}

fn try_enter_close(ctx: &RawTracePointContext) -> Result<(), i64> {
    let (tgid, tid) = current();
    let fd = arg(ctx, 0)?;
    let (key, Some(info)) = sock(tgid, fd) else {
        return Ok(());
    };
    let _ = SOCKETS.remove(key);
    if info.state == sock_state::CONNECTED || info.state == sock_state::CONNECTING || info.state == sock_state::IGNORED
    {
        forget_seq(tgid, info.conn_id);
        conn_event(EventKind::SockClose, tgid, tid, fd as u32, 0, info.conn_id, SockAddr::default());
    }
    Ok(())
}

// ---- data: write/read, writev/readv, sendto/recvfrom, sendmsg/recvmsg.

#[inline(always)]
fn enter_data(ctx: &RawTracePointContext, op: u32) -> Result<(), i64> {
    let (tgid, _) = current();
    let [fd, buf, count] = args3(ctx)?;
    let live = |i: &SockInfo| i.state == sock_state::CONNECTED || i.state == sock_state::CONNECTING;
    let Some(info) = sock_where(tgid, fd, live).1 else {
        return Ok(());
    };
    park(Pending {
        op,
        fd: fd as u32,
        buf,
        count,
        conn_id: info.conn_id,
        role: info.role,
        // SAFETY: a helper without preconditions.
        enter_ns: unsafe { bpf_ktime_get_ns() },
        ..Pending::EMPTY
    })
}

/// First buffer of an iovec array: (base, len).
#[inline(always)]
fn first_iovec(iov: u64) -> Result<(u64, u64), i64> {
    // SAFETY: bpf_probe_read_user tolerates bad pointers.
    let v = unsafe { bpf_probe_read_user(iov as *const [u64; 2]) }.map_err(i64::from)?;
    Ok((v[0], v[1]))
}

#[inline(always)]
fn exit_data(ctx: &RawTracePointContext, op: u32, dir: u32) -> Result<(), i64> {
    let Some(p) = unpark(op) else {
        return Ok(());
    };
    let n = ret(ctx);
    if n <= 0 {
        // EOF on a read, and resets, end exchanges; EAGAIN and the like are noise.
        if (n == 0 && dir == direction::INGRESS) || n == -ECONNRESET || n == -EPIPE {
            let (tgid, tid) = current();
            emit_data(tgid, tid, &p, n, 0, 0, false, dir, SEQ_UNKNOWN);
        }
        return Ok(());
    }
    let n_bytes = n as u64;
    // Where the bytes are, how many of them lie in that one buffer, and whether
    // the call had more buffers than the one captured.
    let (buf, in_buf, more) = match op {
        op::WRITEV | op::READV => {
            let (base, len) = first_iovec(p.buf)?;
            (base, if len < n_bytes { len } else { n_bytes }, p.count > 1 && len < n_bytes)
        }
        op::SENDMSG | op::RECVMSG => {
            // struct msghdr: msg_iov at 16, msg_iovlen at 24.
            // SAFETY: bpf_probe_read_user tolerates bad pointers.
            let iov = unsafe { bpf_probe_read_user((p.buf + 16) as *const u64) }.map_err(i64::from)?;
            let iovlen = unsafe { bpf_probe_read_user((p.buf + 24) as *const u64) }.map_err(i64::from)?;
            let (base, len) = first_iovec(iov)?;
            (base, if len < n_bytes { len } else { n_bytes }, iovlen > 1 && len < n_bytes)
        }
        _ => (p.buf, n_bytes, false),
    };
    let (tgid, tid) = current();
    let seq = next_seq(tgid, p.conn_id, dir, n_bytes);
    emit_data(tgid, tid, &p, n, buf, in_buf, more, dir, seq);
    Ok(())
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit_data(tgid: u32, tid: u32, p: &Pending, n: i64, buf: u64, in_buf: u64, more: bool, dir: u32, seq: u64) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, used by one program at a time on this CPU.
    let s: &mut DataScratch = unsafe { &mut *scratch };
    let (prefix, suffix) = copy_edges(&mut s.bytes, buf, in_buf, !more);
    let mut h = header(EventKind::SockData, tgid, tid);
    h.fd = p.fd as i32;
    h.ret = n;
    h.len = if n > 0 { n as u32 } else { 0 };
    h.captured = (prefix + suffix) as u32;
    s.event = DataEvent {
        header: h,
        conn_id: p.conn_id,
        call_start_ns: p.enter_ns,
        seq,
        direction: dir as u16,
        role: p.role as u16,
        prefix_len: prefix as u32,
        suffix_len: suffix as u32,
        flags: if more { data_flags::VECTORED_PARTIAL } else { 0 },
    };
    if !output_scratch::<DataEvent, _>(&NET_EVENTS, scratch, prefix + suffix, wakeup(&NET_EVENTS)) {
        count_lost(EventKind::SockData);
    }
}

macro_rules! data_programs {
    ($($enter:ident, $exit:ident, $op:expr, $dir:expr;)*) => {$(
        #[raw_tracepoint]
        pub fn $enter(ctx: RawTracePointContext) -> i32 {
            let _ = enter_data(&ctx, $op);
            0
        }

        #[raw_tracepoint]
        pub fn $exit(ctx: RawTracePointContext) -> i32 {
            let _ = exit_data(&ctx, $op, $dir);
            0
        }
    )*};
}

data_programs! {
    sys_enter_write, sys_exit_write, op::WRITE, direction::EGRESS;
    sys_enter_read, sys_exit_read, op::READ, direction::INGRESS;
    sys_enter_writev, sys_exit_writev, op::WRITEV, direction::EGRESS;
    sys_enter_readv, sys_exit_readv, op::READV, direction::INGRESS;
    sys_enter_sendto, sys_exit_sendto, op::WRITE, direction::EGRESS;
    sys_enter_recvfrom, sys_exit_recvfrom, op::READ, direction::INGRESS;
    sys_enter_sendmsg, sys_exit_sendmsg, op::SENDMSG, direction::EGRESS;
    sys_enter_recvmsg, sys_exit_recvmsg, op::RECVMSG, direction::INGRESS;
}
