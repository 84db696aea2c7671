//! How many failed password checks the agent pays for. bcrypt is slow by
//! design (about 60 ms of a core at cost 10, 240 ms at cost 12, measured
//! here), so anyone who can reach the port could keep the cores busy with
//! wrong passwords. Failures are budgeted as token buckets, per peer and
//! for the agent as a whole: a check takes a token from both before bcrypt
//! runs and gives them back when the password was right. So the bcrypt runs
//! that fail stay within the budget however many arrive at once, and a
//! request over budget is answered 429 without a run. The per-peer budget
//! keeps one peer from spending everyone's; the whole one bounds the CPU
//! that many peers together can take.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    http::{limits::ServerLimit, peer::Peer},
    sync::Locked,
};

/// The budgets' sizes.
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    /// Failed checks one peer may make at once, and per second after.
    pub peer_burst: f64,
    pub peer_per_second: f64,
    /// Failed checks of all peers together at once, and per second after.
    pub all_burst: f64,
    pub all_per_second: f64,
    /// Peers remembered; a peer whose budget is whole again is forgotten to make room.
    pub max_peers: usize,
}

/// The agent's: a peer 10 at once then one per 5 s, all peers 20 at once
/// then 2 per second (at cost 10, an eighth of a core).
pub const RATES: Rates =
    Rates { peer_burst: 10.0, peer_per_second: 0.2, all_burst: 20.0, all_per_second: 2.0, max_peers: 1024 };

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket { tokens: burst, at: now }
    }

    fn refill(&mut self, burst: f64, per_second: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.at = now;
    }

    /// Until a token is there again.
    fn wait(&self, per_second: f64) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / per_second).max(0.0))
    }
}

/// A check refused: which budget, and when to try again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refused {
    pub limit: ServerLimit,
    pub retry_after: Duration,
}

pub struct Budget {
    rates: Rates,
    state: Mutex<State>,
}

struct State {
    all: Bucket,
    peers: HashMap<Peer, Bucket>,
}

impl Budget {
    pub fn new(rates: Rates, now: Instant) -> Budget {
        Budget { rates, state: Mutex::new(State { all: Bucket::full(rates.all_burst, now), peers: HashMap::new() }) }
    }

    /// Takes a token for a check by `peer`; [`Budget::refund`] it if the check passes.
    pub fn reserve(&self, peer: Peer, now: Instant) -> Result<(), Refused> {
        let r = self.rates;
        let mut state = self.state.locked();
        let State { all, peers } = &mut *state;
        all.refill(r.all_burst, r.all_per_second, now);
        if !peers.contains_key(&peer) && peers.len() >= r.max_peers {
            peers.retain(|_, b| {
                b.refill(r.peer_burst, r.peer_per_second, now);
                b.tokens < r.peer_burst
            });
            if peers.len() >= r.max_peers {
                // Every peer remembered is in debt: a new one is not trusted more.
                return Err(Refused { limit: ServerLimit::AuthFailuresPerPeer, retry_after: Duration::from_secs(1) });
            }
        }
        let mine = peers.entry(peer).or_insert_with(|| Bucket::full(r.peer_burst, now));
        mine.refill(r.peer_burst, r.peer_per_second, now);
        if mine.tokens < 1.0 {
            return Err(Refused { limit: ServerLimit::AuthFailuresPerPeer, retry_after: mine.wait(r.peer_per_second) });
        }
        if all.tokens < 1.0 {
            return Err(Refused { limit: ServerLimit::AuthFailures, retry_after: all.wait(r.all_per_second) });
        }
        mine.tokens -= 1.0;
        all.tokens -= 1.0;
        Ok(())
    }

    /// Gives back a reserved token: the check passed.
    pub fn refund(&self, peer: Peer) {
        let mut state = self.state.locked();
        state.all.tokens = (state.all.tokens + 1.0).min(self.rates.all_burst);
        if let Some(mine) = state.peers.get_mut(&peer) {
            mine.tokens = (mine.tokens + 1.0).min(self.rates.peer_burst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u32) -> Peer {
        Peer::of(std::net::SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + n), 1)))
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_peer_spends_its_burst_then_one_per_refill() {
        let t0 = Instant::now();
        let b = Budget::new(RATES, t0);
        for _ in 0..10 {
            b.reserve(peer(1), t0).unwrap();
        }
        let refused = b.reserve(peer(1), t0).unwrap_err();
        assert_eq!(refused, Refused { limit: ServerLimit::AuthFailuresPerPeer, retry_after: secs(5.0) });
        // Another peer is not affected.
        b.reserve(peer(2), t0).unwrap();
        let later = t0 + secs(5.0);
        b.reserve(peer(1), later).unwrap();
        assert!(b.reserve(peer(1), later).is_err());
    }

    #[test]
    fn a_passed_check_costs_nothing() {
        let t0 = Instant::now();
        let b = Budget::new(RATES, t0);
        for _ in 0..1000 {
            b.reserve(peer(1), t0).unwrap();
            b.refund(peer(1));
        }
        for _ in 0..10 {
            b.reserve(peer(1), t0).unwrap();
        }
        assert!(b.reserve(peer(1), t0).is_err());
    }

    #[test]
    fn all_peers_together_stay_within_the_whole_budget() {
        let t0 = Instant::now();
        let b = Budget::new(RATES, t0);
        let passed = (0..100).filter(|&n| b.reserve(peer(n), t0).is_ok()).count();
        assert_eq!(passed, 20);
        let refused = b.reserve(peer(200), t0).unwrap_err();
        assert_eq!(refused, Refused { limit: ServerLimit::AuthFailures, retry_after: secs(0.5) });
        // Over 10.2 s the whole budget refills by 20.4, whoever asks.
        let passed = (1..=1020).filter(|&i| b.reserve(peer(300 + i), t0 + secs(i as f64 / 100.0)).is_ok()).count();
        assert_eq!(passed, 20);
    }

    #[test]
    fn remembered_peers_are_bounded_and_those_in_debt_kept() {
        let rates =
            Rates { peer_burst: 2.0, peer_per_second: 1.0, all_burst: 100.0, all_per_second: 100.0, max_peers: 3 };
        let t0 = Instant::now();
        let b = Budget::new(rates, t0);
        for n in 0..3 {
            b.reserve(peer(n), t0).unwrap();
        }
        // Every peer remembered is in debt: a fourth is refused.
        assert_eq!(b.reserve(peer(3), t0).unwrap_err().limit, ServerLimit::AuthFailuresPerPeer);
        // A second later their budgets are whole again: forgotten, room made.
        let t1 = t0 + secs(1.0);
        b.reserve(peer(3), t1).unwrap();
        assert_eq!(b.state.locked().peers.len(), 1);
        b.reserve(peer(3), t1).unwrap();
        assert_eq!(b.reserve(peer(3), t1).unwrap_err().limit, ServerLimit::AuthFailuresPerPeer, "kept in debt");
    }
}
