//! HTTP/2 over captured plaintext: frames, HPACK (one decoder per direction),
//! streams → the same exchanges as HTTP/1.
//!
//! DATA payloads, and frames the agent does not read, are skipped by their
//! length (uncaptured bytes are fine there); the frames it reads (HEADERS,
//! CONTINUATION, PUSH_PROMISE, SETTINGS, RST_STREAM, GOAWAY) must arrive
//! whole, or the direction desynchronises and is counted. A connection
//! joined mid-way cannot know the peers' HPACK dynamic tables, so its header
//! blocks are counted as undecodable, never guessed.
//!
//! Bounded whatever the peer sends (`net::limits`): a frame to read is
//! buffered up to [`H2_MAX_FRAME`], a header block up to
//! [`H2_MAX_HEADER_BLOCK`] and [`H2_MAX_HEADER_FIELDS`], the HPACK table up to
//! the reader's SETTINGS_HEADER_TABLE_SIZE and [`HPACK_MAX_TABLE`](crate::net::limits::HPACK_MAX_TABLE),
//! open streams up to [`H2_MAX_STREAMS`]. A header block over a cap is skipped
//! by length and counted; the encoder's table then changed in ways the agent
//! did not follow, so its direction is no longer trusted.

use std::{
    collections::{hash_map::DefaultHasher, BTreeMap},
    hash::Hasher,
};

use crate::net::{
    hpack::{self, Field, HpackError},
    limits::{extend_within, Limit, H2_MAX_FRAME, H2_MAX_HEADER_BLOCK, H2_MAX_HEADER_FIELDS, H2_MAX_STREAMS},
    report::{kept_method, kept_path, Correlation, CorrelationHeaders, Exchange, H2Error, Notice, Outcome, Protocol},
    report_id::{self, ReportIdScan},
    retry::DIGEST_BODY,
};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Largest frame length taken as plausible when telling HTTP/2 frames from
/// other bytes on a connection joined mid-way.
const PLAUSIBLE_FRAME: usize = 1 << 20;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

#[derive(Default)]
struct Stream {
    method: Option<String>,
    path: Option<String>,
    status: Option<u16>,
    start_ns: u64,
    request_bytes: u64,
    response_bytes: u64,
    correlation: Option<Correlation>,
    /// A report upload's DATA being read for its id.
    report_id: Option<ReportIdScan>,
    undecodable: bool,
    /// DATA payload bytes of the request, and a hash of the first
    /// [`DIGEST_BODY`] of them where captured: which request this is, for
    /// retries (the header block's size depends on HPACK's table, not on the request).
    body_bytes: u64,
    body_hash: DefaultHasher,
}

impl Stream {
    fn held(&self) -> usize {
        let s = |v: &Option<String>| v.as_ref().map_or(0, String::capacity);
        std::mem::size_of::<(u32, Stream)>()
            + s(&self.method)
            + s(&self.path)
            + self.correlation.as_ref().map_or(0, Correlation::held)
            + self.report_id.as_ref().map_or(0, ReportIdScan::held)
    }
}

/// A header block waiting for its CONTINUATION frames.
struct Block {
    stream: u32,
    end_stream: bool,
    push: bool,
    bytes: Vec<u8>,
    /// Fragment bytes seen, kept or not.
    size: u64,
    /// Over [`H2_MAX_HEADER_BLOCK`] or [`H2_MAX_FRAME`]: not kept, not decoded.
    oversized: bool,
}

/// What payload bytes being skipped belong to.
#[derive(Clone, Copy)]
enum Skip {
    /// A DATA payload: counted into its stream, which may end with it.
    Data { stream: u32, end_stream: bool },
    /// A frame the agent does not read.
    Unread,
    /// A header-block frame over the caps, ending its block when END_HEADERS.
    Block { end_headers: bool },
}

struct Direction {
    preface_left: usize,
    /// The frame being read (header and payload), when not skipping.
    frame: Vec<u8>,
    /// Payload bytes still to skip, and what they are.
    skip: u64,
    skipping: Skip,
    decoder: hpack::Decoder,
    /// The decoder's state cannot be trusted (joined mid-way, it failed
    /// once, or a block over the caps went by).
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
            skipping: Skip::Unread,
            decoder: hpack::Decoder::default(),
            untrusted: midway,
            block: None,
            desynced: false,
        }
    }

    /// Between frames or inside a skipped payload: where bytes can go missing.
    fn can_skip(&self, n: u64) -> bool {
        self.frame.is_empty() && self.preface_left == 0 && self.skip >= n
    }

    fn held(&self) -> usize {
        self.frame.capacity() + self.block.as_ref().map_or(0, |b| b.bytes.capacity()) + self.decoder.held()
    }
}

pub struct H2 {
    /// [client → server, server → client] (from the target's point of view,
    /// the target being the client).
    dirs: [Direction; 2],
    /// Open streams by id; ids only grow, so the first is the oldest.
    streams: BTreeMap<u32, Stream>,
    /// Highest stream id dropped past [`H2_MAX_STREAMS`]: frames of streams up
    /// to it are of a dropped stream, already counted.
    dropped_up_to: u32,
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
    fn limit(&mut self, l: Limit) {
        self.notices.push(Notice::Limit(l));
    }
}

/// The fields of one header block the agent reads.
#[derive(Default)]
struct Fields {
    method: Option<String>,
    path: Option<String>,
    status: Option<u16>,
    correlation: CorrelationHeaders,
}

impl Fields {
    fn set(&mut self, field: Field, value: &[u8]) {
        match field {
            Field::Method => self.method = Some(kept_method(value)),
            Field::Path => self.path = Some(kept_path(value)),
            // A status is three digits (RFC 9113 §8.3.2).
            Field::Status if value.len() == 3 => {
                self.status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok())
            }
            Field::RequestId => self.correlation.offer(b"x-request-id", value),
            Field::CorrelationId => self.correlation.offer(b"x-correlation-id", value),
            Field::TraceParent => self.correlation.offer(b"traceparent", value),
            Field::Status | Field::Other => {}
        }
    }
}

impl H2 {
    /// `midway`: the connection was already open when the agent joined.
    pub fn new(midway: bool) -> H2 {
        H2 {
            dirs: [Direction::new(true, midway), Direction::new(false, midway)],
            streams: BTreeMap::new(),
            dropped_up_to: 0,
            lost: false,
        }
    }

    /// Heap bytes held (buffers, HPACK tables, open streams).
    pub fn held(&self) -> usize {
        self.dirs.iter().map(Direction::held).sum::<usize>() + self.streams.values().map(Stream::held).sum::<usize>()
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
            if self.dirs[d].can_skip(gap) {
                self.skipped(d, gap, None);
                if self.dirs[d].skip == 0 {
                    self.skip_end(d, ts, &mut out);
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
    /// guess; a frame header, or a header block's end, among them
    /// desynchronises the direction.
    pub fn lost(&mut self, from_client: bool, n: u64, notices: &mut Vec<Notice>) {
        let d = usize::from(!from_client);
        let dir = &mut self.dirs[d];
        if dir.desynced {
            return;
        }
        let block_end = matches!(dir.skipping, Skip::Block { .. }) && dir.skip == n;
        if dir.can_skip(n) && !block_end {
            let ended = match dir.skipping {
                Skip::Data { stream, end_stream } if dir.skip == n && end_stream && d == 1 => Some(stream),
                _ => None,
            };
            self.skipped(d, n, None);
            if ended.is_some_and(|id| self.streams.remove(&id).is_some()) {
                notices.push(Notice::RequestLost(Protocol::Http2));
            }
            return;
        }
        dir.desynced = true;
        self.lost = true;
        notices.push(Notice::Http2(H2Error::Lost));
    }

    /// `n` payload bytes skipped: `bytes` when captured, `None` for a gap or a loss.
    fn skipped(&mut self, d: usize, n: u64, bytes: Option<&[u8]>) {
        let dir = &mut self.dirs[d];
        dir.skip -= n;
        let Skip::Data { stream, .. } = dir.skipping else { return };
        if let Some(s) = self.streams.get_mut(&stream) {
            if d == 0 {
                s.request_bytes += n;
                if let Some(b) = bytes.filter(|_| s.body_bytes < DIGEST_BODY) {
                    s.body_hash.write(&b[..b.len().min((DIGEST_BODY - s.body_bytes) as usize)]);
                }
                s.body_bytes += n;
                if let Some(scan) = s.report_id.as_mut() {
                    match bytes {
                        Some(b) => scan.feed(b),
                        None => scan.stop(),
                    }
                }
            } else {
                s.response_bytes += n;
            }
        }
    }

    /// The skipped payload ended.
    fn skip_end(&mut self, d: usize, ts: u64, out: &mut Out<'_>) {
        match self.dirs[d].skipping {
            Skip::Data { stream, end_stream: true } if d == 1 => self.finish_stream(stream, None, ts, out),
            Skip::Block { end_headers: true } => {
                if let Some(block) = self.dirs[d].block.take() {
                    self.block(d, block, ts, out);
                }
            }
            Skip::Data { .. } | Skip::Block { .. } | Skip::Unread => {}
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
                let k = dir.skip.min(b.len() as u64);
                let (payload, rest) = b.split_at(k as usize);
                b = rest;
                self.skipped(d, k, Some(payload));
                if self.dirs[d].skip == 0 {
                    self.skip_end(d, ts, out);
                }
                continue;
            }
            if dir.frame.len() < 9 {
                let k = (9 - dir.frame.len()).min(b.len());
                dir.frame.extend_from_slice(&b[..k]);
                b = &b[k..];
                if dir.frame.len() < 9 {
                    continue;
                }
                let (len, kind, flags, stream) = header(&dir.frame);
                // The rest of a header block over the caps is not read either.
                let dropped_block = kind == CONTINUATION && dir.block.as_ref().is_some_and(|b| b.oversized);
                if !reads(kind) || len > H2_MAX_FRAME || dropped_block {
                    dir.frame.clear();
                    self.skip_frame(d, len, kind, flags, stream, ts, out);
                    if self.dirs[d].desynced {
                        return;
                    }
                    continue;
                }
                dir.frame.reserve_exact(len);
            }
            // The payload of a frame to read (possibly empty: read at once).
            let dir = &mut self.dirs[d];
            let need = 9 + frame_len(&dir.frame) - dir.frame.len();
            let k = need.min(b.len());
            dir.frame.extend_from_slice(&b[..k]);
            b = &b[k..];
            if k == need {
                let frame = std::mem::take(&mut dir.frame);
                let (_, kind, flags, stream) = header(&frame);
                self.frame(d, kind, flags, stream, &frame[9..], ts, out);
                if self.dirs[d].desynced {
                    return;
                }
            }
        }
    }

    /// A frame whose payload is not read: DATA, a kind the agent ignores, or
    /// one over [`H2_MAX_FRAME`].
    #[allow(clippy::too_many_arguments)]
    fn skip_frame(&mut self, d: usize, len: usize, kind: u8, flags: u8, stream: u32, ts: u64, out: &mut Out<'_>) {
        let skipping = match kind {
            DATA => Skip::Data { stream, end_stream: flags & END_STREAM != 0 },
            HEADERS | PUSH_PROMISE => {
                out.limit(Limit::H2HeaderBlock);
                let end_stream = flags & END_STREAM != 0;
                let block = Block {
                    stream,
                    end_stream,
                    push: kind == PUSH_PROMISE,
                    bytes: Vec::new(),
                    size: 0,
                    oversized: true,
                };
                self.dirs[d].block = Some(block);
                Skip::Block { end_headers: flags & END_HEADERS != 0 }
            }
            CONTINUATION => match self.dirs[d].block.as_mut() {
                Some(block) if block.stream == stream => {
                    if !block.oversized {
                        out.limit(Limit::H2HeaderBlock);
                    }
                    (block.bytes, block.oversized) = (Vec::new(), true);
                    Skip::Block { end_headers: flags & END_HEADERS != 0 }
                }
                _ => {
                    self.dirs[d].desynced = true;
                    return out.error(H2Error::Desync);
                }
            },
            _ if reads(kind) => {
                out.limit(Limit::H2Frame);
                Skip::Unread
            }
            _ => Skip::Unread,
        };
        if let Some(block) = self.dirs[d].block.as_mut().filter(|_| matches!(skipping, Skip::Block { .. })) {
            block.size += len as u64;
        }
        let dir = &mut self.dirs[d];
        (dir.skip, dir.skipping) = (len as u64, skipping);
        if len == 0 {
            self.skip_end(d, ts, out);
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
                    size: fragment.len() as u64,
                    oversized: false,
                };
                if flags & END_HEADERS != 0 {
                    self.block(d, block, ts, out);
                } else {
                    self.dirs[d].block = Some(block);
                }
            }
            CONTINUATION => match self.dirs[d].block.take() {
                Some(mut block) if block.stream == stream => {
                    block.size += payload.len() as u64;
                    if !block.oversized && block.bytes.len() + payload.len() > H2_MAX_HEADER_BLOCK {
                        out.limit(Limit::H2HeaderBlock);
                        (block.bytes, block.oversized) = (Vec::new(), true);
                    }
                    if !block.oversized {
                        extend_within(&mut block.bytes, payload, H2_MAX_HEADER_BLOCK);
                    }
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
            // The peer writing this direction tells how large a table its
            // decoder allows: the other direction's encoder may grow to it.
            SETTINGS if flags & ACK == 0 => {
                for s in payload.chunks_exact(6) {
                    if u16::from_be_bytes([s[0], s[1]]) == SETTINGS_HEADER_TABLE_SIZE {
                        self.dirs[1 - d].decoder.allow(u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
                    }
                }
            }
            RST_STREAM => self.finish_stream(stream, Some(Outcome::StreamReset), ts, out),
            GOAWAY if payload.len() >= 4 => {
                let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
                // Streams above the last one the server processed were not answered.
                let unanswered: Vec<u32> = self.streams.range(last.saturating_add(1)..).map(|(id, _)| *id).collect();
                for id in unanswered {
                    self.finish_stream(id, Some(Outcome::PeerClosed), ts, out);
                }
            }
            _ => {}
        }
    }

    fn block(&mut self, d: usize, block: Block, ts: u64, out: &mut Out<'_>) {
        let dir = &mut self.dirs[d];
        let mut fields = Fields::default();
        let decoded = !block.oversized
            && !dir.untrusted
            && match dir.decoder.decode(&block.bytes, H2_MAX_HEADER_FIELDS, |f, v| fields.set(f, v)) {
                Ok(()) => true,
                Err(e) => {
                    match e {
                        HpackError::TableSize => out.limit(Limit::H2HeaderTable),
                        HpackError::TooManyFields => out.limit(Limit::H2HeaderFields),
                        HpackError::Malformed | HpackError::Huffman => {}
                    }
                    false
                }
            };
        if !decoded {
            // Once a block is not followed, later ones may decode to wrong
            // values: stop trusting. Fields read before a failure are not used.
            dir.untrusted = true;
            fields = Fields::default();
        }
        if block.push {
            return;
        }
        if d == 0 {
            if !self.streams.contains_key(&block.stream) {
                if block.stream <= self.dropped_up_to {
                    return;
                }
                if self.streams.len() >= H2_MAX_STREAMS {
                    if let Some((oldest, _)) = self.streams.pop_first() {
                        self.dropped_up_to = self.dropped_up_to.max(oldest);
                        out.limit(Limit::H2Streams);
                    }
                }
            }
            let s = self.streams.entry(block.stream).or_default();
            if s.method.is_none() {
                s.start_ns = ts;
            }
            s.request_bytes += block.size;
            if decoded {
                s.method = fields.method.or(s.method.take());
                s.path = fields.path.or(s.path.take());
                s.correlation = fields.correlation.correlation().or(s.correlation.take());
                if let (Some(method), Some(path), None) = (&s.method, &s.path, &s.report_id) {
                    if report_id::is_upload(method, path) {
                        s.report_id = Some(ReportIdScan::default());
                    }
                }
            } else {
                s.undecodable = true;
            }
            return;
        }
        let Some(s) = self.streams.get_mut(&block.stream) else {
            if block.stream > self.dropped_up_to {
                out.error(H2Error::UnknownStream);
            }
            return;
        };
        s.response_bytes += block.size;
        match fields.status {
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
        let report = s.report_id.and_then(|mut scan| scan.take()).map(Correlation::ReportId);
        out.done.push(Exchange {
            method: s.method.unwrap_or_default(),
            path: s.path.unwrap_or_else(|| "/".into()),
            outcome,
            start_ns: s.start_ns,
            end_ns: ts,
            request_bytes: s.request_bytes,
            response_bytes: s.response_bytes,
            correlation: s.correlation.or(report),
            body_digest: s.body_hash.finish() ^ s.body_bytes,
        });
    }

    /// The connection ended: open streams end without a response.
    pub fn finish(&mut self, ts: u64, outcome: Outcome, done: &mut Vec<Exchange>, notices: &mut Vec<Notice>) {
        if self.lost {
            // Their answers may have been among the lost bytes: not errors.
            return self.abandon(notices);
        }
        let mut out = Out { done, notices };
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.finish_stream(id, Some(outcome), ts, &mut out);
        }
    }

    /// The agent stops following the connection: how its open streams end
    /// will not be seen.
    pub fn abandon(&mut self, notices: &mut Vec<Notice>) {
        for _ in std::mem::take(&mut self.streams) {
            notices.push(Notice::RequestLost(Protocol::Http2));
        }
    }
}

/// Frames whose payload the agent reads.
fn reads(kind: u8) -> bool {
    matches!(kind, HEADERS | PUSH_PROMISE | CONTINUATION | SETTINGS | RST_STREAM | GOAWAY)
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
    b.len() >= 9 && b[3] <= CONTINUATION && frame_len(b) <= PLAUSIBLE_FRAME && b[5] & 0x80 == 0
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

    /// The same request on another stream has the same body digest, however
    /// HPACK shrank its headers; another body of the same size has another.
    #[test]
    fn the_body_digest_tells_requests_apart_by_their_body() {
        let mut c = Peer::new();
        let mut r = Run::new(false);
        r.send(true, PREFACE, 1);
        let mut s = Peer::new();
        for (id, body) in [(1, &b"{\"id\":\"a\"}"[..]), (3, b"{\"id\":\"a\"}"), (5, b"{\"id\":\"b\"}")] {
            let mut out = request(&mut c, id, "POST", "/api/Report/WSJF", false);
            out.extend(frame(DATA, END_STREAM, id, body));
            r.send(true, &out, 10);
            r.send(false, &response(&mut s, id, "500", true), 20);
        }
        let d: Vec<u64> = r.done.iter().map(|x| x.body_digest).collect();
        assert_ne!(r.done[0].request_bytes, r.done[1].request_bytes, "HPACK indexed the second head");
        assert_eq!(d[0], d[1]);
        assert_ne!(d[1], d[2]);
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
        assert_eq!(r.done[0].correlation, Some(Correlation::RequestId("r-7".into())));
        r.send(false, &frame(DATA, END_STREAM, 3, b"oops"), 30);
        assert_eq!(
            (r.done[1].path.as_str(), r.done[1].outcome, r.done[1].end_ns),
            ("/api/Report/WSJF", Outcome::Response(500), 30)
        );
        assert_eq!(r.notices, []);
    }

    #[test]
    fn a_report_upload_names_its_report_and_a_traceparent_its_trace() {
        let (mut c, mut s) = (Peer::new(), Peer::new());
        let mut r = Run::new(false);
        let mut out = PREFACE.to_vec();
        let upload = [(":method", "POST"), (":path", "/api/Report/WSJF"), (":scheme", "https"), (":authority", "x")];
        out.extend(frame(HEADERS, END_HEADERS, 1, &c.block(&upload)));
        let traced = [
            (":method", "GET"),
            (":path", "/api/App/Version"),
            (":scheme", "https"),
            (":authority", "x"),
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ];
        out.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &c.block(&traced)));
        r.send(true, &out, 10);
        // The report in two DATA frames, the id split between them, the second byte by byte.
        let body = br#"{"id": "0b8f2c1e-6d7a-4c5b-9e3f-2a1b0c9d8e7f", "type": "T"}"#;
        r.send(true, &frame(DATA, 0, 1, &body[..12]), 11);
        for b in frame(DATA, END_STREAM, 1, &body[12..]) {
            r.send(true, &[b], 12);
        }
        let mut back = response(&mut s, 1, "200", true);
        back.extend(response(&mut s, 3, "200", true));
        r.send(false, &back, 20);
        let ids: Vec<_> = r.done.iter().map(|x| x.correlation.clone()).collect();
        assert_eq!(
            ids,
            [
                Some(Correlation::ReportId("0b8f2c1e-6d7a-4c5b-9e3f-2a1b0c9d8e7f".into())),
                Some(Correlation::TraceId("4bf92f3577b34da6a3ce929d0e0e4736".into())),
            ]
        );
        // A gap in the body: the bytes after it are not read for an id.
        let mut r = Run::new(false);
        let mut out = PREFACE.to_vec();
        out.extend(frame(HEADERS, END_HEADERS, 1, &c.block(&upload)));
        let data = frame(DATA, END_STREAM, 1, body);
        out.extend(&data[..9 + 2]);
        r.h2.data(true, &out, 5, 10, &mut r.done, &mut r.notices);
        r.send(true, &data[9 + 7..], 11);
        r.send(false, &response(&mut s, 1, "200", true), 20);
        assert_eq!(r.done.len(), 1);
        assert_eq!(r.done[0].correlation, None);
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

    /// A request header block with `n` extra literal fields.
    fn fat_request(stream: u32, n: usize) -> Vec<u8> {
        let mut b = vec![0x82, 0x84]; // :method GET, :path /
        for _ in 0..n {
            b.extend([0x00, 0x01, b'a', 0x01, b'b']);
        }
        frame(HEADERS, END_HEADERS | END_STREAM, stream, &b)
    }

    fn limits(r: &Run) -> Vec<Limit> {
        r.notices.iter().filter_map(|n| if let Notice::Limit(l) = n { Some(*l) } else { None }).collect()
    }

    #[test]
    fn a_continuation_flood_is_skipped_not_kept() {
        let (mut c, mut s) = (Peer::new(), Peer::new());
        let mut r = Run::new(false);
        let mut out = PREFACE.to_vec();
        out.extend(frame(HEADERS, 0, 1, &c.block(&[(":method", "GET"), (":path", "/flood")])));
        r.send(true, &out, 1);
        // 8 MiB of CONTINUATION, in frames of 16 KiB.
        let fragment = frame(CONTINUATION, 0, 1, &[0x40; H2_MAX_FRAME]);
        for _ in 0..512 {
            r.send(true, &fragment, 2);
            assert!(r.h2.held() < 2 * H2_MAX_HEADER_BLOCK, "{}", r.h2.held());
        }
        r.send(true, &frame(CONTINUATION, END_HEADERS, 1, &[]), 3);
        assert_eq!(limits(&r), [Limit::H2HeaderBlock]);
        // The stream is known but undecodable; the direction is no longer trusted.
        r.send(false, &response(&mut s, 1, "200", true), 4);
        r.send(true, &request(&mut c, 3, "GET", "/after", true), 5);
        r.send(false, &response(&mut s, 3, "200", true), 6);
        assert!(r.done.is_empty());
        assert_eq!(r.notices[1..], [Notice::Http2(H2Error::Undecodable), Notice::Http2(H2Error::Undecodable)]);
    }

    #[test]
    fn a_frame_over_the_cap_is_skipped_with_gaps_and_counted() {
        let mut r = Run::new(false);
        let mut out = PREFACE.to_vec();
        // One HEADERS frame of 1 MiB, its middle not captured.
        let mut big = frame(HEADERS, END_HEADERS | END_STREAM, 1, &[]);
        big[0..3].copy_from_slice(&[0x10, 0x00, 0x00]);
        out.extend(big);
        r.send(true, &out, 1);
        r.h2.data(true, &[0x40; 100], (1 << 20) - 200, 2, &mut r.done, &mut r.notices);
        r.send(true, &[0x40; 100], 3);
        // A SETTINGS frame over the cap is skipped too.
        let mut settings = frame(SETTINGS, 0, 0, &[]);
        settings[0..3].copy_from_slice(&[0x00, 0x60, 0x00]);
        r.send(false, &settings, 4);
        r.send(false, &[0; 0x6000], 5);
        assert!(r.h2.held() < H2_MAX_FRAME, "{}", r.h2.held());
        assert_eq!(limits(&r), [Limit::H2HeaderBlock, Limit::H2Frame]);
        // Frames stay in sync: a response for stream 1 ends it (undecodable).
        r.send(false, &response(&mut Peer::new(), 1, "200", true), 6);
        assert_eq!(r.notices.last(), Some(&Notice::Http2(H2Error::Undecodable)));
        assert!(!r.notices.contains(&Notice::Http2(H2Error::Desync)));
    }

    #[test]
    fn table_size_follows_settings_up_to_the_cap() {
        let mut r = Run::new(false);
        let mut out = PREFACE.to_vec();
        // The client allows the server's encoder a 1 MiB table.
        out.extend(frame(SETTINGS, 0, 0, &[0, 1, 0, 0x10, 0, 0]));
        out.extend(request(&mut Peer::new(), 1, "GET", "/a", true));
        out.extend(request(&mut Peer::new(), 3, "GET", "/b", true));
        r.send(true, &out, 1);
        // Stream 1: an update to 64 KiB is followed.
        let mut b = vec![0x3f, 0xe1, 0xff, 0x03, 0x88]; // size update 65536, :status 200
        r.send(false, &frame(HEADERS, END_HEADERS | END_STREAM, 1, &b), 2);
        assert_eq!(r.done.len(), 1);
        // Stream 3: an update to 2^28 is refused and stops trust.
        b = vec![0x3f, 0xe1, 0xff, 0xff, 0x7f, 0x88];
        r.send(false, &frame(HEADERS, END_HEADERS | END_STREAM, 3, &b), 3);
        assert_eq!(r.done.len(), 1);
        assert_eq!(limits(&r), [Limit::H2HeaderTable]);
        assert!(r.h2.held() < 4 * H2_MAX_FRAME, "{}", r.h2.held());
    }

    #[test]
    fn header_fields_per_block_are_capped() {
        let mut r = Run::new(false);
        let mut out = PREFACE.to_vec();
        out.extend(fat_request(1, H2_MAX_HEADER_FIELDS - 2));
        out.extend(fat_request(3, H2_MAX_HEADER_FIELDS - 1));
        r.send(true, &out, 1);
        let mut s = Peer::new();
        r.send(false, &response(&mut s, 1, "200", true), 2);
        r.send(false, &response(&mut s, 3, "200", true), 3);
        assert_eq!(r.done.len(), 1);
        assert_eq!(limits(&r), [Limit::H2HeaderFields]);
    }

    #[test]
    fn a_response_block_over_the_field_cap_is_undecodable_even_after_its_status() {
        let mut r = Run::new(false);
        let mut out = PREFACE.to_vec();
        out.extend(request(&mut Peer::new(), 1, "GET", "/x", true));
        r.send(true, &out, 1);
        // :status 200 first, then more fields than the cap.
        let mut b = vec![0x88];
        for _ in 0..H2_MAX_HEADER_FIELDS {
            b.extend([0x00, 0x81, 0x1f, 0x81, 0x1f]);
        }
        r.send(false, &frame(HEADERS, END_HEADERS | END_STREAM, 1, &b), 2);
        assert!(r.done.is_empty());
        assert_eq!(r.notices, [Notice::Limit(Limit::H2HeaderFields), Notice::Http2(H2Error::Undecodable)]);
    }

    #[test]
    fn open_streams_are_capped_oldest_dropped() {
        let (mut c, mut s) = (Peer::new(), Peer::new());
        let mut r = Run::new(false);
        r.send(true, PREFACE, 0);
        let ids: Vec<u32> = (0..H2_MAX_STREAMS as u32 + 10).map(|i| 2 * i + 1).collect();
        for &id in &ids {
            r.send(true, &request(&mut c, id, "GET", "/x", true), 1);
        }
        assert_eq!(limits(&r), [Limit::H2Streams; 10]);
        // Answers to dropped streams are not errors (already counted); the rest are recorded.
        for &id in &ids {
            r.send(false, &response(&mut s, id, "200", true), 2);
        }
        assert_eq!(r.done.len(), H2_MAX_STREAMS);
        assert_eq!(r.notices.len(), 10);
    }

    #[test]
    fn frames_not_read_are_skipped_whatever_their_size() {
        let mut r = Run::new(false);
        let mut out = PREFACE.to_vec();
        out.extend(request(&mut Peer::new(), 1, "GET", "/x", true));
        // A PING and an unknown frame type of 10 MiB, mostly uncaptured.
        out.extend(frame(6, 0, 0, &[0; 8]));
        let mut unknown = frame(0x42, 0, 0, &[]);
        unknown[0..3].copy_from_slice(&[0xa0, 0x00, 0x00]);
        out.extend(unknown);
        r.send(true, &out, 1);
        r.h2.data(true, &[], 0xa0_0000, 2, &mut r.done, &mut r.notices);
        r.send(false, &response(&mut Peer::new(), 1, "204", true), 3);
        assert_eq!((r.done.len(), r.notices.len()), (1, 0));
        assert!(r.h2.held() < H2_MAX_FRAME);
    }
}
