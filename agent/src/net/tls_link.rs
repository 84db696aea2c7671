//! Which socket a TLS connection seen through libssl runs on.
//!
//! libssl's probes see an `SSL *`, not a socket. The thread that began a TLS
//! handshake on a socket (wrote a ClientHello, or read one as a server) is
//! the one that reads and writes that connection's plaintext next, so the
//! first plaintext event of a new `SSL *` on a thread takes the oldest
//! handshake that thread began and has not handed out: its server (for
//! dependency health), and its socket, whose ciphertext then is not counted
//! as a connection of its own. Handshakes interleaved on one thread (an event
//! loop opening several connections at once) can swap servers between
//! connections of that thread; each socket still goes to one plaintext
//! connection, so every connection is counted once.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

/// Handshakes remembered for all threads together; past it they are all
/// forgotten and the caller counts it (`limit="tls_peers"`).
pub const MAX_HANDSHAKES: usize = 4096;

/// A socket on which a thread began a TLS handshake, and its peer.
pub type Handshake = (u64, Option<SocketAddr>);

#[derive(Default)]
pub struct TlsLinks {
    /// tgid → (tid, handshake), in the order they began.
    by_process: HashMap<u32, VecDeque<(u32, Handshake)>>,
    count: usize,
}

impl TlsLinks {
    /// Thread `tid` of `tgid` began a handshake on socket `conn_id`. False
    /// when the cap was reached and everything remembered was forgotten.
    pub fn began(&mut self, tgid: u32, tid: u32, conn_id: u64, peer: Option<SocketAddr>) -> bool {
        let within = self.count < MAX_HANDSHAKES;
        if !within {
            self.by_process.clear();
            self.count = 0;
        }
        self.by_process.entry(tgid).or_default().push_back((tid, (conn_id, peer)));
        self.count += 1;
        within
    }

    /// The oldest handshake of the thread not handed out yet.
    pub fn take(&mut self, tgid: u32, tid: u32) -> Option<Handshake> {
        let queue = self.by_process.get_mut(&tgid)?;
        let at = queue.iter().position(|&(t, _)| t == tid)?;
        let (_, handshake) = queue.remove(at)?;
        self.count -= 1;
        if queue.is_empty() {
            self.by_process.remove(&tgid);
        }
        Some(handshake)
    }

    /// Socket `conn_id` of `tgid` is closed (by its process, or by its exit
    /// or exec): a handshake begun there and not handed out is over.
    pub fn socket_gone(&mut self, tgid: u32, conn_id: u64) {
        let Some(queue) = self.by_process.get_mut(&tgid) else { return };
        let before = queue.len();
        queue.retain(|&(_, (c, _))| c != conn_id);
        self.count -= before - queue.len();
        if queue.is_empty() {
            self.by_process.remove(&tgid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_handshake_goes_to_one_connection_oldest_first() {
        let mut l = TlsLinks::default();
        let peer = Some("127.0.0.1:443".parse().unwrap());
        assert!(l.began(1, 10, 100, peer));
        assert!(l.began(1, 10, 101, None));
        assert!(l.began(1, 11, 200, None));
        assert_eq!(l.take(1, 10), Some((100, peer)));
        assert_eq!(l.take(1, 10), Some((101, None)));
        assert_eq!(l.take(1, 10), None);
        // A socket closed before its plaintext was seen (a failed handshake).
        l.socket_gone(1, 200);
        assert_eq!((l.take(1, 11), l.count), (None, 0));
        l.began(2, 20, 1, None);
        l.began(3, 30, 1, None);
        l.socket_gone(2, 1);
        assert_eq!((l.take(2, 20), l.count), (None, 1));
        assert_eq!(l.take(3, 30), Some((1, None)));
    }

    #[test]
    fn past_the_cap_everything_is_forgotten_once() {
        let mut l = TlsLinks::default();
        for i in 0..MAX_HANDSHAKES as u64 {
            assert!(l.began(1, i as u32, i, None));
        }
        assert!(!l.began(1, 0, 9, None));
        assert_eq!(l.count, 1);
        assert_eq!(l.take(1, 0), Some((9, None)));
    }
}
