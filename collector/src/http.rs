//! The HTTP endpoint's own routes: `/metrics` (Prometheus), `/healthz`, `/sinks` and
//! `/v1/alerts` (firing, `/history`, `/{id}`). The query
//! API (`verdict-query`) is merged into the same router by the service. `/metrics`, `/sinks`
//! (sink destinations, errors) and the alerts answer only whom the query API answers (`query.auth_tokens`, or
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
    /// Alerts firing and their history (`/v1/alerts`).
    pub alerts: Arc<crate::alerts::Alerts>,
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

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let text = serde_json::to_string_pretty(body).unwrap_or_default() + "\n";
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// `GET /v1/alerts`: the alerts firing now.
async fn alerts(State(state): State<HttpState>) -> Response {
    json(
        StatusCode::OK,
        &crate::alerts::AlertList {
            alerts: state.alerts.firing(),
        },
    )
}

#[derive(Debug, serde::Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

/// `GET /v1/alerts/history?limit=N`: alerts fired and resolved, newest first (default 100,
/// at most 10,000).
async fn alert_history(
    State(state): State<HttpState>,
    axum::extract::Query(q): axum::extract::Query<HistoryQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    match state.alerts.history(limit) {
        Ok(entries) => json(StatusCode::OK, &serde_json::json!({ "entries": entries })),
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"error": {"code": 500, "status": "INTERNAL", "message": format!("cannot read the alert history: {e}")}}),
        ),
    }
}

/// `GET /v1/alerts/{id}`: one alert (firing, else its newest history entry).
async fn alert(
    State(state): State<HttpState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let valid = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    match valid.then(|| state.alerts.get(&id)).flatten() {
        Some(a) => json(StatusCode::OK, &a),
        None => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": {"code": 404, "status": "NOT_FOUND", "message": format!("no alert {id:?} (ids are 16 hex digits)")}}),
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
        .route("/v1/alerts", get(alerts))
        .route("/v1/alerts/history", get(alert_history))
        .route("/v1/alerts/{id}", get(alert))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    guarded.route("/healthz", get(healthz)).with_state(state)
}
