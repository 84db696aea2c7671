//! File events: the opens, renames and unlinks of targets, with their paths.

use super::{assert_size, EventHeader, CAPTURE_PREFIX};

/// Bytes captured of each path (longer paths are truncated, and flagged).
pub const FS_PATH_MAX: u32 = 512;
/// `AT_FDCWD`: a path relative to the current directory.
pub const AT_FDCWD: i32 = -100;

/// Flags of [`FsEvent::truncated`].
pub mod fs_truncated {
    pub const PATH1: u32 = 1;
    pub const PATH2: u32 = 2;
}

/// [`EventKind::FsOpen`](super::EventKind) (`path1`, `flags` = open flags, `ret`
/// = the new fd), `FsRename` (`path1` → `path2`), `FsUnlink` (`path1`). Only
/// successful calls are reported. `header.fd` is the directory fd `path1` is
/// relative to, `dirfd2` the one of `path2`. The path bytes (no NUL) follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsEvent {
    pub header: EventHeader,
    pub dirfd2: i32,
    pub flags: u32,
    pub path1_len: u16,
    pub path2_len: u16,
    pub truncated: u32,
}
assert_size!(FsEvent, 56);

/// Scratch space to assemble a file event in.
#[repr(C)]
pub struct FsScratch {
    pub event: FsEvent,
    pub bytes: [u8; (2 * FS_PATH_MAX) as usize],
}

// The socket scratch is the larger one; both live in per-CPU arrays.
const _: () = assert!(FS_PATH_MAX < CAPTURE_PREFIX);
