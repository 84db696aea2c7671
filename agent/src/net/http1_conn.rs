//! HTTP/1 on one connection: a parser per direction, and the requests that
//! wait for the responses answering them (in order: HTTP/1 has no ids).

use std::collections::VecDeque;

use crate::net::{
    http1::{Chunk, Head, Kind, Message, Sink, StreamParser},
    limits::{Limit, HTTP1_MAX_PENDING},
    report::{Exchange, Notice, Outcome, ParseError, Protocol},
};

pub struct Http1 {
    requests: StreamParser,
    responses: StreamParser,
    pending: VecDeque<Message>,
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
        // Requests piling up unanswered mean the response stream lost sync:
        // the oldest will not be matched any more.
        if self.pending.len() >= HTTP1_MAX_PENDING {
            self.pending.pop_front();
            self.notices.push(Notice::Limit(Limit::Http1Pending));
        }
        self.pending.push_back(m);
    }
    fn error(&mut self, e: ParseError) {
        self.notices.push(Notice::Parse(e));
    }
    fn limit(&mut self, l: Limit) {
        self.notices.push(Notice::Limit(l));
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
    fn limit(&mut self, l: Limit) {
        // A response skipped: the waiting requests can no longer be matched by order.
        self.notices.push(Notice::Limit(l));
        self.pending.clear();
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
        correlation: req.correlation,
        body_digest: req.body_digest,
    }
}

impl Default for Http1 {
    fn default() -> Http1 {
        Http1 {
            requests: StreamParser::new(Kind::Requests),
            responses: StreamParser::new(Kind::Responses),
            pending: VecDeque::new(),
            response_lost: false,
        }
    }
}

impl Http1 {
    /// Both streams wait for the next message start (joined mid-way).
    pub fn unsynced() -> Http1 {
        Http1 {
            requests: StreamParser::unsynced(Kind::Requests),
            responses: StreamParser::unsynced(Kind::Responses),
            ..Http1::default()
        }
    }

    /// Bytes skipped because the agent joined mid-way or lost sync.
    pub fn skipped(&self) -> u64 {
        self.requests.skipped + self.responses.skipped
    }

    /// Heap bytes held.
    pub fn held(&self) -> usize {
        self.requests.held() + self.responses.held() + self.pending.iter().map(Message::held).sum::<usize>()
    }

    pub fn data(
        &mut self,
        carries_requests: bool,
        chunk: &Chunk<'_>,
        done: &mut Vec<Exchange>,
        notices: &mut Vec<Notice>,
    ) {
        if carries_requests {
            self.requests.feed(chunk, &mut RequestSink { pending: &mut self.pending, notices });
        } else {
            let mut sink =
                ResponseSink { pending: &mut self.pending, done, notices, after_loss: &mut self.response_lost };
            self.responses.feed(chunk, &mut sink);
        }
    }

    /// `n` bytes lost before the next ones: skipped by length where the
    /// framing allows, a counted desync where it does not.
    pub fn lost(&mut self, carries_requests: bool, n: u64, done: &mut Vec<Exchange>, notices: &mut Vec<Notice>) {
        if carries_requests {
            self.requests.lost(n, &mut RequestSink { pending: &mut self.pending, notices });
        } else {
            let mut sink =
                ResponseSink { pending: &mut self.pending, done, notices, after_loss: &mut self.response_lost };
            self.responses.lost(n, &mut sink);
        }
    }

    /// The peer closed its side: a response framed by the close completes.
    pub fn peer_eof(&mut self, ts_ns: u64, done: &mut Vec<Exchange>, notices: &mut Vec<Notice>) {
        let mut sink = ResponseSink { pending: &mut self.pending, done, notices, after_loss: &mut self.response_lost };
        self.responses.end(ts_ns, &mut sink);
    }

    /// The connection is gone: requests still waiting end as `outcome`.
    pub fn finish(&mut self, ts_ns: u64, outcome: Outcome, done: &mut Vec<Exchange>, notices: &mut Vec<Notice>) {
        if outcome != Outcome::Reset {
            self.peer_eof(ts_ns, done, notices);
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

    /// The agent stops following the connection: how the waiting requests end will not be seen.
    pub fn abandon(&mut self, notices: &mut Vec<Notice>) {
        for _ in self.pending.drain(..) {
            notices.push(Notice::RequestLost(Protocol::Http1));
        }
    }
}
