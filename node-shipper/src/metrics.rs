//! Prometheus metrics of the shipper on `--metrics-addr` (default `127.0.0.1:9991`), labelled
//! only by input (`policy_action`, `policy_action_loss`, `iptables`) and drop reason.
//!
//! Counters are updated once per read or per batch, never per record in a loop of atomics.
//! Families are `prometheus-client` types registered once in [`Metrics::new`]; an input's series
//! appear when the input is opened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use verdict_service::metrics::Registry;

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

/// A gauge with a float value.
pub type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InputLabel {
    input: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InputReasonLabel {
    input: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Counters and gauges of one input (series of the input's label in every family).
#[derive(Debug)]
pub struct InputMetrics {
    pub records_read: Counter,
    pub records_shipped: Counter,
    pub records_acked: Counter,
    pub records_retried: Counter,
    dropped: [Counter; 4],
    pub batches_acked: Counter,
    pub stream_failures: Counter,
    /// Rotated generations that could not be found (lines in them were not read).
    pub rotations_unaccounted: Counter,
    /// Checkpoints that could not be read and were moved aside (the input started over).
    pub checkpoints_discarded: Counter,
    pub lag_bytes: Gauge,
    pub lag_seconds: FloatGauge,
    /// Unix time (ms) of the last checkpoint written; 0 before the first.
    pub checkpoint_unix_millis: AtomicU64,
}

impl InputMetrics {
    pub fn count_drop(&self, reason: DropReason, n: u64) {
        self.dropped[reason as usize].inc_by(n);
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].get()
    }
}

/// Kubernetes Event posting (iptables source, `--post-events`).
#[derive(Debug)]
pub struct EventMetrics {
    pub posted: Counter,
    pub retries: Counter,
    pub dropped_rate_limit: Counter,
    pub dropped_queue_full: Counter,
    pub dropped_api_error: Counter,
}

/// The families inputs add their series to.
#[derive(Debug, Default)]
struct InputFamilies {
    records_read: Family<InputLabel, Counter>,
    records_shipped: Family<InputLabel, Counter>,
    records_acked: Family<InputLabel, Counter>,
    records_retried: Family<InputLabel, Counter>,
    records_dropped: Family<InputReasonLabel, Counter>,
    stream_failures: Family<InputLabel, Counter>,
    rotations_unaccounted: Family<InputLabel, Counter>,
    checkpoints_discarded: Family<InputLabel, Counter>,
    lag_bytes: Family<InputLabel, Gauge>,
    lag_seconds: Family<InputLabel, FloatGauge>,
}

type Inputs = Arc<Mutex<Vec<(&'static str, Arc<InputMetrics>)>>>;

/// The shipper's metrics and the registry they are served from.
#[derive(Debug)]
pub struct Metrics {
    families: InputFamilies,
    inputs: Inputs,
    pub events: EventMetrics,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// `verdict_shipper_checkpoint_age_seconds`, computed at each scrape from the inputs' last
/// checkpoint times.
#[derive(Debug)]
struct CheckpointAge(Inputs);

impl Collector for CheckpointAge {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let inputs = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut family = encoder.encode_descriptor(
            "verdict_shipper_checkpoint_age_seconds",
            "Seconds since the input's checkpoint was last written (-1: never).",
            None,
            MetricType::Gauge,
        )?;
        for (input, m) in inputs {
            let age = match m.checkpoint_unix_millis.load(Ordering::Relaxed) {
                0 => -1.0,
                at => now_millis().saturating_sub(at) as f64 / 1000.0,
            };
            ConstGauge::new(age).encode(family.encode_family(&InputLabel { input })?)?;
        }
        Ok(())
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Metrics {
    /// Every family, registered in a registry of its own.
    pub fn new() -> Self {
        let mut r = Registry::default();
        let f = InputFamilies::default();
        r.register(
            "verdict_shipper_records_read",
            "Records read from the input (iptables: drop lines matching a prefix).",
            f.records_read.clone(),
        );
        r.register(
            "verdict_shipper_records_shipped",
            "Records sent to the collector for the first time.",
            f.records_shipped.clone(),
        );
        r.register(
            "verdict_shipper_records_acked",
            "Records the collector acknowledged as durable.",
            f.records_acked.clone(),
        );
        r.register(
            "verdict_shipper_records_retried",
            "Records sent again after a stream broke before their acknowledgement.",
            f.records_retried.clone(),
        );
        r.register(
            "verdict_shipper_stream_failures",
            "Streams to the collector that could not be opened or broke.",
            f.stream_failures.clone(),
        );
        r.register(
            "verdict_shipper_rotations_unaccounted",
            "Rotated log generations that were gone before they could be read.",
            f.rotations_unaccounted.clone(),
        );
        r.register(
            "verdict_shipper_checkpoints_discarded",
            "Checkpoints that could not be read, moved aside to <file>.corrupt; the input started \
             over from the beginning (the collector discards what it already stored).",
            f.checkpoints_discarded.clone(),
        );
        r.register(
            "verdict_shipper_lag_bytes",
            "Bytes written to the input's files that are not acknowledged yet.",
            f.lag_bytes.clone(),
        );
        r.register(
            "verdict_shipper_lag_seconds",
            "Age of the oldest record read and not acknowledged yet (0 when caught up).",
            f.lag_seconds.clone(),
        );
        r.register(
            "verdict_shipper_records_dropped",
            "Records not shipped, by reason.",
            f.records_dropped.clone(),
        );
        let inputs: Inputs = Arc::default();
        r.register_collector(Box::new(CheckpointAge(Arc::clone(&inputs))));
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let posted = counter(
            "verdict_shipper_events_posted",
            "Kubernetes Events (PacketDrop) created.",
        );
        let retries = counter(
            "verdict_shipper_events_retries",
            "Event posts retried after a failure.",
        );
        let dropped = Family::<ReasonLabel, Counter>::default();
        r.register(
            "verdict_shipper_events_dropped",
            "Events not posted, by reason.",
            dropped.clone(),
        );
        let [dropped_rate_limit, dropped_queue_full, dropped_api_error] =
            ["rate_limit", "queue_full", "api_error"]
                .map(|reason| dropped.get_or_create_owned(&ReasonLabel { reason }));
        Metrics {
            families: f,
            inputs,
            events: EventMetrics {
                posted,
                retries,
                dropped_rate_limit,
                dropped_queue_full,
                dropped_api_error,
            },
            registry: Arc::new(r),
        }
    }

    /// The metrics of input `name` (its series are created on first use).
    pub fn input(&self, name: &'static str) -> Arc<InputMetrics> {
        let mut inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, m)) = inputs.iter().find(|(n, _)| *n == name) {
            return Arc::clone(m);
        }
        let f = &self.families;
        let l = InputLabel { input: name };
        let m = Arc::new(InputMetrics {
            records_read: f.records_read.get_or_create_owned(&l),
            records_shipped: f.records_shipped.get_or_create_owned(&l),
            records_acked: f.records_acked.get_or_create_owned(&l),
            records_retried: f.records_retried.get_or_create_owned(&l),
            dropped: DropReason::ALL.map(|r| {
                f.records_dropped.get_or_create_owned(&InputReasonLabel {
                    input: name,
                    reason: r.as_str(),
                })
            }),
            batches_acked: Counter::default(),
            stream_failures: f.stream_failures.get_or_create_owned(&l),
            rotations_unaccounted: f.rotations_unaccounted.get_or_create_owned(&l),
            checkpoints_discarded: f.checkpoints_discarded.get_or_create_owned(&l),
            lag_bytes: f.lag_bytes.get_or_create_owned(&l),
            lag_seconds: f.lag_seconds.get_or_create_owned(&l),
            checkpoint_unix_millis: AtomicU64::new(0),
        });
        inputs.push((name, Arc::clone(&m)));
        m
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

/// Sets the checkpoint time to now.
pub fn mark_checkpoint(m: &InputMetrics) {
    m.checkpoint_unix_millis
        .store(now_millis().max(1), Ordering::Relaxed);
}
