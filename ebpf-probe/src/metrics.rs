//! Prometheus metrics of the node agent, served on `:9990/metrics` as GKE's anetd does; names
//! start with `policy_logging_` (seed 000 greps anetd's metrics for that prefix).
//!
//! The pipeline keeps plain counters and publishes them here once per batch, so the hot path does
//! no atomic work per event; the writer thread adds its write failures directly.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub allowed_connections: AtomicU64,
    pub denied_connections: AtomicU64,
    pub audit_denied_connections: AtomicU64,
    pub generated_logs_allow: AtomicU64,
    pub generated_logs_deny: AtomicU64,
    pub ratelimit_dropped_logs: AtomicU64,
    pub ratelimit_dropped_connections: AtomicU64,
    pub aggregation_failures: AtomicU64,
    pub write_failures: AtomicU64,
    pub lost_events: AtomicU64,
    pub unknown_generation_events: AtomicU64,
    pub aggregation_table_entries: AtomicU64,
    pub config_errors: AtomicU64,
    pub config_valid: AtomicU64,
    pub state_errors: AtomicU64,
    pub policy_generation: AtomicU64,
}

impl Metrics {
    pub fn new() -> Self {
        let m = Metrics::default();
        m.config_valid.store(1, Ordering::Relaxed);
        m
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::with_capacity(2048);
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        one(
            "policy_logging_allowed_connections_total",
            "counter",
            "Connections allowed by a policy of an isolated pod on this node (each direction counted where it is enforced).",
            g(&self.allowed_connections),
        );
        one(
            "policy_logging_denied_connections_total",
            "counter",
            "Connections denied by policy on this node (dropped unless in audit mode).",
            g(&self.denied_connections),
        );
        one(
            "policy_logging_audit_denied_connections_total",
            "counter",
            "Denied connections let through because their pod is in audit mode.",
            g(&self.audit_denied_connections),
        );
        one(
            "policy_logging_ratelimit_dropped_logs_total",
            "counter",
            "Policy-action records dropped by the log rate limit.",
            g(&self.ratelimit_dropped_logs),
        );
        one(
            "policy_logging_ratelimit_dropped_connections_total",
            "counter",
            "Connections whose records were dropped by the log rate limit.",
            g(&self.ratelimit_dropped_connections),
        );
        one(
            "policy_logging_aggregation_failures_total",
            "counter",
            "Denied connections dropped because the deny aggregation table was full.",
            g(&self.aggregation_failures),
        );
        one(
            "policy_logging_write_failures_total",
            "counter",
            "Records lost because writing policy_action.log failed.",
            g(&self.write_failures),
        );
        one(
            "policy_logging_lost_events_total",
            "counter",
            "Verdict events lost between the datapath and the logging pipeline.",
            g(&self.lost_events),
        );
        one(
            "policy_logging_unknown_generation_events_total",
            "counter",
            "Events whose policy generation had expired (judged with the oldest known).",
            g(&self.unknown_generation_events),
        );
        one(
            "policy_logging_aggregation_entries",
            "gauge",
            "Open deny aggregation windows.",
            g(&self.aggregation_table_entries),
        );
        one(
            "policy_logging_config_errors_total",
            "counter",
            "Invalid NetworkLogging objects rejected (the previous configuration stayed in force).",
            g(&self.config_errors),
        );
        one(
            "policy_logging_config_valid",
            "gauge",
            "1 when the current NetworkLogging is in force, 0 when the last one was rejected.",
            g(&self.config_valid),
        );
        one(
            "verdict_probe_state_errors_total",
            "counter",
            "Cluster states that could not be loaded (the previous one stayed in force).",
            g(&self.state_errors),
        );
        one(
            "verdict_probe_policy_generation",
            "gauge",
            "Generation of the policy state in force.",
            g(&self.policy_generation),
        );
        let _ = writeln!(
            s,
            "# HELP policy_logging_generated_logs_total Policy-action records generated.\n# TYPE policy_logging_generated_logs_total counter\npolicy_logging_generated_logs_total{{disposition=\"allow\"}} {}\npolicy_logging_generated_logs_total{{disposition=\"deny\"}} {}",
            g(&self.generated_logs_allow),
            g(&self.generated_logs_deny)
        );
        s
    }
}

/// Serves `/metrics` (and `/healthz`) until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
