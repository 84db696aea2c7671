//! Caps on what a peer can make the agent hold or do, and the names under
//! which every refusal is counted (`pywats_agent_limit_hits_total{limit}`).
//!
//! The bytes parsed here come from servers and clients the agent does not
//! control: every buffer, table and label set keyed by what they send is
//! bounded, and what a bound refused is counted, never dropped silently.
//! Per-connection caps are constants (sized for the pyWATS client's own
//! traffic with a wide margin); caps that depend on the host are flags.

/// Longest HTTP/1 message head buffered (request or status line plus headers).
pub const HTTP1_MAX_HEAD: usize = 16 * 1024;
/// Requests waiting for their response on one HTTP/1 connection. Clients do
/// not pipeline; a long queue means the response stream lost sync.
pub const HTTP1_MAX_PENDING: usize = 32;
/// Largest HTTP/2 frame whose payload is buffered (HEADERS, CONTINUATION,
/// SETTINGS, RST_STREAM, GOAWAY): the protocol's default maximum frame size.
/// DATA and frames the agent does not read are skipped by length, whatever their size.
pub const H2_MAX_FRAME: usize = 16 * 1024;
/// Largest HTTP/2 header block (HEADERS plus its CONTINUATION fragments) decoded.
pub const H2_MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Header fields decoded per HTTP/2 header block.
pub const H2_MAX_HEADER_FIELDS: usize = 256;
/// Largest HPACK dynamic table followed, whatever the peer's SETTINGS_HEADER_TABLE_SIZE.
pub const HPACK_MAX_TABLE: usize = 64 * 1024;
/// Open HTTP/2 streams tracked per connection (hyper allows 200 by default).
pub const H2_MAX_STREAMS: usize = 256;
/// Longest request path kept (query string dropped) for templating; longer
/// paths are cut and their endpoint is `other`.
pub const MAX_PATH: usize = 2048;
/// Longest method kept (no standard method is longer; longer ones are `other`).
pub const MAX_METHOD: usize = 16;
/// Longest `endpoint` label value; a longer templated path becomes `other`.
pub const MAX_ENDPOINT_LABEL: usize = 128;
/// Longest correlation id (`X-Request-ID`, `X-Correlation-ID`) kept for
/// `/debug/requests`; a longer one is dropped.
pub const MAX_REQUEST_ID: usize = 128;
/// Requests (each its latest outcome) remembered for retry detection.
pub const MAX_RETRY_KEYS: usize = 10_000;

/// Appends `bytes` to a buffer that never needs more than `cap` bytes,
/// growing it by doubling but never past `cap`, so that its allocation stays
/// within the cap too.
pub fn extend_within(buf: &mut Vec<u8>, bytes: &[u8], cap: usize) {
    let want = buf.len() + bytes.len();
    if want > buf.capacity() {
        buf.reserve_exact(want.next_power_of_two().min(cap).max(want) - buf.len());
    }
    buf.extend_from_slice(bytes);
}

/// Caps that depend on the host, from flags (`--max-connections`,
/// `--connection-idle-secs`, `--max-buffered-mib`, `--max-series`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetLimits {
    /// Connections tracked at once; past it the least recently active is evicted.
    pub max_connections: usize,
    /// A connection without events for this long is evicted (its close event may have been lost).
    pub idle_ns: u64,
    /// Bytes buffered across all connections; past it the least recently active are evicted.
    pub max_buffered: usize,
    /// (method, endpoint, code) label sets per target and role ([`LabelSets`](crate::net::labels::LabelSets)).
    pub max_series: usize,
}

impl Default for NetLimits {
    fn default() -> NetLimits {
        NetLimits { max_connections: 4096, idle_ns: 600 * 1_000_000_000, max_buffered: 16 << 20, max_series: 1000 }
    }
}

/// A cap that refused something. Counted under [`name`](Limit::name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// An HTTP/1 head longer than [`HTTP1_MAX_HEAD`]: the message is skipped.
    Http1Head,
    /// The oldest waiting HTTP/1 request dropped past [`HTTP1_MAX_PENDING`].
    Http1Pending,
    /// An HTTP/2 frame to read larger than [`H2_MAX_FRAME`], skipped.
    H2Frame,
    /// An HTTP/2 header block larger than [`H2_MAX_HEADER_BLOCK`]: not decoded.
    H2HeaderBlock,
    /// An HTTP/2 header block with more than [`H2_MAX_HEADER_FIELDS`] fields.
    H2HeaderFields,
    /// An HPACK table size update above the peer's setting or [`HPACK_MAX_TABLE`].
    H2HeaderTable,
    /// The oldest open HTTP/2 stream dropped past [`H2_MAX_STREAMS`].
    H2Streams,
    /// A connection evicted to make room past `--max-connections`.
    Connections,
    /// A connection evicted to bring the bytes buffered under `--max-buffered-mib`.
    BufferedBytes,
    /// A connection evicted after `--connection-idle-secs` without events.
    ConnectionIdle,
    /// A new endpoint of a target and role past `--max-endpoints`: `other`.
    Endpoints,
    /// An endpoint longer than [`MAX_ENDPOINT_LABEL`] (or a path longer than [`MAX_PATH`]): `other`.
    EndpointLength,
    /// A status code not in the IANA registry: `other`.
    StatusCode,
    /// A method not in the standard set: `other`.
    Method,
    /// Retry bookkeeping past [`MAX_RETRY_KEYS`]: the oldest requests forgotten.
    RetryKeys,
    /// A server past [`dependency::MAX_PER_TARGET`](crate::net::dependency::MAX_PER_TARGET):
    /// a stale one evicted, or the new one not tracked.
    Dependencies,
    /// The threads remembered with their TLS handshake's socket, cleared past
    /// `MAX_TLS_PEERS`: TLS connections opened next lack a server.
    TlsPeers,
    /// A new (method, endpoint, code) label set of a target and role past
    /// `--max-series`: recorded as `other` for all three.
    TargetSeries,
}

impl Limit {
    pub const ALL: [Limit; 18] = [
        Limit::Http1Head,
        Limit::Http1Pending,
        Limit::H2Frame,
        Limit::H2HeaderBlock,
        Limit::H2HeaderFields,
        Limit::H2HeaderTable,
        Limit::H2Streams,
        Limit::Connections,
        Limit::BufferedBytes,
        Limit::ConnectionIdle,
        Limit::Endpoints,
        Limit::EndpointLength,
        Limit::StatusCode,
        Limit::Method,
        Limit::RetryKeys,
        Limit::Dependencies,
        Limit::TlsPeers,
        Limit::TargetSeries,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Limit::Http1Head => "http1_head",
            Limit::Http1Pending => "http1_pending",
            Limit::H2Frame => "h2_frame",
            Limit::H2HeaderBlock => "h2_header_block",
            Limit::H2HeaderFields => "h2_header_fields",
            Limit::H2HeaderTable => "h2_header_table",
            Limit::H2Streams => "h2_streams",
            Limit::Connections => "connections",
            Limit::BufferedBytes => "buffered_bytes",
            Limit::ConnectionIdle => "connection_idle",
            Limit::Endpoints => "endpoints",
            Limit::EndpointLength => "endpoint_length",
            Limit::StatusCode => "status_code",
            Limit::Method => "method",
            Limit::RetryKeys => "retry_keys",
            Limit::Dependencies => "dependencies",
            Limit::TlsPeers => "tls_peers",
            Limit::TargetSeries => "target_series",
        }
    }
}
