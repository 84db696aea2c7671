//! TLS plaintext from libssl: the uprobe programs and what they share with the agent.

use super::{assert_size, DataEvent};

/// Plaintext is captured whole, in pieces of this size (per-CPU map values are
/// limited to 32 KiB, and the scratch holds two pieces).
pub const TLS_PIECE: u32 = 8192;
/// Pieces per SSL call; beyond `TLS_PIECE * TLS_MAX_PIECES` bytes the rest is a
/// gap. An SSL read returns at most one TLS record (16 KiB), and HTTP/2 clients
/// write one frame of at most 16 KiB per call, so 24 KiB keeps every frame
/// header; the bound also keeps the verifier's work small (the loop is unrolled).
pub const TLS_MAX_PIECES: u32 = 3;
/// Marks the conn id of a TLS connection (keyed by its `SSL *`), so it never
/// meets a socket connection's id.
pub const TLS_CONN: u64 = 1 << 62;

/// A libssl function and the programs on its entry and return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UprobeProgram {
    pub program: &'static str,
    pub symbol: &'static str,
}

/// Programs for every libssl a target maps, in the order they are attached:
/// each attach takes the kernel milliseconds, so the calls Python's `ssl`
/// module makes (the `_ex` ones) come first. Where the agent finds the
/// internal function both wrappers of a direction call, the `_ex` pair is
/// attached there instead and the plain pair not at all.
pub const TLS_PROGRAMS: [UprobeProgram; 9] = [
    UprobeProgram { program: "ssl_write_ex", symbol: "SSL_write_ex" },
    UprobeProgram { program: "ssl_write_ex_ret", symbol: "SSL_write_ex" },
    UprobeProgram { program: "ssl_read_ex", symbol: "SSL_read_ex" },
    UprobeProgram { program: "ssl_read_ex_ret", symbol: "SSL_read_ex" },
    UprobeProgram { program: "ssl_free", symbol: "SSL_free" },
    UprobeProgram { program: "ssl_write", symbol: "SSL_write" },
    UprobeProgram { program: "ssl_write_ret", symbol: "SSL_write" },
    UprobeProgram { program: "ssl_read", symbol: "SSL_read" },
    UprobeProgram { program: "ssl_read_ret", symbol: "SSL_read" },
];

/// Scratch space for one piece of plaintext.
#[repr(C)]
pub struct TlsScratch {
    pub event: DataEvent,
    /// Twice the piece so a masked length visibly stays in bounds.
    pub bytes: [u8; (2 * TLS_PIECE) as usize],
}
assert_size!(TlsScratch, core::mem::size_of::<DataEvent>() + 2 * TLS_PIECE as usize);
