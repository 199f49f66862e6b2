//! Prometheus metrics of the node agent, served on `:9990/metrics` as GKE's anetd does; names
//! start with `policy_logging_` (seed 000 greps anetd's metrics for that prefix), the agent's
//! own with `verdict_probe_`.
//!
//! The pipeline keeps plain counters and publishes them here once per batch (as increments), so
//! the hot path does no atomic work per event; the writer thread counts its write failures
//! directly.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use verdict_service::metrics::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DispositionLabel {
    disposition: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The agent's metrics and the registry they are served from.
#[derive(Debug)]
pub struct Metrics {
    pub allowed_connections: Counter,
    pub denied_connections: Counter,
    pub audit_denied_connections: Counter,
    pub generated_logs_allow: Counter,
    pub generated_logs_deny: Counter,
    pub ratelimit_dropped_logs: Counter,
    pub ratelimit_dropped_connections: Counter,
    pub aggregation_failures: Counter,
    pub write_failures: Counter,
    pub lost_events: Counter,
    pub unknown_generation_events: Counter,
    pub aggregation_table_entries: Gauge,
    pub config_errors: Counter,
    pub config_valid: Gauge,
    pub state_errors: Counter,
    pub state_stale: Gauge,
    pub policy_generation: Gauge,
    /// eBPF datapath: packets dropped before any policy decision, by reason
    /// (`kernel::abi::DROP_STATS`).
    datapath_dropped: Family<ReasonLabel, Counter>,
    /// eBPF datapath: packets judged without a conntrack entry (the insert failed).
    pub conntrack_insert_failures: Counter,
    /// eBPF datapath: (pod, direction)s denied everything because their policies could not be
    /// compiled or written.
    pub pods_fail_closed: Gauge,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered in a registry of its own.
    pub fn new() -> Self {
        let mut r = Registry::default();
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let allowed_connections = counter(
            "policy_logging_allowed_connections",
            "Connections allowed by a policy of an isolated pod on this node (each direction counted where it is enforced).",
        );
        let denied_connections = counter(
            "policy_logging_denied_connections",
            "Connections denied by policy on this node (dropped unless in audit mode).",
        );
        let audit_denied_connections = counter(
            "policy_logging_audit_denied_connections",
            "Denied connections let through because their pod is in audit mode.",
        );
        let ratelimit_dropped_logs = counter(
            "policy_logging_ratelimit_dropped_logs",
            "Policy-action records dropped by the log rate limit.",
        );
        let ratelimit_dropped_connections = counter(
            "policy_logging_ratelimit_dropped_connections",
            "Connections whose records were dropped by the log rate limit.",
        );
        let aggregation_failures = counter(
            "policy_logging_aggregation_failures",
            "Denied connections dropped because the deny aggregation table was full.",
        );
        let write_failures = counter(
            "policy_logging_write_failures",
            "Records lost because writing policy_action.log failed.",
        );
        let lost_events = counter(
            "policy_logging_lost_events",
            "Verdict events lost between the datapath and the logging pipeline.",
        );
        let unknown_generation_events = counter(
            "policy_logging_unknown_generation_events",
            "Events whose policy generation had expired (judged with the oldest known).",
        );
        let config_errors = counter(
            "policy_logging_config_errors",
            "Invalid NetworkLogging objects rejected (the previous configuration stayed in force).",
        );
        let state_errors = counter(
            "verdict_probe_state_errors",
            "Cluster states that could not be loaded (the previous one stayed in force).",
        );
        let conntrack_insert_failures = counter(
            "verdict_probe_conntrack_insert_failures",
            "eBPF datapath: packets judged without a conntrack entry because the insert failed.",
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        let aggregation_table_entries = gauge(
            "policy_logging_aggregation_entries",
            "Open deny aggregation windows.",
        );
        let config_valid = gauge(
            "policy_logging_config_valid",
            "1 when the current NetworkLogging is in force, 0 when the last one was rejected.",
        );
        let state_stale = gauge(
            "verdict_probe_cluster_state_stale",
            "1 while cluster state cannot be read (the API server is unreachable, or refused): \
             the last state received stays in force; 0 when it is current.",
        );
        let policy_generation = gauge(
            "verdict_probe_policy_generation",
            "Generation of the policy state in force.",
        );
        let pods_fail_closed = gauge(
            "verdict_probe_pods_fail_closed",
            "eBPF datapath: (pod, direction)s denied everything because their policies could not \
             be compiled or written into the maps (the log says which and why).",
        );
        let datapath_dropped = Family::<ReasonLabel, Counter>::default();
        r.register(
            "verdict_probe_datapath_dropped_packets",
            "eBPF datapath: packets dropped before any policy decision, by reason (spoofed_source, \
             not_for_pod, fragment_without_first, malformed, unknown_pod).",
            datapath_dropped.clone(),
        );
        config_valid.set(1);
        let generated = Family::<DispositionLabel, Counter>::default();
        r.register(
            "policy_logging_generated_logs",
            "Policy-action records generated.",
            generated.clone(),
        );
        let [generated_logs_allow, generated_logs_deny] = ["allow", "deny"]
            .map(|disposition| generated.get_or_create_owned(&DispositionLabel { disposition }));
        Metrics {
            allowed_connections,
            denied_connections,
            audit_denied_connections,
            generated_logs_allow,
            generated_logs_deny,
            ratelimit_dropped_logs,
            ratelimit_dropped_connections,
            aggregation_failures,
            write_failures,
            lost_events,
            unknown_generation_events,
            aggregation_table_entries,
            config_errors,
            config_valid,
            state_errors,
            state_stale,
            policy_generation,
            datapath_dropped,
            conntrack_insert_failures,
            pods_fail_closed,
            registry: Arc::new(r),
        }
    }

    /// The eBPF datapath's drop counter for `reason`.
    pub fn datapath_dropped(&self, reason: &'static str) -> Counter {
        self.datapath_dropped
            .get_or_create_owned(&ReasonLabel { reason })
    }

    /// The registry holding every metric (what `/metrics` serves).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        verdict_service::metrics::render(&self.registry)
    }
}
