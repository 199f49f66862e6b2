//! Log-based metrics: the flow log counted on `/metrics` (`verdict_flow_*`), the Prometheus
//! view of it for dashboards and Prometheus alert rules, with a hard cap on series.

use std::collections::{HashMap, HashSet};

use std::sync::Mutex;

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use verdict_schema::flat_schema::col;
use verdict_service::metrics::Registry;

use super::columns::{IntCol, StrCol};
use crate::config::alerts::FlowMetricsConfig;
use crate::metrics::FloatGauge;

/// Labels at most (as many as [`crate::config::alerts::METRIC_LABELS`]).
const MAX_LABELS: usize = crate::config::alerts::METRIC_LABELS.len();

/// The label value of series folded past the cap.
pub const FOLDED: &str = "other";

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

/// The flat-schema column behind a metric label.
fn column(label: &str) -> &'static str {
    match label {
        "disposition" => col::DISPOSITION,
        "direction" => col::DIRECTION,
        "src_namespace" => col::SRC_POD_NAMESPACE,
        "dest_namespace" => col::DEST_POD_NAMESPACE,
        "src_workload" => col::SRC_WORKLOAD_NAME,
        "dest_workload" => col::DEST_WORKLOAD_NAME,
        "protocol" => col::PROTOCOL,
        _ => col::ENFORCEMENT,
    }
}

/// The label names, interned for the families (`&'static str` keys).
fn static_label(label: &str) -> &'static str {
    crate::config::alerts::METRIC_LABELS
        .iter()
        .copied()
        .find(|l| *l == label)
        .unwrap_or("other")
}

/// The counters of each label set, found by the label values without building strings.
#[derive(Debug, Default)]
struct SeriesIndex {
    by_hash: HashMap<u64, Vec<(Vec<String>, Counter, Counter)>>,
    len: usize,
}

impl SeriesIndex {
    /// The (records, connections) counters of `values`, created by `make` while fewer than
    /// `max` sets have them; `None` past the cap.
    fn get_or_insert(
        &mut self,
        values: &[&str],
        max: usize,
        make: impl FnOnce(&[&str]) -> (Counter, Counter),
    ) -> Option<(Counter, Counter)> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        values.hash(&mut h);
        let bucket = self.by_hash.entry(h.finish()).or_default();
        if let Some((_, r, c)) = bucket
            .iter()
            .find(|(v, _, _)| v.iter().map(String::as_str).eq(values.iter().copied()))
        {
            return Some((r.clone(), c.clone()));
        }
        if self.len >= max {
            return None;
        }
        let (r, c) = make(values);
        bucket.push((
            values.iter().map(|v| (*v).to_owned()).collect(),
            r.clone(),
            c.clone(),
        ));
        self.len += 1;
        Some((r, c))
    }
}

/// `verdict_flow_connections_total`, `verdict_flow_records_total`,
/// `verdict_flow_lost_connections_total`, `verdict_flow_metric_series_folded_total` and
/// `verdict_collector_node_last_record_timestamp_seconds`.
#[derive(Debug)]
pub struct FlowMetrics {
    labels: Vec<&'static str>,
    max_series: usize,
    enabled: bool,
    connections: Family<Labels, Counter>,
    records: Family<Labels, Counter>,
    lost: Family<ReasonLabel, Counter>,
    folded: Counter,
    node_last_record: Family<NodeLabel, FloatGauge>,
    /// The label sets that have series (at most `max_series`), with their counters.
    series: Mutex<SeriesIndex>,
    nodes: Mutex<HashSet<String>>,
}

impl FlowMetrics {
    pub fn register(registry: &mut Registry, config: &FlowMetricsConfig) -> FlowMetrics {
        let m = FlowMetrics {
            labels: config.labels.iter().map(|l| static_label(l)).collect(),
            max_series: config.max_series,
            enabled: config.enabled,
            connections: Family::default(),
            records: Family::default(),
            lost: Family::default(),
            folded: Counter::default(),
            node_last_record: Family::default(),
            series: Mutex::new(SeriesIndex::default()),
            nodes: Mutex::new(HashSet::new()),
        };
        if config.enabled {
            registry.register(
                "verdict_flow_connections",
                "Connections in stored flow records (an aggregated deny counts its attempts), by the labels of alerts.metrics.labels.",
                m.connections.clone(),
            );
            registry.register(
                "verdict_flow_records",
                "Stored flow records, by the labels of alerts.metrics.labels.",
                m.records.clone(),
            );
            registry.register(
                "verdict_flow_lost_connections",
                "Connections nodes dropped from the flow log (loss markers), by reason.",
                m.lost.clone(),
            );
            registry.register(
                "verdict_flow_metric_series_folded",
                "Flow records counted under the label value \"other\": their label set was past alerts.metrics.max_series.",
                m.folded.clone(),
            );
        }
        registry.register(
            "verdict_collector_node_last_record_timestamp_seconds",
            "When the collector last stored a record of each node (Unix time).",
            m.node_last_record.clone(),
        );
        m
    }

    /// Counts applied flow rows: rows are grouped by their label values' ids (dictionary keys,
    /// no string work per row), then each group's strings are read once.
    pub fn observe_flows(&self, batch: &RecordBatch) -> Result<(), ArrowError> {
        if !self.enabled {
            return Ok(());
        }
        let cols: Vec<StrCol<'_>> = self
            .labels
            .iter()
            .map(|l| StrCol::of(batch, column(l)))
            .collect::<Result<_, _>>()?;
        let count = IntCol::of(batch, col::COUNT)?;
        let n = batch.num_rows();
        // Per label, each row's value id (0: null) and each id's string.
        let mut ids: Vec<Vec<u32>> = Vec::with_capacity(cols.len());
        let mut names: Vec<Vec<Option<&str>>> = Vec::with_capacity(cols.len());
        for c in &cols {
            let (row_ids, strings) = c.ids(n);
            ids.push(row_ids);
            names.push(strings);
        }
        // Groups in the order their first row comes: which label sets get a series under the
        // cap depends on the data only.
        let mut index: HashMap<[u32; MAX_LABELS], usize> = HashMap::new();
        let mut groups: Vec<([u32; MAX_LABELS], u64, u64)> = Vec::new();
        for i in 0..n {
            let mut key = [0u32; MAX_LABELS];
            for (k, col_ids) in key.iter_mut().zip(&ids) {
                *k = col_ids[i];
            }
            let g = *index.entry(key).or_insert_with(|| {
                groups.push((key, 0, 0));
                groups.len() - 1
            });
            groups[g].1 += 1;
            groups[g].2 += u64::try_from(count.get(i)).unwrap_or(0).max(1);
        }
        let mut series = self.series.lock().expect("flow metric series lock");
        let mut values: Vec<&str> = Vec::with_capacity(self.labels.len());
        for (key, records, conns) in groups {
            values.clear();
            values.extend(self.labels.iter().enumerate().map(|(j, l)| {
                match (names[j][key[j] as usize], *l) {
                    (None, "enforcement") => "enforce",
                    (v, _) => v.unwrap_or(""),
                }
            }));
            let s = series.get_or_insert(&values, self.max_series, |vals| {
                let labels: Labels = self
                    .labels
                    .iter()
                    .copied()
                    .zip(vals.iter().map(|v| (*v).to_owned()))
                    .collect();
                (
                    self.records.get_or_create_owned(&labels),
                    self.connections.get_or_create_owned(&labels),
                )
            });
            match s {
                Some((r, c)) => {
                    r.inc_by(records);
                    c.inc_by(conns);
                }
                None => {
                    self.folded.inc_by(records);
                    let labels: Labels = self
                        .labels
                        .iter()
                        .map(|l| (*l, FOLDED.to_owned()))
                        .collect();
                    self.records.get_or_create(&labels).inc_by(records);
                    self.connections.get_or_create(&labels).inc_by(conns);
                }
            }
        }
        Ok(())
    }

    /// Counts applied loss markers.
    pub fn observe_loss(&self, batch: &RecordBatch) -> Result<(), ArrowError> {
        if !self.enabled {
            return Ok(());
        }
        let reason = StrCol::of(batch, "reason")?;
        let dropped = IntCol::of(batch, "dropped_connections")?;
        for i in 0..batch.num_rows() {
            // Reasons are an enum of the schema: bounded.
            let r = reason.get(i).unwrap_or("");
            let r = match r {
                "rate_limit" | "aggregation_overflow" | "lost_events" | "write_failure" => r,
                _ => FOLDED,
            };
            self.lost
                .get_or_create(&ReasonLabel {
                    reason: r.to_owned(),
                })
                .inc_by(u64::try_from(dropped.get(i)).unwrap_or(0));
        }
        Ok(())
    }

    /// Sets each node's last record time; nodes no longer listed lose their series. At most
    /// `max` nodes get one.
    pub fn set_nodes(&self, nodes: &HashMap<String, i64>, max: usize) {
        let mut known = self.nodes.lock().expect("node series lock");
        known.retain(|n| {
            let keep = nodes.contains_key(n);
            if !keep {
                self.node_last_record.remove(&NodeLabel { node: n.clone() });
            }
            keep
        });
        for (node, &nanos) in nodes {
            if !known.contains(node) {
                if known.len() >= max {
                    continue;
                }
                known.insert(node.clone());
            }
            self.node_last_record
                .get_or_create(&NodeLabel { node: node.clone() })
                .set(nanos as f64 / 1e9);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::engine::tests::{batch, row};

    #[test]
    fn label_values_from_records_cannot_inject_lines() {
        let mut registry = Registry::default();
        let m = FlowMetrics::register(&mut registry, &FlowMetricsConfig::default());
        m.observe_flows(&batch(&[row(0, true, "evil\"} 1\nfake_metric{a=\"")]))
            .unwrap();
        let text = verdict_service::metrics::render(&registry);
        assert!(
            !text.lines().any(|l| l.starts_with("fake_metric")),
            "{text}"
        );
        assert!(
            text.contains(r#"dest_namespace="evil\"} 1\nfake_metric{a=\"""#),
            "{text}"
        );
    }
}
