//! The `id` of a WSJF report, read from the first bytes of its upload
//! (`POST /api/Report/WSJF`), so that a slow upload's exemplar names the
//! report. pyWATS serialises the report with `id` as its first key.
//!
//! The scanner is fed the body as it arrives and keeps no copy of it: a
//! JSON tokenizer with a depth, the key being read (at most `id`'s length)
//! and the value (at most [`MAX_REQUEST_ID`] + 1 bytes). It gives up at the
//! first byte that is not what a top-level `"id": "…"` needs, at a gap in
//! the captured bytes, or past [`SCAN_BYTES`]. The value must pass
//! [`report::request_id`]: nothing else of the body leaves the agent.

use crate::net::{limits::MAX_REQUEST_ID, report};

/// Body bytes looked at: the first capture of a socket write is 4 KiB.
pub const SCAN_BYTES: usize = 4096;

const UPLOAD_PATH: &str = "/api/Report/WSJF";

/// Whether a request is a report upload whose body is worth scanning.
pub fn is_upload(method: &str, path: &str) -> bool {
    method == "POST" && path.eq_ignore_ascii_case(UPLOAD_PATH)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Whitespace, then `{`.
    Object,
    /// Inside the top-level object: the next string is a key.
    Key,
    /// After a top-level key other than `id`: skip its value.
    Other,
    /// After the key `id`: `:` then a string.
    Colon,
    IdValue,
}

#[derive(Clone, Debug)]
pub struct ReportIdScan {
    scanned: usize,
    expect: Expect,
    /// Nesting depth inside the top-level object's values.
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The key or the id value being read.
    text: Vec<u8>,
    done: bool,
    found: Option<String>,
}

impl Default for ReportIdScan {
    fn default() -> ReportIdScan {
        ReportIdScan {
            scanned: 0,
            expect: Expect::Object,
            depth: 0,
            in_string: false,
            escaped: false,
            text: Vec::new(),
            done: false,
            found: None,
        }
    }
}

impl ReportIdScan {
    /// The next body bytes, in order.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.done {
                return;
            }
            self.scanned += 1;
            if self.scanned > SCAN_BYTES {
                return self.stop();
            }
            self.byte(b);
        }
    }

    /// Bytes went by uncaptured or lost: what follows is not contiguous.
    pub fn stop(&mut self) {
        self.done = true;
        self.text = Vec::new();
    }

    /// The id, once read.
    pub fn take(&mut self) -> Option<String> {
        self.found.take()
    }

    /// Heap bytes held.
    pub fn held(&self) -> usize {
        self.text.capacity() + self.found.as_ref().map_or(0, String::capacity)
    }

    fn byte(&mut self, b: u8) {
        if self.in_string {
            return self.string_byte(b);
        }
        if b.is_ascii_whitespace() {
            return;
        }
        match (self.expect, b) {
            (Expect::Object, b'{') => self.expect = Expect::Key,
            (Expect::Key, b'"') => self.open_string(),
            (Expect::Colon, b':') => self.expect = Expect::IdValue,
            (Expect::IdValue, b'"') => self.open_string(),
            (Expect::Other, _) => self.skip_value(b),
            // Anything else: not a report whose id comes in a way read here.
            _ => self.stop(),
        }
    }

    /// A byte of another key's value: strings, nesting, and the `,` that
    /// ends it at the top level.
    fn skip_value(&mut self, b: u8) {
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' if self.depth == 0 => self.stop(),
            b'}' | b']' => self.depth -= 1,
            b',' if self.depth == 0 => self.expect = Expect::Key,
            _ => {}
        }
    }

    fn open_string(&mut self) {
        self.in_string = true;
        self.text.clear();
    }

    fn string_byte(&mut self, b: u8) {
        let reading = matches!(self.expect, Expect::Key | Expect::IdValue);
        if self.escaped {
            self.escaped = false;
            // Ids have no escapes; a key with one is not `id`.
            if reading {
                self.text.push(0);
            }
            return;
        }
        match b {
            b'\\' => self.escaped = true,
            b'"' => {
                self.in_string = false;
                self.close_string();
            }
            _ if reading && self.text.len() <= MAX_REQUEST_ID => self.text.push(b),
            _ => {}
        }
    }

    fn close_string(&mut self) {
        match self.expect {
            Expect::Key => self.expect = if self.text == b"id" { Expect::Colon } else { Expect::Other },
            Expect::IdValue => {
                self.found = report::request_id(&self.text);
                self.stop();
            }
            // A string inside a skipped value.
            _ => {}
        }
        if self.expect == Expect::Other {
            self.text.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(pieces: &[&[u8]]) -> Option<String> {
        let mut s = ReportIdScan::default();
        for p in pieces {
            s.feed(p);
        }
        s.take()
    }

    #[test]
    fn the_id_of_a_pywats_report() {
        // As pyWATS 0.6.0rc1 serialises a UUT report (model_dump by alias), through httpx.
        let body = br#"{"id": "673a9756-e0d9-4455-8270-da7cf968b648", "type": "T", "pn": "PN-E2E", "sn": "SN1"}"#;
        assert_eq!(scan(&[body]).as_deref(), Some("673a9756-e0d9-4455-8270-da7cf968b648"));
        let compact =
            br#"{"type":"T","uut":{"id":"nested","x":[1,{"id":"deeper"}]},"note":"a \"quoted\", id","id":"r-2"}"#;
        assert_eq!(scan(&[compact]).as_deref(), Some("r-2"));
    }

    #[test]
    fn an_id_split_across_writes_is_read() {
        let body = br#"{ "id" : "0b8f2c1e-6d7a-4c5b-9e3f-2a1b0c9d8e7f" }"#;
        for cut in 0..body.len() {
            let (a, b) = body.split_at(cut);
            assert_eq!(scan(&[a, b]).as_deref(), Some("0b8f2c1e-6d7a-4c5b-9e3f-2a1b0c9d8e7f"), "cut at {cut}");
        }
    }

    #[test]
    fn what_is_not_an_id_stays_in_the_agent() {
        for body in [
            &br#"{"id": "has space"}"#[..],
            br#"{"id": "<script>"}"#,
            br#"{"id": 42}"#,
            br#"{"id": "esc\"aped"}"#,
            br#"{"i\u0064": "r-1"}"#,
            br#"["id", "r-1"]"#,
            br#"{"uut": {"id": "nested"}}"#,
            b"id=r-1",
            b"",
        ] {
            assert_eq!(scan(&[body]), None, "{}", String::from_utf8_lossy(body));
        }
        let long = format!(r#"{{"id": "{}"}}"#, "x".repeat(MAX_REQUEST_ID + 1));
        assert_eq!(scan(&[long.as_bytes()]), None);
    }

    #[test]
    fn only_the_first_bytes_are_read_and_a_gap_ends_the_scan() {
        let filler = format!(r#"{{"misc": "{}", "id": "late"}}"#, "x".repeat(SCAN_BYTES));
        assert_eq!(scan(&[filler.as_bytes()]), None);
        let mut s = ReportIdScan::default();
        s.feed(br#"{"misc": "a", "#);
        s.stop();
        s.feed(br#""id": "r-1"}"#);
        assert_eq!(s.take(), None);
        assert!(s.held() <= MAX_REQUEST_ID + 1);
    }

    #[test]
    fn only_report_uploads_are_scanned() {
        assert!(is_upload("POST", "/api/Report/WSJF"));
        assert!(is_upload("POST", "/api/report/wsjf"));
        assert!(!is_upload("GET", "/api/Report/WSJF"));
        assert!(!is_upload("POST", "/api/Report/Wsjf/123"));
    }
}
