//! HTTP/2 over captured plaintext: frames, HPACK (one decoder per direction),
//! streams → the same exchanges as HTTP/1.
//!
//! DATA payloads are skipped by their length (uncaptured bytes are fine there);
//! every other frame must arrive whole, or the direction desynchronises and is
//! counted. A connection joined mid-way cannot know the peers' HPACK dynamic
//! tables, so its header blocks are counted as undecodable, never guessed.

use std::collections::HashMap;

use crate::net::conn::{Exchange, Notice, Outcome};

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
}

impl H2Error {
    pub fn name(self) -> &'static str {
        match self {
            H2Error::Desync => "desync",
            H2Error::Undecodable => "undecodable_headers",
            H2Error::UnknownStream => "unknown_stream",
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
        H2 { dirs: [Direction::new(true, midway), Direction::new(false, midway)], streams: HashMap::new() }
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
            RST_STREAM => self.finish_stream(stream, Some(Outcome::Reset), ts, out),
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
        let decoded = !dir.untrusted
            && dir
                .decoder
                .decode_with_cb(&block.bytes, |name, value| match &*name {
                    b":method" => method = Some(String::from_utf8_lossy(&value).into_owned()),
                    b":path" => path = Some(String::from_utf8_lossy(&value).into_owned()),
                    b":status" => status = std::str::from_utf8(&value).ok().and_then(|s| s.parse::<u16>().ok()),
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
            request_id: None,
            body_digest: s.request_bytes,
        });
    }

    /// The connection ended: open streams end without a response.
    pub fn finish(&mut self, ts: u64, outcome: Outcome, done: &mut Vec<Exchange>, notices: &mut Vec<Notice>) {
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
