//! Prometheus metrics, served on the HTTP port at `/metrics`. Names start with
//! `verdict_collector_`; labels are low-cardinality (table, rejection reason, node).
//!
//! Counters are updated once per batch or per group commit, never per record.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use verdict_schema::proto::v1::RejectionCode;

use crate::table::Table;

/// A histogram with fixed bucket bounds (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in microseconds (integer, so it can be atomic).
    sum_micros: AtomicU64,
}

const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

const LAG_BOUNDS: &[f64] = &[
    0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        self.observe_secs(d.as_secs_f64());
    }

    pub fn observe_secs(&self, secs: f64) {
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((secs.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.buckets) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Rejection reasons as metric labels, indexed by `RejectionCode as usize`.
const REJECTION_LABELS: [&str; 7] = [
    "unknown",
    "unsupported_schema_version",
    "too_large",
    "invalid_record",
    "out_of_order",
    "missing_identity",
    "malformed",
];

fn per_table() -> [AtomicU64; 3] {
    [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]
}

#[derive(Debug)]
pub struct Metrics {
    pub records_received: AtomicU64,
    pub batches_received: AtomicU64,
    pub records_stored: [AtomicU64; 3],
    pub records_deduplicated: AtomicU64,
    pub batches_rejected: [AtomicU64; 7],
    pub records_rejected: [AtomicU64; 7],
    pub auth_failures: AtomicU64,
    pub streams_active: AtomicU64,
    pub streams_total: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub wal_entries: AtomicU64,
    pub wal_group_commits: AtomicU64,
    pub wal_commit_seconds: Histogram,
    pub ack_seconds: Histogram,
    pub flush_seconds: Histogram,
    pub manifest_commit_seconds: Histogram,
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub files_written: [AtomicU64; 3],
    pub bytes_written: [AtomicU64; 3],
    pub compactions: AtomicU64,
    pub compaction_failures: AtomicU64,
    pub files_compacted: AtomicU64,
    pub retention_files_deleted: AtomicU64,
    pub orphan_files_deleted: AtomicU64,
    pub unflushed_rows: AtomicU64,
    pub unflushed_bytes: AtomicU64,
    pub sources: AtomicU64,
    pub sources_forgotten: AtomicU64,
    pub source_lag_seconds: Histogram,
    /// Per node: ingest lag (receive time − newest record's event time) of its latest batch.
    node_lag: Mutex<BTreeMap<String, f64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            records_received: AtomicU64::new(0),
            batches_received: AtomicU64::new(0),
            records_stored: per_table(),
            records_deduplicated: AtomicU64::new(0),
            batches_rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            records_rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            auth_failures: AtomicU64::new(0),
            streams_active: AtomicU64::new(0),
            streams_total: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(0),
            wal_entries: AtomicU64::new(0),
            wal_group_commits: AtomicU64::new(0),
            wal_commit_seconds: Histogram::new(LATENCY_BOUNDS),
            ack_seconds: Histogram::new(LATENCY_BOUNDS),
            flush_seconds: Histogram::new(LATENCY_BOUNDS),
            manifest_commit_seconds: Histogram::new(LATENCY_BOUNDS),
            flushes: AtomicU64::new(0),
            flush_failures: AtomicU64::new(0),
            files_written: per_table(),
            bytes_written: per_table(),
            compactions: AtomicU64::new(0),
            compaction_failures: AtomicU64::new(0),
            files_compacted: AtomicU64::new(0),
            retention_files_deleted: AtomicU64::new(0),
            orphan_files_deleted: AtomicU64::new(0),
            unflushed_rows: AtomicU64::new(0),
            unflushed_bytes: AtomicU64::new(0),
            sources: AtomicU64::new(0),
            sources_forgotten: AtomicU64::new(0),
            source_lag_seconds: Histogram::new(LAG_BOUNDS),
            node_lag: Mutex::new(BTreeMap::new()),
        }
    }
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    pub fn rejected(&self, code: RejectionCode, records: u64) {
        let i = (code as usize).min(REJECTION_LABELS.len() - 1);
        add(&self.batches_rejected[i], 1);
        add(&self.records_rejected[i], records);
    }

    pub fn stored(&self, table: Table, rows: u64) {
        add(&self.records_stored[table.index()], rows);
    }

    pub fn file_written(&self, table: Table, bytes: u64) {
        add(&self.files_written[table.index()], 1);
        add(&self.bytes_written[table.index()], bytes);
    }

    /// Records the ingest lag of `node`'s latest batch.
    pub fn source_lag(&self, node: &str, lag_secs: f64) {
        self.source_lag_seconds.observe_secs(lag_secs);
        let mut m = self.node_lag.lock().expect("metrics lock");
        match m.get_mut(node) {
            Some(v) => *v = lag_secs,
            None => {
                m.insert(node.to_owned(), lag_secs);
            }
        }
    }

    /// Drops per-node series of nodes no longer among `live` (forgotten sources).
    pub fn retain_nodes(&self, live: &std::collections::HashSet<&str>) {
        self.node_lag
            .lock()
            .expect("metrics lock")
            .retain(|n, _| live.contains(n.as_str()));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::with_capacity(8192);
        let one = |s: &mut String, name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        one(
            &mut s,
            "verdict_collector_records_received_total",
            "counter",
            "Records received in batches (accepted or rejected).",
            g(&self.records_received),
        );
        one(
            &mut s,
            "verdict_collector_batches_received_total",
            "counter",
            "Batches received.",
            g(&self.batches_received),
        );
        let labelled =
            |s: &mut String, name: &str, help: &str, label: &str, vals: Vec<(&str, u64)>| {
                let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
                for (l, v) in vals {
                    let _ = writeln!(s, "{name}{{{label}=\"{l}\"}} {v}");
                }
            };
        let tables = |a: &[AtomicU64; 3]| {
            Table::ALL
                .iter()
                .map(|t| (t.label(), g(&a[t.index()])))
                .collect::<Vec<_>>()
        };
        labelled(
            &mut s,
            "verdict_collector_records_stored_total",
            "Rows made durable (write-ahead log) for the first time, by table.",
            "table",
            tables(&self.records_stored)[..2].to_vec(),
        );
        one(
            &mut s,
            "verdict_collector_records_deduplicated_total",
            "counter",
            "Records dropped because their sequence was at or below the source's watermark.",
            g(&self.records_deduplicated),
        );
        labelled(
            &mut s,
            "verdict_collector_records_rejected_total",
            "Records in rejected batches, by reason.",
            "reason",
            REJECTION_LABELS
                .iter()
                .zip(&self.records_rejected)
                .skip(1)
                .map(|(l, a)| (*l, g(a)))
                .collect(),
        );
        labelled(
            &mut s,
            "verdict_collector_batches_rejected_total",
            "Rejected batches, by reason.",
            "reason",
            REJECTION_LABELS
                .iter()
                .zip(&self.batches_rejected)
                .skip(1)
                .map(|(l, a)| (*l, g(a)))
                .collect(),
        );
        one(
            &mut s,
            "verdict_collector_auth_failures_total",
            "counter",
            "Streams refused for a missing or wrong bearer token.",
            g(&self.auth_failures),
        );
        one(
            &mut s,
            "verdict_collector_streams_active",
            "gauge",
            "Open ingest streams.",
            g(&self.streams_active),
        );
        one(
            &mut s,
            "verdict_collector_streams_total",
            "counter",
            "Ingest streams opened.",
            g(&self.streams_total),
        );
        one(
            &mut s,
            "verdict_collector_wal_bytes_total",
            "counter",
            "Bytes appended to the write-ahead log.",
            g(&self.wal_bytes),
        );
        one(
            &mut s,
            "verdict_collector_wal_entries_total",
            "counter",
            "Batches appended to the write-ahead log.",
            g(&self.wal_entries),
        );
        one(
            &mut s,
            "verdict_collector_wal_group_commits_total",
            "counter",
            "Group commits (one fsync each).",
            g(&self.wal_group_commits),
        );
        self.wal_commit_seconds.render(
            &mut s,
            "verdict_collector_wal_commit_seconds",
            "Write + fsync time of one group commit.",
        );
        self.ack_seconds.render(
            &mut s,
            "verdict_collector_ack_seconds",
            "From a batch's arrival to its acknowledgement.",
        );
        self.flush_seconds.render(
            &mut s,
            "verdict_collector_flush_seconds",
            "From freezing buffered rows to their files being committed.",
        );
        self.manifest_commit_seconds.render(
            &mut s,
            "verdict_collector_commit_seconds",
            "Writing one commit-log entry (the atomic step that publishes files).",
        );
        one(
            &mut s,
            "verdict_collector_flushes_total",
            "counter",
            "Completed flushes.",
            g(&self.flushes),
        );
        one(
            &mut s,
            "verdict_collector_flush_failures_total",
            "counter",
            "Failed flush attempts (retried).",
            g(&self.flush_failures),
        );
        labelled(
            &mut s,
            "verdict_collector_files_written_total",
            "Parquet files written (flushes and compactions), by table.",
            "table",
            tables(&self.files_written),
        );
        labelled(
            &mut s,
            "verdict_collector_bytes_written_total",
            "Parquet bytes written (flushes and compactions), by table.",
            "table",
            tables(&self.bytes_written),
        );
        one(
            &mut s,
            "verdict_collector_compactions_total",
            "counter",
            "Completed compactions (one merged file each).",
            g(&self.compactions),
        );
        one(
            &mut s,
            "verdict_collector_compaction_failures_total",
            "counter",
            "Failed compactions.",
            g(&self.compaction_failures),
        );
        one(
            &mut s,
            "verdict_collector_compacted_files_total",
            "counter",
            "Files replaced by compactions.",
            g(&self.files_compacted),
        );
        one(
            &mut s,
            "verdict_collector_retention_deleted_files_total",
            "counter",
            "Files deleted because their partition passed its retention.",
            g(&self.retention_files_deleted),
        );
        one(
            &mut s,
            "verdict_collector_orphan_files_deleted_total",
            "counter",
            "Uncommitted leftovers of interrupted flushes or compactions deleted at start.",
            g(&self.orphan_files_deleted),
        );
        one(
            &mut s,
            "verdict_collector_unflushed_rows",
            "gauge",
            "Rows durable in the write-ahead log but not yet in committed Parquet.",
            g(&self.unflushed_rows),
        );
        one(
            &mut s,
            "verdict_collector_unflushed_bytes",
            "gauge",
            "Memory held by those rows.",
            g(&self.unflushed_bytes),
        );
        one(
            &mut s,
            "verdict_collector_sources",
            "gauge",
            "(node, source) watermarks kept.",
            g(&self.sources),
        );
        one(
            &mut s,
            "verdict_collector_sources_forgotten_total",
            "counter",
            "Watermarks dropped after dedup.source_retention without batches.",
            g(&self.sources_forgotten),
        );
        self.source_lag_seconds.render(
            &mut s,
            "verdict_collector_ingest_lag_seconds",
            "Per batch: receive time minus the newest record's event time.",
        );
        let _ = writeln!(
            s,
            "# HELP verdict_collector_source_lag_seconds Per node: ingest lag of its latest batch.\n# TYPE verdict_collector_source_lag_seconds gauge"
        );
        for (node, lag) in self.node_lag.lock().expect("metrics lock").iter() {
            let node = node.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                s,
                "verdict_collector_source_lag_seconds{{node=\"{node}\"}} {lag}"
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_labels_and_histograms() {
        let m = Metrics::new();
        m.rejected(RejectionCode::TooLarge, 5);
        m.stored(Table::Loss, 2);
        m.wal_commit_seconds.observe(Duration::from_millis(3));
        m.source_lag("n\"1", 1.5);
        let s = m.render();
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
    }
}
