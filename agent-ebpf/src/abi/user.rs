//! User-side view of the ABI: `aya::Pod` and decoding of untrusted ring-buffer bytes.

use super::{
    ConnEvent, DataEvent, EventHeader, EventKind, ExecPrefix, FsEvent, ProcEvent, SockInfo, SockKey, Target,
    TracepointOffsets,
};

// SAFETY: plain #[repr(C)] integers with no padding (sizes asserted).
unsafe impl aya::Pod for Target {}
// SAFETY: as above.
unsafe impl aya::Pod for TracepointOffsets {}
// SAFETY: as above.
unsafe impl aya::Pod for SockKey {}
// SAFETY: as above.
unsafe impl aya::Pod for SockInfo {}
// SAFETY: as above.
unsafe impl aya::Pod for ExecPrefix {}

/// Why a ring-buffer record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the struct its kind announces.
    Short { kind: u32, len: usize },
    /// A kind this agent does not know.
    UnknownKind(u32),
    /// Captured lengths that do not fit the record.
    BadLength { kind: u32, len: usize },
}

/// A decoded ring-buffer record, borrowing captured bytes from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Proc(EventKind, ProcEvent),
    Conn(EventKind, ConnEvent),
    Data { kind: EventKind, event: DataEvent, prefix: &'a [u8], suffix: &'a [u8] },
    Fs { kind: EventKind, event: FsEvent, path1: &'a [u8], path2: &'a [u8] },
}

/// Reads a `T` from the front of `bytes` after checking the length.
fn read<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    if bytes.len() < core::mem::size_of::<T>() {
        return Err(DecodeError::Short { kind, len: bytes.len() });
    }
    // SAFETY: length checked above; T is a #[repr(C)] struct of integers for
    // which every bit pattern is valid; read_unaligned needs no alignment.
    Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

impl<'a> Event<'a> {
    /// Decodes one record as it came out of a ring buffer.
    pub fn decode(bytes: &'a [u8]) -> Result<Event<'a>, DecodeError> {
        let header: EventHeader = read(bytes, 0)?;
        let kind = EventKind::try_from(header.kind).map_err(DecodeError::UnknownKind)?;
        match kind {
            EventKind::ProcFork | EventKind::ProcExec | EventKind::ProcExit => {
                Ok(Event::Proc(kind, read(bytes, header.kind)?))
            }
            EventKind::SockConnect | EventKind::SockAccept | EventKind::SockClose | EventKind::TlsClose => {
                Ok(Event::Conn(kind, read(bytes, header.kind)?))
            }
            EventKind::SockData | EventKind::TlsData => {
                let event: DataEvent = read(bytes, header.kind)?;
                let start = core::mem::size_of::<DataEvent>();
                let mid = start + event.prefix_len as usize;
                let end = mid + event.suffix_len as usize;
                if end > bytes.len()
                    || event.prefix_len as u64 + event.suffix_len as u64 > event.header.ret.max(0) as u64
                {
                    return Err(DecodeError::BadLength { kind: header.kind, len: bytes.len() });
                }
                Ok(Event::Data { kind, event, prefix: &bytes[start..mid], suffix: &bytes[mid..end] })
            }
            EventKind::FsOpen | EventKind::FsRename | EventKind::FsUnlink => {
                let event: FsEvent = read(bytes, header.kind)?;
                let start = core::mem::size_of::<FsEvent>();
                let mid = start + event.path1_len as usize;
                let end = mid + event.path2_len as usize;
                if end > bytes.len() {
                    return Err(DecodeError::BadLength { kind: header.kind, len: bytes.len() });
                }
                Ok(Event::Fs { kind, event, path1: &bytes[start..mid], path2: &bytes[mid..end] })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> &[u8] {
        // SAFETY: test-only view of a plain struct's bytes.
        unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), core::mem::size_of::<T>()) }
    }

    #[test]
    fn proc_event_round_trips() {
        let ev = ProcEvent {
            header: EventHeader {
                kind: EventKind::ProcFork as u32,
                tgid: 10,
                tid: 11,
                fd: -1,
                ts_ns: 5,
                ..Default::default()
            },
            root_tgid: 10,
            child_tgid: 12,
        };
        assert_eq!(Event::decode(bytes_of(&ev)), Ok(Event::Proc(EventKind::ProcFork, ev)));
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        let ev = ProcEvent {
            header: EventHeader { kind: EventKind::ProcExit as u32, ..Default::default() },
            ..Default::default()
        };
        let b = bytes_of(&ev);
        assert_eq!(Event::decode(&b[..20]), Err(DecodeError::Short { kind: 0, len: 20 }));
        assert_eq!(Event::decode(&b[..44]), Err(DecodeError::Short { kind: 3, len: 44 }));
        let mut bad = ev;
        bad.header.kind = 99;
        assert_eq!(Event::decode(bytes_of(&bad)), Err(DecodeError::UnknownKind(99)));
    }

    fn data_record(prefix: &[u8], suffix: &[u8], ret: i64) -> std::vec::Vec<u8> {
        let ev = DataEvent {
            header: EventHeader { kind: EventKind::SockData as u32, ret, ..Default::default() },
            prefix_len: prefix.len() as u32,
            suffix_len: suffix.len() as u32,
            ..Default::default()
        };
        let mut v = bytes_of(&ev).to_vec();
        v.extend_from_slice(prefix);
        v.extend_from_slice(suffix);
        v
    }

    #[test]
    fn data_event_carries_prefix_and_suffix() {
        let rec = data_record(b"GET / HTTP/1.1\r\n", b"end", 10_000);
        match Event::decode(&rec).unwrap() {
            Event::Data { event, prefix, suffix, .. } => {
                assert_eq!(event.header.ret, 10_000);
                assert_eq!(prefix, b"GET / HTTP/1.1\r\n");
                assert_eq!(suffix, b"end");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fs_event_carries_two_paths() {
        let ev = FsEvent {
            header: EventHeader { kind: EventKind::FsRename as u32, ..Default::default() },
            path1_len: 3,
            path2_len: 4,
            ..Default::default()
        };
        let mut rec = bytes_of(&ev).to_vec();
        rec.extend_from_slice(b"a.qb.pq");
        match Event::decode(&rec).unwrap() {
            Event::Fs { kind, path1, path2, .. } => {
                assert_eq!(kind, EventKind::FsRename);
                assert_eq!((path1, path2), (&b"a.q"[..], &b"b.pq"[..]));
            }
            other => panic!("{other:?}"),
        }
        rec.pop();
        assert!(matches!(Event::decode(&rec), Err(DecodeError::BadLength { .. })));
    }

    #[test]
    fn data_event_lengths_are_checked() {
        let mut rec = data_record(b"abcdef", b"", 6);
        rec.truncate(rec.len() - 1);
        assert!(matches!(Event::decode(&rec), Err(DecodeError::BadLength { .. })));
        // More captured than the syscall moved.
        let rec = data_record(b"abcdef", b"", 3);
        assert!(matches!(Event::decode(&rec), Err(DecodeError::BadLength { .. })));
    }
}
