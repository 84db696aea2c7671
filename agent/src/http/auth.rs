//! Credentials: basic-auth users with bcrypt hashes (`basic_auth_users`) and
//! an optional bearer token (`--auth-token-file`), and the middleware that
//! answers 401 with `WWW-Authenticate` to a request without valid ones.
//!
//! Comparisons do not leak through timing: passwords go through bcrypt (an
//! unknown user costs the same bcrypt run as a known one), and the token is
//! compared as SHA-256 digests in constant time. bcrypt's verdicts are
//! remembered as digests of (user, password, hash), never the password
//! itself: an accepted one so that a scrape every few seconds does not pay a
//! bcrypt run each time, a rejected one so that a scraper with a wrong
//! password keeps getting its 401 at no cost. Any other password costs a
//! run, and failed runs have a budget ([`super::budget`]): past it the
//! answer is 429 without a run. A reload starts with empty memories, and
//! keeps the budget. Nothing presented is ever logged.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Extension,
};
use base64::Engine;
use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::{
    http::{
        access::LiveAccess,
        budget::{Budget, Refused, RATES},
        limits::ServerMetrics,
        peer::Peer,
    },
    sync::Locked,
};

/// Digests of accepted (user, password, hash) remembered; past it the memory is cleared.
const REMEMBERED: usize = 64;
/// Digests of rejected ones remembered; past it that memory is cleared.
const REMEMBERED_REJECTED: usize = 1024;
/// bcrypt runs at once: each takes tens of milliseconds of a core by design,
/// and one core is all that checking passwords may take.
const BCRYPT_AT_ONCE: usize = 1;
/// The paths probes use: open without credentials unless `--auth-probes`.
pub const PROBES: [&str; 2] = ["/health/live", "/health/ready"];
const REALM: &str = "pywats-agent";

type Digest = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Digest {
    // Lengths first, so that ("ab", "c") and ("a", "bc") differ.
    let mut input = Vec::new();
    for p in parts {
        input.extend_from_slice(&(p.len() as u64).to_le_bytes());
        input.extend_from_slice(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, &input).as_ref());
    out
}

/// A bounded set of digests: full, it starts over.
struct Memory {
    cap: usize,
    digests: Mutex<HashSet<Digest>>,
}

impl Memory {
    fn new(cap: usize) -> Memory {
        Memory { cap, digests: Mutex::new(HashSet::new()) }
    }

    fn contains(&self, key: &Digest) -> bool {
        self.digests.locked().contains(key)
    }

    fn insert(&self, key: Digest) {
        let mut digests = self.digests.locked();
        if digests.len() >= self.cap {
            digests.clear();
        }
        digests.insert(key);
    }
}

/// Who may read the pages. Without users and token, anyone.
pub struct Credentials {
    users: BTreeMap<String, String>,
    token: Option<Digest>,
    accepted: Memory,
    rejected: Memory,
}

/// What a quick look at an `Authorization` value decided.
enum Verdict {
    Accept,
    Reject,
    /// Needs a bcrypt run: (password, hash, whether the user exists, memory key).
    Bcrypt {
        password: Vec<u8>,
        hash: String,
        known: bool,
        key: Digest,
    },
}

impl Credentials {
    pub fn new(users: BTreeMap<String, String>, token: Option<&[u8]>) -> Credentials {
        Credentials {
            users,
            token: token.map(|t| sha256(&[t])),
            accepted: Memory::new(REMEMBERED),
            rejected: Memory::new(REMEMBERED_REJECTED),
        }
    }

    pub fn none() -> Credentials {
        Credentials::new(BTreeMap::new(), None)
    }

    /// Whether requests need credentials at all.
    pub fn required(&self) -> bool {
        !self.users.is_empty() || self.token.is_some()
    }

    fn look(&self, authorization: &[u8]) -> Verdict {
        let (scheme, rest) = match authorization.iter().position(|&b| b == b' ') {
            Some(i) => (&authorization[..i], authorization[i + 1..].trim_ascii()),
            None => return Verdict::Reject,
        };
        if scheme.eq_ignore_ascii_case(b"bearer") {
            return match &self.token {
                Some(want) if bool::from(sha256(&[rest]).ct_eq(want)) => Verdict::Accept,
                _ => Verdict::Reject,
            };
        }
        if !scheme.eq_ignore_ascii_case(b"basic") || self.users.is_empty() {
            return Verdict::Reject;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return Verdict::Reject;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return Verdict::Reject;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let found = std::str::from_utf8(user).ok().and_then(|u| self.users.get(u));
        // An unknown user still costs a bcrypt run (against any configured hash),
        // so that the answer's timing does not tell which users exist.
        let (hash, known) = match found {
            Some(h) => (h.clone(), true),
            None => (self.users.values().next().cloned().unwrap_or_default(), false),
        };
        let key = sha256(&[user, password, hash.as_bytes()]);
        if known && self.accepted.contains(&key) {
            return Verdict::Accept;
        }
        if self.rejected.contains(&key) {
            return Verdict::Reject;
        }
        Verdict::Bcrypt { password: password.to_vec(), hash, known, key }
    }

    /// bcrypt's verdict on `key`.
    fn remember(&self, key: Digest, accepted: bool) {
        if accepted {
            self.accepted.insert(key);
        } else {
            self.rejected.insert(key);
        }
    }

    /// `WWW-Authenticate` values: one per accepted scheme.
    fn challenges(&self) -> Vec<HeaderValue> {
        let mut out = Vec::new();
        if !self.users.is_empty() {
            out.push(HeaderValue::from_static("Basic realm=\"pywats-agent\", charset=\"UTF-8\""));
        }
        if self.token.is_some() {
            out.push(HeaderValue::from_static("Bearer realm=\"pywats-agent\""));
        }
        out
    }
}

/// What the middleware needs. Outlives reloads: the budget is the peers', not the file's.
#[derive(Clone)]
pub struct Gate {
    pub access: LiveAccess,
    /// `--auth-probes`: probes need credentials too.
    pub probes_too: bool,
    bcrypt: Arc<Semaphore>,
    budget: Arc<Budget>,
    metrics: ServerMetrics,
}

/// What checking a request's credentials came to.
enum Check {
    Accepted,
    Rejected,
    Refused(Refused),
}

impl Gate {
    pub fn new(access: LiveAccess, probes_too: bool, metrics: ServerMetrics) -> Gate {
        Gate {
            access,
            probes_too,
            bcrypt: Arc::new(Semaphore::new(BCRYPT_AT_ONCE)),
            budget: Arc::new(Budget::new(RATES, Instant::now())),
            metrics,
        }
    }

    /// Checks `authorization` against `credentials`, within `peer`'s budget.
    async fn check(&self, credentials: &Arc<Credentials>, peer: Peer, authorization: Option<&HeaderValue>) -> Check {
        let Some(value) = authorization else { return Check::Rejected };
        let (password, hash, known, key) = match credentials.look(value.as_bytes()) {
            Verdict::Accept => return Check::Accepted,
            Verdict::Reject => return Check::Rejected,
            Verdict::Bcrypt { password, hash, known, key } => (password, hash, known, key),
        };
        if let Err(refused) = self.budget.reserve(peer, Instant::now()) {
            self.metrics.hit(refused.limit);
            return Check::Refused(refused);
        }
        // The token reserved stays spent if this future is dropped (the client left).
        let Ok(_permit) = self.bcrypt.acquire().await else { return Check::Rejected };
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false)
            && known;
        self.metrics.bcrypt_checked(ok);
        credentials.remember(key, ok);
        if ok {
            self.budget.refund(peer);
            Check::Accepted
        } else {
            Check::Rejected
        }
    }
}

/// Lets a request through when no credentials are configured, when it is a
/// probe (unless `--auth-probes`), or when its credentials are valid; else
/// 401, or 429 when its peer (or everyone) has failed too often of late.
pub async fn require(
    State(gate): State<Gate>,
    Extension(peer): Extension<Peer>,
    request: Request,
    next: Next,
) -> Response {
    let credentials = gate.access.current().credentials.clone();
    let open = !credentials.required() || (!gate.probes_too && PROBES.contains(&request.uri().path()));
    if open {
        return next.run(request).await;
    }
    match gate.check(&credentials, peer, request.headers().get(header::AUTHORIZATION)).await {
        Check::Accepted => next.run(request).await,
        Check::Rejected => {
            let mut response =
                (StatusCode::UNAUTHORIZED, format!("unauthorized: credentials for realm {REALM} needed\n"))
                    .into_response();
            for challenge in credentials.challenges() {
                response.headers_mut().append(header::WWW_AUTHENTICATE, challenge);
            }
            response
        }
        Check::Refused(refused) => {
            let seconds = refused.retry_after.as_secs_f64().ceil().max(1.0) as u64;
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, seconds.to_string())],
                format!("too many failed credential checks: try again in {seconds} s\n"),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))).into_bytes()
    }

    fn run(c: &Credentials, authorization: &[u8]) -> bool {
        match c.look(authorization) {
            Verdict::Accept => true,
            Verdict::Reject => false,
            Verdict::Bcrypt { password, hash, known, key } => {
                let ok = bcrypt::verify(password, &hash).unwrap() && known;
                c.remember(key, ok);
                ok
            }
        }
    }

    #[test]
    fn basic_users() {
        let users = BTreeMap::from([("alice".to_string(), bcrypt::hash("pw-a", 4).unwrap())]);
        let c = Credentials::new(users, None);
        assert!(c.required());
        assert!(run(&c, &basic("alice", "pw-a")));
        // Remembered: the second time needs no bcrypt run.
        assert!(matches!(c.look(&basic("alice", "pw-a")), Verdict::Accept));
        assert!(!run(&c, &basic("alice", "pw-b")));
        // Remembered too: a wrong password given again costs no bcrypt run.
        assert!(matches!(c.look(&basic("alice", "pw-b")), Verdict::Reject));
        assert!(matches!(c.look(&basic("bob", "pw-a")), Verdict::Bcrypt { known: false, .. }), "costs a bcrypt run");
        assert!(!run(&c, &basic("bob", "pw-a")), "an unknown user with a known password");
        assert!(matches!(c.look(&basic("bob", "pw-a")), Verdict::Reject));
        assert!(!run(&c, b"Basic !!!"));
        assert!(!run(&c, b"Basic"));
        assert!(!run(&c, b"Bearer pw-a"), "no token configured");
        let mut lower_scheme = basic("alice", "pw-a");
        lower_scheme[..5].make_ascii_lowercase();
        assert!(run(&c, &lower_scheme));
    }

    #[test]
    fn bearer_token() {
        let c = Credentials::new(BTreeMap::new(), Some(b"t0ken"));
        assert!(run(&c, b"Bearer t0ken"));
        assert!(run(&c, b"bearer  t0ken "));
        assert!(!run(&c, b"Bearer t0ke"));
        assert!(!run(&c, b"Bearer t0ken2"));
        assert!(!run(&c, &basic("t0ken", "t0ken")));
        assert_eq!(c.challenges(), vec![HeaderValue::from_static("Bearer realm=\"pywats-agent\"")]);
    }

    #[test]
    fn nothing_configured_is_open() {
        let c = Credentials::none();
        assert!(!c.required());
        assert!(c.challenges().is_empty());
    }

    #[test]
    fn the_memories_are_bounded() {
        let users = BTreeMap::from([("u".to_string(), bcrypt::hash("p", 4).unwrap())]);
        let c = Credentials::new(users, None);
        for i in 0..(REMEMBERED_REJECTED as u64 * 2) {
            c.remember(sha256(&[&i.to_le_bytes()]), i % 2 == 0);
            assert!(c.accepted.digests.locked().len() <= REMEMBERED);
            assert!(c.rejected.digests.locked().len() <= REMEMBERED_REJECTED);
        }
    }
}
