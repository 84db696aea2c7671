//! What a server connection is doing, so that the accept loop can close an
//! idle keep-alive connection to admit a new one ([`super::admission`]).
//!
//! A connection is idle when it has answered every request it was asked,
//! every byte of the answers has been flushed to the socket, and no byte of
//! a next request has arrived. A new connection is not idle before its first
//! request: it is either about to send one or held to its head deadline.
//! Every change is made from the connection's own task (its byte stream,
//! the service hyper calls, the body hyper drops); the accept loop only
//! reads when the connection became idle, and asks it to close.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
};

use axum::{
    body::Body,
    http::{Request, Response},
};
use hyper::body::{Bytes, Frame, SizeHint};
use tokio::sync::Notify;

use crate::{
    http::{peer::Peer, requests::Requests},
    sync::Locked,
};

/// Hands out the order in which connections became idle: older is smaller, 0 is "not idle".
static IDLE_ORDER: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
struct State {
    /// Requests handed to the router whose answers are not yet written out.
    busy: usize,
    /// Bytes of a request read and not yet handed to the router; true on a
    /// new connection until its first request.
    incoming: bool,
    /// Bytes written (or an answer ended) since the last completed flush.
    unflushed: bool,
}

#[derive(Debug)]
pub struct Activity {
    state: Mutex<State>,
    /// When it became idle ([`IDLE_ORDER`]), 0 while it is not.
    idle: AtomicU64,
    evict: Notify,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            state: Mutex::new(State { busy: 0, incoming: true, unflushed: false }),
            idle: AtomicU64::new(0),
            evict: Notify::new(),
        }
    }
}

impl Activity {
    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.locked();
        change(&mut state);
        let idle = state.busy == 0 && !state.incoming && !state.unflushed;
        if !idle {
            self.idle.store(0, Ordering::Relaxed);
        } else if self.idle.load(Ordering::Relaxed) == 0 {
            self.idle.store(IDLE_ORDER.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    pub fn read(&self) {
        self.update(|s| s.incoming = true);
    }

    pub fn wrote(&self) {
        self.update(|s| s.unflushed = true);
    }

    pub fn flushed(&self) {
        self.update(|s| s.unflushed = false);
    }

    /// A request was handed to the router: busy until the guard is dropped
    /// (with the answer's body, once hyper has written it).
    pub fn dispatched(self: &Arc<Self>) -> Busy {
        self.update(|s| {
            s.incoming = false;
            s.busy += 1;
        });
        Busy(self.clone())
    }

    /// When it became idle (smaller: earlier), `None` while it is not.
    pub fn idle_since(&self) -> Option<u64> {
        Some(self.idle.load(Ordering::Relaxed)).filter(|&order| order != 0)
    }

    pub fn is_idle(&self) -> bool {
        self.idle_since().is_some()
    }

    /// Asks the connection to close (see `listener`): kept until it listens.
    pub fn evict(&self) {
        self.evict.notify_one();
    }

    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

/// An answer in progress.
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        // The answer's end may still sit in hyper's buffer: idle again only after a flush.
        self.0.update(|s| {
            s.busy -= 1;
            s.unflushed = true;
        });
    }
}

/// A response body that keeps its connection busy until hyper drops it
/// (written out, or the connection ended).
struct Answer {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The service hyper calls for one connection: marks it busy per request,
/// tells the router who the peer is (the per-peer credential budget), and
/// counts the request, answered or not.
pub struct Observed<S> {
    pub inner: S,
    pub activity: Arc<Activity>,
    pub peer: Peer,
    pub requests: Requests,
}

type Answered<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

impl<S, B> hyper::service::Service<Request<B>> for Observed<S>
where
    S: hyper::service::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Answered<S::Error>;

    fn call(&self, mut request: Request<B>) -> Self::Future {
        // Here, not in the future: hyper may drop that unpolled when the client is gone.
        let pending = self.requests.begin(request.uri().path());
        request.extensions_mut().insert(self.peer);
        let busy = self.activity.dispatched();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            pending.answered(response.status());
            Ok(response.map(|body| Body::new(Answer { body, _busy: busy })))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_only_after_an_answer_is_flushed_and_until_the_next_request() {
        let a = Arc::new(Activity::default());
        assert!(!a.is_idle(), "a new connection is not idle");
        a.read();
        let busy = a.dispatched();
        a.wrote();
        a.flushed();
        assert!(!a.is_idle(), "answering");
        drop(busy);
        assert!(!a.is_idle(), "the answer's end is not flushed yet");
        a.wrote();
        a.flushed();
        let first = a.idle_since().expect("idle");
        a.flushed();
        assert_eq!(a.idle_since(), Some(first), "idle since the first flush");
        a.read();
        assert!(!a.is_idle(), "a next request arrives");
        let busy = a.dispatched();
        drop(busy);
        a.flushed();
        assert!(a.idle_since().unwrap() > first, "idle again, later");
    }

    #[test]
    fn a_pipelined_request_keeps_it_busy() {
        let a = Arc::new(Activity::default());
        a.read();
        let one = a.dispatched();
        let two = a.dispatched();
        drop(one);
        a.flushed();
        assert!(!a.is_idle());
        drop(two);
        a.flushed();
        assert!(a.is_idle());
    }
}
