//! The HTTP query API, mounted by the collector on its HTTP port:
//!
//! - `POST /v2/entries:list` — Cloud Logging's `entries.list`: LogEntries matching a filter.
//! - `POST /v1/sql` — one read-only SQL statement; the result as JSON, CSV or Arrow IPC.
//! - `GET /v1/tail?filter=…` — newline-delimited `TailLogEntriesResponse`-shaped JSON objects
//!   with the new entries matching the filter, as they become durable.
//!
//! Authentication ([`HttpAuth`]): with `auth_tokens` configured every request needs
//! `Authorization: Bearer TOKEN`; without, only clients directly on a loopback address are
//! answered — not through a local proxy, not with another site's `Host` — so the default, no
//! tokens, is safe on a collector listening on all interfaces.
//!
//! Errors are Google-API shaped: `{"error": {"code", "status", "message", "position"?}}` with
//! the 1-based line and column of a filter or SQL syntax error.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::WriterBuilder as JsonWriterBuilder;
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use verdict_filter::Filter;
use verdict_service::http::{HttpAuth, Refusal};

use crate::entries::{ListEntriesRequest, to_log_entries};
use crate::error::QueryError;
use crate::session::{QueryEngine, QueryOutput};

/// Media type of Arrow IPC streams.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// API settings (the collector's `[query]` section).
#[derive(Debug, Clone, Default)]
pub struct ApiSettings {
    /// Who may call the API (bearer tokens; without them, loopback clients only).
    pub auth: HttpAuth,
}

#[derive(Clone)]
struct ApiState {
    engine: Arc<QueryEngine>,
    auth: HttpAuth,
    /// Cancelled at shutdown: tail streams end so the server can stop.
    shutdown: CancellationToken,
}

/// The API's routes (state applied; merge into the collector's router). Serve with
/// `into_make_service_with_connect_info::<SocketAddr>()` so loopback clients are recognised.
/// Open tail streams end once `shutdown` is cancelled.
pub fn router(
    engine: Arc<QueryEngine>,
    settings: ApiSettings,
    shutdown: CancellationToken,
) -> Router {
    let state = ApiState {
        engine,
        auth: settings.auth,
        shutdown,
    };
    Router::new()
        .route("/v2/entries:list", post(list_entries))
        .route("/v1/sql", post(sql))
        .route("/v1/tail", get(tail))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// A JSON error body.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: u16,
    pub status: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<ErrorPosition>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorPosition {
    pub line: usize,
    pub column: usize,
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "query failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: status.as_u16(),
                status: self.status_name().to_owned(),
                message: self.to_string(),
                position: self
                    .position()
                    .map(|(line, column)| ErrorPosition { line, column }),
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

async fn authorize(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match state.auth.check(&request) {
        Ok(()) => next.run(request).await,
        Err(Refusal::NotLoopback) => QueryError::Forbidden(
            "the query API has no auth_tokens configured, so it answers only clients directly on a loopback address (not through a proxy, with a loopback Host); set query.auth_tokens in the collector's configuration",
        )
        .into_response(),
        Err(Refusal::Unauthenticated(why)) => QueryError::Unauthenticated(why).into_response(),
    }
}

/// Reads a JSON body, turning serde's message into a 400 that names the problem.
fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, QueryError> {
    serde_json::from_slice(body)
        .map_err(|e| QueryError::InvalidRequest(format!("request body: {e}")))
}

async fn list_entries(State(state): State<ApiState>, body: Bytes) -> Response {
    let request: ListEntriesRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match state.engine.list_entries(&request).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The body of `POST /v1/sql`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// One `SELECT` / `WITH` / `VALUES` query, or `EXPLAIN [ANALYZE]` of one.
    pub query: String,
    /// `json` (default), `csv` or `arrow` (Arrow IPC stream); overrides `Accept`.
    #[serde(default)]
    pub format: Option<String>,
}

/// The JSON result of `POST /v1/sql`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqlJsonResult {
    pub columns: Vec<SqlColumn>,
    /// One array per row, values in column order (JSON numbers, strings, booleans, null;
    /// timestamps as RFC 3339 text).
    pub rows: Vec<Vec<serde_json::Value>>,
    pub row_count: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SqlColumn {
    pub name: String,
    /// The Arrow type, as DataFusion prints it.
    #[serde(rename = "type")]
    pub data_type: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Arrow,
}

fn choose_format(requested: Option<&str>, headers: &HeaderMap) -> Result<Format, QueryError> {
    if let Some(f) = requested {
        return match f.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "arrow" => Ok(Format::Arrow),
            other => Err(QueryError::InvalidRequest(format!(
                "format {other:?}: use json, csv or arrow"
            ))),
        };
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Ok(if accept.contains(ARROW_STREAM) {
        Format::Arrow
    } else if accept.contains("text/csv") {
        Format::Csv
    } else {
        Format::Json
    })
}

async fn sql(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let request: SqlRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let format = match choose_format(request.format.as_deref(), &headers) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let output = match state.engine.sql(&request.query).await {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    // Encoding is CPU work proportional to the result: off the async threads.
    match tokio::task::spawn_blocking(move || encode(&output, format)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => e.into_response(),
        Err(e) => QueryError::Internal(e.to_string()).into_response(),
    }
}

fn encode(output: &QueryOutput, format: Format) -> Result<Response, QueryError> {
    let empty;
    let batches: &[RecordBatch] = if output.batches.is_empty() {
        empty = [RecordBatch::new_empty(output.schema.clone())];
        &empty
    } else {
        &output.batches
    };
    match format {
        Format::Json => {
            let mut buf = Vec::new();
            let mut writer = JsonWriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, datafusion::arrow::json::writer::JsonArray>(&mut buf);
            for b in batches {
                writer.write(b).map_err(QueryError::Encode)?;
            }
            writer.finish().map_err(QueryError::Encode)?;
            drop(writer);
            let objects: Vec<serde_json::Map<String, serde_json::Value>> = if buf.is_empty() {
                Vec::new()
            } else {
                serde_json::from_slice(&buf).map_err(QueryError::Json)?
            };
            let columns: Vec<SqlColumn> = output
                .schema
                .fields()
                .iter()
                .map(|f| SqlColumn {
                    name: f.name().clone(),
                    data_type: f.data_type().to_string(),
                })
                .collect();
            // Arrow's JSON writer keys rows by name; put the values back in column order.
            let rows: Vec<Vec<serde_json::Value>> = objects
                .into_iter()
                .map(|mut o| {
                    columns
                        .iter()
                        .map(|c| o.remove(&c.name).unwrap_or(serde_json::Value::Null))
                        .collect()
                })
                .collect();
            let result = SqlJsonResult {
                columns,
                row_count: rows.len(),
                rows,
            };
            Ok(Json(result).into_response())
        }
        Format::Csv => {
            let mut buf = Vec::new();
            {
                let mut writer = CsvWriterBuilder::new().with_header(true).build(&mut buf);
                for b in batches {
                    writer.write(b).map_err(QueryError::Encode)?;
                }
            }
            Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], buf).into_response())
        }
        Format::Arrow => {
            let mut buf = Vec::new();
            {
                let mut writer =
                    StreamWriter::try_new(&mut buf, &output.schema).map_err(QueryError::Encode)?;
                for b in &output.batches {
                    writer.write(b).map_err(QueryError::Encode)?;
                }
                writer.finish().map_err(QueryError::Encode)?;
            }
            Ok(([(header::CONTENT_TYPE, ARROW_STREAM)], buf).into_response())
        }
    }
}

/// Query string of `GET /v1/tail`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TailParams {
    #[serde(default)]
    filter: String,
}

async fn tail(
    State(state): State<ApiState>,
    params: Result<Query<TailParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(p)) => p,
        Err(e) => return QueryError::InvalidRequest(e.body_text()).into_response(),
    };
    let filter = match Filter::parse(&params.filter) {
        Ok(f) => Arc::new(f),
        Err(e) => return QueryError::from(e).into_response(),
    };
    let Some(rx) = state.engine.lake().subscribe() else {
        return QueryError::InvalidRequest("this server has no live rows to tail".into())
            .into_response();
    };
    let shutdown = state.shutdown.clone();
    let stream = futures::stream::unfold(
        (rx, filter, shutdown),
        |(mut rx, filter, shutdown)| async move {
            loop {
                let received = tokio::select! {
                    r = rx.recv() => r,
                    _ = shutdown.cancelled() => return None,
                };
                let line = match received {
                    Ok(batch) => {
                        let f = Arc::clone(&filter);
                        match tokio::task::spawn_blocking(move || matching_entries(&batch, &f))
                            .await
                        {
                            Ok(Ok(entries)) if entries.is_empty() => continue,
                            Ok(Ok(entries)) => serde_json::json!({ "entries": entries }),
                            Ok(Err(e)) => serde_json::json!({ "error": e.to_string() }),
                            Err(e) => serde_json::json!({ "error": e.to_string() }),
                        }
                    }
                    // The client read too slowly and the server dropped what it could not hold.
                    Err(RecvError::Lagged(n)) => serde_json::json!({
                        "suppressionInfo": {"reason": "NOT_CONSUMED", "suppressedBatches": n}
                    }),
                    Err(RecvError::Closed) => return None,
                };
                let mut bytes = serde_json::to_vec(&line).expect("JSON values serialize");
                bytes.push(b'\n');
                return Some((
                    Ok::<_, Infallible>(Bytes::from(bytes)),
                    (rx, filter, shutdown),
                ));
            }
        },
    );
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The entries of `batch` (flat `policy_action` rows) that `filter` selects, as JSON.
fn matching_entries(
    batch: &RecordBatch,
    filter: &Filter,
) -> Result<Vec<serde_json::Value>, QueryError> {
    let mut out = Vec::new();
    for entry in to_log_entries(batch)? {
        let json = serde_json::to_value(&entry).map_err(QueryError::Json)?;
        if filter.matches(&json) {
            out.push(json);
        }
    }
    Ok(out)
}
