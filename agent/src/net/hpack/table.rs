//! HPACK's static and dynamic tables (RFC 7541 §2.3, Appendix A), holding
//! only what the agent reads: which of its fields an entry's name is, and
//! the value for those fields. Entry sizes follow the RFC (name + value +
//! 32), so evictions happen exactly where the peers' happen.

use std::collections::VecDeque;

use crate::net::hpack::Field;

/// RFC 7541 Appendix A: entries 1..=61.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// What the RFC counts for an entry beyond its name and value.
const ENTRY_OVERHEAD: usize = 32;

struct Entry {
    field: Field,
    /// The value, for fields the agent reads (cut to what it keeps).
    value: Option<Box<[u8]>>,
    name_len: usize,
    /// Size as the RFC counts it.
    size: usize,
}

/// What a table index refers to.
pub struct Found<'a> {
    pub field: Field,
    pub value: Option<&'a [u8]>,
    pub name_len: usize,
}

pub struct Table {
    /// Newest first: index 62 is `dynamic[0]`.
    dynamic: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    /// Bytes of values kept.
    kept: usize,
}

impl Table {
    pub fn new(max_size: usize) -> Table {
        Table { dynamic: VecDeque::new(), size: 0, max_size, kept: 0 }
    }

    pub fn get(&self, index: usize) -> Option<Found<'_>> {
        if index == 0 {
            return None;
        }
        if let Some((name, value)) = STATIC.get(index - 1) {
            let field = Field::of_name(name.as_bytes());
            return Some(Found { field, value: Some(value.as_bytes()), name_len: name.len() });
        }
        let e = self.dynamic.get(index - STATIC.len() - 1)?;
        Some(Found { field: e.field, value: e.value.as_deref(), name_len: e.name_len })
    }

    /// Adds an entry of RFC size `name_len + value_len + 32`, evicting the
    /// oldest to make room; one larger than the whole table empties it.
    pub fn insert(&mut self, field: Field, value: Option<Box<[u8]>>, name_len: usize, value_len: usize) {
        let size = name_len + value_len + ENTRY_OVERHEAD;
        self.evict_to(self.max_size.saturating_sub(size));
        if size > self.max_size {
            return;
        }
        self.kept += value.as_ref().map_or(0, |v| v.len());
        self.size += size;
        self.dynamic.push_front(Entry { field, value, name_len, size });
    }

    /// A dynamic table size update (already checked against what is allowed).
    pub fn resize(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            let Some(e) = self.dynamic.pop_back() else { break };
            self.size -= e.size;
            self.kept -= e.value.as_ref().map_or(0, |v| v.len());
        }
    }

    /// Heap bytes held: entries and the values kept.
    pub fn held(&self) -> usize {
        self.dynamic.capacity() * std::mem::size_of::<Entry>() + self.kept
    }

    #[cfg(test)]
    pub fn size(&self) -> usize {
        self.size
    }
}
