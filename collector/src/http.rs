//! The HTTP endpoint's own routes: `/metrics` (Prometheus), `/healthz` and `/sinks`. The query
//! API (`verdict-query`) is merged into the same router by the service.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use verdict_service::metrics::Registry;

use crate::buffer::Shared;
use crate::sinks::Sinks;

/// What the routes read.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Every metric of the collector (the sinks' included).
    pub registry: Arc<Registry>,
    /// Health: the write-ahead log's failure, if any.
    pub buffer: Arc<Shared>,
    pub sinks: Arc<Sinks>,
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    verdict_service::metrics::response(&state.registry)
}

/// Every sink's state, cursor, lag and last error (rejected definitions too), as JSON.
async fn sinks(State(state): State<HttpState>) -> impl IntoResponse {
    let body = serde_json::to_string_pretty(&state.sinks.status()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body + "\n")
}

/// 200 while batches can be made durable; 503 after a write-ahead log failure.
async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    match state.buffer.lock().failed.clone() {
        None => (StatusCode::OK, "ok\n".to_owned()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("write-ahead log failed: {reason}\n"),
        ),
    }
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/sinks", get(sinks))
        .with_state(state)
}
