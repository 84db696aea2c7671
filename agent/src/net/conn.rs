//! One tracked TCP connection: which protocol its first bytes chose, and
//! that protocol's framer with its state.

use std::net::SocketAddr;

use crate::net::{
    http1::{starts_message, Chunk, Kind},
    http1_conn::Http1,
    http2::{looks_like_frame, H2, PREFACE},
    report::{Exchange, Notice, Outcome, Protocol},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The target connected: it writes requests.
    Client,
    /// The target accepted: it reads requests.
    Server,
}

/// What reads the connection's bytes; each state owns what it needs.
enum Framer {
    /// No bytes seen yet.
    Detecting {
        /// Bytes come from libssl (plaintext), not from the socket.
        plaintext: bool,
        /// Bytes were lost before the first seen: its start is unknown.
        lost_at_start: bool,
    },
    Http1(Box<Http1>),
    Http2(Box<H2>),
    /// TLS records: the libssl probes report the plaintext, the ciphertext is not read.
    Tls {
        /// Its plaintext is tracked as a connection of its own (through libssl).
        decrypted: bool,
    },
    /// Not HTTP: not read (counted once).
    NotHttp,
}

pub struct Connection {
    pub role: Role,
    pub remote: Option<SocketAddr>,
    /// The plaintext of a TLS connection, seen through libssl.
    pub tls: bool,
    pub exchanges: u64,
    /// A non-blocking connect under way: neither `SO_ERROR` nor a byte has
    /// told whether it connected. Closed in this state, the client gave up.
    pub connecting: bool,
    peer_closed: bool,
    framer: Framer,
}

impl Connection {
    pub fn new(role: Role, remote: Option<SocketAddr>) -> Connection {
        Connection::with(role, remote, Framer::Detecting { plaintext: false, lost_at_start: false })
    }

    fn with(role: Role, remote: Option<SocketAddr>, framer: Framer) -> Connection {
        Connection { role, remote, tls: false, exchanges: 0, connecting: false, peer_closed: false, framer }
    }

    /// A TLS connection seen through libssl. Whether it is new or was open
    /// before the agent joined is told from its first bytes.
    pub fn tls(role: Role) -> Connection {
        let mut c = Connection::with(role, None, Framer::Detecting { plaintext: true, lost_at_start: false });
        c.tls = true;
        c
    }

    /// The plaintext of this socket's TLS is tracked as a connection of its
    /// own: that one is counted, not this one.
    pub fn decrypted(&mut self) {
        if let Framer::Tls { decrypted } = &mut self.framer {
            *decrypted = true;
        }
    }

    /// What the connection counts as when it ends, once: the protocol it
    /// turned out to speak and whether over TLS; `None` for the ciphertext
    /// of a TLS connection whose plaintext counts instead.
    pub fn counted_as(&self) -> Option<(Protocol, bool)> {
        match self.framer {
            Framer::Tls { decrypted: true } => None,
            Framer::Tls { decrypted: false } => Some((Protocol::Unknown, true)),
            _ => Some((self.protocol(), self.tls)),
        }
    }

    /// A connection that was open before the agent attached: both streams wait
    /// for the next message start.
    pub fn joined_midway(role: Role, remote: Option<SocketAddr>) -> Connection {
        Connection::with(role, remote, Framer::Http1(Box::new(Http1::unsynced())))
    }

    pub fn protocol(&self) -> Protocol {
        match self.framer {
            Framer::Detecting { .. } => Protocol::Unknown,
            Framer::Http1(_) => Protocol::Http1,
            Framer::Http2(_) => Protocol::Http2,
            Framer::Tls { .. } => Protocol::Tls,
            Framer::NotHttp => Protocol::Other,
        }
    }

    /// Picks the framer from the first bytes seen on the connection.
    fn detect(&mut self, carries_requests: bool, first: &[u8], notices: &mut Vec<Notice>) {
        let Framer::Detecting { plaintext, lost_at_start } = self.framer else { return };
        let h2_preface =
            carries_requests && first.starts_with(&PREFACE[..first.len().min(PREFACE.len())]) && !first.is_empty();
        self.framer = if h2_preface {
            Framer::Http2(Box::new(H2::new(false)))
        } else if !plaintext && first.first() == Some(&0x16) && first.get(1) == Some(&0x03) {
            Framer::Tls { decrypted: false }
        } else if carries_requests && starts_message(Kind::Requests, first) {
            Framer::Http1(Box::default())
        } else if plaintext && looks_like_frame(first) {
            // An HTTP/2 connection already open when the agent joined.
            Framer::Http2(Box::new(H2::new(true)))
        } else if (plaintext && !carries_requests && starts_message(Kind::Responses, first)) || lost_at_start {
            Framer::Http1(Box::new(Http1::unsynced()))
        } else {
            notices.push(Notice::NotHttp);
            Framer::NotHttp
        };
    }

    /// Bytes skipped because the agent joined mid-way or lost sync.
    pub fn skipped(&self) -> u64 {
        match &self.framer {
            Framer::Http1(h1) => h1.skipped(),
            _ => 0,
        }
    }

    /// Heap bytes the connection holds (buffers, tables, waiting requests).
    pub fn held(&self) -> usize {
        match &self.framer {
            Framer::Http1(h1) => std::mem::size_of::<Http1>() + h1.held(),
            Framer::Http2(h2) => std::mem::size_of::<H2>() + h2.held(),
            Framer::Detecting { .. } | Framer::Tls { .. } | Framer::NotHttp => 0,
        }
    }

    /// Bytes the target wrote (`egress`) or read.
    pub fn data(&mut self, egress: bool, chunk: &Chunk<'_>, done: &mut Vec<Exchange>, notices: &mut Vec<Notice>) {
        let carries_requests = egress == (self.role == Role::Client);
        self.detect(carries_requests, chunk.prefix, notices);
        let before = done.len();
        match &mut self.framer {
            Framer::Http2(h2) => {
                let known = chunk.prefix.len() as u64 + chunk.suffix.len() as u64;
                let gap = chunk.len.saturating_sub(known);
                h2.data(carries_requests, chunk.prefix, gap, chunk.ts_ns, done, notices);
                if !chunk.suffix.is_empty() {
                    h2.data(carries_requests, chunk.suffix, 0, chunk.ts_ns, done, notices);
                }
            }
            Framer::Http1(h1) => h1.data(carries_requests, chunk, done, notices),
            Framer::Detecting { .. } | Framer::Tls { .. } | Framer::NotHttp => {}
        }
        self.exchanges += (done.len() - before) as u64;
    }

    /// `n` bytes the target wrote (`egress`) or read were lost before the next
    /// ones (the kernel's ring was full): skipped by length where the framing
    /// allows, a counted desync where it does not.
    pub fn lost(&mut self, egress: bool, n: u64, done: &mut Vec<Exchange>, notices: &mut Vec<Notice>) {
        let carries_requests = egress == (self.role == Role::Client);
        match &mut self.framer {
            Framer::Detecting { lost_at_start, .. } => *lost_at_start = true,
            Framer::Http2(h2) => h2.lost(carries_requests, n, notices),
            Framer::Http1(h1) => h1.lost(carries_requests, n, done, notices),
            Framer::Tls { .. } | Framer::NotHttp => {}
        }
    }

    /// The peer closed its side (a read returned 0).
    pub fn peer_eof(&mut self, ts_ns: u64, done: &mut Vec<Exchange>, notices: &mut Vec<Notice>) {
        self.peer_closed = true;
        if let Framer::Http1(h1) = &mut self.framer {
            h1.peer_eof(ts_ns, done, notices);
        }
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
        match &mut self.framer {
            Framer::Http2(h2) => h2.finish(ts_ns, outcome, done, notices),
            Framer::Http1(h1) => h1.finish(ts_ns, outcome, done, notices),
            Framer::Detecting { .. } | Framer::Tls { .. } | Framer::NotHttp => {}
        }
    }

    /// The agent stops tracking the connection (evicted): requests still
    /// waiting will not be seen to end, and are counted as lost.
    pub fn abandon(&mut self, notices: &mut Vec<Notice>) {
        match &mut self.framer {
            Framer::Http2(h2) => h2.abandon(notices),
            Framer::Http1(h1) => h1.abandon(notices),
            Framer::Detecting { .. } | Framer::Tls { .. } | Framer::NotHttp => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::report::ParseError;

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
        assert_eq!(c.protocol(), Protocol::Http1);
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
        assert_eq!(tls.protocol(), Protocol::Tls);
        assert_eq!(n, []);
        let mut other = Connection::new(Role::Client, None);
        feed(&mut other, true, b"\x00\x01binary", 1, &mut done, &mut n);
        feed(&mut other, true, b"GET / HTTP/1.1\r\n\r\n", 2, &mut done, &mut n);
        assert_eq!(other.protocol(), Protocol::Other);
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
