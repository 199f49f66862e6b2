//! Errors of the query engine and API, each with the HTTP status it maps to.

use axum::http::StatusCode;

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The Logging filter does not parse or names an unknown field (message has the position).
    #[error("invalid filter: {0}")]
    Filter(#[from] verdict_filter::FilterError),
    /// The SQL text does not parse (DataFusion's parser reports line and column).
    #[error("invalid SQL: {0}")]
    SqlSyntax(String),
    /// A statement other than a query or EXPLAIN.
    #[error("only SELECT (and WITH … SELECT, VALUES) queries and EXPLAIN are allowed; got {kind}")]
    StatementNotAllowed { kind: String },
    /// More than one statement in one request.
    #[error("one statement per request; got {0}")]
    MultipleStatements(usize),
    /// A request field is wrong (what and why).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The result has more rows than allowed.
    #[error(
        "the result has more than {limit} rows (the server's query.max_rows); add a LIMIT or aggregate"
    )]
    TooManyRows { limit: usize },
    /// The query ran longer than allowed.
    #[error("the query ran longer than {seconds:.1}s (the server's query.timeout)")]
    Timeout { seconds: f64 },
    /// As many queries as allowed are running.
    #[error(
        "{limit} queries are running already (the server's query.max_concurrent); retry shortly"
    )]
    Busy { limit: usize },
    /// The request, a computed value or the result is larger than allowed (what and the limit).
    #[error("{0}")]
    TooLarge(String),
    /// The query's task failed unexpectedly (a panic in the engine); the server goes on.
    #[error("the query failed inside the engine: {0}")]
    Internal(String),
    /// The query needed more memory than the pool allows (DataFusion's message says which operator).
    #[error("the query needs more memory than query.max_memory allows: {0}")]
    ResourcesExhausted(String),
    /// Planning or execution failed (unknown table or column, type errors, …).
    #[error("{0}")]
    DataFusion(#[source] datafusion::error::DataFusionError),
    /// The lake could not be read.
    #[error("reading the lake: {0}")]
    Lake(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A result could not be encoded.
    #[error("encoding the result: {0}")]
    Encode(#[source] datafusion::arrow::error::ArrowError),
    /// A result could not be written or read as JSON.
    #[error("encoding the result as JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// Missing or wrong bearer token.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The peer may not use the API without a token.
    #[error("{0}")]
    Forbidden(&'static str),
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        match e.find_root() {
            D::SQL(p, _) => QueryError::SqlSyntax(p.to_string()),
            D::ResourcesExhausted(m) => QueryError::ResourcesExhausted(m.clone()),
            D::External(x) if x.is::<crate::bounded::ValueTooLarge>() => {
                QueryError::TooLarge(x.to_string())
            }
            _ => QueryError::DataFusion(e),
        }
    }
}

impl QueryError {
    /// The HTTP status: client mistakes are 4xx, the server's limits 4xx too (the client can
    /// narrow the query), failures reading storage 5xx.
    pub fn status(&self) -> StatusCode {
        use datafusion::error::DataFusionError as D;
        match self {
            QueryError::Filter(_)
            | QueryError::SqlSyntax(_)
            | QueryError::StatementNotAllowed { .. }
            | QueryError::MultipleStatements(_)
            | QueryError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            QueryError::TooManyRows { .. }
            | QueryError::ResourcesExhausted(_)
            | QueryError::TooLarge(_) => StatusCode::UNPROCESSABLE_ENTITY,
            QueryError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            QueryError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            QueryError::DataFusion(e) => match e.find_root() {
                D::Plan(_) | D::SchemaError(..) | D::NotImplemented(_) | D::SQL(..) => {
                    StatusCode::BAD_REQUEST
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            QueryError::Lake(_) | QueryError::Encode(_) | QueryError::Json(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            QueryError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            QueryError::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The Google API status name for the error body (`INVALID_ARGUMENT`, …).
    pub fn status_name(&self) -> &'static str {
        match self.status() {
            StatusCode::BAD_REQUEST => "INVALID_ARGUMENT",
            StatusCode::UNPROCESSABLE_ENTITY => "RESOURCE_EXHAUSTED",
            StatusCode::GATEWAY_TIMEOUT => "DEADLINE_EXCEEDED",
            StatusCode::TOO_MANY_REQUESTS => "RESOURCE_EXHAUSTED",
            StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
            StatusCode::FORBIDDEN => "PERMISSION_DENIED",
            _ => "INTERNAL",
        }
    }

    /// Where in the query text the error is, when known: `(line, column)`, 1-based.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            QueryError::Filter(e) => e.position().map(|p| (p.line, p.column)),
            QueryError::SqlSyntax(m) => sql_position(m),
            QueryError::DataFusion(e) => e
                .diagnostic()
                .and_then(|d| d.span)
                .filter(|s| s.start.line > 0)
                .map(|s| (s.start.line as usize, s.start.column as usize)),
            _ => None,
        }
    }
}

/// Reads "Line: L, Column: C" from sqlparser's messages.
fn sql_position(message: &str) -> Option<(usize, usize)> {
    let at = message.rfind("Line: ")?;
    let rest = &message[at + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?))
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_positions_are_read_from_parser_messages() {
        assert_eq!(
            sql_position("Expected: end of statement, found: x at Line: 2, Column: 14"),
            Some((2, 14))
        );
        assert_eq!(sql_position("no position"), None);
    }
}
