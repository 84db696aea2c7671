//! The connections being tracked, bounded three ways: how many
//! (`--max-connections`), how many bytes they hold together
//! (`--max-buffered-mib`), and how long one may go without events
//! (`--connection-idle-secs`: a close event can be lost, and its entry must
//! not stay until the process exits). Eviction takes the least recently
//! active first; the caller counts it and ends what the connection held.

use std::collections::{BTreeMap, HashMap};

use crate::net::{conn::Connection, limits::Limit, limits::NetLimits};

/// (tgid, connection id from the kernel).
pub type Key = (u32, u64);

pub struct Tracked {
    pub target: String,
    pub conn: Connection,
    /// Stream offset expected next, [egress, ingress]; `None` when unknown.
    pub next_seq: [Option<u64>; 2],
    /// Time of the last event (CLOCK_MONOTONIC, as the kernel stamps events).
    last_ns: u64,
    /// Place in the activity order.
    touched: u64,
    /// `conn.held()` when last accounted.
    held: usize,
}

pub struct ConnTable {
    conns: HashMap<Key, Tracked>,
    /// Activity order, least recent first.
    order: BTreeMap<u64, Key>,
    next_touch: u64,
    /// Sum of the connections' accounted bytes.
    held: usize,
    limits: NetLimits,
}

impl ConnTable {
    pub fn new(limits: NetLimits) -> ConnTable {
        ConnTable { conns: HashMap::new(), order: BTreeMap::new(), next_touch: 0, held: 0, limits }
    }

    pub fn count(&self) -> usize {
        self.conns.len()
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.conns.contains_key(key)
    }

    /// Bytes held by all connections, as last accounted.
    pub fn held(&self) -> usize {
        self.held
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Tracked)> {
        self.conns.iter()
    }

    pub fn keys_of(&self, tgid: u32) -> Vec<Key> {
        self.conns.keys().filter(|k| k.0 == tgid).copied().collect()
    }

    /// Starts tracking a connection (replacing one under the same key). At
    /// the cap, the least recently active one is evicted to make room.
    pub fn insert(&mut self, key: Key, target: String, conn: Connection, now_ns: u64) -> Option<(Tracked, Limit)> {
        self.remove(&key);
        let evicted = if self.conns.len() >= self.limits.max_connections.max(1) {
            self.evict_oldest().map(|t| (t, Limit::Connections))
        } else {
            None
        };
        let touched = self.next();
        self.order.insert(touched, key);
        let held = conn.held();
        self.held += held;
        // The kernel counts offsets from the first bytes it reports on a connection.
        self.conns.insert(key, Tracked { target, conn, next_seq: [Some(0); 2], last_ns: now_ns, touched, held });
        evicted
    }

    /// The connection, marked as active at `now_ns`.
    pub fn touch(&mut self, key: &Key, now_ns: u64) -> Option<&mut Tracked> {
        let touched = self.next_touch;
        let t = self.conns.get_mut(key)?;
        self.next_touch += 1;
        self.order.remove(&t.touched);
        self.order.insert(touched, *key);
        t.touched = touched;
        t.last_ns = t.last_ns.max(now_ns);
        Some(t)
    }

    /// A connection, without making it the most recently active.
    pub fn get_mut(&mut self, key: &Key) -> Option<&mut Tracked> {
        self.conns.get_mut(key)
    }

    pub fn remove(&mut self, key: &Key) -> Option<Tracked> {
        let t = self.conns.remove(key)?;
        self.order.remove(&t.touched);
        self.held -= t.held;
        Some(t)
    }

    /// Takes in what a connection holds after it changed; while all hold
    /// more than the budget, the least recently active are evicted.
    pub fn account(&mut self, key: &Key) -> Vec<(Tracked, Limit)> {
        if let Some(t) = self.conns.get_mut(key) {
            let now = t.conn.held();
            self.held = self.held - t.held + now;
            t.held = now;
        }
        let mut evicted = Vec::new();
        while self.held > self.limits.max_buffered {
            let Some(t) = self.evict_oldest() else { break };
            evicted.push((t, Limit::BufferedBytes));
        }
        evicted
    }

    /// Evicts the connections without events since `now_ns - idle`.
    pub fn expire(&mut self, now_ns: u64) -> Vec<(Tracked, Limit)> {
        let mut evicted = Vec::new();
        while let Some((_, key)) = self.order.first_key_value() {
            let idle = self.conns.get(key).is_some_and(|t| now_ns.saturating_sub(t.last_ns) > self.limits.idle_ns);
            if !idle {
                break;
            }
            let key = *key;
            evicted.extend(self.remove(&key).map(|t| (t, Limit::ConnectionIdle)));
        }
        evicted
    }

    fn evict_oldest(&mut self) -> Option<Tracked> {
        let (_, key) = self.order.pop_first()?;
        let t = self.conns.remove(&key)?;
        self.held -= t.held;
        Some(t)
    }

    fn next(&mut self) -> u64 {
        self.next_touch += 1;
        self.next_touch - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{conn::Role, http1::Chunk};

    const S: u64 = 1_000_000_000;

    fn table(max_connections: usize, idle_secs: u64, max_buffered: usize) -> ConnTable {
        ConnTable::new(NetLimits { max_connections, idle_ns: idle_secs * S, max_buffered, ..NetLimits::default() })
    }

    fn conn() -> Connection {
        Connection::new(Role::Client, None)
    }

    fn keys(evicted: &[(Tracked, Limit)]) -> Vec<(u64, Limit)> {
        evicted.iter().map(|(t, l)| (t.next_seq[0].unwrap(), *l)).collect()
    }

    /// Feeds half a request head of `n` bytes to connection `key`.
    fn half_head(t: &mut ConnTable, key: Key, n: usize, ts: u64) {
        let mut head = b"GET /x HTTP/1.1\r\nX: ".to_vec();
        head.resize(n, b'a');
        let c = t.touch(&key, ts).unwrap();
        c.conn.data(true, &Chunk::whole(&head, ts), &mut Vec::new(), &mut Vec::new());
        // Marks which connection this is, for `keys`.
        c.next_seq[0] = Some(key.1);
    }

    #[test]
    fn at_the_cap_the_least_recently_active_makes_room() {
        let mut t = table(3, 600, usize::MAX);
        for id in 0..3 {
            assert!(t.insert((1, id), "t".into(), conn(), id).is_none());
            t.touch(&(1, id), id).unwrap().next_seq[0] = Some(id);
        }
        // Connection 0 was active last.
        t.touch(&(1, 0), 10);
        let (evicted, limit) = t.insert((1, 3), "t".into(), conn(), 11).unwrap();
        assert_eq!((evicted.next_seq[0], limit), (Some(1), Limit::Connections));
        assert_eq!(t.count(), 3);
        assert!(t.contains(&(1, 0)) && !t.contains(&(1, 1)));
    }

    #[test]
    fn idle_connections_expire_active_ones_stay() {
        let mut t = table(100, 60, usize::MAX);
        for id in 0..3 {
            t.insert((1, id), "t".into(), conn(), 0);
            t.touch(&(1, id), 0).unwrap().next_seq[0] = Some(id);
        }
        t.touch(&(1, 1), 50 * S);
        assert!(t.expire(60 * S).is_empty());
        assert_eq!(keys(&t.expire(61 * S)), [(0, Limit::ConnectionIdle), (2, Limit::ConnectionIdle)]);
        assert_eq!(t.count(), 1);
        assert_eq!(keys(&t.expire(111 * S)), [(1, Limit::ConnectionIdle)]);
        assert_eq!(t.count(), 0);
    }

    #[test]
    fn bytes_held_together_stay_within_the_budget() {
        let mut t = table(100, 600, 3 * 4096);
        for id in 0..10 {
            t.insert((1, id), "t".into(), conn(), id);
            half_head(&mut t, (1, id), 2000, id);
            let evicted = t.account(&(1, id));
            assert!(t.held() <= 3 * 4096, "{}", t.held());
            assert!(evicted.iter().all(|(e, l)| *l == Limit::BufferedBytes && e.next_seq[0] < Some(id)));
        }
        let held: usize = t.iter().map(|(_, c)| c.conn.held()).sum();
        assert_eq!(held, t.held());
        for key in t.keys_of(1) {
            t.remove(&key);
        }
        assert_eq!(t.held(), 0);
    }
}
