//! The stored tables and their layout: `TABLE/dt=YYYY-MM-DD/hour=HH/FILE.parquet`, hive
//! partitions by event time (a late record lands in its own hour), readable as-is by DuckDB,
//! Athena, BigQuery external tables, Trino and Spark.

use arrow_schema::SchemaRef;
use serde::{Deserialize, Serialize};

/// One stored table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Policy-action flow records (log id `policy-action`), the flat schema of
    /// `verdict_schema::flat_schema`.
    Flows,
    /// Loss markers (log id `policy-action-loss`), `verdict_schema::flat_loss_schema`.
    Loss,
    /// One-minute aggregates of flows ([`crate::rollup`]).
    Rollups,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Flows, Table::Loss, Table::Rollups];

    /// Folder under the storage root.
    pub fn dir(self) -> &'static str {
        match self {
            Table::Flows => "policy_action",
            Table::Loss => "policy_action_loss",
            Table::Rollups => "policy_action_1m",
        }
    }

    /// Short name used in metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Table::Flows => "flows",
            Table::Loss => "loss",
            Table::Rollups => "rollups",
        }
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Flows => verdict_schema::flat_schema::log_entry_schema(),
            Table::Loss => verdict_schema::flat_loss_schema::loss_entry_schema(),
            Table::Rollups => crate::rollup::rollup_schema(),
        }
    }

    /// Index for per-table arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// One hour of event time (hours since the Unix epoch, UTC): a hive partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hour(pub i64);

impl Hour {
    /// The hour holding `nanos` since the epoch.
    pub fn of_nanos(nanos: i64) -> Hour {
        Hour(nanos.div_euclid(NANOS_PER_HOUR))
    }

    pub fn start_nanos(self) -> i64 {
        self.0.saturating_mul(NANOS_PER_HOUR)
    }

    /// First nanosecond after the hour.
    pub fn end_nanos(self) -> i64 {
        (self.0 + 1).saturating_mul(NANOS_PER_HOUR)
    }

    /// `dt=YYYY-MM-DD/hour=HH`.
    pub fn partition_path(self) -> String {
        let secs = self.0.saturating_mul(3600);
        match chrono::DateTime::from_timestamp(secs, 0) {
            Some(t) => t.format("dt=%Y-%m-%d/hour=%H").to_string(),
            // Outside chrono's range (±262,000 years): still a distinct, parseable folder.
            None => format!("dt=out-of-range/hour={}", self.0),
        }
    }

    /// The hour of a `dt=YYYY-MM-DD/hour=HH` path (inverse of [`partition_path`](Self::partition_path)).
    pub fn parse_partition_path(p: &str) -> Option<Hour> {
        let (dt, hour) = p.split_once("/hour=")?;
        let date = chrono::NaiveDate::parse_from_str(dt.strip_prefix("dt=")?, "%Y-%m-%d").ok()?;
        let h: u32 = hour.trim_end_matches('/').parse().ok()?;
        let t = date.and_hms_opt(h, 0, 0)?.and_utc();
        Some(Hour(t.timestamp().div_euclid(3600)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_and_partition_paths() {
        let t = verdict_schema::Timestamp::parse("2021-04-01T12:42:33.5Z").unwrap();
        let h = Hour::of_nanos(t.unix_nanos());
        assert_eq!(h.partition_path(), "dt=2021-04-01/hour=12");
        assert_eq!(Hour::parse_partition_path("dt=2021-04-01/hour=12"), Some(h));
        assert!(h.start_nanos() <= t.unix_nanos() && t.unix_nanos() < h.end_nanos());
        // Before the epoch, hours still floor.
        let before = Hour::of_nanos(-1);
        assert_eq!(before.partition_path(), "dt=1969-12-31/hour=23");
        assert_eq!(
            Hour::parse_partition_path(&before.partition_path()),
            Some(before)
        );
    }
}
