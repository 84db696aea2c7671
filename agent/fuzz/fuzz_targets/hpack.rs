//! The agent's HPACK decoder against an independent one (`loona-hpack`) on
//! the same sequence of header blocks: whenever both decode a block, they
//! agree on every field the agent reads (cut as the agent keeps them), and
//! the agent's decoder never holds more than its caps allow. The agent's is
//! stricter (table size within the reader's setting and its cap, size
//! updates only first, a field cap): once it refuses a block the two tables
//! may differ, and the comparison stops.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pywats_agent::net::{
    hpack::{Decoder, Field, MAX_REQUEST_ID},
    limits::{HPACK_MAX_TABLE, H2_MAX_HEADER_FIELDS, MAX_METHOD, MAX_PATH},
};

/// A field as the agent keeps it, from a name and value another decoder gave.
fn kept(name: &[u8], value: &[u8]) -> Option<(Field, Vec<u8>)> {
    let (field, keep) = match name {
        b":method" => (Field::Method, MAX_METHOD + 1),
        b":path" => (Field::Path, MAX_PATH + 1),
        b":status" => (Field::Status, 4),
        b"x-request-id" if value.len() <= MAX_REQUEST_ID => (Field::RequestId, MAX_REQUEST_ID),
        b"x-correlation-id" if value.len() <= MAX_REQUEST_ID => (Field::CorrelationId, MAX_REQUEST_ID),
        b"traceparent" if value.len() <= MAX_REQUEST_ID => (Field::TraceParent, MAX_REQUEST_ID),
        _ => return None,
    };
    Some((field, value[..value.len().min(keep)].to_vec()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&setting, mut rest)) = data.split_first() else { return };
    let mut ours = Decoder::default();
    // The reader's SETTINGS_HEADER_TABLE_SIZE: the default, or up to 255 KiB.
    if setting != 0 {
        ours.allow(u32::from(setting) * 1024);
    }
    let mut theirs = loona_hpack::Decoder::new();
    // Blocks, each behind a two-byte length.
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (block, after) = rest[2..].split_at(len);
        rest = after;
        let mut mine = Vec::new();
        let decoded = ours.decode(block, H2_MAX_HEADER_FIELDS, |f, v| mine.push((f, v.to_vec())));
        // Entries (at least 32 bytes of table each, a slot of 40 in a deque
        // that at most doubles) and the values kept.
        assert!(ours.held() <= 4 * HPACK_MAX_TABLE, "{} held", ours.held());
        let Ok(headers) = theirs.decode(block) else { return };
        if decoded.is_err() {
            return;
        }
        let want: Vec<(Field, Vec<u8>)> = headers.iter().filter_map(|(n, v)| kept(n, v)).collect();
        assert_eq!(mine, want, "block {block:x?}");
    }
});
