//! The flat Arrow schema of stored loss markers (log id `policy-action-loss`), and conversions
//! [`LossLogEntry`] ⇄ RecordBatch.
//!
//! The envelope columns are those of [`crate::flat_schema`] (same names, types and order), so one
//! query can read both tables' envelopes alike; the marker's fields follow, one column each.

use std::sync::{Arc, LazyLock};

use arrow_array::builder::{Int64Builder, TimestampNanosecondBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampNanosecondType};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

use crate::flat_schema::{
    Dict, Envelope, EnvelopeBuilders, EnvelopeCols, StrCol, column, dict, dict_builder,
    envelope_fields, ts,
};
use crate::log_entry::LossLogEntry;
use crate::loss_marker::{LossMarker, LossReason};
use crate::record::Disposition;
use crate::timestamp::Timestamp;

/// Column names of the marker's own fields (the envelope's are in [`crate::flat_schema::col`]).
pub mod col {
    pub const INTERVAL_START: &str = "interval_start";
    pub const NODE_NAME: &str = "node_name";
    pub const REASON: &str = "reason";
    pub const DISPOSITION: &str = "disposition";
    pub const DROPPED_RECORDS: &str = "dropped_records";
    pub const DROPPED_CONNECTIONS: &str = "dropped_connections";
}

/// Each column with the LogEntry JSON path it holds (the loss table in schema/README.md).
pub const LOSS_COLUMN_PATHS: &[(&str, &str)] = &[
    (
        crate::flat_schema::col::TIMESTAMP,
        "timestamp, jsonPayload.timestamp",
    ),
    (
        crate::flat_schema::col::RECEIVE_TIMESTAMP,
        "receiveTimestamp",
    ),
    (crate::flat_schema::col::INSERT_ID, "insertId"),
    (crate::flat_schema::col::LOG_NAME, "logName"),
    (crate::flat_schema::col::SEVERITY, "severity"),
    (crate::flat_schema::col::RESOURCE_TYPE, "resource.type"),
    (
        crate::flat_schema::col::PROJECT_ID,
        "resource.labels.project_id",
    ),
    (
        crate::flat_schema::col::LOCATION,
        "resource.labels.location",
    ),
    (
        crate::flat_schema::col::CLUSTER_NAME,
        "resource.labels.cluster_name",
    ),
    (
        crate::flat_schema::col::RESOURCE_NODE_NAME,
        "resource.labels.node_name",
    ),
    (col::INTERVAL_START, "jsonPayload.interval_start"),
    (col::NODE_NAME, "jsonPayload.node_name"),
    (col::REASON, "jsonPayload.reason"),
    (col::DISPOSITION, "jsonPayload.disposition"),
    (col::DROPPED_RECORDS, "jsonPayload.dropped_records"),
    (col::DROPPED_CONNECTIONS, "jsonPayload.dropped_connections"),
];

static LOSS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = envelope_fields();
    fields.extend([
        Field::new(col::INTERVAL_START, ts(), false),
        Field::new(col::NODE_NAME, dict(), false),
        Field::new(col::REASON, dict(), false),
        Field::new(col::DISPOSITION, dict(), true),
        Field::new(col::DROPPED_RECORDS, DataType::Int64, false),
        Field::new(col::DROPPED_CONNECTIONS, DataType::Int64, false),
    ]);
    Arc::new(Schema::new(fields))
});

/// The flat schema of stored loss-marker entries.
pub fn loss_entry_schema() -> SchemaRef {
    LOSS_SCHEMA.clone()
}

/// Builds RecordBatches of [`loss_entry_schema`] one entry at a time.
pub struct LossEntryBatchBuilder {
    envelope: EnvelopeBuilders,
    interval_start: TimestampNanosecondBuilder,
    node_name: Dict,
    reason: Dict,
    disposition: Dict,
    dropped_records: Int64Builder,
    dropped_connections: Int64Builder,
}

impl std::fmt::Debug for LossEntryBatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossEntryBatchBuilder")
            .field("rows", &self.len())
            .finish_non_exhaustive()
    }
}

impl LossEntryBatchBuilder {
    pub fn with_capacity(n: usize) -> Self {
        LossEntryBatchBuilder {
            envelope: EnvelopeBuilders::new(n),
            interval_start: TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC"),
            node_name: dict_builder(n),
            reason: dict_builder(n),
            disposition: dict_builder(n),
            dropped_records: Int64Builder::with_capacity(n),
            dropped_connections: Int64Builder::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.envelope.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one entry: `env` and `insert_id` form its envelope, `m` its `jsonPayload`.
    pub fn append(&mut self, env: &Envelope<'_>, insert_id: &str, m: &LossMarker) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.envelope.append(env, m.timestamp, insert_id);
        self.interval_start
            .append_value(m.interval_start.unix_nanos());
        self.node_name.append_value(&m.node_name);
        self.reason.append_value(m.reason.as_str());
        self.disposition
            .append_option(m.disposition.map(Disposition::as_str));
        self.dropped_records.append_value(clamp(m.dropped_records));
        self.dropped_connections
            .append_value(clamp(m.dropped_connections));
    }

    /// The rows appended so far as one batch; the builder is empty afterwards.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(16);
        self.envelope.finish(&mut columns);
        columns.push(Arc::new(self.interval_start.finish()));
        columns.push(Arc::new(self.node_name.finish()));
        columns.push(Arc::new(self.reason.finish()));
        columns.push(Arc::new(self.disposition.finish()));
        columns.push(Arc::new(self.dropped_records.finish()));
        columns.push(Arc::new(self.dropped_connections.finish()));
        RecordBatch::try_new(loss_entry_schema(), columns)
    }
}

/// Converts loss-marker entries to one RecordBatch of [`loss_entry_schema`].
pub fn loss_entries_to_batch(entries: &[LossLogEntry]) -> Result<RecordBatch, ArrowError> {
    let mut b = LossEntryBatchBuilder::with_capacity(entries.len());
    for e in entries {
        b.append(&Envelope::from(e), &e.insert_id, &e.json_payload);
    }
    b.finish()
}

fn reason_of(s: &str) -> Option<LossReason> {
    [
        LossReason::RateLimit,
        LossReason::AggregationOverflow,
        LossReason::LostEvents,
        LossReason::WriteFailure,
    ]
    .into_iter()
    .find(|r| r.as_str() == s)
}

/// Converts a RecordBatch of [`loss_entry_schema`] (plain or dictionary strings) back to entries.
pub fn batch_to_loss_entries(batch: &RecordBatch) -> Result<Vec<LossLogEntry>, ArrowError> {
    let envelope = EnvelopeCols::of(batch)?;
    let interval_start = column(batch, col::INTERVAL_START)?
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| ArrowError::SchemaError("interval_start: expected Timestamp(ns)".into()))?;
    let node_name = StrCol::of(batch, col::NODE_NAME)?;
    let reason = StrCol::of(batch, col::REASON)?;
    let disposition = StrCol::of(batch, col::DISPOSITION)?;
    let int = |name: &str| {
        column(batch, name)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| ArrowError::SchemaError(format!("{name}: expected Int64")))
    };
    let dropped_records = int(col::DROPPED_RECORDS)?;
    let dropped_connections = int(col::DROPPED_CONNECTIONS)?;
    let bad = |i: usize, what: String| ArrowError::InvalidArgumentError(format!("row {i}: {what}"));
    let count = |v: i64, i: usize, name: &str| {
        u64::try_from(v).map_err(|_| bad(i, format!("negative {name}")))
    };
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let r = reason.req(i, col::REASON)?;
        let marker = LossMarker {
            timestamp: envelope.timestamp(i),
            interval_start: Timestamp::from_unix_nanos(interval_start.value(i)),
            node_name: node_name.req(i, col::NODE_NAME)?.to_owned(),
            reason: reason_of(r).ok_or_else(|| bad(i, format!("unknown reason {r:?}")))?,
            disposition: match disposition.get(i) {
                None => None,
                Some("allow") => Some(Disposition::Allow),
                Some("deny") => Some(Disposition::Deny),
                Some(other) => return Err(bad(i, format!("unknown disposition {other:?}"))),
            },
            dropped_records: count(dropped_records.value(i), i, col::DROPPED_RECORDS)?,
            dropped_connections: count(dropped_connections.value(i), i, col::DROPPED_CONNECTIONS)?,
        };
        out.push(envelope.entry(i, marker)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_entry::{NodeIdentity, insert_id};

    #[test]
    fn loss_entries_round_trip_through_arrow() {
        let node = NodeIdentity {
            project_id: "p".into(),
            location: "europe-west1".into(),
            cluster_name: "c".into(),
            node_name: "n1".into(),
        };
        let marker = |reason, disposition, n| LossMarker {
            timestamp: Timestamp::parse("2026-01-01T00:00:01Z").unwrap(),
            interval_start: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
            node_name: "n1".into(),
            reason,
            disposition,
            dropped_records: n,
            dropped_connections: n * 2,
        };
        let entries: Vec<LossLogEntry> = [
            marker(LossReason::RateLimit, Some(Disposition::Deny), 3),
            marker(LossReason::LostEvents, None, 5),
            marker(LossReason::WriteFailure, Some(Disposition::Allow), 1),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            LossLogEntry::loss(
                m,
                &node,
                Timestamp::parse("2026-01-01T00:00:02Z").unwrap(),
                insert_id("n1", "loss-1", i as u64 + 1),
            )
        })
        .collect();
        assert_eq!(entries[0].log_name, "projects/p/logs/policy-action-loss");
        let batch = loss_entries_to_batch(&entries).unwrap();
        assert_eq!(batch.schema(), loss_entry_schema());
        assert_eq!(batch_to_loss_entries(&batch).unwrap(), entries);
        // The envelope columns are exactly the flow table's.
        let flows = crate::flat_schema::log_entry_schema();
        for i in 0..10 {
            assert_eq!(flows.field(i), batch.schema().field(i));
        }
    }
}
