//! HTTP/2 over captured plaintext: frames, HPACK (one decoder per direction),
//! streams → the same exchanges as HTTP/1.
//!
//! DATA payloads are skipped by their length (uncaptured bytes are fine there);
//! every other frame must arrive whole, or the direction desynchronises and is
//! counted. A connection joined mid-way cannot know the peers' HPACK dynamic
//! tables, so its header blocks are counted as undecodable, never guessed.

use std::collections::HashMap;

use crate::net::conn::{Exchange, Notice, Outcome, Protocol};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Largest non-DATA frame buffered (the protocol's default max frame size is 16 KiB).
const MAX_FRAME: usize = 1 << 20;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const PUSH_PROMISE: u8 = 5;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Why HTTP/2 bytes could not be used. Counted under [`name`](H2Error::name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H2Error {
    /// A frame header fell into uncaptured bytes, or a frame was malformed.
    Desync,
    /// A header block HPACK could not decode (or that could not be trusted).
    Undecodable,
    /// Frames for a stream the agent never saw open.
    UnknownStream,
    /// A frame header was among bytes the kernel could not deliver.
    Lost,
}

impl H2Error {
    pub fn name(self) -> &'static str {
        match self {
            H2Error::Desync => "desync",
            H2Error::Undecodable => "undecodable_headers",
            H2Error::UnknownStream => "unknown_stream",
            H2Error::Lost => "lost",
        }
    }
}

#[derive(Default)]
struct Stream {
    method: Option<String>,
    path: Option<String>,
    status: Option<u16>,
    start_ns: u64,
    request_bytes: u64,
    response_bytes: u64,
    request_id: Option<String>,
    undecodable: bool,
}

/// A header block waiting for its CONTINUATION frames.
struct Block {
    stream: u32,
    end_stream: bool,
    push: bool,
    bytes: Vec<u8>,
}

struct Direction {
    preface_left: usize,
    /// The frame being assembled (header and payload), when not inside DATA.
    frame: Vec<u8>,
    /// DATA payload bytes still to skip, and what to do at its end.
    skip: u64,
    skip_stream: u32,
    skip_end: bool,
    decoder: loona_hpack::Decoder<'static>,
    /// The decoder's state cannot be trusted (joined mid-way, or it failed once).
    untrusted: bool,
    block: Option<Block>,
    desynced: bool,
}

impl Direction {
    fn new(client: bool, midway: bool) -> Direction {
        Direction {
            preface_left: if client && !midway { PREFACE.len() } else { 0 },
            frame: Vec::new(),
            skip: 0,
            skip_stream: 0,
            skip_end: false,
            decoder: loona_hpack::Decoder::new(),
            untrusted: midway,
            block: None,
            desynced: false,
        }
    }
}

pub struct H2 {
    /// [client → server, server → client] (from the target's point of view,
    /// the target being the client).
    dirs: [Direction; 2],
    streams: HashMap<u32, Stream>,
    /// A direction desynchronised over lost bytes: open streams' outcomes are unknown.
    lost: bool,
}

/// What a frame meant for the exchanges.
struct Out<'a> {
    done: &'a mut Vec<Exchange>,
    notices: &'a mut Vec<Notice>,
}

impl Out<'_> {
    fn error(&mut self, e: H2Error) {
        self.notices.push(Notice::Http2(e));
    }
}

impl H2 {
    /// `midway`: the connection was already open when the agent joined.
    pub fn new(midway: bool) -> H2 {
        H2 { dirs: [Direction::new(true, midway), Direction::new(false, midway)], streams: HashMap::new(), lost: false }
    }

    /// Bytes the client wrote (`from_client`) or read; `gap` uncaptured bytes follow `known`.
    pub fn data(
        &mut self,
        from_client: bool,
        known: &[u8],
        gap: u64,
        ts: u64,
        done: &mut Vec<Exchange>,
        notices: &mut Vec<Notice>,
    ) {
        let mut out = Out { done, notices };
        let d = usize::from(!from_client);
        if self.dirs[d].desynced {
            return;
        }
        self.known(d, known, ts, &mut out);
        if gap > 0 && !self.dirs[d].desynced {
            let dir = &mut self.dirs[d];
            if dir.frame.is_empty() && dir.preface_left == 0 && dir.skip >= gap {
                dir.skip -= gap;
                self.count_data(d, gap);
                if self.dirs[d].skip == 0 {
                    self.data_end(d, ts, &mut out);
                }
            } else {
                self.dirs[d].desynced = true;
                out.error(H2Error::Desync);
            }
        }
    }

    /// `n` bytes the client wrote (`from_client`) or read were lost (the
    /// kernel could not deliver their events). Inside a DATA payload they are
    /// skipped; a response whose END_STREAM was among them is not timed with a
    /// guess; a frame header among them desynchronises the direction.
    pub fn lost(&mut self, from_client: bool, n: u64, notices: &mut Vec<Notice>) {
        let d = usize::from(!from_client);
        let dir = &mut self.dirs[d];
        if dir.desynced {
            return;
        }
        if dir.frame.is_empty() && dir.preface_left == 0 && dir.skip >= n {
            dir.skip -= n;
            let ended = dir.skip == 0 && dir.skip_end && d == 1;
            self.count_data(d, n);
            if ended && self.streams.remove(&self.dirs[d].skip_stream).is_some() {
                notices.push(Notice::RequestLost(Protocol::Http2));
            }
            return;
        }
        dir.desynced = true;
        self.lost = true;
        notices.push(Notice::Http2(H2Error::Lost));
    }

    fn count_data(&mut self, d: usize, n: u64) {
        let id = self.dirs[d].skip_stream;
        if let Some(s) = self.streams.get_mut(&id) {
            if d == 0 {
                s.request_bytes += n;
            } else {
                s.response_bytes += n;
            }
        }
    }

    fn data_end(&mut self, d: usize, ts: u64, out: &mut Out<'_>) {
        if self.dirs[d].skip_end && d == 1 {
            let id = self.dirs[d].skip_stream;
            self.finish_stream(id, None, ts, out);
        }
    }

    fn known(&mut self, d: usize, mut b: &[u8], ts: u64, out: &mut Out<'_>) {
        while !b.is_empty() {
            let dir = &mut self.dirs[d];
            if dir.preface_left > 0 {
                let start = PREFACE.len() - dir.preface_left;
                let k = dir.preface_left.min(b.len());
                if b[..k] != PREFACE[start..start + k] {
                    dir.desynced = true;
                    return out.error(H2Error::Desync);
                }
                dir.preface_left -= k;
                b = &b[k..];
                continue;
            }
            if dir.skip > 0 {
                let k = (dir.skip.min(b.len() as u64)) as usize;
                dir.skip -= k as u64;
                b = &b[k..];
                self.count_data(d, k as u64);
                if self.dirs[d].skip == 0 {
                    self.data_end(d, ts, out);
                }
                continue;
            }
            // Assemble a frame: the 9-byte header, then (except DATA) its payload.
            let need = if dir.frame.len() < 9 { 9 } else { 9 + frame_len(&dir.frame) };
            let k = (need - dir.frame.len()).min(b.len());
            dir.frame.extend_from_slice(&b[..k]);
            b = &b[k..];
            if dir.frame.len() < need {
                continue;
            }
            let (len, kind, flags, stream) = header(&dir.frame);
            if kind == DATA && dir.frame.len() == 9 {
                dir.frame.clear();
                dir.skip = len as u64;
                dir.skip_stream = stream;
                dir.skip_end = flags & END_STREAM != 0;
                if len == 0 {
                    self.data_end(d, ts, out);
                }
                continue;
            }
            if len > MAX_FRAME {
                dir.desynced = true;
                return out.error(H2Error::Desync);
            }
            if dir.frame.len() < 9 + len {
                continue;
            }
            let frame = std::mem::take(&mut dir.frame);
            self.frame(d, kind, flags, stream, &frame[9..], ts, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn frame(&mut self, d: usize, kind: u8, flags: u8, stream: u32, payload: &[u8], ts: u64, out: &mut Out<'_>) {
        match kind {
            HEADERS | PUSH_PROMISE => {
                let Some(fragment) = strip(kind, flags, payload) else {
                    self.dirs[d].desynced = true;
                    return out.error(H2Error::Desync);
                };
                let block = Block {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    push: kind == PUSH_PROMISE,
                    bytes: fragment.to_vec(),
                };
                if flags & END_HEADERS != 0 {
                    self.block(d, block, ts, out);
                } else {
                    self.dirs[d].block = Some(block);
                }
            }
            CONTINUATION => match self.dirs[d].block.take() {
                Some(mut block) if block.stream == stream => {
                    block.bytes.extend_from_slice(payload);
                    if flags & END_HEADERS != 0 {
                        self.block(d, block, ts, out);
                    } else {
                        self.dirs[d].block = Some(block);
                    }
                }
                _ => {
                    self.dirs[d].desynced = true;
                    out.error(H2Error::Desync);
                }
            },
            RST_STREAM => self.finish_stream(stream, Some(Outcome::StreamReset), ts, out),
            GOAWAY if payload.len() >= 4 => {
                let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
                // Streams above the last one the server processed were not answered.
                let unanswered: Vec<u32> = self.streams.keys().copied().filter(|id| *id > last).collect();
                for id in unanswered {
                    self.finish_stream(id, Some(Outcome::PeerClosed), ts, out);
                }
            }
            _ => {}
        }
    }

    fn block(&mut self, d: usize, block: Block, ts: u64, out: &mut Out<'_>) {
        let dir = &mut self.dirs[d];
        let mut method = None;
        let mut path = None;
        let mut status = None;
        let mut request_id = None;
        let decoded = !dir.untrusted
            && dir
                .decoder
                .decode_with_cb(&block.bytes, |name, value| match &*name {
                    b":method" => method = Some(String::from_utf8_lossy(&value).into_owned()),
                    b":path" => path = Some(String::from_utf8_lossy(&value).into_owned()),
                    b":status" => status = std::str::from_utf8(&value).ok().and_then(|s| s.parse::<u16>().ok()),
                    b"x-request-id" | b"x-correlation-id" if value.len() <= 128 => {
                        request_id = Some(String::from_utf8_lossy(&value).into_owned())
                    }
                    _ => {}
                })
                .is_ok();
        if !decoded {
            // Once a block fails, later ones may decode to wrong values: stop trusting.
            dir.untrusted = true;
        }
        if block.push {
            return;
        }
        let size = block.bytes.len() as u64;
        if d == 0 {
            let s = self.streams.entry(block.stream).or_default();
            if s.method.is_none() {
                s.start_ns = ts;
            }
            s.request_bytes += size;
            if decoded {
                s.method = method.or(s.method.take());
                s.path = path.or(s.path.take());
                s.request_id = request_id.or(s.request_id.take());
            } else {
                s.undecodable = true;
            }
            return;
        }
        let Some(s) = self.streams.get_mut(&block.stream) else {
            return out.error(H2Error::UnknownStream);
        };
        s.response_bytes += size;
        match status {
            // 1xx are interim; the final status follows.
            Some(code) if (100..200).contains(&code) => return,
            Some(code) => s.status = Some(code),
            None if !decoded => s.undecodable = true,
            None => {}
        }
        if block.end_stream {
            self.finish_stream(block.stream, None, ts, out);
        }
    }

    fn finish_stream(&mut self, id: u32, outcome: Option<Outcome>, ts: u64, out: &mut Out<'_>) {
        let Some(s) = self.streams.remove(&id) else { return };
        if s.undecodable || s.method.is_none() {
            return out.error(H2Error::Undecodable);
        }
        let outcome = match (outcome, s.status) {
            (Some(o), _) => o,
            (None, Some(code)) => Outcome::Response(code),
            (None, None) => Outcome::PeerClosed,
        };
        out.done.push(Exchange {
            method: s.method.unwrap_or_default(),
            path: s.path.unwrap_or_else(|| "/".into()),
            outcome,
            start_ns: s.start_ns,
            end_ns: ts,
            request_bytes: s.request_bytes,
            response_bytes: s.response_bytes,
            request_id: s.request_id,
            body_digest: s.request_bytes,
        });
    }

    /// The connection ended: open streams end without a response.
    pub fn finish(&mut self, ts: u64, outcome: Outcome, done: &mut Vec<Exchange>, notices: &mut Vec<Notice>) {
        if self.lost {
            // Their answers may have been among the lost bytes: not errors.
            for _ in self.streams.drain() {
                notices.push(Notice::RequestLost(Protocol::Http2));
            }
            return;
        }
        let mut out = Out { done, notices };
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.finish_stream(id, Some(outcome), ts, &mut out);
        }
    }
}

fn frame_len(h: &[u8]) -> usize {
    (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2])
}

/// (length, type, flags, stream id) of a frame header.
fn header(h: &[u8]) -> (usize, u8, u8, u32) {
    (frame_len(h), h[3], h[4], u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff)
}

/// The header-block fragment of a HEADERS or PUSH_PROMISE payload.
fn strip(kind: u8, flags: u8, p: &[u8]) -> Option<&[u8]> {
    let (pad, mut p) = if flags & PADDED != 0 { (usize::from(*p.first()?), p.get(1..)?) } else { (0, p) };
    if kind == HEADERS && flags & PRIORITY != 0 {
        p = p.get(5..)?;
    }
    if kind == PUSH_PROMISE {
        p = p.get(4..)?;
    }
    p.get(..p.len().checked_sub(pad)?)
}

/// Whether `b` plausibly starts an HTTP/2 frame (a connection joined mid-way).
pub fn looks_like_frame(b: &[u8]) -> bool {
    b.len() >= 9 && b[3] <= CONTINUATION && frame_len(b) <= MAX_FRAME && b[5] & 0x80 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    struct Peer {
        enc: loona_hpack::Encoder<'static>,
    }

    impl Peer {
        fn new() -> Peer {
            Peer { enc: loona_hpack::Encoder::new() }
        }
        fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
            self.enc.encode(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
        }
    }

    fn request(p: &mut Peer, stream: u32, method: &str, path: &str, end: bool) -> Vec<u8> {
        let b = p.block(&[
            (":method", method),
            (":path", path),
            (":scheme", "https"),
            (":authority", "x"),
            ("x-request-id", "r-7"),
        ]);
        frame(HEADERS, END_HEADERS | if end { END_STREAM } else { 0 }, stream, &b)
    }

    fn response(p: &mut Peer, stream: u32, status: &str, end: bool) -> Vec<u8> {
        let b = p.block(&[(":status", status), ("content-type", "text/plain")]);
        frame(HEADERS, END_HEADERS | if end { END_STREAM } else { 0 }, stream, &b)
    }

    struct Run {
        h2: H2,
        done: Vec<Exchange>,
        notices: Vec<Notice>,
    }

    impl Run {
        fn new(midway: bool) -> Run {
            Run { h2: H2::new(midway), done: Vec::new(), notices: Vec::new() }
        }
        fn send(&mut self, from_client: bool, bytes: &[u8], ts: u64) {
            self.h2.data(from_client, bytes, 0, ts, &mut self.done, &mut self.notices);
        }
    }

    #[test]
    fn streams_become_exchanges() {
        let (mut c, mut s) = (Peer::new(), Peer::new());
        let mut r = Run::new(false);
        let mut out = PREFACE.to_vec();
        out.extend(frame(4, 0, 0, &[0, 1, 0, 0, 0x10, 0])); // SETTINGS header_table_size=4096
        out.extend(request(&mut c, 1, "GET", "/api/App/Version", true));
        out.extend(request(&mut c, 3, "POST", "/api/Report/WSJF", false));
        r.send(true, &out, 10);
        // Byte by byte: frames split over many calls.
        for b in frame(DATA, END_STREAM, 3, b"{}") {
            r.send(true, &[b], 11);
        }
        let mut back = response(&mut s, 3, "500", false);
        back.extend(response(&mut s, 1, "200", false));
        back.extend(frame(DATA, END_STREAM, 1, b"\"2025.1\""));
        r.send(false, &back, 20);
        assert_eq!(r.done.len(), 1);
        assert_eq!(
            (r.done[0].method.as_str(), r.done[0].path.as_str(), r.done[0].outcome),
            ("GET", "/api/App/Version", Outcome::Response(200))
        );
        assert_eq!((r.done[0].start_ns, r.done[0].end_ns), (10, 20));
        assert_eq!(r.done[0].request_id.as_deref(), Some("r-7"));
        r.send(false, &frame(DATA, END_STREAM, 3, b"oops"), 30);
        assert_eq!(
            (r.done[1].path.as_str(), r.done[1].outcome, r.done[1].end_ns),
            ("/api/Report/WSJF", Outcome::Response(500), 30)
        );
        assert_eq!(r.notices, []);
    }

    #[test]
    fn continuation_padding_priority_and_interim() {
        let (mut c, mut s) = (Peer::new(), Peer::new());
        let mut r = Run::new(false);
        let b = c.block(&[(":method", "GET"), (":path", "/a"), ("x-long", &"v".repeat(100))]);
        let (first, second) = b.split_at(10);
        let mut payload = vec![3u8]; // pad length
        payload.extend([0, 0, 0, 0, 16]); // priority
        payload.extend_from_slice(first);
        payload.extend([0, 0, 0]);
        let mut out = PREFACE.to_vec();
        out.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 5, &payload));
        out.extend(frame(CONTINUATION, END_HEADERS, 5, second));
        r.send(true, &out, 1);
        let mut back = response(&mut s, 5, "100", false);
        back.extend(response(&mut s, 5, "204", true));
        r.send(false, &back, 2);
        assert_eq!(r.notices, []);
        assert_eq!(r.done.len(), 1);
        assert_eq!(r.done[0].outcome, Outcome::Response(204));
    }

    #[test]
    fn rst_stream_and_goaway() {
        let c = &mut Peer::new();
        let mut r = Run::new(false);
        let mut out = PREFACE.to_vec();
        for id in [1, 3, 5] {
            out.extend(request(c, id, "GET", "/x", true));
        }
        out.extend(frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]));
        r.send(true, &out, 1);
        assert_eq!(r.done[0].outcome, Outcome::StreamReset);
        // The server processed up to stream 3: stream 5 was not answered.
        r.send(false, &frame(GOAWAY, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0]), 2);
        assert_eq!(r.done[1].outcome, Outcome::PeerClosed);
        assert_eq!(r.done.len(), 2);
        r.h2.finish(3, Outcome::Abandoned, &mut r.done, &mut r.notices);
        assert_eq!(r.done[2].outcome, Outcome::Abandoned);
    }

    #[test]
    fn lost_bytes_skip_data_drop_streams_ended_in_them_and_desync_over_frames() {
        let (mut c, mut s) = (Peer::new(), Peer::new());
        let mut r = Run::new(false);
        let mut out = PREFACE.to_vec();
        for id in [1, 3, 5] {
            out.extend(request(&mut c, id, "GET", "/big", true));
        }
        r.send(true, &out, 1);
        let data = |stream: u32, len: u32| {
            let mut f = frame(DATA, END_STREAM, stream, &[]);
            f[0..3].copy_from_slice(&len.to_be_bytes()[1..]);
            f
        };
        // Stream 1: part of its payload lost, its end seen: timed exactly.
        r.send(false, &response(&mut s, 1, "200", false), 2);
        r.send(false, &data(1, 10_000), 3);
        r.h2.lost(false, 9_000, &mut r.notices);
        r.send(false, &[b'x'; 1000], 4);
        // Response bytes: the 14-byte header block and the whole payload, lost part included.
        assert_eq!((r.done.len(), r.done[0].end_ns, r.done[0].response_bytes), (1, 4, 10_014));
        // Stream 3: the rest of its payload, with its END_STREAM, lost: not guessed.
        r.send(false, &response(&mut s, 3, "200", false), 5);
        r.send(false, &data(3, 500), 6);
        r.h2.lost(false, 500, &mut r.notices);
        assert_eq!(r.notices, [Notice::RequestLost(Protocol::Http2)]);
        // A frame header among lost bytes: the direction is lost, and stream 5 with it.
        r.h2.lost(false, 40, &mut r.notices);
        r.send(false, &response(&mut s, 5, "200", true), 7);
        r.h2.finish(8, Outcome::PeerClosed, &mut r.done, &mut r.notices);
        assert_eq!(r.done.len(), 1);
        assert_eq!(
            r.notices,
            [Notice::RequestLost(Protocol::Http2), Notice::Http2(H2Error::Lost), Notice::RequestLost(Protocol::Http2)]
        );
    }

    #[test]
    fn gaps_inside_data_are_skipped_gaps_over_frames_desync() {
        let (mut c, mut s) = (Peer::new(), Peer::new());
        let mut r = Run::new(false);
        let mut out = PREFACE.to_vec();
        out.extend(request(&mut c, 1, "GET", "/big", true));
        r.send(true, &out, 1);
        // A DATA frame header announcing 100000 bytes, then its payload mostly uncaptured.
        let mut big = frame(DATA, END_STREAM, 1, &[]);
        big[0..3].copy_from_slice(&[0x01, 0x86, 0xa0]);
        r.send(false, &response(&mut s, 1, "200", false), 2);
        r.h2.data(false, &big, 99_000, 3, &mut r.done, &mut r.notices);
        r.send(false, &[b'x'; 1000], 4);
        assert_eq!(r.done.len(), 1);
        assert_eq!((r.done[0].end_ns, r.done[0].response_bytes > 100_000), (4, true));
        // A gap where a frame header should be.
        r.h2.data(false, &[], 50, 5, &mut r.done, &mut r.notices);
        assert_eq!(r.notices, [Notice::Http2(H2Error::Desync)]);
    }

    #[test]
    fn joined_midway_headers_are_counted_not_guessed() {
        let (mut c, mut s) = (Peer::new(), Peer::new());
        let mut r = Run::new(true);
        r.send(true, &request(&mut c, 7, "GET", "/x", true), 1);
        r.send(false, &response(&mut s, 7, "200", true), 2);
        assert!(r.done.is_empty());
        assert_eq!(r.notices, [Notice::Http2(H2Error::Undecodable)]);
        assert!(looks_like_frame(&request(&mut c, 9, "GET", "/y", true)));
        assert!(!looks_like_frame(b"GET / HTTP/1.1\r\n\r\n"));
    }

    #[test]
    fn hpack_garbage_stops_trust() {
        let mut r = Run::new(false);
        let mut out = PREFACE.to_vec();
        out.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0xff, 0xff, 0xff, 0xff, 0x7f]));
        r.send(true, &out, 1);
        r.send(false, &response(&mut Peer::new(), 1, "200", true), 2);
        assert_eq!(r.notices, [Notice::Http2(H2Error::Undecodable)]);
        assert!(r.done.is_empty());
    }
}
