//! Prometheus metrics, served on the HTTP port at `/metrics`. Names start with
//! `verdict_collector_`; labels are low-cardinality (table, rejection reason, sink) except
//! `node`, whose series are bounded ([`MAX_NODE_SERIES`]) and removed with the node's sources.
//!
//! Each part of the collector gets the families it updates ([`IngestMetrics`] for the gRPC
//! service, [`WriterMetrics`] for the writer thread, [`BufferMetrics`] for unflushed rows and
//! watermarks, [`LakeMetrics`] for files and commits, [`FlushMetrics`], [`MaintenanceMetrics`]);
//! all are registered in one `prometheus-client` registry when the collector opens (the sinks
//! add theirs as a scrape-time collector, see `sinks`). Counters are updated once per batch or
//! per group commit, never per record.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use verdict_schema::proto::v1::RejectionCode;
use verdict_service::metrics::Registry;

use crate::table::Table;

/// The metric name prefix (`verdict_collector_`).
pub const PREFIX: &str = "verdict_collector";

/// Nodes with their own `source_lag_seconds` series at most; further nodes are not given one
/// (their lag still counts in the `ingest_lag_seconds` histogram).
pub const MAX_NODE_SERIES: usize = 16_384;

const LATENCY_BOUNDS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

const LAG_BOUNDS: [f64; 13] = [
    0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];

/// Rejection reasons as metric labels, indexed by `RejectionCode as usize` (0 is unused).
const REJECTION_LABELS: [&str; 8] = [
    "unknown",
    "unsupported_schema_version",
    "too_large",
    "invalid_record",
    "out_of_order",
    "missing_identity",
    "malformed",
    "permission_denied",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

/// A gauge with a float value.
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// Registers a counter family with one series per value of `label` and returns the series.
fn counters_by<const N: usize, L>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    labels: [L; N],
) -> [Counter; N]
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Counter>::default();
    registry.register(name, help, family.clone());
    labels.map(|l| family.get_or_create_owned(&l))
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    registry.register(name, help, c.clone());
    c
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::default();
    registry.register(name, help, g.clone());
    g
}

fn histogram(registry: &mut Registry, name: &str, help: &str, bounds: &[f64]) -> Histogram {
    let h = Histogram::new(bounds.iter().copied());
    registry.register(name, help, h.clone());
    h
}

fn table_labels<const N: usize>(tables: [Table; N]) -> [TableLabel; N] {
    tables.map(|t| TableLabel { table: t.label() })
}

/// The gRPC ingest service's metrics.
#[derive(Debug)]
pub struct IngestMetrics {
    pub records_received: Counter,
    pub batches_received: Counter,
    records_rejected: [Counter; 8],
    batches_rejected: [Counter; 8],
    pub auth_failures: Counter,
    pub streams_active: Gauge,
    pub streams: Counter,
    pub ack_seconds: Histogram,
    ingest_lag_seconds: Histogram,
    node_lag: Family<NodeLabel, FloatGauge>,
    /// The nodes that have a `node_lag` series (the family cannot be listed).
    nodes: Mutex<BTreeSet<String>>,
}

impl IngestMetrics {
    fn register(r: &mut Registry) -> Self {
        let reasons = REJECTION_LABELS.map(|reason| ReasonLabel { reason });
        // Every real reason has a series from the start (0 until it happens).
        let mut by_reason = |name: &str, help: &str| {
            let family = Family::<ReasonLabel, Counter>::default();
            r.register(name, help, family.clone());
            let series = reasons.clone().map(|l| family.get_or_create_owned(&l));
            family.remove(&reasons[0]);
            series
        };
        let records_rejected = by_reason(
            "records_rejected",
            "Records in rejected batches, by reason.",
        );
        let batches_rejected = by_reason("batches_rejected", "Rejected batches, by reason.");
        let node_lag = Family::<NodeLabel, FloatGauge>::default();
        r.register(
            "source_lag_seconds",
            "Per node: ingest lag of its latest batch.",
            node_lag.clone(),
        );
        IngestMetrics {
            records_received: counter(
                r,
                "records_received",
                "Records received in batches (accepted or rejected).",
            ),
            batches_received: counter(r, "batches_received", "Batches received."),
            records_rejected,
            batches_rejected,
            auth_failures: counter(
                r,
                "auth_failures",
                "Streams refused for a missing or wrong bearer token.",
            ),
            streams_active: gauge(r, "streams_active", "Open ingest streams."),
            streams: counter(r, "streams", "Ingest streams opened."),
            ack_seconds: histogram(
                r,
                "ack_seconds",
                "From a batch's arrival to its acknowledgement.",
                &LATENCY_BOUNDS,
            ),
            ingest_lag_seconds: histogram(
                r,
                "ingest_lag_seconds",
                "Per batch: receive time minus the newest record's event time.",
                &LAG_BOUNDS,
            ),
            node_lag,
            nodes: Mutex::new(BTreeSet::new()),
        }
    }

    /// Counts a rejected batch of `records` records.
    pub fn rejected(&self, code: RejectionCode, records: u64) {
        let i = (code as usize).min(REJECTION_LABELS.len() - 1);
        self.batches_rejected[i].inc();
        self.records_rejected[i].inc_by(records);
    }

    /// Records in rejected batches since start, over every reason.
    pub fn records_rejected_total(&self) -> u64 {
        self.records_rejected.iter().map(Counter::get).sum()
    }

    /// Records the ingest lag of `node`'s latest batch.
    pub fn source_lag(&self, node: &str, lag_secs: f64) {
        self.ingest_lag_seconds.observe(lag_secs);
        let mut nodes = self.nodes.lock().expect("metrics lock");
        if !nodes.contains(node) {
            if nodes.len() >= MAX_NODE_SERIES {
                return;
            }
            nodes.insert(node.to_owned());
        }
        self.node_lag
            .get_or_create(&NodeLabel {
                node: node.to_owned(),
            })
            .set(lag_secs);
    }

    /// Drops the per-node series of nodes no longer among `live` (forgotten sources).
    pub fn retain_nodes(&self, live: &std::collections::HashSet<&str>) {
        let mut nodes = self.nodes.lock().expect("metrics lock");
        nodes.retain(|n| {
            let keep = live.contains(n.as_str());
            if !keep {
                self.node_lag.remove(&NodeLabel { node: n.clone() });
            }
            keep
        });
    }
}

/// The writer thread's metrics (dedup and the write-ahead log).
#[derive(Debug)]
pub struct WriterMetrics {
    /// Flows, loss.
    records_stored: [Counter; 2],
    pub records_deduplicated: Counter,
    pub wal_bytes: Counter,
    pub wal_entries: Counter,
    pub wal_group_commits: Counter,
    pub wal_commit_seconds: Histogram,
}

impl WriterMetrics {
    fn register(r: &mut Registry) -> Self {
        WriterMetrics {
            records_stored: counters_by(
                r,
                "records_stored",
                "Rows made durable (write-ahead log) for the first time, by table.",
                table_labels([Table::Flows, Table::Loss]),
            ),
            records_deduplicated: counter(
                r,
                "records_deduplicated",
                "Records dropped because their sequence was at or below the source's watermark.",
            ),
            wal_bytes: counter(r, "wal_bytes", "Bytes appended to the write-ahead log."),
            wal_entries: counter(r, "wal_entries", "Batches appended to the write-ahead log."),
            wal_group_commits: counter(r, "wal_group_commits", "Group commits (one fsync each)."),
            wal_commit_seconds: histogram(
                r,
                "wal_commit_seconds",
                "Write + fsync time of one group commit.",
                &LATENCY_BOUNDS,
            ),
        }
    }

    /// Counts `rows` stored in `table` (flows or loss).
    pub fn stored(&self, table: Table, rows: u64) {
        if let Some(c) = self.records_stored.get(table.index()) {
            c.inc_by(rows);
        }
    }

    /// Rows stored in `table` (flows or loss) since start.
    pub fn records_stored(&self, table: Table) -> u64 {
        self.records_stored
            .get(table.index())
            .map_or(0, Counter::get)
    }
}

/// Unflushed rows and dedup watermarks (set by the writer and the flush).
#[derive(Debug)]
pub struct BufferMetrics {
    pub unflushed_rows: Gauge,
    pub unflushed_bytes: Gauge,
    pub sources: Gauge,
    pub sources_forgotten: Counter,
}

impl BufferMetrics {
    fn register(r: &mut Registry) -> Self {
        BufferMetrics {
            unflushed_rows: gauge(
                r,
                "unflushed_rows",
                "Rows durable in the write-ahead log but not yet in committed Parquet.",
            ),
            unflushed_bytes: gauge(r, "unflushed_bytes", "Memory held by those rows."),
            sources: gauge(r, "sources", "(node, source) watermarks kept."),
            sources_forgotten: counter(
                r,
                "sources_forgotten",
                "Watermarks dropped after dedup.source_retention without batches.",
            ),
        }
    }

    /// Sets the unflushed rows and bytes gauges.
    pub fn set_unflushed(&self, rows: usize, bytes: usize) {
        self.unflushed_rows
            .set(i64::try_from(rows).unwrap_or(i64::MAX));
        self.unflushed_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// Files written and commits (the lake).
#[derive(Debug)]
pub struct LakeMetrics {
    files_written: [Counter; 3],
    bytes_written: [Counter; 3],
    pub commit_seconds: Histogram,
    pub orphan_files_deleted: Counter,
}

impl LakeMetrics {
    fn register(r: &mut Registry) -> Self {
        LakeMetrics {
            files_written: counters_by(
                r,
                "files_written",
                "Parquet files written (flushes and compactions), by table.",
                table_labels(Table::ALL),
            ),
            bytes_written: counters_by(
                r,
                "bytes_written",
                "Parquet bytes written (flushes and compactions), by table.",
                table_labels(Table::ALL),
            ),
            commit_seconds: histogram(
                r,
                "commit_seconds",
                "Writing one commit-log entry (the atomic step that publishes files).",
                &LATENCY_BOUNDS,
            ),
            orphan_files_deleted: counter(
                r,
                "orphan_files_deleted",
                "Uncommitted leftovers of interrupted flushes or compactions deleted at start.",
            ),
        }
    }

    pub fn file_written(&self, table: Table, bytes: u64) {
        self.files_written[table.index()].inc();
        self.bytes_written[table.index()].inc_by(bytes);
    }
}

/// Flushes of buffered rows to Parquet.
#[derive(Debug)]
pub struct FlushMetrics {
    pub flushes: Counter,
    pub failures: Counter,
    pub seconds: Histogram,
}

impl FlushMetrics {
    fn register(r: &mut Registry) -> Self {
        FlushMetrics {
            flushes: counter(r, "flushes", "Completed flushes."),
            failures: counter(r, "flush_failures", "Failed flush attempts (retried)."),
            seconds: histogram(
                r,
                "flush_seconds",
                "From freezing buffered rows to their files being committed.",
                &LATENCY_BOUNDS,
            ),
        }
    }

    pub fn observe(&self, took: Duration) {
        self.flushes.inc();
        self.seconds.observe(took.as_secs_f64());
    }
}

/// Compaction and retention.
#[derive(Debug)]
pub struct MaintenanceMetrics {
    pub compactions: Counter,
    pub compaction_failures: Counter,
    pub compacted_files: Counter,
    pub retention_deleted_files: Counter,
}

impl MaintenanceMetrics {
    fn register(r: &mut Registry) -> Self {
        MaintenanceMetrics {
            compactions: counter(
                r,
                "compactions",
                "Completed compactions (one merged file each).",
            ),
            compaction_failures: counter(r, "compaction_failures", "Failed compactions."),
            compacted_files: counter(r, "compacted_files", "Files replaced by compactions."),
            retention_deleted_files: counter(
                r,
                "retention_deleted_files",
                "Files deleted because their partition passed its retention.",
            ),
        }
    }
}

/// Every family of the collector, registered under [`PREFIX`].
#[derive(Debug)]
pub struct Metrics {
    pub ingest: IngestMetrics,
    pub writer: WriterMetrics,
    pub buffer: BufferMetrics,
    pub lake: LakeMetrics,
    pub flush: FlushMetrics,
    pub maintenance: MaintenanceMetrics,
}

impl Metrics {
    /// Registers every family in `registry` (under `verdict_collector_`).
    pub fn register(registry: &mut Registry) -> Metrics {
        let r = registry.sub_registry_with_prefix(PREFIX);
        Metrics {
            ingest: IngestMetrics::register(r),
            writer: WriterMetrics::register(r),
            buffer: BufferMetrics::register(r),
            lake: LakeMetrics::register(r),
            flush: FlushMetrics::register(r),
            maintenance: MaintenanceMetrics::register(r),
        }
    }

    /// Metrics in a registry of their own (tests, tools).
    pub fn unregistered() -> Metrics {
        Metrics::register(&mut Registry::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_labels_and_histograms() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.ingest.rejected(RejectionCode::TooLarge, 5);
        m.writer.stored(Table::Loss, 2);
        m.writer.wal_commit_seconds.observe(0.003);
        m.ingest.source_lag("n\"1", 1.5);
        let s = verdict_service::metrics::render(&registry);
        assert!(
            s.contains("verdict_collector_records_rejected_total{reason=\"too_large\"} 5"),
            "{s}"
        );
        assert!(
            s.contains("verdict_collector_records_stored_total{table=\"loss\"} 2"),
            "{s}"
        );
        assert!(
            s.contains("verdict_collector_wal_commit_seconds_bucket{le=\"0.005\"} 1"),
            "{s}"
        );
        assert!(
            s.contains("verdict_collector_source_lag_seconds{node=\"n\\\"1\"} 1.5"),
            "{s}"
        );
        assert!(!s.contains("reason=\"unknown\""), "{s}");
    }

    #[test]
    fn a_node_name_cannot_break_the_exposition() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.ingest.source_lag(
            "n1\nverdict_collector_records_stored_total{table=\"flows\"} 999",
            2.0,
        );
        let s = verdict_service::metrics::render(&registry);
        assert!(
            s.lines()
                .all(|l| !l
                    .starts_with("verdict_collector_records_stored_total{table=\"flows\"} 999")),
            "{s}"
        );
        assert!(
            s.contains("verdict_collector_source_lag_seconds{node=\"n1\\nverdict_collector"),
            "{s}"
        );
    }

    #[test]
    fn node_series_are_bounded_and_removed_with_their_sources() {
        let m = Metrics::unregistered();
        for i in 0..MAX_NODE_SERIES + 10 {
            m.ingest.source_lag(&format!("node-{i}"), 1.0);
        }
        assert_eq!(m.ingest.nodes.lock().unwrap().len(), MAX_NODE_SERIES);
        let live: std::collections::HashSet<&str> = ["node-1"].into_iter().collect();
        m.ingest.retain_nodes(&live);
        assert_eq!(m.ingest.nodes.lock().unwrap().len(), 1);
        assert!(
            m.ingest
                .node_lag
                .get(&NodeLabel {
                    node: "node-2".into()
                })
                .is_none()
        );
    }
}
