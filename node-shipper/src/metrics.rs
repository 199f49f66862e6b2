//! Prometheus metrics of the shipper on `--metrics-addr` (default `127.0.0.1:9991`), labelled
//! only by input (`policy_action`, `policy_action_loss`, `iptables`) and drop reason.
//!
//! Counters are updated once per read or per batch, never per record in a loop of atomics.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why records were dropped instead of shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A line that is not a record (not JSON, cut at the line limit, an unparsable LOG line).
    Malformed,
    /// The collector refused the record and no resend can fix it.
    Rejected,
    /// An iptables drop repeated within the dedup window.
    Repeat,
    /// Kernel log records overwritten in /dev/kmsg before they were read.
    KmsgOverrun,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::Malformed,
        DropReason::Rejected,
        DropReason::Repeat,
        DropReason::KmsgOverrun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Rejected => "rejected",
            DropReason::Repeat => "repeat",
            DropReason::KmsgOverrun => "kmsg_overrun",
        }
    }
}

/// Counters and gauges of one input.
#[derive(Debug, Default)]
pub struct InputMetrics {
    pub records_read: AtomicU64,
    pub records_shipped: AtomicU64,
    pub records_acked: AtomicU64,
    pub records_retried: AtomicU64,
    dropped: [AtomicU64; 4],
    pub batches_acked: AtomicU64,
    pub stream_failures: AtomicU64,
    /// Rotated generations that could not be found (lines in them were not read).
    pub rotations_unaccounted: AtomicU64,
    pub lag_bytes: AtomicU64,
    pub lag_millis: AtomicU64,
    /// Unix time (ms) of the last checkpoint written; 0 before the first.
    pub checkpoint_unix_millis: AtomicU64,
}

impl InputMetrics {
    pub fn count_drop(&self, reason: DropReason, n: u64) {
        self.dropped[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Ordering::Relaxed)
    }
}

/// Kubernetes Event posting (iptables source, `--post-events`).
#[derive(Debug, Default)]
pub struct EventMetrics {
    pub posted: AtomicU64,
    pub retries: AtomicU64,
    pub dropped_rate_limit: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_api_error: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inputs: std::sync::Mutex<Vec<(&'static str, Arc<InputMetrics>)>>,
    pub events: EventMetrics,
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Metrics {
    /// The metrics of input `name` (created on first use).
    pub fn input(&self, name: &'static str) -> Arc<InputMetrics> {
        let mut inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, m)) = inputs.iter().find(|(n, _)| *n == name) {
            return Arc::clone(m);
        }
        let m = Arc::new(InputMetrics::default());
        inputs.push((name, Arc::clone(&m)));
        m
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let inputs = self
            .inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::with_capacity(4096);
        let mut family =
            |name: &str, kind: &str, help: &str, value: &dyn Fn(&InputMetrics) -> String| {
                let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (input, m) in &inputs {
                    let _ = writeln!(s, "{name}{{input=\"{input}\"}} {}", value(m));
                }
            };
        family(
            "verdict_shipper_records_read_total",
            "counter",
            "Records read from the input (iptables: drop lines matching a prefix).",
            &|m| g(&m.records_read).to_string(),
        );
        family(
            "verdict_shipper_records_shipped_total",
            "counter",
            "Records sent to the collector for the first time.",
            &|m| g(&m.records_shipped).to_string(),
        );
        family(
            "verdict_shipper_records_acked_total",
            "counter",
            "Records the collector acknowledged as durable.",
            &|m| g(&m.records_acked).to_string(),
        );
        family(
            "verdict_shipper_records_retried_total",
            "counter",
            "Records sent again after a stream broke before their acknowledgement.",
            &|m| g(&m.records_retried).to_string(),
        );
        family(
            "verdict_shipper_stream_failures_total",
            "counter",
            "Streams to the collector that could not be opened or broke.",
            &|m| g(&m.stream_failures).to_string(),
        );
        family(
            "verdict_shipper_rotations_unaccounted_total",
            "counter",
            "Rotated log generations that were gone before they could be read.",
            &|m| g(&m.rotations_unaccounted).to_string(),
        );
        family(
            "verdict_shipper_lag_bytes",
            "gauge",
            "Bytes written to the input's files that are not acknowledged yet.",
            &|m| g(&m.lag_bytes).to_string(),
        );
        family(
            "verdict_shipper_lag_seconds",
            "gauge",
            "Age of the oldest record read and not acknowledged yet (0 when caught up).",
            &|m| format!("{:.3}", g(&m.lag_millis) as f64 / 1000.0),
        );
        family(
            "verdict_shipper_checkpoint_age_seconds",
            "gauge",
            "Seconds since the input's checkpoint was last written (-1: never).",
            &|m| match g(&m.checkpoint_unix_millis) {
                0 => "-1".to_owned(),
                at => format!("{:.3}", now_millis().saturating_sub(at) as f64 / 1000.0),
            },
        );
        let name = "verdict_shipper_records_dropped_total";
        let _ = writeln!(
            s,
            "# HELP {name} Records not shipped, by reason.\n# TYPE {name} counter"
        );
        for (input, m) in &inputs {
            for r in DropReason::ALL {
                let _ = writeln!(
                    s,
                    "{name}{{input=\"{input}\",reason=\"{}\"}} {}",
                    r.as_str(),
                    m.dropped(r)
                );
            }
        }
        let e = &self.events;
        let _ = writeln!(
            s,
            "# HELP verdict_shipper_events_posted_total Kubernetes Events (PacketDrop) created.\n# TYPE verdict_shipper_events_posted_total counter\nverdict_shipper_events_posted_total {}",
            g(&e.posted)
        );
        let _ = writeln!(
            s,
            "# HELP verdict_shipper_events_retries_total Event posts retried after a failure.\n# TYPE verdict_shipper_events_retries_total counter\nverdict_shipper_events_retries_total {}",
            g(&e.retries)
        );
        let _ = writeln!(
            s,
            "# HELP verdict_shipper_events_dropped_total Events not posted, by reason.\n# TYPE verdict_shipper_events_dropped_total counter"
        );
        for (reason, v) in [
            ("rate_limit", &e.dropped_rate_limit),
            ("queue_full", &e.dropped_queue_full),
            ("api_error", &e.dropped_api_error),
        ] {
            let _ = writeln!(
                s,
                "verdict_shipper_events_dropped_total{{reason=\"{reason}\"}} {}",
                g(v)
            );
        }
        s
    }
}

/// Serves `/metrics` (and `/healthz`) until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = Arc::clone(&metrics);
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Sets the checkpoint time to now.
pub fn mark_checkpoint(m: &InputMetrics) {
    m.checkpoint_unix_millis
        .store(now_millis().max(1), Ordering::Relaxed);
}
