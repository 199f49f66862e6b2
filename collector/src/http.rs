//! The HTTP endpoint: `/metrics` (Prometheus) and `/healthz`. The query API of a later issue
//! mounts here too.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::collector::Inner;

async fn metrics(State(inner): State<Arc<Inner>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
        let mut text = inner.metrics.render();
        inner.sinks.render_metrics(&mut text);
        text
    })
}

/// Every sink's state, cursor, lag and last error (rejected definitions too), as JSON.
async fn sinks(State(inner): State<Arc<Inner>>) -> impl IntoResponse {
    let body = serde_json::to_string_pretty(&inner.sinks.status()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body + "\n")
}

/// 200 while batches can be made durable; 503 after a write-ahead log failure.
async fn healthz(State(inner): State<Arc<Inner>>) -> impl IntoResponse {
    match inner.shared.lock().failed.clone() {
        None => (StatusCode::OK, "ok\n".to_owned()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("write-ahead log failed: {reason}\n"),
        ),
    }
}

pub fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/sinks", get(sinks))
        .with_state(inner)
}
