//! Who gets a connection. At most `max` connections at once, and at most
//! `per_peer` from one peer ([`Peer`]), so that one client cannot take every
//! slot. A new connection past either cap takes the place of an idle
//! keep-alive connection ([`Activity`]), which is closed: at `max`, the one
//! idle longest of the peer holding the most connections; at `per_peer`,
//! the peer's own one idle longest. Only with none idle is it refused.
//! Probes and scrapes open a connection and ask at once, so connections
//! that sit idle can never lock them out.
//!
//! An evicted connection closes as soon as its task runs, unless a request
//! arrived as it was told (then it answers that one first, within its
//! deadlines); until it has ended it counts against [`MAX_CLOSING`], so the
//! file descriptors held stay below `max + MAX_CLOSING`.

use std::{cmp::Reverse, collections::HashMap, hash::Hash, sync::Arc};

use crate::http::{activity::Activity, limits::ServerLimit, peer::Peer};

/// Evicted connections still ending; past it nothing more is evicted.
pub const MAX_CLOSING: usize = 16;

struct Entry {
    peer: Peer,
    activity: Arc<Activity>,
    evicted: bool,
}

/// The connections of one listener, keyed by `K` (the task's id).
pub struct Admission<K> {
    max: usize,
    per_peer: usize,
    entries: HashMap<K, Entry>,
    /// Connections not evicted, per peer (no entry at 0).
    peers: HashMap<Peer, usize>,
    closing: usize,
}

/// A new connection was let in.
#[derive(Debug, PartialEq, Eq)]
pub enum Admitted {
    /// A slot was free.
    Free,
    /// An idle connection was told to close to make room.
    Evicting,
}

impl<K: Hash + Eq + Clone> Admission<K> {
    pub fn new(max: usize, per_peer: usize) -> Admission<K> {
        Admission { max, per_peer, entries: HashMap::new(), peers: HashMap::new(), closing: 0 }
    }

    /// Decides on a connection from `peer` (evicting one if needed); the
    /// caller then [`Admission::insert`]s it, or closes it at once with the
    /// limit that refused it counted.
    pub fn admit(&mut self, peer: Peer) -> Result<Admitted, ServerLimit> {
        let mine = self.peers.get(&peer).copied().unwrap_or(0);
        let (victim, limit) = if self.entries.len() - self.closing >= self.max {
            (self.oldest_idle(|_| true), ServerLimit::Connections)
        } else if mine >= self.per_peer {
            (self.oldest_idle(|e| e.peer == peer), ServerLimit::ConnectionsPerPeer)
        } else {
            return Ok(Admitted::Free);
        };
        match victim {
            Some(key) if self.closing < MAX_CLOSING => {
                self.evict(&key);
                Ok(Admitted::Evicting)
            }
            _ => Err(limit),
        }
    }

    pub fn insert(&mut self, key: K, peer: Peer, activity: Arc<Activity>) {
        *self.peers.entry(peer).or_default() += 1;
        self.entries.insert(key, Entry { peer, activity, evicted: false });
    }

    /// The connection's task ended.
    pub fn ended(&mut self, key: &K) {
        let Some(entry) = self.entries.remove(key) else { return };
        if entry.evicted {
            self.closing -= 1;
        } else {
            self.forget_peer(entry.peer);
        }
    }

    /// The idle connection to evict among those `eligible`: of the peer
    /// with the most connections, the one idle longest.
    fn oldest_idle(&self, eligible: impl Fn(&Entry) -> bool) -> Option<K> {
        self.entries
            .iter()
            .filter(|(_, e)| !e.evicted && eligible(e))
            .filter_map(|(k, e)| e.activity.idle_since().map(|since| (k, e, since)))
            .max_by_key(|(_, e, since)| (self.peers.get(&e.peer).copied().unwrap_or(0), Reverse(*since)))
            .map(|(k, _, _)| k.clone())
    }

    fn evict(&mut self, key: &K) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        entry.evicted = true;
        entry.activity.evict();
        let peer = entry.peer;
        self.closing += 1;
        self.forget_peer(peer);
    }

    fn forget_peer(&mut self, peer: Peer) {
        if let Some(n) = self.peers.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.peers.remove(&peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> Peer {
        Peer::of(std::net::SocketAddr::from(([10, 0, 0, n], 1000)))
    }

    /// A connection that answered a request and flushed it.
    fn idle() -> Arc<Activity> {
        let a = Arc::new(Activity::default());
        a.read();
        drop(a.dispatched());
        a.flushed();
        assert!(a.is_idle());
        a
    }

    fn busy() -> Arc<Activity> {
        Arc::new(Activity::default())
    }

    /// Connections held, and of those evicted and still ending.
    fn counts(t: &Admission<u32>) -> (usize, usize) {
        (t.entries.len(), t.closing)
    }

    fn evicted(t: &Admission<u32>) -> Vec<u32> {
        let mut keys: Vec<u32> = t.entries.iter().filter(|(_, e)| e.evicted).map(|(k, _)| *k).collect();
        keys.sort();
        keys
    }

    #[test]
    fn busy_connections_fill_the_cap_and_the_next_is_refused() {
        let mut t = Admission::new(3, 3);
        for (key, p) in [(1, 1), (2, 2), (3, 3)] {
            assert_eq!(t.admit(peer(p)), Ok(Admitted::Free));
            t.insert(key, peer(p), busy());
        }
        assert_eq!(t.admit(peer(4)), Err(ServerLimit::Connections));
        t.ended(&2);
        assert_eq!(t.admit(peer(4)), Ok(Admitted::Free));
        assert_eq!(counts(&t), (2, 0));
    }

    #[test]
    fn a_peer_at_its_cap_replaces_its_own_oldest_idle_connection() {
        let mut t = Admission::new(10, 2);
        let (a1, a2, b) = (idle(), idle(), idle());
        t.insert(1, peer(1), a1);
        t.insert(2, peer(1), a2);
        t.insert(3, peer(2), b);
        assert_eq!(t.admit(peer(1)), Ok(Admitted::Evicting));
        assert_eq!(evicted(&t), [1], "its own, the one idle longest; not the other peer's");
        t.insert(4, peer(1), busy());
        assert_eq!(t.admit(peer(1)), Ok(Admitted::Evicting));
        assert_eq!(evicted(&t), [1, 2]);
        t.insert(5, peer(1), busy());
        assert_eq!(t.admit(peer(1)), Err(ServerLimit::ConnectionsPerPeer), "none of its own idle");
        assert_eq!(counts(&t), (5, 2));
        t.ended(&1);
        t.ended(&2);
        assert_eq!(counts(&t), (3, 0));
        assert_eq!(t.admit(peer(3)), Ok(Admitted::Free));
    }

    #[test]
    fn at_the_cap_the_peer_with_most_connections_loses_its_oldest_idle_one() {
        let mut t = Admission::new(4, 4);
        // Peer 1: one connection, idle longest; peer 2: three, two of them idle.
        t.insert(1, peer(1), idle());
        t.insert(2, peer(2), idle());
        t.insert(3, peer(2), busy());
        t.insert(4, peer(2), idle());
        assert_eq!(t.admit(peer(3)), Ok(Admitted::Evicting));
        assert_eq!(evicted(&t), [2]);
        t.insert(5, peer(3), busy());
        // Peer 2 still holds the most: its other idle one goes.
        assert_eq!(t.admit(peer(3)), Ok(Admitted::Evicting));
        assert_eq!(evicted(&t), [2, 4]);
        t.insert(6, peer(3), busy());
        // Peer 3 holds 2 now, none idle; peer 1's idle one is the only candidate.
        assert_eq!(t.admit(peer(4)), Ok(Admitted::Evicting));
        assert_eq!(evicted(&t), [1, 2, 4]);
    }

    #[test]
    fn evictions_still_ending_are_bounded() {
        let mut t = Admission::new(1, 1);
        t.insert(0, peer(1), idle());
        for key in 1..=MAX_CLOSING as u32 {
            assert_eq!(t.admit(peer(1)), Ok(Admitted::Evicting), "{key}");
            t.insert(key, peer(1), idle());
        }
        assert_eq!(counts(&t), (MAX_CLOSING + 1, MAX_CLOSING));
        assert_eq!(t.admit(peer(1)), Err(ServerLimit::Connections));
        t.ended(&0);
        assert_eq!(t.admit(peer(1)), Ok(Admitted::Evicting));
    }
}
