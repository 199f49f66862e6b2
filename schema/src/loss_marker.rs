//! Loss markers: what a node dropped instead of logging, written to `policy_action_loss.log`
//! beside `policy_action.log` (never into it, so that file stays byte-compatible with GKE
//! consumers) and stored under the log id `policy-action-loss`.
//!
//! One marker per (interval, reason, disposition) with something dropped: downstream counts of
//! records and connections can be corrected from the logs alone by adding `dropped_records` and
//! `dropped_connections`.

use serde::{Deserialize, Serialize};

use crate::record::Disposition;
use crate::timestamp::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossMarker {
    /// End of the interval the counts cover (the entry's timestamp).
    pub timestamp: Timestamp,
    /// Start of the interval (inclusive).
    pub interval_start: Timestamp,
    pub node_name: String,
    pub reason: LossReason,
    /// Which records were dropped; absent when unknown (events lost before a decision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<Disposition>,
    /// Policy-action records not written.
    pub dropped_records: u64,
    /// Connections those records stood for (an aggregated deny carries `count` connections).
    pub dropped_connections: u64,
}

/// Why records were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossReason {
    /// The per-node log rate limit (default 500 records/s).
    RateLimit,
    /// The deny aggregation table was full.
    AggregationOverflow,
    /// Verdict events lost between the datapath and the pipeline (ring buffer or channel full).
    LostEvents,
    /// Writing `policy_action.log` failed.
    WriteFailure,
}

impl LossReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LossReason::RateLimit => "rate_limit",
            LossReason::AggregationOverflow => "aggregation_overflow",
            LossReason::LostEvents => "lost_events",
            LossReason::WriteFailure => "write_failure",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let m = LossMarker {
            timestamp: Timestamp::parse("2026-01-01T00:00:01Z").unwrap(),
            interval_start: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
            node_name: "n1".into(),
            reason: LossReason::RateLimit,
            disposition: Some(Disposition::Deny),
            dropped_records: 3,
            dropped_connections: 7,
        };
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(
            s,
            r#"{"timestamp":"2026-01-01T00:00:01Z","interval_start":"2026-01-01T00:00:00Z","node_name":"n1","reason":"rate_limit","disposition":"deny","dropped_records":3,"dropped_connections":7}"#
        );
        assert_eq!(serde_json::from_str::<LossMarker>(&s).unwrap(), m);
    }
}
