//! Routes, request accounting and access control; the server's setup.

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    error::AgentError,
    http::{
        access::{Access, AccessFiles, LiveAccess},
        auth::{self, Gate},
        health,
        limits::{ServerLimits, ServerMetrics},
        listener,
        render::Renderer,
        state::Shared,
    },
    metrics::Metrics,
    sync::Locked,
};

/// One render for every scrape that asks while it runs (render.rs).
async fn metrics(renderer: Arc<Renderer>) -> Response {
    match renderer.text().await {
        Some(text) => ([(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)], text).into_response(),
        None => {
            (StatusCode::INTERNAL_SERVER_ERROR, "rendering the metrics failed (see the agent's log)\n").into_response()
        }
    }
}

/// The last requests: method, templated endpoint, status, timing, correlation id.
async fn recent_requests(State(s): State<Shared>) -> axum::Json<serde_json::Value> {
    let list = s.recent.locked().list();
    axum::Json(serde_json::json!({ "requests": list }))
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found: try /metrics or /health\n")
}

/// Counts every request by route (never the raw path: unknown paths are
/// `other`, so a scanner cannot grow the label set) and status code; a
/// request whose client left before the answer (hyper drops it) as `none`.
async fn count(State(s): State<Shared>, request: Request, next: Next) -> Response {
    let path =
        request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "other".into());
    let mut unanswered = Unanswered { metrics: &s.metrics, path: Some(path) };
    let response = next.run(request).await;
    if let Some(path) = unanswered.path.take() {
        s.metrics.http_requests.with_label_values(&[path.as_str(), response.status().as_str()]).inc();
    }
    response
}

/// Counts a request with code `none` unless it was answered.
struct Unanswered<'a> {
    metrics: &'a Metrics,
    path: Option<String>,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            self.metrics.http_requests.with_label_values(&[path.as_str(), "none"]).inc();
        }
    }
}

/// What the routes offer beyond the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteOptions {
    /// `--debug-requests`: serve `/debug/requests`.
    pub debug_requests: bool,
    /// `--auth-probes`: the probes need credentials too.
    pub auth_probes: bool,
}

pub fn router(shared: Shared, access: LiveAccess, options: RouteOptions, server: ServerMetrics) -> Router {
    let renderer = Renderer::new(shared.metrics.clone(), server.clone());
    let mut router = Router::new()
        .route("/metrics", get(move || metrics(renderer.clone())))
        .route("/health", get(health::summary))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health/details", get(health::details));
    if options.debug_requests {
        router = router.route("/debug/requests", get(recent_requests));
    }
    router
        .fallback(not_found)
        // Inside the counting layer: refusals are counted too.
        .layer(middleware::from_fn_with_state(Gate::new(access, options.auth_probes, server), auth::require))
        .layer(middleware::from_fn_with_state(shared.clone(), count))
        .with_state(shared)
}

/// How the server is set up, from the flags and `--web-config`.
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub files: AccessFiles,
    /// Loaded at start, from `files`.
    pub access: Access,
    pub routes: RouteOptions,
    pub limits: ServerLimits,
}

/// Binds the address and serves until `shutdown` completes.
pub async fn serve(
    config: ServerConfig,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let ServerConfig { listen: addr, files, access, routes, limits } = config;
    // Ignored until here (`app::run`): a SIGHUP while loading is not lost work.
    let hangup = signal(SignalKind::hangup())?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| AgentError::Listen { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    let scheme = if access.tls.is_some() { "https" } else { "http" };
    let auth = if access.credentials.required() { "credentials required" } else { "no credentials required" };
    tracing::info!(
        "serving /metrics and /health on {scheme}://{local} ({auth}; at most {} connections, {} per peer)",
        limits.max_connections,
        limits.max_connections_per_peer
    );
    if access.credentials.required() && access.tls.is_none() && !local.ip().is_loopback() {
        tracing::warn!("credentials are required but TLS is off: they cross the network in the clear");
    }
    let metrics = ServerMetrics::new(&shared.metrics);
    let access = LiveAccess::new(access);
    let router = router(shared, access.clone(), routes, metrics.clone());
    listener::run(listener, router, listener::Reloads { files, access, hangup }, limits, metrics, shutdown).await
}
