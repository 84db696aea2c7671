//! What the protocol framers report to the pipeline: finished exchanges, and
//! notices of what is counted (parse errors, limits hit, requests lost).
//! Shared by the HTTP/1 and HTTP/2 framers and the connection that drives
//! them, so that neither framer imports the connection.

use crate::net::limits::{Limit, MAX_METHOD, MAX_PATH, MAX_REQUEST_ID};

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
    /// Query string dropped, at most [`MAX_PATH`] + 1 bytes (see [`kept_path`]).
    pub path: String,
    pub outcome: Outcome,
    pub start_ns: u64,
    pub end_ns: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub correlation: Option<Correlation>,
    pub body_digest: u64,
}

/// What ties a request to something outside the agent: shown on
/// `/debug/requests` and as the exemplar of its duration bucket. Ids only,
/// in [`request_id`]'s character set and length: never another header
/// value or body byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Correlation {
    /// `X-Correlation-ID` or `X-Request-ID`.
    RequestId(String),
    /// The trace id of a W3C `traceparent`.
    TraceId(String),
    /// The `id` of a WSJF report, from the first bytes of its upload.
    ReportId(String),
}

impl Correlation {
    /// The exemplar label it goes under.
    pub fn label(&self) -> &'static str {
        match self {
            Correlation::RequestId(_) => "request_id",
            Correlation::TraceId(_) => "trace_id",
            Correlation::ReportId(_) => "report_id",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Correlation::RequestId(id) | Correlation::TraceId(id) | Correlation::ReportId(id) => id,
        }
    }

    /// Heap bytes held.
    pub fn held(&self) -> usize {
        match self {
            Correlation::RequestId(id) | Correlation::TraceId(id) | Correlation::ReportId(id) => id.capacity(),
        }
    }
}

/// The request headers that carry a correlation, in the order they win.
#[derive(Debug, Default)]
pub struct CorrelationHeaders {
    correlation_id: Option<String>,
    request_id: Option<String>,
    trace_id: Option<String>,
}

impl CorrelationHeaders {
    /// Offers a header: kept if it is one of the three and its value an id.
    /// `name` is matched whatever its case (HTTP/1) or lower case (HTTP/2).
    pub fn offer(&mut self, name: &[u8], value: &[u8]) {
        let (place, id) = if name.eq_ignore_ascii_case(b"x-correlation-id") {
            (&mut self.correlation_id, request_id(value))
        } else if name.eq_ignore_ascii_case(b"x-request-id") {
            (&mut self.request_id, request_id(value))
        } else if name.eq_ignore_ascii_case(b"traceparent") {
            (&mut self.trace_id, trace_id(value))
        } else {
            return;
        };
        if id.is_some() {
            *place = id;
        }
    }

    /// The correlation id (`X-Correlation-ID`, then `X-Request-ID`), else the trace id.
    pub fn correlation(self) -> Option<Correlation> {
        self.correlation_id.or(self.request_id).map(Correlation::RequestId).or(self.trace_id.map(Correlation::TraceId))
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`):
/// 32 lower-case hex digits, not all zero. Later versions may append
/// fields; version `ff` is invalid.
pub fn trace_id(value: &[u8]) -> Option<String> {
    let mut parts = value.split(|&b| b == b'-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let hex = |b: &[u8], n: usize| b.len() == n && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let valid = hex(version, 2) && version != b"ff" && hex(trace, 32) && hex(parent, 16);
    (valid && trace.iter().any(|&c| c != b'0')).then(|| trace.iter().map(|&b| b as char).collect())
}

/// A correlation id as `/debug/requests` may show it: 1 to
/// [`MAX_REQUEST_ID`] bytes of `[A-Za-z0-9._:-]`. Anything else is dropped
/// whole (a peer's bytes never reach the page beyond that set: no markup,
/// no control characters, no header value that is not an id).
pub fn request_id(value: &[u8]) -> Option<String> {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
    let ok = !value.is_empty() && value.len() <= MAX_REQUEST_ID && value.iter().all(allowed);
    // Only ASCII passed the check.
    ok.then(|| value.iter().map(|&b| b as char).collect())
}

/// The part of a request target kept for templating: the query string and
/// fragment go at once (never needed, possibly secret), and at most
/// `MAX_PATH + 1` bytes stay, so a longer path is still seen to be too long.
pub fn kept_path(target: &[u8]) -> String {
    let end = target.iter().position(|&b| b == b'?' || b == b'#').unwrap_or(target.len());
    let path = &target[..end.min(MAX_PATH + 1)];
    String::from_utf8_lossy(path).into_owned()
}

/// A method as kept: one longer than any standard method is cut (it is `other`).
pub fn kept_method(method: &[u8]) -> String {
    String::from_utf8_lossy(&method[..method.len().min(MAX_METHOD + 1)]).into_owned()
}

/// Why HTTP/1 bytes could not be framed. Each is counted under its [`name`](ParseError::name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not an HTTP message head.
    Invalid,
    /// A head that fell into bytes not captured.
    HeadTruncated,
    /// A malformed chunk-size line.
    BadChunk,
    /// Content-Length that is not a number (or conflicting values).
    BadLength,
    /// A head fell into bytes the kernel could not deliver (a full ring).
    Lost,
}

impl ParseError {
    pub const ALL: [ParseError; 5] =
        [ParseError::Invalid, ParseError::HeadTruncated, ParseError::BadChunk, ParseError::BadLength, ParseError::Lost];

    pub fn name(self) -> &'static str {
        match self {
            ParseError::Invalid => "invalid",
            ParseError::HeadTruncated => "head_truncated",
            ParseError::BadChunk => "bad_chunk",
            ParseError::BadLength => "bad_length",
            ParseError::Lost => "lost",
        }
    }
}

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
    pub const ALL: [H2Error; 4] = [H2Error::Desync, H2Error::Undecodable, H2Error::UnknownStream, H2Error::Lost];

    pub fn name(self) -> &'static str {
        match self {
            H2Error::Desync => "desync",
            H2Error::Undecodable => "undecodable_headers",
            H2Error::UnknownStream => "unknown_stream",
            H2Error::Lost => "lost",
        }
    }
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
    /// could not deliver, or into a connection the agent stopped tracking:
    /// not recorded, rather than recorded with a guess.
    RequestLost(Protocol),
    /// A cap refused something.
    Limit(Limit),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_they_look_like_ids() {
        for id in ["r-1", "0b8f2c1e-6d7a-4c5b-9e3f-2a1b0c9d8e7f", "trace:span.1_a", &"x".repeat(MAX_REQUEST_ID)] {
            assert_eq!(request_id(id.as_bytes()).as_deref(), Some(id), "{id}");
        }
        let long = "x".repeat(MAX_REQUEST_ID + 1);
        for bad in [
            "",
            long.as_str(),
            "has space",
            "<script>alert(1)</script>",
            "Basic cHl3YXRzOnNlY3JldA==",
            "a/b",
            "tab\there",
            "new\r\nline",
            "ünïcode",
            "quote\"",
        ] {
            assert_eq!(request_id(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(request_id(&[b'a', 0xff, b'b']), None);
    }

    #[test]
    fn the_trace_id_of_a_traceparent_and_nothing_else() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(trace_id(format!("00-{id}-00f067aa0ba902b7-01").as_bytes()).as_deref(), Some(id));
        // A later version with more fields keeps the same trace id.
        assert_eq!(trace_id(format!("01-{id}-00f067aa0ba902b7-01-extra").as_bytes()).as_deref(), Some(id));
        for bad in [
            format!("ff-{id}-00f067aa0ba902b7-01"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_string(),
            format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase()),
            format!("00-{id}x-00f067aa0ba902b7-01"),
            format!("00-{id}"),
            "Basic cHl3YXRzOnNlY3JldA==".to_string(),
        ] {
            assert_eq!(trace_id(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn a_correlation_id_wins_over_a_request_id_and_both_over_a_trace() {
        let trace = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = CorrelationHeaders::default();
        h.offer(b"authorization", b"Basic-c2VjcmV0");
        h.offer(b"cookie", b"session-1");
        assert_eq!(h.correlation(), None);
        let mut h = CorrelationHeaders::default();
        h.offer(b"traceparent", trace);
        h.offer(b"X-Request-ID", b"req-1");
        h.offer(b"x-correlation-id", b"corr-1");
        assert_eq!(h.correlation(), Some(Correlation::RequestId("corr-1".into())));
        let mut h = CorrelationHeaders::default();
        h.offer(b"traceparent", trace);
        h.offer(b"x-request-id", b"not an id");
        let c = h.correlation().unwrap();
        assert_eq!((c.label(), c.id()), ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"));
    }

    #[test]
    fn kept_paths_drop_the_query_and_stay_bounded() {
        assert_eq!(kept_path(b"/api/x?token=secret#f"), "/api/x");
        assert_eq!(kept_path(b"/a#frag"), "/a");
        let long = format!("/{}", "a".repeat(10_000));
        assert_eq!(kept_path(long.as_bytes()).len(), MAX_PATH + 1);
        assert_eq!(kept_method(b"GET"), "GET");
        assert_eq!(kept_method(&[b'X'; 100]).len(), MAX_METHOD + 1);
    }
}
