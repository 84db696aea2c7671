//! File syscalls of targets: opens, renames and unlinks with their paths, for
//! the queue and converter state machines. Handlers run by tail call from
//! `probes/syscalls.rs`, for targets only. Enter parks the pointers, exit
//! reports successful calls only.

use aya_ebpf::{
    helpers::{bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use pywats_agent_ebpf::abi::{fs_truncated, map_slot, EventKind, FsEvent, FsScratch, AT_FDCWD, FS_PATH_MAX};

use super::syscalls::{arg, args3, ret};
use crate::{
    emit::{count_lost, current, header, output_scratch, wakeup, BPF_RB_FORCE_WAKEUP},
    maps::{FsPending, FS_EVENTS, FS_PENDING, FS_SCRATCH},
    parked,
};

#[inline(always)]
fn park(
    ctx: &RawTracePointContext,
    kind: EventKind,
    p: impl FnOnce(&RawTracePointContext) -> Result<FsPending, i64>,
) -> i32 {
    if let Ok(mut pending) = p(ctx) {
        pending.kind = kind as u32;
        let _ = parked::park(&FS_PENDING, &pending, map_slot::FS_PENDING);
    }
    0
}

const EMPTY: FsPending = FsPending { kind: 0, flags: 0, dirfd1: AT_FDCWD, dirfd2: AT_FDCWD, path1: 0, path2: 0 };

/// Copies a user path string into `dst`; (length, truncated).
#[inline(always)]
fn read_path(src: u64, dst: &mut [u8]) -> (u16, bool) {
    if src == 0 {
        return (0, false);
    }
    // SAFETY: the helper tolerates bad pointers and stops at dst's end.
    match unsafe { bpf_probe_read_user_str_bytes(src as *const u8, dst) } {
        Ok(s) => (s.len() as u16, s.len() + 1 >= dst.len()),
        Err(_) => (0, false),
    }
}

#[inline(always)]
fn exit(ctx: &RawTracePointContext) -> i32 {
    let Some(p) = parked::take(&FS_PENDING) else {
        return 0;
    };
    let ret = ret(ctx);
    if ret < 0 {
        return 0;
    }
    let Ok(kind) = EventKind::try_from(p.kind) else {
        return 0;
    };
    let Some(scratch) = FS_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, used by one program at a time on this CPU.
    let s: &mut FsScratch = unsafe { &mut *scratch };
    let (first, second) = s.bytes.split_at_mut(FS_PATH_MAX as usize);
    let (len1, trunc1) = read_path(p.path1, first);
    let (len2, trunc2) = read_path(p.path2, second);
    let len1 = (len1 as usize) & (FS_PATH_MAX as usize - 1);
    let len2 = (len2 as usize) & (FS_PATH_MAX as usize - 1);
    // Path 2 goes right after path 1 in the record.
    if len2 > 0 {
        // SAFETY: both ranges lie inside s.bytes; the second path may overlap
        // only with bytes after len1, and it is read from the user again.
        let dst = unsafe { s.bytes.as_mut_ptr().add(len1) };
        let n = len2 as u32;
        if unsafe { aya_ebpf::helpers::generated::bpf_probe_read_user(dst.cast(), n, p.path2 as *const _) } != 0 {
            return 0;
        }
    }
    let (tgid, tid) = current();
    let mut h = header(kind, tgid, tid);
    h.fd = p.dirfd1;
    h.ret = ret;
    s.event = FsEvent {
        header: h,
        dirfd2: p.dirfd2,
        flags: p.flags,
        path1_len: len1 as u16,
        path2_len: len2 as u16,
        truncated: if trunc1 { fs_truncated::PATH1 } else { 0 } | if trunc2 { fs_truncated::PATH2 } else { 0 },
    };
    // A target loading libssl gets its TLS probes from the agent: wake it now.
    let flags = if kind == EventKind::FsOpen && names_libssl(&s.bytes, len1) {
        BPF_RB_FORCE_WAKEUP
    } else {
        wakeup(&FS_EVENTS)
    };
    if !output_scratch::<FsEvent, _>(&FS_EVENTS, scratch, (len1 + len2) as u64, flags) {
        count_lost(kind);
    }
    0
}

/// Whether the file name of the path in `bytes[..len]` starts with
/// `libssl.so` (`libssl.so`, `libssl.so.3`, `libssl.so.1.1`): only the last
/// 15 bytes are looked at, so an open costs a few dozen instructions more.
#[inline(always)]
fn names_libssl(bytes: &[u8; (2 * FS_PATH_MAX) as usize], len: usize) -> bool {
    const NAME: &[u8; 10] = b"/libssl.so";
    for back in 10..16 {
        if back > len {
            break;
        }
        let start = (len - back) & (FS_PATH_MAX as usize - 1);
        let mut same = true;
        for (i, &c) in NAME.iter().enumerate() {
            if bytes[(start + i) & (2 * FS_PATH_MAX as usize - 1)] != c {
                same = false;
                break;
            }
        }
        if same {
            return true;
        }
    }
    false
}

macro_rules! exits {
    ($($name:ident),*) => {$(
        #[raw_tracepoint]
        pub fn $name(ctx: RawTracePointContext) -> i32 {
            exit(&ctx)
        }
    )*};
}

exits!(sys_exit_openat, sys_exit_openat2, sys_exit_renameat, sys_exit_renameat2, sys_exit_unlinkat);

// arm64 has no `rename`/`unlink` syscalls (abi::aarch64::nr).
#[cfg(abi_arch = "x86_64")]
exits!(sys_exit_rename, sys_exit_unlink);

#[raw_tracepoint]
pub fn sys_enter_openat(ctx: RawTracePointContext) -> i32 {
    park(&ctx, EventKind::FsOpen, |c| {
        let [dirfd, path, flags] = args3(c)?;
        Ok(FsPending { dirfd1: dirfd as i32, path1: path, flags: flags as u32, ..EMPTY })
    })
}

#[raw_tracepoint]
pub fn sys_enter_openat2(ctx: RawTracePointContext) -> i32 {
    park(&ctx, EventKind::FsOpen, |c| {
        // struct open_how starts with the u64 flags.
        // SAFETY: the helper tolerates bad pointers.
        let [dirfd, path, how] = args3(c)?;
        let flags = unsafe { bpf_probe_read_user(how as *const u64) }.map_err(i64::from)?;
        Ok(FsPending { dirfd1: dirfd as i32, path1: path, flags: flags as u32, ..EMPTY })
    })
}

#[cfg(abi_arch = "x86_64")]
#[raw_tracepoint]
pub fn sys_enter_rename(ctx: RawTracePointContext) -> i32 {
    park(&ctx, EventKind::FsRename, |c| {
        let [from, to, _] = args3(c)?;
        Ok(FsPending { path1: from, path2: to, ..EMPTY })
    })
}

#[raw_tracepoint]
pub fn sys_enter_renameat(ctx: RawTracePointContext) -> i32 {
    park(&ctx, EventKind::FsRename, |c| {
        let [dirfd1, path1, dirfd2] = args3(c)?;
        Ok(FsPending { dirfd1: dirfd1 as i32, path1, dirfd2: dirfd2 as i32, path2: arg(c, 3)?, ..EMPTY })
    })
}

#[raw_tracepoint]
pub fn sys_enter_renameat2(ctx: RawTracePointContext) -> i32 {
    park(&ctx, EventKind::FsRename, |c| {
        let [dirfd1, path1, dirfd2] = args3(c)?;
        Ok(FsPending {
            dirfd1: dirfd1 as i32,
            path1,
            dirfd2: dirfd2 as i32,
            path2: arg(c, 3)?,
            flags: arg(c, 4)? as u32,
            ..EMPTY
        })
    })
}

#[cfg(abi_arch = "x86_64")]
#[raw_tracepoint]
pub fn sys_enter_unlink(ctx: RawTracePointContext) -> i32 {
    park(&ctx, EventKind::FsUnlink, |c| Ok(FsPending { path1: arg(c, 0)?, ..EMPTY }))
}

#[raw_tracepoint]
pub fn sys_enter_unlinkat(ctx: RawTracePointContext) -> i32 {
    park(&ctx, EventKind::FsUnlink, |c| {
        let [dirfd, path, flags] = args3(c)?;
        Ok(FsPending { dirfd1: dirfd as i32, path1: path, flags: flags as u32, ..EMPTY })
    })
}
