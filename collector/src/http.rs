//! The HTTP endpoint's own routes: `/metrics` (Prometheus), `/healthz` and `/sinks`. The query
//! API (`verdict-query`) is merged into the same router by the service. `/metrics` and `/sinks`
//! (sink destinations, errors) answer only whom the query API answers (`query.auth_tokens`, or
//! without tokens clients directly on loopback); `/healthz` answers everyone (probes).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use verdict_service::http::{HttpAuth, Refusal};
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
    /// Who may read `/metrics` and `/sinks`.
    pub auth: HttpAuth,
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

async fn authorize(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    match state.auth.check(&request) {
        Ok(()) => next.run(request).await,
        Err(Refusal::NotLoopback) => (
            StatusCode::FORBIDDEN,
            "no query.auth_tokens are configured, so this endpoint answers only clients directly on a loopback address\n",
        )
            .into_response(),
        Err(Refusal::Unauthenticated(why)) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            format!("{why}\n"),
        )
            .into_response(),
    }
}

pub fn router(state: HttpState) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/sinks", get(sinks))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    guarded.route("/healthz", get(healthz)).with_state(state)
}
