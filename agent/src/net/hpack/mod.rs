//! HPACK (RFC 7541) decoding of what the agent reads from a header block:
//! `:method`, `:path`, `:status` and a correlation id. Every other field is
//! followed only as far as the dynamic table needs (its decoded length when
//! it is indexed), never copied.
//!
//! Bounded by design: the dynamic table never exceeds the peer's
//! SETTINGS_HEADER_TABLE_SIZE nor [`HPACK_MAX_TABLE`] (a size update above
//! either is an error, not an allocation); a block decodes at most a given
//! number of fields; values are kept cut to what the agent uses; Huffman
//! decoding is table driven, linear in the bytes.

mod huffman;
mod table;

use crate::net::limits::{HPACK_MAX_TABLE, MAX_METHOD, MAX_PATH};

use self::table::Table;

/// The dynamic table size both peers start with (RFC 7540 §6.5.2).
pub const DEFAULT_TABLE: usize = 4096;
pub use crate::net::limits::MAX_REQUEST_ID;

/// The fields the agent reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Method,
    Path,
    Status,
    /// `x-request-id`.
    RequestId,
    /// `x-correlation-id`.
    CorrelationId,
    /// `traceparent` (W3C trace context).
    TraceParent,
    Other,
}

impl Field {
    fn of_name(name: &[u8]) -> Field {
        match name {
            b":method" => Field::Method,
            b":path" => Field::Path,
            b":status" => Field::Status,
            b"x-request-id" => Field::RequestId,
            b"x-correlation-id" => Field::CorrelationId,
            b"traceparent" => Field::TraceParent,
            _ => Field::Other,
        }
    }

    /// Bytes of a value kept: enough to tell a value too long for its use.
    fn keep(self) -> usize {
        match self {
            Field::Method => MAX_METHOD + 1,
            Field::Path => MAX_PATH + 1,
            Field::Status => 4,
            Field::RequestId | Field::CorrelationId | Field::TraceParent => MAX_REQUEST_ID + 1,
            Field::Other => 0,
        }
    }

    fn wanted(self, value: &[u8]) -> bool {
        match self {
            Field::Other => false,
            Field::RequestId | Field::CorrelationId | Field::TraceParent => value.len() <= MAX_REQUEST_ID,
            _ => true,
        }
    }
}

/// Longest field name the agent reads (`x-correlation-id`).
const LONGEST_NAME: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HpackError {
    /// Not a valid block: cut short, an integer out of range, a size update
    /// after a field, or an index outside the tables.
    Malformed,
    /// A Huffman-coded string no encoder could produce.
    Huffman,
    /// A dynamic table size update above what the decoder allows (the
    /// peer's setting, capped at [`HPACK_MAX_TABLE`]).
    TableSize,
    /// More fields than the block may hold.
    TooManyFields,
}

impl From<huffman::InvalidHuffman> for HpackError {
    fn from(_: huffman::InvalidHuffman) -> HpackError {
        HpackError::Huffman
    }
}

/// One direction's decoder: its dynamic table mirrors the encoder's.
pub struct Decoder {
    table: Table,
    /// Largest size update accepted.
    allowed: usize,
    /// Scratch for decoded names and values (at most `MAX_PATH + 1` bytes).
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder { table: Table::new(DEFAULT_TABLE), allowed: DEFAULT_TABLE, name: Vec::new(), value: Vec::new() }
    }
}

/// Reads a string: its decoded length, and its first `keep` bytes into `out`.
/// With `keep == 0` and no need for the length, it is skipped undecoded.
fn string(buf: &[u8], pos: &mut usize, keep: usize, need_len: bool, out: &mut Vec<u8>) -> Result<usize, HpackError> {
    let huffman = *buf.get(*pos).ok_or(HpackError::Malformed)? & 0x80 != 0;
    let len = integer(buf, pos, 7)?;
    let raw = buf.get(*pos..*pos + len).ok_or(HpackError::Malformed)?;
    *pos += len;
    out.clear();
    if !huffman {
        out.extend_from_slice(&raw[..len.min(keep)]);
        return Ok(len);
    }
    if keep == 0 && !need_len {
        return Ok(0);
    }
    let mut n = 0;
    huffman::decode(raw, |b| {
        if n < keep {
            out.push(b);
        }
        n += 1;
    })?;
    Ok(n)
}

/// An integer with an `prefix`-bit prefix (RFC 7541 §5.1), at most 2^28:
/// larger than any length in a block the agent reads.
fn integer(buf: &[u8], pos: &mut usize, prefix: u32) -> Result<usize, HpackError> {
    let mask = (1u8 << prefix) - 1;
    let first = *buf.get(*pos).ok_or(HpackError::Malformed)? & mask;
    *pos += 1;
    if first < mask {
        return Ok(usize::from(first));
    }
    let mut value = usize::from(mask);
    for shift in (0..=21).step_by(7) {
        let b = *buf.get(*pos).ok_or(HpackError::Malformed)?;
        *pos += 1;
        value += usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(HpackError::Malformed)
}

impl Decoder {
    /// The peer that reads this direction announced SETTINGS_HEADER_TABLE_SIZE:
    /// the encoder may grow its table up to it, the decoder follows up to
    /// [`HPACK_MAX_TABLE`].
    pub fn allow(&mut self, setting: u32) {
        self.allowed = usize::try_from(setting).unwrap_or(usize::MAX).min(HPACK_MAX_TABLE);
    }

    /// Heap bytes held.
    pub fn held(&self) -> usize {
        self.table.held() + self.name.capacity() + self.value.capacity()
    }

    /// Decodes one whole header block of at most `max_fields` fields, handing
    /// each field the agent reads to `f`. After an error the table no longer
    /// mirrors the encoder's: the caller stops trusting this direction.
    pub fn decode(
        &mut self,
        block: &[u8],
        max_fields: usize,
        mut f: impl FnMut(Field, &[u8]),
    ) -> Result<(), HpackError> {
        let mut pos = 0;
        let mut fields = 0;
        while pos < block.len() {
            let first = block[pos];
            if first & 0xe0 == 0x20 {
                // A dynamic table size update: only before the first field.
                let size = integer(block, &mut pos, 5)?;
                if fields > 0 {
                    return Err(HpackError::Malformed);
                }
                if size > self.allowed {
                    return Err(HpackError::TableSize);
                }
                self.table.resize(size);
                continue;
            }
            fields += 1;
            if fields > max_fields {
                return Err(HpackError::TooManyFields);
            }
            if first & 0x80 != 0 {
                let index = integer(block, &mut pos, 7)?;
                let found = self.table.get(index).ok_or(HpackError::Malformed)?;
                if let Some(v) = found.value.filter(|v| found.field.wanted(v)) {
                    f(found.field, v);
                }
                continue;
            }
            let indexed = first & 0xc0 == 0x40;
            let index = integer(block, &mut pos, if indexed { 6 } else { 4 })?;
            let (field, name_len) = if index == 0 {
                let n = string(block, &mut pos, LONGEST_NAME + 1, indexed, &mut self.name)?;
                (Field::of_name(&self.name), n)
            } else {
                let found = self.table.get(index).ok_or(HpackError::Malformed)?;
                (found.field, found.name_len)
            };
            let value_len = string(block, &mut pos, field.keep(), indexed, &mut self.value)?;
            if field.wanted(&self.value) {
                f(field, &self.value);
            }
            if indexed {
                let kept = (field != Field::Other).then(|| self.value.clone().into_boxed_slice());
                self.table.insert(field, kept, name_len, value_len);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
