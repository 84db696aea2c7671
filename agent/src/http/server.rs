//! Routes, request accounting and graceful shutdown.

use std::{future::Future, net::SocketAddr};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use crate::{
    error::AgentError,
    http::{health, state::Shared},
    metrics::Metrics,
    sync::Locked,
};

/// Rendering reads /proc for every target (the sampler): off the async workers.
async fn metrics(State(s): State<Shared>) -> Response {
    match tokio::task::spawn_blocking(move || s.metrics.render()).await {
        Ok(text) => ([(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("rendering the metrics failed: {e}\n")).into_response(),
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
/// `other`, so a scanner cannot grow the label set) and status code.
async fn count(State(s): State<Shared>, request: Request, next: Next) -> Response {
    let path =
        request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "other".into());
    let response = next.run(request).await;
    s.metrics.http_requests.with_label_values(&[path.as_str(), response.status().as_str()]).inc();
    response
}

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health::summary))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health/details", get(health::details))
        .route("/debug/requests", get(recent_requests))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), count))
        .with_state(shared)
}

/// Binds `addr` and serves until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| AgentError::Listen { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!("serving /metrics and /health on http://{local}");
    axum::serve(listener, router(shared)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
