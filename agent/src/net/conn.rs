//! One tracked TCP connection: its two HTTP/1 streams and the requests that
//! await a response.

use std::{collections::VecDeque, net::SocketAddr};

use crate::net::{
    http1::{starts_message, Chunk, Head, Kind, Message, ParseError, Sink, StreamParser},
    http2::{looks_like_frame, H2Error, H2, PREFACE},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The target connected: it writes requests.
    Client,
    /// The target accepted: it reads requests.
    Server,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// No bytes seen yet.
    Unknown,
    Http1,
    Http2,
    /// TLS records (the libssl probes see the plaintext); ignored here.
    Tls,
    /// Neither: ignored after one parse error.
    Other,
}

impl Protocol {
    /// Whether its bytes are of use: not TLS ciphertext (the libssl probes
    /// report the plaintext) and not a protocol other than HTTP.
    pub fn is_useful(self) -> bool {
        !matches!(self, Protocol::Tls | Protocol::Other)
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Unknown => "unknown",
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Tls => "tls",
            Protocol::Other => "other",
        }
    }
}

/// How an exchange ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Response(u16),
    /// The target closed the connection while waiting (a client timeout, usually).
    Abandoned,
    /// The peer closed the connection before a complete response.
    PeerClosed,
    /// ECONNRESET or EPIPE.
    Reset,
    /// An HTTP/2 stream reset (RST_STREAM) by either side.
    StreamReset,
}

/// A request and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub outcome: Outcome,
    pub start_ns: u64,
    pub end_ns: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub request_id: Option<String>,
    pub body_digest: u64,
}

/// Things a connection noticed that are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    Parse(ParseError),
    /// A response with no request waiting for it.
    UnmatchedResponse,
    /// The first bytes were not HTTP (nor TLS).
    NotHttp,
    Http2(H2Error),
    /// A request seen to start whose outcome fell into events the kernel
    /// could not deliver: not recorded, rather than recorded with a guess.
    RequestLost(Protocol),
}

pub struct Connection {
    pub role: Role,
    pub remote: Option<SocketAddr>,
    pub protocol: Protocol,
    pub exchanges: u64,
    requests: StreamParser,
    responses: StreamParser,
    pending: VecDeque<Message>,
    peer_closed: bool,
    h2: Option<H2>,
    /// Bytes come from libssl (plaintext), not from the socket.
    plaintext: bool,
    /// Bytes were lost before the first seen: its start is unknown.
    lost_at_start: bool,
    /// Response bytes were lost since the last response (see [`ResponseSink`]).
    response_lost: bool,
}

struct RequestSink<'a> {
    pending: &'a mut VecDeque<Message>,
    notices: &'a mut Vec<Notice>,
}

impl Sink for RequestSink<'_> {
    fn answers_head(&mut self) -> bool {
        false
    }
    fn message(&mut self, m: Message) {
        self.pending.push_back(m);
    }
    fn error(&mut self, e: ParseError) {
        self.notices.push(Notice::Parse(e));
    }
}

struct ResponseSink<'a> {
    pending: &'a mut VecDeque<Message>,
    done: &'a mut Vec<Exchange>,
    notices: &'a mut Vec<Notice>,
    /// Response bytes were lost since the last response: which waiting
    /// request the next one answers is not known from order alone.
    after_loss: &'a mut bool,
}

impl ResponseSink<'_> {
    /// After a loss the next response answers the newest waiting request
    /// (HTTP/1 clients do not pipeline); the older ones' answers were lost.
    fn drop_answered_in_loss(&mut self) {
        if std::mem::take(self.after_loss) {
            while self.pending.len() > 1 {
                self.pending.pop_front();
                self.notices.push(Notice::RequestLost(Protocol::Http1));
            }
        }
    }
}

impl Sink for ResponseSink<'_> {
    fn answers_head(&mut self) -> bool {
        self.drop_answered_in_loss();
        matches!(self.pending.front(), Some(Message { head: Head::Request { method, .. }, .. }) if method == "HEAD")
    }
    fn message(&mut self, m: Message) {
        let Head::Response { code } = m.head else { return };
        self.drop_answered_in_loss();
        match self.pending.pop_front() {
            Some(req) => {
                self.done.push(exchange(req, Outcome::Response(code), m.last_ts_ns, m.head_bytes + m.body_bytes))
            }
            None => self.notices.push(Notice::UnmatchedResponse),
        }
    }
    fn error(&mut self, e: ParseError) {
        self.notices.push(Notice::Parse(e));
        if e == ParseError::Lost {
            *self.after_loss = true;
        } else {
            // A response stream that lost sync cannot be matched to the waiting requests.
            self.pending.clear();
        }
    }
}

fn exchange(req: Message, outcome: Outcome, end_ns: u64, response_bytes: u64) -> Exchange {
    let Head::Request { method, path } = req.head else { unreachable!("the request stream only yields requests") };
    Exchange {
        method,
        path,
        outcome,
        start_ns: req.first_ts_ns,
        end_ns,
        request_bytes: req.head_bytes + req.body_bytes,
        response_bytes,
        request_id: req.request_id,
        body_digest: req.body_digest,
    }
}

impl Connection {
    pub fn new(role: Role, remote: Option<SocketAddr>) -> Connection {
        Connection {
            role,
            remote,
            protocol: Protocol::Unknown,
            exchanges: 0,
            requests: StreamParser::new(Kind::Requests),
            responses: StreamParser::new(Kind::Responses),
            pending: VecDeque::new(),
            peer_closed: false,
            h2: None,
            plaintext: false,
            lost_at_start: false,
            response_lost: false,
        }
    }

    /// A TLS connection seen through libssl. Whether it is new or was open
    /// before the agent joined is told from its first bytes.
    pub fn tls(role: Role) -> Connection {
        Connection { plaintext: true, ..Connection::new(role, None) }
    }

    /// Picks the protocol from the first bytes seen on the connection.
    fn detect(&mut self, carries_requests: bool, first: &[u8], notices: &mut Vec<Notice>) {
        let h2_preface =
            carries_requests && first.starts_with(&PREFACE[..first.len().min(PREFACE.len())]) && !first.is_empty();
        self.protocol = if h2_preface {
            self.h2 = Some(H2::new(false));
            Protocol::Http2
        } else if !self.plaintext && first.first() == Some(&0x16) && first.get(1) == Some(&0x03) {
            Protocol::Tls
        } else if carries_requests && starts_message(Kind::Requests, first) {
            Protocol::Http1
        } else if self.plaintext && looks_like_frame(first) {
            // An HTTP/2 connection already open when the agent joined.
            self.h2 = Some(H2::new(true));
            Protocol::Http2
        } else if (self.plaintext && !carries_requests && starts_message(Kind::Responses, first)) || self.lost_at_start
        {
            self.requests = StreamParser::unsynced(Kind::Requests);
            self.responses = StreamParser::unsynced(Kind::Responses);
            Protocol::Http1
        } else {
            notices.push(Notice::NotHttp);
            Protocol::Other
        };
    }

    /// A connection that was open before the agent attached: both streams wait
    /// for the next message start.
    pub fn joined_midway(role: Role, remote: Option<SocketAddr>) -> Connection {
        Connection {
            protocol: Protocol::Http1,
            requests: StreamParser::unsynced(Kind::Requests),
            responses: StreamParser::unsynced(Kind::Responses),
            ..Connection::new(role, remote)
        }
    }

    /// Bytes skipped because the agent joined mid-way or lost sync.
    pub fn skipped(&self) -> u64 {
        self.requests.skipped + self.responses.skipped
    }

    /// Bytes the target wrote (`egress`) or read.
    pub fn data(&mut self, egress: bool, chunk: &Chunk<'_>, done: &mut Vec<Exchange>, notices: &mut Vec<Notice>) {
        let carries_requests = egress == (self.role == Role::Client);
        if self.protocol == Protocol::Unknown {
            self.detect(carries_requests, chunk.prefix, notices);
        }
        if let Some(h2) = self.h2.as_mut() {
            let before = done.len();
            let known = chunk.prefix.len() as u64 + chunk.suffix.len() as u64;
            let gap = chunk.len.saturating_sub(known);
            h2.data(carries_requests, chunk.prefix, gap, chunk.ts_ns, done, notices);
            if !chunk.suffix.is_empty() {
                h2.data(carries_requests, chunk.suffix, 0, chunk.ts_ns, done, notices);
            }
            self.exchanges += (done.len() - before) as u64;
            return;
        }
        if self.protocol != Protocol::Http1 {
            return;
        }
        let before = done.len();
        if carries_requests {
            let mut sink = RequestSink { pending: &mut self.pending, notices };
            self.requests.feed(chunk, &mut sink);
        } else {
            let mut sink =
                ResponseSink { pending: &mut self.pending, done, notices, after_loss: &mut self.response_lost };
            self.responses.feed(chunk, &mut sink);
        }
        self.exchanges += (done.len() - before) as u64;
    }

    /// `n` bytes the target wrote (`egress`) or read were lost before the next
    /// ones (the kernel's ring was full): skipped by length where the framing
    /// allows, a counted desync where it does not.
    pub fn lost(&mut self, egress: bool, n: u64, done: &mut Vec<Exchange>, notices: &mut Vec<Notice>) {
        let carries_requests = egress == (self.role == Role::Client);
        if let Some(h2) = self.h2.as_mut() {
            return h2.lost(carries_requests, n, notices);
        }
        match self.protocol {
            Protocol::Unknown => self.lost_at_start = true,
            Protocol::Http1 if carries_requests => {
                self.requests.lost(n, &mut RequestSink { pending: &mut self.pending, notices });
            }
            Protocol::Http1 => {
                let mut sink =
                    ResponseSink { pending: &mut self.pending, done, notices, after_loss: &mut self.response_lost };
                self.responses.lost(n, &mut sink);
            }
            _ => {}
        }
    }

    /// The peer closed its side (a read returned 0).
    pub fn peer_eof(&mut self, ts_ns: u64, done: &mut Vec<Exchange>, notices: &mut Vec<Notice>) {
        self.peer_closed = true;
        let mut sink = ResponseSink { pending: &mut self.pending, done, notices, after_loss: &mut self.response_lost };
        self.responses.end(ts_ns, &mut sink);
    }

    /// The connection is gone (closed, reset, or its process exited): requests
    /// still waiting end without a response.
    pub fn finish(&mut self, ts_ns: u64, reset: bool, done: &mut Vec<Exchange>, notices: &mut Vec<Notice>) {
        let outcome = if reset {
            Outcome::Reset
        } else if self.peer_closed {
            Outcome::PeerClosed
        } else {
            Outcome::Abandoned
        };
        if let Some(h2) = self.h2.as_mut() {
            return h2.finish(ts_ns, outcome, done, notices);
        }
        if !reset {
            let mut sink =
                ResponseSink { pending: &mut self.pending, done, notices, after_loss: &mut self.response_lost };
            self.responses.end(ts_ns, &mut sink);
        }
        for req in self.pending.drain(..) {
            if self.response_lost {
                // Its answer may have been among the lost bytes: not an error.
                notices.push(Notice::RequestLost(Protocol::Http1));
            } else {
                done.push(exchange(req, outcome, ts_ns, 0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(c: &mut Connection, egress: bool, bytes: &[u8], ts: u64, done: &mut Vec<Exchange>, n: &mut Vec<Notice>) {
        c.data(egress, &Chunk::whole(bytes, ts), done, n);
    }

    #[test]
    fn pairs_requests_with_responses_and_times_them() {
        let mut c = Connection::new(Role::Client, None);
        let (mut done, mut n) = (Vec::new(), Vec::new());
        feed(&mut c, true, b"HEAD /a HTTP/1.1\r\n\r\n", 10, &mut done, &mut n);
        feed(&mut c, false, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 20, &mut done, &mut n);
        feed(&mut c, true, b"POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", 30, &mut done, &mut n);
        feed(&mut c, false, b"HTTP/1.1 500 Oops\r\nContent-Length: 3\r\n\r\n", 40, &mut done, &mut n);
        feed(&mut c, false, b"err", 50, &mut done, &mut n);
        assert_eq!(n, []);
        assert_eq!(done.len(), 2);
        assert_eq!(
            (done[0].method.as_str(), done[0].outcome, done[0].start_ns, done[0].end_ns),
            ("HEAD", Outcome::Response(200), 10, 20)
        );
        assert_eq!((done[1].path.as_str(), done[1].outcome, done[1].end_ns), ("/b", Outcome::Response(500), 50));
        assert_eq!(done[1].request_bytes, 41);
        assert_eq!(c.protocol, Protocol::Http1);
    }

    #[test]
    fn unanswered_requests_end_by_how_the_connection_ended() {
        for (eof, reset, outcome) in
            [(false, false, Outcome::Abandoned), (true, false, Outcome::PeerClosed), (false, true, Outcome::Reset)]
        {
            let mut c = Connection::new(Role::Client, None);
            let (mut done, mut n) = (Vec::new(), Vec::new());
            feed(&mut c, true, b"GET /slow HTTP/1.1\r\n\r\n", 1, &mut done, &mut n);
            if eof {
                c.peer_eof(5, &mut done, &mut n);
            }
            c.finish(9, reset, &mut done, &mut n);
            assert_eq!(done.len(), 1);
            assert_eq!((done[0].outcome, done[0].end_ns), (outcome, 9));
        }
    }

    #[test]
    fn server_role_reads_requests() {
        let mut c = Connection::new(Role::Server, None);
        let (mut done, mut n) = (Vec::new(), Vec::new());
        feed(&mut c, false, b"GET /x HTTP/1.1\r\n\r\n", 1, &mut done, &mut n);
        feed(&mut c, true, b"HTTP/1.1 204 No Content\r\n\r\n", 2, &mut done, &mut n);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].outcome, Outcome::Response(204));
    }

    #[test]
    fn tls_and_other_protocols() {
        let (mut done, mut n) = (Vec::new(), Vec::new());
        let mut tls = Connection::new(Role::Client, None);
        feed(&mut tls, true, &[0x16, 0x03, 0x01, 0x02, 0x00], 1, &mut done, &mut n);
        assert_eq!(tls.protocol, Protocol::Tls);
        assert_eq!(n, []);
        let mut other = Connection::new(Role::Client, None);
        feed(&mut other, true, b"\x00\x01binary", 1, &mut done, &mut n);
        feed(&mut other, true, b"GET / HTTP/1.1\r\n\r\n", 2, &mut done, &mut n);
        assert_eq!(other.protocol, Protocol::Other);
        assert_eq!(n, [Notice::NotHttp]);
        assert!(done.is_empty());
    }

    #[test]
    fn joined_midway_skips_until_a_request_starts() {
        let mut c = Connection::joined_midway(Role::Client, None);
        let (mut done, mut n) = (Vec::new(), Vec::new());
        feed(&mut c, false, b"tail of an old response body", 1, &mut done, &mut n);
        feed(&mut c, true, b"GET /next HTTP/1.1\r\n\r\n", 2, &mut done, &mut n);
        feed(&mut c, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 3, &mut done, &mut n);
        assert_eq!(n, []);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].path, "/next");
        assert_eq!(c.skipped(), 28);
    }

    #[test]
    fn bytes_lost_in_a_body_are_skipped_by_length() {
        let mut c = Connection::new(Role::Client, None);
        let (mut done, mut n) = (Vec::new(), Vec::new());
        feed(&mut c, true, b"GET /big HTTP/1.1\r\n\r\n", 1, &mut done, &mut n);
        feed(&mut c, false, b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\nabc", 2, &mut done, &mut n);
        c.lost(false, 9000, &mut done, &mut n);
        feed(&mut c, false, &[b'x'; 997], 4, &mut done, &mut n);
        assert_eq!(n, []);
        assert_eq!((done[0].outcome, done[0].end_ns, done[0].response_bytes), (Outcome::Response(200), 4, 10042));
    }

    #[test]
    fn a_lost_head_is_counted_and_the_next_exchange_resyncs() {
        let mut c = Connection::new(Role::Client, None);
        let (mut done, mut n) = (Vec::new(), Vec::new());
        feed(&mut c, true, b"GET /a HTTP/1.1\r\n\r\n", 1, &mut done, &mut n);
        // The response head of /a was lost.
        c.lost(false, 40, &mut done, &mut n);
        feed(&mut c, false, b"rest of the body", 3, &mut done, &mut n);
        feed(&mut c, true, b"GET /b HTTP/1.1\r\n\r\n", 4, &mut done, &mut n);
        feed(&mut c, false, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 5, &mut done, &mut n);
        assert_eq!(n, [Notice::Parse(ParseError::Lost), Notice::RequestLost(Protocol::Http1)]);
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].path.as_str(), done[0].outcome), ("/b", Outcome::Response(404)));
    }

    #[test]
    fn loss_before_the_first_bytes_joins_mid_way() {
        let mut c = Connection::new(Role::Client, None);
        let (mut done, mut n) = (Vec::new(), Vec::new());
        c.lost(true, 100, &mut done, &mut n);
        feed(&mut c, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2, &mut done, &mut n);
        feed(&mut c, true, b"GET /c HTTP/1.1\r\n\r\n", 3, &mut done, &mut n);
        feed(&mut c, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 4, &mut done, &mut n);
        // The answer to the lost request is counted as one without a request.
        assert_eq!(n, [Notice::UnmatchedResponse]);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].path, "/c");
    }
}
