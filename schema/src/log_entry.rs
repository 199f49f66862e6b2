//! The Cloud Logging-like LogEntry envelope (docs/design.md, "Contract 2: the LogEntry envelope"):
//! what queries, sinks and the HTTP API see. `jsonPayload` is the unchanged policy-action record
//! (log id `policy-action`), or for the log id `policy-action-loss` a [`LossMarker`]
//! ([`LossLogEntry`]).

use serde::{Deserialize, Serialize};

use crate::loss_marker::LossMarker;
use crate::record::PolicyActionRecord;
use crate::timestamp::Timestamp;

/// `resource.type` of every Verdict entry, as GKE's policy-action logs.
pub const RESOURCE_TYPE: &str = "k8s_node";
/// Log id of flow records (`logName` = `projects/PROJECT/logs/policy-action`).
pub const POLICY_ACTION_LOG_ID: &str = "policy-action";
/// Log id of Verdict's loss markers.
pub const POLICY_ACTION_LOSS_LOG_ID: &str = "policy-action-loss";

/// One stored entry. The payload type defaults to the policy-action record; loss markers use
/// [`LossLogEntry`] (same envelope, log id `policy-action-loss`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry<P = PolicyActionRecord> {
    /// `projects/PROJECT/logs/LOG_ID`.
    pub log_name: String,
    pub resource: MonitoredResource,
    /// The record's own timestamp (when the connection attempt occurred).
    pub timestamp: Timestamp,
    /// When the collector received the record.
    pub receive_timestamp: Timestamp,
    /// Stable across retries: derived from (node, source, sequence), see [`insert_id`].
    pub insert_id: String,
    pub severity: Severity,
    pub json_payload: P,
}

/// A loss marker as a LogEntry (log id `policy-action-loss`).
pub type LossLogEntry = LogEntry<LossMarker>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitoredResource {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub labels: ResourceLabels,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResourceLabels {
    pub project_id: String,
    pub location: String,
    pub cluster_name: String,
    pub node_name: String,
}

/// Cloud Logging's LogSeverity, in its order (DEFAULT lowest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Default,
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Alert,
    Emergency,
}

impl Severity {
    pub const ALL: [Severity; 9] = [
        Severity::Default,
        Severity::Debug,
        Severity::Info,
        Severity::Notice,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
        Severity::Alert,
        Severity::Emergency,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Default => "DEFAULT",
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
            Severity::Critical => "CRITICAL",
            Severity::Alert => "ALERT",
            Severity::Emergency => "EMERGENCY",
        }
    }

    /// Cloud Logging's numeric value (DEFAULT 0, DEBUG 100, ... EMERGENCY 800).
    pub fn number(self) -> i32 {
        match self {
            Severity::Default => 0,
            Severity::Debug => 100,
            Severity::Info => 200,
            Severity::Notice => 300,
            Severity::Warning => 400,
            Severity::Error => 500,
            Severity::Critical => 600,
            Severity::Alert => 700,
            Severity::Emergency => 800,
        }
    }

    /// Case-insensitive name.
    pub fn from_name(s: &str) -> Option<Severity> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }
}

/// Who wrote a record: the node identity of Contract 3.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeIdentity {
    pub project_id: String,
    pub location: String,
    pub cluster_name: String,
    pub node_name: String,
}

/// `projects/PROJECT/logs/LOG_ID`.
pub fn log_name(project_id: &str, log_id: &str) -> String {
    format!("projects/{project_id}/logs/{log_id}")
}

/// The log id at the end of a logName (`policy-action` of `projects/p/logs/policy-action`),
/// percent-decoded as Cloud Logging stores `/` in ids as `%2F`.
pub fn log_id_of(log_name: &str) -> &str {
    log_name
        .rsplit_once("/logs/")
        .map_or(log_name, |(_, id)| id)
}

/// Stable insertId for the record at `sequence` of `source` on `node`: 32 lowercase hex digits,
/// a 64-bit FNV-1a hash of (node, source) followed by the sequence. FNV is written out here (not
/// `DefaultHasher`) so the id never changes between Rust releases.
pub fn insert_id(node_name: &str, source_id: &str, sequence: u64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node_name.bytes().chain([0u8]).chain(source_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}{sequence:016x}")
}

impl MonitoredResource {
    /// The `k8s_node` resource of `node`.
    pub fn k8s_node(node: &NodeIdentity) -> Self {
        MonitoredResource {
            resource_type: RESOURCE_TYPE.to_owned(),
            labels: ResourceLabels {
                project_id: node.project_id.clone(),
                location: node.location.clone(),
                cluster_name: node.cluster_name.clone(),
                node_name: node.node_name.clone(),
            },
        }
    }
}

impl LogEntry {
    /// Wraps a flow record written on `node` as a `policy-action` entry.
    pub fn policy_action(
        record: PolicyActionRecord,
        node: &NodeIdentity,
        receive_timestamp: Timestamp,
        insert_id: String,
    ) -> Self {
        LogEntry {
            log_name: log_name(&node.project_id, POLICY_ACTION_LOG_ID),
            resource: MonitoredResource::k8s_node(node),
            timestamp: record.timestamp,
            receive_timestamp,
            insert_id,
            // GKE's policy-action entries carry no severity of their own.
            severity: Severity::Default,
            json_payload: record,
        }
    }
}

impl LossLogEntry {
    /// Wraps a loss marker written on `node` as a `policy-action-loss` entry. Its timestamp is the
    /// marker's (the end of the interval it counts).
    pub fn loss(
        marker: LossMarker,
        node: &NodeIdentity,
        receive_timestamp: Timestamp,
        insert_id: String,
    ) -> Self {
        LogEntry {
            log_name: log_name(&node.project_id, POLICY_ACTION_LOSS_LOG_ID),
            resource: MonitoredResource::k8s_node(node),
            timestamp: marker.timestamp,
            receive_timestamp,
            insert_id,
            // Dropped records are worth a look: a warning, so severity filters surface them.
            severity: Severity::Warning,
            json_payload: marker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_id_is_stable_and_distinct() {
        let a = insert_id("node-1", "src-a", 4096);
        assert_eq!(a, insert_id("node-1", "src-a", 4096));
        assert_eq!(a.len(), 32);
        assert!(a.ends_with("0000000000001000"));
        assert_ne!(a, insert_id("node-1", "src-b", 4096));
        assert_ne!(a, insert_id("node-1", "src-a", 4097));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(insert_id("ab", "c", 1), insert_id("a", "bc", 1));
        // Pinned: the id must never change between releases (FNV-1a of "n\0s").
        assert_eq!(insert_id("n", "s", 1), "2275c119267fb6500000000000000001");
    }

    #[test]
    fn severity_order_and_names() {
        assert!(Severity::Warning > Severity::Info);
        assert_eq!(Severity::from_name("warning"), Some(Severity::Warning));
        assert_eq!(
            serde_json::to_string(&Severity::Default).unwrap(),
            "\"DEFAULT\""
        );
    }

    #[test]
    fn log_id_extraction() {
        assert_eq!(log_id_of("projects/p/logs/policy-action"), "policy-action");
    }
}
