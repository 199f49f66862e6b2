//! Prometheus metrics, one way in every service: typed `prometheus-client` families registered
//! in one [`Registry`] when the service starts, rendered in the OpenMetrics text format at
//! `/metrics`. The encoder escapes label values (`\`, `"`, newline), so a label taken from a
//! peer (a node name) cannot break the exposition for every scraper.
//!
//! Label sets are small and fixed (table, reason, disposition, input, sink); a label whose values
//! come from outside (node names) is bounded by its owner.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
pub use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// The exposition's content type (OpenMetrics text; Prometheus negotiates it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The text exposition of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail; an encoder error would be a bug in a metric type.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    out
}

/// The `/metrics` response for `registry`.
pub fn response(registry: &Registry) -> impl IntoResponse + use<> {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(registry))
}

/// `GET /metrics` for `registry` and `GET /healthz` answering `ok`.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = Arc::clone(&registry);
                async move { response(&registry) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

/// Serves [`router`] on `listener` (with the default [`HttpLimits`](crate::http::HttpLimits))
/// until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    crate::http::serve(
        listener,
        router(registry),
        crate::http::HttpLimits::default(),
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;

    use super::*;

    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Node {
        node: String,
    }

    #[test]
    fn label_values_from_peers_are_escaped() {
        let mut registry = Registry::default();
        let family = Family::<Node, Counter>::default();
        registry.register("test_batches", "Batches by node.", family.clone());
        family
            .get_or_create(&Node {
                node: "evil\"\nnode_x 1\n".into(),
            })
            .inc();
        let text = render(&registry);
        assert!(
            text.contains(r#"test_batches_total{node="evil\"\nnode_x 1\n"} 1"#),
            "{text}"
        );
        // Every line is a comment or one sample: nothing injected a line of its own.
        assert!(
            text.lines()
                .all(|l| l.starts_with('#') || l.starts_with("test_batches_total{")),
            "{text}"
        );
    }
}
