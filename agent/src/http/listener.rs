//! The accept loop: TLS when configured (and then nothing else), caps on
//! connections in all and per peer that idle keep-alive connections give
//! way to (admission.rs), per-connection deadlines, SIGHUP reloads, and a
//! shutdown that ends within [`SHUTDOWN_DEADLINE`]. axum's own `serve` has no TLS,
//! no header timeout and no deadline on its graceful shutdown; the router
//! is the same, served by hyper's HTTP/1 connection.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    signal::unix::Signal,
    sync::watch,
    task::JoinSet,
};
use tokio_rustls::TlsAcceptor;

use crate::{
    error::AgentError,
    http::{
        access::{AccessFiles, LiveAccess},
        activity::{Activity, Observed},
        admission::{Admission, Admitted},
        deadlines::{Deadlines, Expired, Timed},
        limits::{
            ServerLimit, ServerLimits, ServerMetrics, MAX_HEADERS, MAX_HEAD_BYTES, SHUTDOWN_DEADLINE,
            TLS_HANDSHAKE_TIMEOUT,
        },
        peer::Peer,
        requests::Requests,
    },
    metrics::RateLimitedLog,
};

/// What the server serves: the router, and the count of its requests
/// (taken per connection, where hyper hands each request over).
pub struct Pages {
    pub router: Router,
    pub requests: Requests,
}

/// What a connection needs, cloned into each.
#[derive(Clone)]
struct Conn {
    router: Router,
    requests: Requests,
    deadlines: Deadlines,
    metrics: ServerMetrics,
    stop: watch::Receiver<bool>,
}

/// What SIGHUP re-reads, and into what.
pub struct Reloads {
    pub files: AccessFiles,
    pub access: LiveAccess,
    pub hangup: Signal,
}

/// Serves `router` on `listener` until `shutdown` completes; then closes
/// what is still open after [`SHUTDOWN_DEADLINE`].
pub async fn run(
    listener: TcpListener,
    pages: Pages,
    reloads: Reloads,
    limits: ServerLimits,
    metrics: ServerMetrics,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let Reloads { files, access, mut hangup } = reloads;
    let mut admission = Admission::new(limits.max_connections, limits.max_connections_per_peer);
    let (stop_tx, stop) = watch::channel(false);
    let conn = Conn {
        router: pages.router,
        requests: pages.requests,
        deadlines: limits.deadlines,
        metrics: metrics.clone(),
        stop,
    };
    let accept_errors = RateLimitedLog::new(Duration::from_secs(10));
    let mut open = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hangup.recv() => match access.reload(&files) {
                Ok(()) => {
                    metrics.reloaded(true);
                    tracing::info!("SIGHUP: web config and credentials re-read");
                }
                Err(e) => {
                    metrics.reloaded(false);
                    tracing::error!("SIGHUP: {e}; the configuration in force stays");
                }
            },
            // Reap finished connections: their slots are free again.
            Some(ended) = open.join_next_with_id(), if !open.is_empty() => {
                admission.ended(&match ended {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                });
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let peer = Peer::of(addr);
                    match admission.admit(peer) {
                        Ok(Admitted::Free) => {}
                        Ok(Admitted::Evicting) => metrics.hit(ServerLimit::IdleEvicted),
                        Err(limit) => {
                            // Closed at once: its fd is back before the next accept.
                            drop(stream);
                            metrics.hit(limit);
                            continue;
                        }
                    }
                    let activity = Arc::new(Activity::default());
                    let tls = access.current().tls.clone();
                    let task = open.spawn(conn.clone().serve(stream, addr, peer, tls, activity.clone()));
                    admission.insert(task.id(), peer, activity);
                }
                Err(e) => {
                    // EMFILE and the like: accepting again at once would spin.
                    accept_errors.warn(format_args!("accepting a connection failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let ended = tokio::time::timeout(SHUTDOWN_DEADLINE, async { while open.join_next().await.is_some() {} }).await;
    if ended.is_err() {
        tracing::info!(
            "{} connection(s) still open {} s after shutdown began: closed",
            open.len(),
            SHUTDOWN_DEADLINE.as_secs()
        );
        open.shutdown().await;
    }
    Ok(())
}

/// Decrements the open-connection gauge however the task ends (also when aborted).
struct Counted(ServerMetrics);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

impl Conn {
    async fn serve(
        self,
        stream: TcpStream,
        addr: SocketAddr,
        peer: Peer,
        tls: Option<TlsAcceptor>,
        activity: Arc<Activity>,
    ) {
        self.metrics.connections.inc();
        let _counted = Counted(self.metrics.clone());
        let Some(acceptor) = tls else {
            return self.http(stream, addr, peer, activity).await;
        };
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => self.http(tls, addr, peer, activity).await,
            // Plain HTTP on the TLS port ends here too: nothing is answered.
            Ok(Err(e)) => tracing::debug!("TLS handshake with {addr} failed: {e}"),
            Err(_) => {
                self.metrics.hit(ServerLimit::TlsHandshakeTimeout);
                tracing::debug!("TLS handshake with {addr}: no handshake within {TLS_HANDSHAKE_TIMEOUT:?}");
            }
        }
    }

    async fn http<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        mut self,
        io: T,
        addr: SocketAddr,
        peer: Peer,
        activity: Arc<Activity>,
    ) {
        let io = TokioIo::new(Timed::new(io, self.deadlines, activity.clone()));
        let service = Observed {
            inner: TowerToHyperService::new(self.router.clone()),
            activity: activity.clone(),
            peer,
            requests: self.requests.clone(),
        };
        let connection = http1::Builder::new()
            .max_buf_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEADERS)
            // The deadlines are enforced on the IO (deadlines.rs), without hyper's timer.
            .header_read_timeout(None)
            .serve_connection(io, service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = self.stop.changed() => {
                // Ends an idle connection now, one with a request in progress after it.
                connection.as_mut().graceful_shutdown();
                connection.await
            }
            _ = activity.evicted() => {
                if activity.is_idle() {
                    tracing::debug!("connection from {addr} closed to make room for a new one");
                    return;
                }
                // A request arrived as it was chosen: answered, then closed.
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        let Err(e) = result else { return };
        match Expired::of(&e) {
            Some(Expired::Head) => self.metrics.hit(ServerLimit::HeaderTimeout),
            Some(Expired::Send) => self.metrics.hit(ServerLimit::SendTimeout),
            // A keep-alive connection that had nothing more to ask: not a refusal.
            Some(Expired::Idle) => {}
            None if e.is_parse_too_large() => self.metrics.hit(ServerLimit::RequestHead),
            None => {}
        }
        tracing::debug!("connection from {addr} ended: {e}");
    }
}
