//! HTTP/1.x framing over captured syscall chunks.
//!
//! Each direction of a connection is one [`StreamParser`]. A chunk is what one
//! syscall moved: its true length plus a captured prefix and suffix, with an
//! unknown gap between them when the buffer was larger than the capture. Heads
//! are parsed with `httparse`; bodies are framed by Content-Length or chunked
//! encoding using the true lengths, so a gap inside a body never breaks
//! framing. When chunk-size lines fall into a gap, the parser goes "blind" and
//! ends the body at the `0\r\n\r\n` terminator seen at the end of a read.

use std::hash::Hasher;

use crate::net::{
    limits::{extend_within, Limit, HTTP1_MAX_HEAD as MAX_HEAD},
    report::{kept_method, kept_path, Correlation, CorrelationHeaders, ParseError},
    report_id::{self, ReportIdScan},
};

/// Request body bytes hashed into the retry digest.
const DIGEST_BODY: u64 = 4096;
const MAX_HEADERS: usize = 64;

/// One syscall's worth of a stream.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    pub prefix: &'a [u8],
    pub suffix: &'a [u8],
    /// True byte count of the syscall.
    pub len: u64,
    pub ts_ns: u64,
}

impl<'a> Chunk<'a> {
    /// A chunk captured whole.
    pub fn whole(bytes: &'a [u8], ts_ns: u64) -> Chunk<'a> {
        Chunk { prefix: bytes, suffix: &[], len: bytes.len() as u64, ts_ns }
    }
}

/// What the stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Requests,
    Responses,
}

/// The head of a complete message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head {
    Request { method: String, path: String },
    Response { code: u16 },
}

/// A complete message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub head: Head,
    pub head_bytes: u64,
    pub body_bytes: u64,
    /// Time of the syscall that carried the first byte.
    pub first_ts_ns: u64,
    /// Time of the syscall that carried the last byte.
    pub last_ts_ns: u64,
    /// A request's correlation id or trace id, else (a report upload) its report's id.
    pub correlation: Option<Correlation>,
    /// Hash of the body's first bytes and its length (requests; for retries).
    pub body_digest: u64,
    /// The peer asked to close the connection after this message.
    pub close: bool,
}

impl Message {
    /// Heap bytes held.
    pub fn held(&self) -> usize {
        let head = match &self.head {
            Head::Request { method, path } => method.capacity() + path.capacity(),
            Head::Response { .. } => 0,
        };
        std::mem::size_of::<Message>() + head + self.correlation.as_ref().map_or(0, Correlation::held)
    }
}

/// Where parsed messages go; the connection implements it.
pub trait Sink {
    /// For a response head: whether the request it answers was `HEAD` (so it has no body).
    fn answers_head(&mut self) -> bool;
    fn message(&mut self, message: Message);
    fn error(&mut self, error: ParseError);
    /// A cap refused a message (it is skipped, as after an error).
    fn limit(&mut self, limit: Limit);
}

#[derive(Debug)]
enum ChunkState {
    Size(Vec<u8>),
    Data(u64),
    DataEnd(u8),
    Trailer(Vec<u8>),
    /// A chunk-size line fell into a gap: wait for the terminator.
    Blind,
}

#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(ChunkState),
    UntilClose,
}

#[derive(Debug)]
enum State {
    /// Expecting a message head.
    Start,
    Head(Vec<u8>),
    Body(Framing),
    /// Lost track: skip until a syscall starts with a message head.
    Unsynced,
}

#[derive(Debug)]
pub struct StreamParser {
    kind: Kind,
    state: State,
    /// The message being read (head parsed).
    current: Option<Message>,
    digest: std::collections::hash_map::DefaultHasher,
    digested: u64,
    /// A report upload's body being read for its id.
    report_id: Option<ReportIdScan>,
    /// Last known bytes that end where the stream is now (for the blind terminator).
    tail: Vec<u8>,
    head_started_ts: u64,
    /// Bytes skipped while unsynced.
    pub skipped: u64,
}

fn is_request_start(b: &[u8]) -> bool {
    let Some(sp) = b.iter().take(16).position(|&c| c == b' ') else {
        return false;
    };
    sp > 0
        && b[..sp].iter().all(|c| c.is_ascii_uppercase())
        && b.get(sp + 1).is_some_and(|&c| c == b'/' || c == b'h' || c == b'*')
}

fn is_response_start(b: &[u8]) -> bool {
    b.starts_with(b"HTTP/1.")
}

/// Whether `b` looks like the start of a message of `kind` (used to resync).
pub fn starts_message(kind: Kind, b: &[u8]) -> bool {
    match kind {
        Kind::Requests => is_request_start(b),
        Kind::Responses => is_response_start(b),
    }
}

fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    buf[from.saturating_sub(3)..].windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + from.saturating_sub(3) + 4)
}

impl StreamParser {
    pub fn new(kind: Kind) -> StreamParser {
        StreamParser {
            kind,
            state: State::Start,
            current: None,
            digest: Default::default(),
            digested: 0,
            report_id: None,
            tail: Vec::new(),
            head_started_ts: 0,
            skipped: 0,
        }
    }

    /// A parser for a stream joined mid-way: it waits for a message start.
    pub fn unsynced(kind: Kind) -> StreamParser {
        StreamParser { state: State::Unsynced, ..StreamParser::new(kind) }
    }

    /// No message is in progress.
    pub fn idle(&self) -> bool {
        matches!(self.state, State::Start)
    }

    pub fn is_unsynced(&self) -> bool {
        matches!(self.state, State::Unsynced)
    }

    /// Heap bytes held: a head, chunk line or trailer being read, the message in progress.
    pub fn held(&self) -> usize {
        let partial = match &self.state {
            State::Head(b) | State::Body(Framing::Chunked(ChunkState::Size(b) | ChunkState::Trailer(b))) => {
                b.capacity()
            }
            _ => 0,
        };
        partial
            + self.tail.capacity()
            + self.current.as_ref().map_or(0, Message::held)
            + self.report_id.as_ref().map_or(0, ReportIdScan::held)
    }

    /// Feeds one syscall's bytes.
    pub fn feed(&mut self, chunk: &Chunk<'_>, sink: &mut dyn Sink) {
        if let State::Unsynced = self.state {
            if starts_message(self.kind, chunk.prefix) {
                self.state = State::Start;
            } else {
                self.skipped += chunk.len;
                return;
            }
        }
        let known = chunk.prefix.len() as u64 + chunk.suffix.len() as u64;
        let gap = chunk.len.saturating_sub(known);
        self.known(chunk.prefix, chunk.ts_ns, sink);
        if gap > 0 {
            self.gap(gap, chunk.ts_ns, sink);
        }
        if !chunk.suffix.is_empty() {
            self.known(chunk.suffix, chunk.ts_ns, sink);
        }
        if let State::Body(Framing::Chunked(ChunkState::Blind)) = self.state {
            if self.tail.ends_with(b"\r\n0\r\n\r\n") || self.tail == b"0\r\n\r\n" {
                self.complete(chunk.ts_ns, sink);
            }
        }
    }

    /// The connection ended (EOF or close): a body framed by the close completes.
    pub fn end(&mut self, ts_ns: u64, sink: &mut dyn Sink) {
        if let State::Body(Framing::UntilClose) = self.state {
            self.complete(ts_ns, sink);
        }
    }

    fn push_tail(&mut self, b: &[u8]) {
        self.tail.extend_from_slice(&b[b.len().saturating_sub(16)..]);
        let excess = self.tail.len().saturating_sub(16);
        self.tail.drain(..excess);
    }

    /// The body goes on past bytes not seen: an id read after them could be anything.
    fn stop_scan(&mut self) {
        if let Some(scan) = self.report_id.as_mut() {
            scan.stop();
        }
    }

    fn desync(&mut self, error: ParseError, sink: &mut dyn Sink) {
        sink.error(error);
        self.unsync();
    }

    fn unsync(&mut self) {
        self.current = None;
        self.state = State::Unsynced;
    }

    fn complete(&mut self, ts_ns: u64, sink: &mut dyn Sink) {
        if let Some(mut m) = self.current.take() {
            m.last_ts_ns = ts_ns;
            m.body_digest = self.digest.finish() ^ m.body_bytes;
            if m.correlation.is_none() {
                m.correlation = self.report_id.as_mut().and_then(ReportIdScan::take).map(Correlation::ReportId);
            }
            sink.message(m);
        }
        self.state = State::Start;
        self.tail.clear();
    }

    fn known(&mut self, mut b: &[u8], ts: u64, sink: &mut dyn Sink) {
        while !b.is_empty() {
            match &mut self.state {
                State::Unsynced => {
                    self.skipped += b.len() as u64;
                    return;
                }
                State::Start => {
                    // Tolerate stray CRLF between messages.
                    let skip = b.iter().take_while(|c| **c == b'\r' || **c == b'\n').count();
                    b = &b[skip..];
                    if !b.is_empty() {
                        self.head_started_ts = ts;
                        self.state = State::Head(Vec::new());
                    }
                }
                State::Head(buf) => {
                    let old = buf.len();
                    let take = b.len().min(MAX_HEAD + 4 - old);
                    extend_within(buf, &b[..take], MAX_HEAD + 4);
                    match find_head_end(buf, old) {
                        Some(end) => {
                            let head = std::mem::take(buf);
                            b = &b[end - old..];
                            self.head(&head[..end], ts, sink);
                        }
                        None if buf.len() > MAX_HEAD => {
                            sink.limit(Limit::Http1Head);
                            return self.unsync();
                        }
                        None => {
                            // An early look: bytes that cannot start a message are not HTTP.
                            if buf.len() >= 8 && !starts_message(self.kind, buf) {
                                return self.desync(ParseError::Invalid, sink);
                            }
                            return;
                        }
                    }
                }
                State::Body(framing) => {
                    let n = b.len() as u64;
                    match framing {
                        Framing::Length(rem) => {
                            let k = n.min(*rem);
                            *rem -= k;
                            let done = *rem == 0;
                            self.body(&b[..k as usize], k);
                            b = &b[k as usize..];
                            if done {
                                self.complete(ts, sink);
                            }
                        }
                        Framing::UntilClose => {
                            self.body(b, n);
                            return;
                        }
                        Framing::Chunked(cs) => {
                            let (used, event) = chunked_known(cs, b);
                            let body = &b[..used];
                            b = &b[used..];
                            self.push_tail(body);
                            if let Some(m) = self.current.as_mut() {
                                m.body_bytes += used as u64;
                            }
                            match event {
                                ChunkEvent::More => {}
                                ChunkEvent::Done => self.complete(ts, sink),
                                ChunkEvent::Bad => return self.desync(ParseError::BadChunk, sink),
                            }
                        }
                    }
                }
            }
        }
    }

    fn body(&mut self, b: &[u8], n: u64) {
        if self.kind == Kind::Requests && self.digested < DIGEST_BODY {
            let k = (DIGEST_BODY - self.digested).min(b.len() as u64) as usize;
            self.digest.write(&b[..k]);
            self.digested += k as u64;
        }
        if let Some(scan) = self.report_id.as_mut() {
            scan.feed(b);
        }
        if let Some(m) = self.current.as_mut() {
            m.body_bytes += n;
        }
    }

    /// `n` bytes of the stream were lost before the next chunk (the kernel
    /// could not deliver their events). Inside a body they are skipped by
    /// length; a head, or a message end, among them is a desync: a message
    /// whose end time is unknown is not timed with a guess.
    pub fn lost(&mut self, n: u64, sink: &mut dyn Sink) {
        self.tail.clear();
        self.stop_scan();
        let inside = match &mut self.state {
            State::Unsynced => return,
            State::Body(Framing::Length(rem)) if *rem > n => {
                *rem -= n;
                true
            }
            State::Body(Framing::Chunked(ChunkState::Data(rem))) if *rem > n => {
                *rem -= n;
                true
            }
            State::Body(Framing::UntilClose) => true,
            _ => false,
        };
        if !inside {
            return self.desync(ParseError::Lost, sink);
        }
        if let Some(m) = self.current.as_mut() {
            m.body_bytes += n;
        }
    }

    /// `n` bytes not captured between a syscall's prefix and suffix.
    fn gap(&mut self, mut n: u64, ts: u64, sink: &mut dyn Sink) {
        self.tail.clear();
        self.stop_scan();
        while n > 0 {
            match &mut self.state {
                State::Unsynced => {
                    self.skipped += n;
                    return;
                }
                // A head (or the start of the next message) fell into bytes not captured.
                State::Start | State::Head(_) => {
                    self.skipped += n;
                    return self.desync(ParseError::HeadTruncated, sink);
                }
                State::Body(Framing::Length(rem)) => {
                    let k = n.min(*rem);
                    *rem -= k;
                    n -= k;
                    let done = *rem == 0;
                    if let Some(m) = self.current.as_mut() {
                        m.body_bytes += k;
                    }
                    if done {
                        self.complete(ts, sink);
                    }
                }
                State::Body(Framing::UntilClose) => {
                    if let Some(m) = self.current.as_mut() {
                        m.body_bytes += n;
                    }
                    return;
                }
                State::Body(Framing::Chunked(cs)) => {
                    let k = match cs {
                        ChunkState::Data(rem) if *rem >= n => {
                            *rem -= n;
                            n
                        }
                        _ => {
                            *cs = ChunkState::Blind;
                            n
                        }
                    };
                    n -= k;
                    if let Some(m) = self.current.as_mut() {
                        m.body_bytes += k;
                    }
                }
            }
        }
    }

    fn head(&mut self, head: &[u8], ts: u64, sink: &mut dyn Sink) {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (msg_head, parsed_headers): (Head, &[httparse::Header<'_>]) = match self.kind {
            Kind::Requests => {
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(head) {
                    Ok(httparse::Status::Complete(_)) => {}
                    _ => return self.desync(ParseError::Invalid, sink),
                }
                let (Some(method), Some(path)) = (req.method, req.path) else {
                    return self.desync(ParseError::Invalid, sink);
                };
                let head = Head::Request { method: kept_method(method.as_bytes()), path: kept_path(path.as_bytes()) };
                (head, req.headers)
            }
            Kind::Responses => {
                let mut res = httparse::Response::new(&mut headers);
                match res.parse(head) {
                    Ok(httparse::Status::Complete(_)) => {}
                    _ => return self.desync(ParseError::Invalid, sink),
                }
                let Some(code) = res.code else {
                    return self.desync(ParseError::Invalid, sink);
                };
                (Head::Response { code }, res.headers)
            }
        };
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut close = false;
        let mut correlation = CorrelationHeaders::default();
        for h in parsed_headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(h.value).ok().and_then(|s| s.trim().parse::<u64>().ok());
                match (v, length) {
                    (Some(v), None) => length = Some(v),
                    (Some(v), Some(prev)) if v == prev => {}
                    _ => return self.desync(ParseError::BadLength, sink),
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = h.value.to_ascii_lowercase().windows(7).any(|w| w == b"chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = h.value.eq_ignore_ascii_case(b"close");
            } else {
                correlation.offer(name.as_bytes(), h.value);
            }
        }
        let framing = match &msg_head {
            // 1xx are interim: the final response follows on the same stream.
            Head::Response { code } if (100..200).contains(code) && *code != 101 => {
                self.state = State::Start;
                return;
            }
            Head::Response { code } if *code == 204 || *code == 304 || sink.answers_head() => None,
            _ if chunked => Some(Framing::Chunked(ChunkState::Size(Vec::new()))),
            _ => match (length, &msg_head) {
                (Some(0), _) | (None, Head::Request { .. }) => None,
                (Some(n), _) => Some(Framing::Length(n)),
                (None, Head::Response { .. }) => Some(Framing::UntilClose),
            },
        };
        self.digest = Default::default();
        self.digested = 0;
        self.report_id = match &msg_head {
            Head::Request { method, path } if report_id::is_upload(method, path) => Some(ReportIdScan::default()),
            _ => None,
        };
        self.current = Some(Message {
            head: msg_head,
            head_bytes: head.len() as u64,
            body_bytes: 0,
            first_ts_ns: self.head_started_ts,
            last_ts_ns: ts,
            correlation: correlation.correlation(),
            body_digest: 0,
            close,
        });
        match framing {
            None => self.complete(ts, sink),
            Some(f) => self.state = State::Body(f),
        }
    }
}

enum ChunkEvent {
    More,
    Done,
    Bad,
}

/// Advances chunked framing over known bytes; returns how many were used.
fn chunked_known(cs: &mut ChunkState, b: &[u8]) -> (usize, ChunkEvent) {
    let mut i = 0;
    while i < b.len() {
        match cs {
            ChunkState::Size(line) => {
                let Some(nl) = b[i..].iter().position(|&c| c == b'\n') else {
                    line.extend_from_slice(&b[i..]);
                    if line.len() > 1024 {
                        return (b.len(), ChunkEvent::Bad);
                    }
                    return (b.len(), ChunkEvent::More);
                };
                line.extend_from_slice(&b[i..i + nl + 1]);
                i += nl + 1;
                let size = match httparse::parse_chunk_size(line) {
                    Ok(httparse::Status::Complete((_, size))) => size,
                    _ => return (i, ChunkEvent::Bad),
                };
                *cs = if size == 0 { ChunkState::Trailer(Vec::new()) } else { ChunkState::Data(size) };
            }
            ChunkState::Data(rem) => {
                let k = (*rem).min((b.len() - i) as u64);
                *rem -= k;
                i += k as usize;
                if *rem == 0 {
                    *cs = ChunkState::DataEnd(2);
                }
            }
            ChunkState::DataEnd(left) => {
                *left -= 1;
                i += 1;
                if *left == 0 {
                    *cs = ChunkState::Size(Vec::new());
                }
            }
            ChunkState::Trailer(buf) => {
                buf.push(b[i]);
                i += 1;
                if buf.as_slice() == b"\r\n" || buf.ends_with(b"\r\n\r\n") {
                    return (i, ChunkEvent::Done);
                }
                if buf.len() > MAX_HEAD {
                    return (i, ChunkEvent::Bad);
                }
            }
            ChunkState::Blind => return (b.len(), ChunkEvent::More),
        }
    }
    (i, ChunkEvent::More)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        head: bool,
        messages: Vec<Message>,
        errors: Vec<ParseError>,
        limits: Vec<Limit>,
    }

    impl Sink for Collect {
        fn answers_head(&mut self) -> bool {
            self.head
        }
        fn message(&mut self, m: Message) {
            self.messages.push(m);
        }
        fn error(&mut self, e: ParseError) {
            self.errors.push(e);
        }
        fn limit(&mut self, l: Limit) {
            self.limits.push(l);
        }
    }

    fn feed_all(p: &mut StreamParser, parts: &[&[u8]], sink: &mut Collect) {
        for (i, part) in parts.iter().enumerate() {
            p.feed(&Chunk::whole(part, i as u64 + 1), sink);
        }
    }

    fn code(m: &Message) -> u16 {
        match m.head {
            Head::Response { code } => code,
            _ => panic!("not a response"),
        }
    }

    #[test]
    fn request_split_byte_by_byte() {
        let req = b"POST /api/Report/WSJF HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let mut p = StreamParser::new(Kind::Requests);
        let mut s = Collect::default();
        let parts: Vec<&[u8]> = req.chunks(1).collect();
        feed_all(&mut p, &parts, &mut s);
        assert_eq!(s.errors, []);
        assert_eq!(s.messages.len(), 1);
        let m = &s.messages[0];
        assert_eq!(m.head, Head::Request { method: "POST".into(), path: "/api/Report/WSJF".into() });
        assert_eq!(m.body_bytes, 5);
        assert_eq!(m.first_ts_ns, 1);
        assert_eq!(m.last_ts_ns, req.len() as u64);
        assert!(p.idle());
    }

    #[test]
    fn keep_alive_requests_in_one_write_and_digest() {
        let two = b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\nX-Request-ID: r-1\r\n\r\nabcGET /c HTTP/1.1\r\n\r\n";
        let mut p = StreamParser::new(Kind::Requests);
        let mut s = Collect::default();
        feed_all(&mut p, &[two], &mut s);
        assert_eq!(s.messages.len(), 3);
        assert_eq!(s.messages[1].correlation, Some(Correlation::RequestId("r-1".into())));
        let again = b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let other = b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabd";
        feed_all(&mut p, &[again, other], &mut s);
        assert_eq!(s.messages[1].body_digest, s.messages[3].body_digest);
        assert_ne!(s.messages[3].body_digest, s.messages[4].body_digest);
    }

    #[test]
    fn a_report_upload_carries_its_reports_id_unless_a_header_names_the_request() {
        let body = br#"{"id": "673a9756-e0d9-4455-8270-da7cf968b648", "type": "T"}"#;
        let head = format!("POST /api/Report/WSJF HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        let traced = format!(
            "POST /api/Report/WSJF HTTP/1.1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let other = format!("POST /api/Report/Other HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        let mut p = StreamParser::new(Kind::Requests);
        let mut s = Collect::default();
        feed_all(&mut p, &[head.as_bytes(), &body[..10], &body[10..]], &mut s);
        feed_all(&mut p, &[traced.as_bytes(), body], &mut s);
        feed_all(&mut p, &[other.as_bytes(), body], &mut s);
        let ids: Vec<_> = s.messages.iter().map(|m| m.correlation.clone()).collect();
        assert_eq!(
            ids,
            [
                Some(Correlation::ReportId("673a9756-e0d9-4455-8270-da7cf968b648".into())),
                Some(Correlation::TraceId("4bf92f3577b34da6a3ce929d0e0e4736".into())),
                None
            ]
        );
        // A body whose first bytes went uncaptured gives no id.
        let mut p = StreamParser::new(Kind::Requests);
        let mut s = Collect::default();
        let gap = Chunk { prefix: &body[..3], suffix: &body[body.len() - 3..], len: body.len() as u64, ts_ns: 1 };
        p.feed(&Chunk { prefix: head.as_bytes(), suffix: &[], len: head.len() as u64, ts_ns: 0 }, &mut s);
        p.feed(&gap, &mut s);
        assert_eq!(s.messages.len(), 1);
        assert_eq!(s.messages[0].correlation, None);
    }

    #[test]
    fn large_body_with_gap_keeps_framing() {
        // 2 MiB body: only 4 KiB prefix and 64 bytes suffix of the second write captured.
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 2097152\r\n\r\n";
        let mut p = StreamParser::new(Kind::Responses);
        let mut s = Collect::default();
        p.feed(&Chunk::whole(head, 1), &mut s);
        p.feed(&Chunk { prefix: &[b'x'; 4096], suffix: &[b'x'; 64], len: 2097152, ts_ns: 2 }, &mut s);
        p.feed(&Chunk::whole(b"HTTP/1.1 204 No Content\r\n\r\n", 3), &mut s);
        assert_eq!(s.errors, []);
        assert_eq!(s.messages.len(), 2);
        assert_eq!(s.messages[0].body_bytes, 2097152);
        assert_eq!(s.messages[0].last_ts_ns, 2);
        assert_eq!(code(&s.messages[1]), 204);
    }

    #[test]
    fn chunked_fully_captured_and_split() {
        let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        for split in [1usize, 3, 7, body.len()] {
            let mut p = StreamParser::new(Kind::Responses);
            let mut s = Collect::default();
            let parts: Vec<&[u8]> = body.chunks(split).collect();
            feed_all(&mut p, &parts, &mut s);
            assert_eq!(s.errors, [], "split {split}");
            assert_eq!(s.messages.len(), 1, "split {split}");
            assert_eq!(s.messages[0].last_ts_ns, parts.len() as u64);
            assert!(p.idle());
        }
    }

    #[test]
    fn chunked_with_trailers() {
        let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let mut p = StreamParser::new(Kind::Responses);
        let mut s = Collect::default();
        feed_all(&mut p, &[body], &mut s);
        assert_eq!(s.errors, []);
        assert_eq!(s.messages.len(), 2);
    }

    #[test]
    fn chunked_blind_through_a_gap_ends_at_terminator() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut p = StreamParser::new(Kind::Responses);
        let mut s = Collect::default();
        p.feed(&Chunk::whole(head, 1), &mut s);
        // A 64 KiB read holding many chunks; chunk-size lines fall in the gap.
        p.feed(&Chunk { prefix: b"2000\r\n", suffix: b"xxxx\r\n2000\r\nyyyy", len: 65536, ts_ns: 2 }, &mut s);
        assert!(s.messages.is_empty());
        p.feed(&Chunk { prefix: b"zzzz", suffix: b"zzzz\r\n0\r\n\r\n", len: 30000, ts_ns: 3 }, &mut s);
        assert_eq!(s.errors, []);
        assert_eq!(s.messages.len(), 1);
        assert_eq!(s.messages[0].last_ts_ns, 3);
        assert_eq!(s.messages[0].body_bytes, 65536 + 30000);
        // The terminator split over two reads is still seen.
        p.feed(&Chunk::whole(head, 4), &mut s);
        p.feed(&Chunk { prefix: b"3\r\n", suffix: b"abc\r\n0\r\n", len: 9000, ts_ns: 5 }, &mut s);
        p.feed(&Chunk::whole(b"\r\n", 6), &mut s);
        assert_eq!(s.messages.len(), 2);
        assert_eq!(s.messages[1].last_ts_ns, 6);
    }

    #[test]
    fn head_204_304_have_no_body() {
        let mut p = StreamParser::new(Kind::Responses);
        let mut s = Collect { head: true, ..Default::default() };
        feed_all(&mut p, &[b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"], &mut s);
        assert_eq!(s.messages.len(), 1);
        s.head = false;
        feed_all(
            &mut p,
            &[b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"],
            &mut s,
        );
        assert_eq!(s.messages.len(), 3);
        assert!(p.idle());
    }

    #[test]
    fn continue_is_interim() {
        let mut p = StreamParser::new(Kind::Responses);
        let mut s = Collect::default();
        feed_all(
            &mut p,
            &[b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"],
            &mut s,
        );
        assert_eq!(s.messages.len(), 1);
        assert_eq!(code(&s.messages[0]), 201);
    }

    #[test]
    fn body_until_close() {
        let mut p = StreamParser::new(Kind::Responses);
        let mut s = Collect::default();
        feed_all(&mut p, &[b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nabc", b"def"], &mut s);
        assert!(s.messages.is_empty());
        p.end(9, &mut s);
        assert_eq!(s.messages.len(), 1);
        assert_eq!(s.messages[0].body_bytes, 6);
        assert!(s.messages[0].close);
        assert_eq!(s.messages[0].last_ts_ns, 9);
    }

    #[test]
    fn garbage_is_an_error_and_resync_needs_a_message_start() {
        let mut p = StreamParser::new(Kind::Requests);
        let mut s = Collect::default();
        feed_all(&mut p, &[b"\x8f\x01\xffrandom bytes\x00\x01"], &mut s);
        assert_eq!(s.errors, [ParseError::Invalid]);
        assert!(p.is_unsynced());
        feed_all(&mut p, &[b"more junk", b"GET /x HTTP/1.1\r\n\r\n"], &mut s);
        assert_eq!(s.errors.len(), 1);
        assert_eq!(s.messages.len(), 1);
        assert!(p.skipped > 0);
    }

    #[test]
    fn malformed_heads_and_lengths() {
        for bad in [
            &b"GET /x HTTP/1.1\r\nContent-Length: abc\r\n\r\n"[..],
            b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET /x HTTP/9\r\n\r\n",
            b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            let mut p = StreamParser::new(Kind::Requests);
            let mut s = Collect::default();
            feed_all(&mut p, &[bad], &mut s);
            assert_eq!(s.errors.len(), 1, "{:?}", String::from_utf8_lossy(bad));
            assert!(s.messages.is_empty());
        }
        let mut p = StreamParser::new(Kind::Responses);
        let mut s = Collect::default();
        feed_all(&mut p, &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"], &mut s);
        assert_eq!(s.errors, [ParseError::BadChunk]);
    }

    #[test]
    fn head_lost_in_a_gap_is_counted() {
        let mut p = StreamParser::new(Kind::Requests);
        let mut s = Collect::default();
        let long = [b'a'; 100];
        p.feed(&Chunk { prefix: b"GET /x HTTP/1.1\r\nCookie: ", suffix: &long[..10], len: 20000, ts_ns: 1 }, &mut s);
        assert_eq!(s.errors, [ParseError::HeadTruncated]);
        assert!(p.is_unsynced());
    }

    #[test]
    fn oversized_head() {
        let mut p = StreamParser::new(Kind::Requests);
        let mut s = Collect::default();
        let mut head = b"GET /x HTTP/1.1\r\nX: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        for part in head.chunks(4096) {
            p.feed(&Chunk::whole(part, 1), &mut s);
            // Never more than the cap held, byte by byte or not.
            assert!(p.held() <= MAX_HEAD + 4, "{}", p.held());
        }
        assert_eq!(s.errors, []);
        assert_eq!(s.limits, [Limit::Http1Head]);
        assert!(p.is_unsynced());
        // The next message start resyncs.
        p.feed(&Chunk::whole(b"GET /y HTTP/1.1\r\n\r\n", 2), &mut s);
        assert_eq!(s.messages.len(), 1);
    }

    #[test]
    fn paths_are_kept_without_query_and_bounded() {
        let mut p = StreamParser::new(Kind::Requests);
        let mut s = Collect::default();
        let long = format!("GET /a/{}?q=secret HTTP/1.1\r\n\r\n", "b".repeat(5000));
        feed_all(&mut p, &[b"GET /x?token=secret HTTP/1.1\r\n\r\n", long.as_bytes()], &mut s);
        let paths: Vec<usize> = s
            .messages
            .iter()
            .map(|m| match &m.head {
                Head::Request { path, .. } => path.len(),
                Head::Response { .. } => 0,
            })
            .collect();
        assert_eq!(s.messages[0].head, Head::Request { method: "GET".into(), path: "/x".into() });
        assert_eq!(paths[1], crate::net::limits::MAX_PATH + 1);
    }
}
