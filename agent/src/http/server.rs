//! Routes and access control; the server's setup.

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware,
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
        listener::{self, Pages},
        negotiate::Variant,
        render::Renderer,
        requests::Requests,
        state::Shared,
    },
    sync::Locked,
};

/// One render for every scrape that asks while it runs (render.rs), in
/// the format and compression the scrape asks for (negotiate.rs).
async fn metrics(renderer: Arc<Renderer>, headers: HeaderMap) -> Response {
    let variant = Variant::of(&headers);
    let Some(body) = renderer.body(variant).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "rendering the metrics failed (see the agent's log)\n")
            .into_response();
    };
    // Caches between the scraper and the agent keep the variants apart.
    let vary = (header::VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
    let content_type = (header::CONTENT_TYPE, HeaderValue::from_static(variant.format.content_type()));
    match variant.encoding.name() {
        Some(name) => {
            ([content_type, vary, (header::CONTENT_ENCODING, HeaderValue::from_static(name))], body).into_response()
        }
        None => ([content_type, vary], body).into_response(),
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

/// What the routes offer beyond the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteOptions {
    /// `--debug-requests`: serve `/debug/requests`.
    pub debug_requests: bool,
    /// `--auth-probes`: the probes need credentials too.
    pub auth_probes: bool,
}

/// The pages every agent serves; `/debug/requests` besides with `--debug-requests`.
const PAGES: [&str; 5] = ["/metrics", "/health", "/health/live", "/health/ready", "/health/details"];
const DEBUG_REQUESTS: &str = "/debug/requests";

pub fn router(shared: Shared, access: LiveAccess, options: RouteOptions, server: ServerMetrics) -> Pages {
    let renderer = Renderer::new(shared.metrics.clone(), server.clone());
    let [metrics_page, summary, live, ready, details] = PAGES;
    let mut router = Router::new()
        .route(metrics_page, get(move |headers: HeaderMap| metrics(renderer.clone(), headers)))
        .route(summary, get(health::summary))
        .route(live, get(health::live))
        .route(ready, get(health::ready))
        .route(details, get(health::details));
    let mut routes = PAGES.to_vec();
    if options.debug_requests {
        router = router.route(DEBUG_REQUESTS, get(recent_requests));
        routes.push(DEBUG_REQUESTS);
    }
    let router = router
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Gate::new(access, options.auth_probes, server), auth::require))
        .with_state(shared.clone());
    Pages { router, requests: Requests::new(shared.metrics.http_requests.clone(), routes) }
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
    let pages = router(shared, access.clone(), routes, metrics.clone());
    listener::run(listener, pages, listener::Reloads { files, access, hangup }, limits, metrics, shutdown).await
}
