//! User-side view of the ABI: `aya::Pod` and decoding of untrusted ring-buffer bytes.

use super::{EventHeader, EventKind, ProcEvent, Target, TracepointOffsets};

// SAFETY: plain #[repr(C)] integers with no padding (sizes asserted).
unsafe impl aya::Pod for Target {}
// SAFETY: as above.
unsafe impl aya::Pod for TracepointOffsets {}

/// Why a ring-buffer record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the struct its kind announces.
    Short { kind: u32, len: usize },
    /// A kind this agent does not know.
    UnknownKind(u32),
}

/// A decoded ring-buffer record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Proc(EventKind, ProcEvent),
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

impl Event {
    /// Decodes one record as it came out of a ring buffer.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        let header: EventHeader = read(bytes, 0)?;
        let kind = EventKind::try_from(header.kind).map_err(DecodeError::UnknownKind)?;
        match kind {
            EventKind::ProcFork | EventKind::ProcExec | EventKind::ProcExit => {
                Ok(Event::Proc(kind, read(bytes, header.kind)?))
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
}
