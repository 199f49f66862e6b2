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
use super::config::FlowMetricsConfig;
use crate::metrics::FloatGauge;

/// Labels at most (as many as [`super::config::METRIC_LABELS`]).
const MAX_LABELS: usize = super::config::METRIC_LABELS.len();

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
    super::config::METRIC_LABELS
        .iter()
        .copied()
        .find(|l| *l == label)
        .unwrap_or("other")
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
    /// The label values that have series (at most `max_series`).
    series: Mutex<HashSet<Vec<String>>>,
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
            series: Mutex::new(HashSet::new()),
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
        let mut groups: HashMap<[u32; MAX_LABELS], (u64, u64)> = HashMap::new();
        for i in 0..n {
            let mut key = [0u32; MAX_LABELS];
            for (k, col_ids) in key.iter_mut().zip(&ids) {
                *k = col_ids[i];
            }
            let g = groups.entry(key).or_default();
            g.0 += 1;
            g.1 += u64::try_from(count.get(i)).unwrap_or(0).max(1);
        }
        // In label order: which sets get a series under the cap does not depend on hashing.
        let mut groups: Vec<(Vec<String>, (u64, u64))> = groups
            .into_iter()
            .map(|(key, counts)| {
                let values = self
                    .labels
                    .iter()
                    .enumerate()
                    .map(|(j, l)| match (names[j][key[j] as usize], *l) {
                        (None, "enforcement") => "enforce".to_owned(),
                        (v, _) => v.unwrap_or("").to_owned(),
                    })
                    .collect();
                (values, counts)
            })
            .collect();
        groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut series = self.series.lock().expect("flow metric series lock");
        for (mut values, (records, conns)) in groups {
            if !series.contains(&values) {
                if series.len() < self.max_series {
                    series.insert(values.clone());
                } else {
                    self.folded.inc_by(records);
                    values = vec![FOLDED.to_owned(); self.labels.len()];
                }
            }
            let labels: Labels = self.labels.iter().copied().zip(values).collect();
            self.records.get_or_create(&labels).inc_by(records);
            self.connections.get_or_create(&labels).inc_by(conns);
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
