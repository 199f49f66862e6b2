//! From a received `Batch` to rows: validation (each failure a [`Rejection`] naming the
//! record), record decoding (JSON lines or structured `FlowRecord`s), LogEntry envelopes and the
//! Arrow batches of each (table, hour) partition.
//!
//! The same conversion rebuilds rows from the write-ahead log at start ([`build_rows`]), so
//! replayed rows equal the rows the live collector held (same receive time, same insertIds).

use std::fmt::Write as _;

use arrow_array::RecordBatch;
use verdict_schema::flat_loss_schema::LossEntryBatchBuilder;
use verdict_schema::flat_schema::{Envelope, LogEntryBatchBuilder};
use verdict_schema::log_entry::{
    POLICY_ACTION_LOG_ID, POLICY_ACTION_LOSS_LOG_ID, RESOURCE_TYPE, ResourceLabels, insert_id,
    log_name,
};
use verdict_schema::proto::SCHEMA_VERSION;
use verdict_schema::proto::v1::{self, RejectionCode};
use verdict_schema::{LossMarker, PolicyActionRecord, Severity, Timestamp};

use crate::manifest::SourceKey;
use crate::table::{Hour, Table};
use crate::wal;

/// Longest accepted `source.id` (the .proto's limit).
pub const MAX_SOURCE_ID_BYTES: usize = 128;

/// Why a batch is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectionCode,
    pub message: String,
}

impl Rejection {
    pub fn new(code: RejectionCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }

    pub fn to_proto(&self) -> v1::Rejection {
        v1::Rejection {
            code: self.code as i32,
            message: self.message.clone(),
        }
    }
}

/// Limits a batch is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch_bytes: usize,
    pub max_records: usize,
    pub max_record_bytes: usize,
    /// Event times accepted, relative to the receive time.
    pub window: TimeWindow,
    /// How far a record may start past the record before it (`grpc.max_sequence_gap`).
    pub max_sequence_gap: u64,
}

/// Where a record starts in its source's sequence space: a log line's sequence is the offset
/// just past its newline, so it starts its length + 1 earlier; other records (kernel record
/// numbers, structured records) start at their sequence.
pub fn record_start(r: &v1::Record) -> u64 {
    match &r.payload {
        Some(v1::record::Payload::JsonLine(line)) => {
            r.sequence.saturating_sub(line.len() as u64 + 1)
        }
        _ => r.sequence,
    }
}

/// How far a record's event time may be from the time it is received: older records would
/// land in partitions retention has already removed (or never removes), future ones in
/// partitions that do not exist yet. Cloud Logging refuses entries more than 30 days old or a
/// day ahead; so do the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub max_age: std::time::Duration,
    pub max_ahead: std::time::Duration,
}

impl TimeWindow {
    /// Why `ts` is outside the window around `now`, if it is.
    fn refuse(&self, ts: Timestamp, now: Timestamp) -> Option<String> {
        let nanos = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let (t, n) = (ts.unix_nanos(), now.unix_nanos());
        if t < n.saturating_sub(nanos(self.max_age)) {
            Some(format!(
                "timestamp {ts} is more than {} before the collector's clock ({now}; grpc.max_record_age)",
                humantime::format_duration(self.max_age)
            ))
        } else if t > n.saturating_add(nanos(self.max_ahead)) {
            Some(format!(
                "timestamp {ts} is more than {} after the collector's clock ({now}; grpc.max_record_ahead)",
                humantime::format_duration(self.max_ahead)
            ))
        } else {
            None
        }
    }
}

/// The rows of one (table, hour) partition of a batch.
#[derive(Debug, Clone)]
pub struct PreparedPart {
    pub table: Table,
    pub hour: Hour,
    pub batch: RecordBatch,
    /// Index in the batch's records of each row, ascending.
    pub rows: Vec<u32>,
}

impl PreparedPart {
    /// The rows of records `skip..` (records before `skip` are duplicates); `None` if none.
    pub fn without_first(&self, skip: usize) -> Option<RecordBatch> {
        let start = self.rows.partition_point(|&i| (i as usize) < skip);
        (start < self.rows.len()).then(|| self.batch.slice(start, self.rows.len() - start))
    }
}

/// A validated, decoded batch, ready for the writer.
#[derive(Debug)]
pub struct PreparedBatch {
    pub batch_id: u64,
    pub key: SourceKey,
    pub node: v1::NodeIdentity,
    pub receive: Timestamp,
    /// Each record's sequence, strictly increasing.
    pub sequences: Vec<u64>,
    /// Where each record starts ([`record_start`]).
    pub starts: Vec<u64>,
    pub parts: Vec<PreparedPart>,
    /// The records as WAL field-15 encodings, concatenated; record `i` starts at
    /// `record_offsets[i]`, so records `k..` are `wal_records[record_offsets[k]..]`.
    pub wal_records: Vec<u8>,
    pub record_offsets: Vec<usize>,
    /// Event time of the newest record (ns), for the lag metric.
    pub newest_event: Option<i64>,
}

impl PreparedBatch {
    /// Approximate memory of the batch's rows.
    pub fn row_bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|p| p.batch.get_array_memory_size())
            .sum()
    }
}

/// What a refusal names of an encoded `Batch`, read without decoding it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchHeader {
    pub batch_id: u64,
    /// (node name, source id); empty when absent (or absurdly long).
    pub key: SourceKey,
    pub records: usize,
}

/// The batch id, node, source and record count of an encoded `Batch`, read by walking its
/// top-level fields: nothing is allocated beyond two short names and no record is decoded, so
/// a batch too large to accept is still answered by its id at the cost of one pass over its
/// bytes. `None` when the bytes are not a protobuf message.
pub fn peek_header(mut buf: &[u8]) -> Option<BatchHeader> {
    let mut header = BatchHeader::default();
    while !buf.is_empty() {
        match next_field(&mut buf)? {
            (2, Field::Varint(v)) => header.batch_id = v,
            // NodeIdentity.node_name and Source.id are both field 1 of their message.
            (3, Field::Bytes(v)) => header.key.0 = first_string(v).unwrap_or_default(),
            (4, Field::Bytes(v)) => header.key.1 = first_string(v).unwrap_or_default(),
            (5, Field::Bytes(_)) => header.records += 1,
            _ => {}
        }
    }
    Some(header)
}

/// Field 1 of an encoded message, when it is a UTF-8 string of at most `MAX_SOURCE_ID_BYTES`.
fn first_string(mut buf: &[u8]) -> Option<String> {
    while !buf.is_empty() {
        if let (1, Field::Bytes(value)) = next_field(&mut buf)? {
            return (value.len() <= MAX_SOURCE_ID_BYTES)
                .then(|| std::str::from_utf8(value).ok().map(str::to_owned))
                .flatten();
        }
    }
    None
}

/// A field's value as read from the wire.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The next field of an encoded message (its number and value), advancing `buf` past it. `None`
/// when the bytes are not a field (or are a group, which batches never hold).
fn next_field<'a>(buf: &mut &'a [u8]) -> Option<(u64, Field<'a>)> {
    let key = read_varint(buf)?;
    let rest: &'a [u8] = buf;
    let (value, rest) = match key & 7 {
        0 => return Some((key >> 3, Field::Varint(read_varint(buf)?))),
        1 => (Field::Fixed, rest.get(8..)?),
        5 => (Field::Fixed, rest.get(4..)?),
        2 => {
            let mut at = rest;
            let len = usize::try_from(read_varint(&mut at)?).ok()?;
            (Field::Bytes(at.get(..len)?), &at[len..])
        }
        _ => return None,
    };
    *buf = rest;
    Some((key >> 3, value))
}

/// A protobuf varint (at most 10 bytes).
fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

/// Checks everything about `batch` that does not need its records decoded, in the order a
/// sender would want to hear about it.
pub fn check(batch: &v1::Batch, encoded_len: usize, limits: &Limits) -> Result<(), Rejection> {
    use RejectionCode as C;
    if batch.schema_version != SCHEMA_VERSION as i32 {
        return Err(Rejection::new(
            C::UnsupportedSchemaVersion,
            format!(
                "schema_version {} is not supported; this collector accepts {} (SCHEMA_VERSION_V1)",
                batch.schema_version, SCHEMA_VERSION as i32
            ),
        ));
    }
    if encoded_len > limits.max_batch_bytes {
        return Err(Rejection::new(
            C::TooLarge,
            format!(
                "the batch is {encoded_len} bytes; the limit is {} (grpc.max_batch_bytes): send smaller batches",
                limits.max_batch_bytes
            ),
        ));
    }
    if batch.records.len() > limits.max_records {
        return Err(Rejection::new(
            C::TooLarge,
            format!(
                "the batch has {} records; the limit is {} (grpc.max_records_per_batch)",
                batch.records.len(),
                limits.max_records
            ),
        ));
    }
    let node = batch.node.as_ref();
    if node.is_none_or(|n| n.node_name.is_empty()) {
        return Err(Rejection::new(
            C::MissingIdentity,
            "node.node_name is missing",
        ));
    }
    if let Some(n) = node.filter(|n| !crate::node_auth::valid_node_name(&n.node_name)) {
        return Err(Rejection::new(
            C::MissingIdentity,
            format!(
                "node.node_name {:?} is not a Kubernetes node name (at most 253 lower-case letters, digits, '-' and '.')",
                n.node_name.chars().take(64).collect::<String>()
            ),
        ));
    }
    if node.is_none_or(|n| n.project_id.is_empty()) {
        return Err(Rejection::new(
            C::MissingIdentity,
            "node.project_id is missing",
        ));
    }
    match batch.source.as_ref().map(|s| s.id.as_str()) {
        None | Some("") => {
            return Err(Rejection::new(C::MissingIdentity, "source.id is missing"));
        }
        Some(id) if id.len() > MAX_SOURCE_ID_BYTES => {
            return Err(Rejection::new(
                C::MissingIdentity,
                format!(
                    "source.id is {} bytes; at most {MAX_SOURCE_ID_BYTES}",
                    id.len()
                ),
            ));
        }
        Some(_) => {}
    }
    let mut previous: Option<u64> = None;
    for (i, r) in batch.records.iter().enumerate() {
        if let Some(p) = previous
            && r.sequence <= p
        {
            return Err(Rejection::new(
                C::OutOfOrder,
                format!(
                    "record {i} has sequence {} after {p}: sequences must strictly increase",
                    r.sequence
                ),
            ));
        }
        if let Some(p) = previous
            && record_start(r).saturating_sub(p) > limits.max_sequence_gap
        {
            return Err(Rejection::new(
                C::OutOfOrder,
                format!(
                    "record {i} (sequence {}) starts {} past the record before it (sequence {p}); at most {} (grpc.max_sequence_gap)",
                    r.sequence,
                    record_start(r) - p,
                    limits.max_sequence_gap
                ),
            ));
        }
        previous = Some(r.sequence);
        if let Some(v1::record::Payload::JsonLine(line)) = &r.payload
            && line.len() > limits.max_record_bytes
        {
            return Err(Rejection::new(
                C::TooLarge,
                format!(
                    "record {i} (sequence {}) is {} bytes; the limit is {} (grpc.max_record_bytes)",
                    r.sequence,
                    line.len(),
                    limits.max_record_bytes
                ),
            ));
        }
    }
    Ok(())
}

// A short-lived value per record: boxing the larger variant would cost an allocation per record.
#[expect(
    clippy::large_enum_variant,
    reason = "one short-lived value per record"
)]
pub(crate) enum Decoded {
    Flow(PolicyActionRecord),
    Loss(LossMarker),
}

pub(crate) fn decode_record(i: usize, r: &v1::Record) -> Result<Decoded, Rejection> {
    let bad = |what: String| {
        Rejection::new(
            RejectionCode::InvalidRecord,
            format!("record {i} (sequence {}): {what}", r.sequence),
        )
    };
    let log = v1::LogId::try_from(r.log_id).unwrap_or(v1::LogId::Unknown);
    match (log, &r.payload) {
        (_, None) => Err(bad("has no payload (json_line or flow)".into())),
        (v1::LogId::PolicyAction, Some(v1::record::Payload::JsonLine(line))) => {
            serde_json::from_slice::<PolicyActionRecord>(line)
                .map(Decoded::Flow)
                .map_err(|e| bad(format!("not a policy-action record: {e}")))
        }
        (v1::LogId::PolicyAction, Some(v1::record::Payload::Flow(f))) => {
            PolicyActionRecord::try_from(f.as_ref())
                .map(Decoded::Flow)
                .map_err(|e| bad(e.to_string()))
        }
        (v1::LogId::PolicyActionLoss, Some(v1::record::Payload::JsonLine(line))) => {
            serde_json::from_slice::<LossMarker>(line)
                .map(Decoded::Loss)
                .map_err(|e| bad(format!("not a loss marker: {e}")))
        }
        (v1::LogId::PolicyActionLoss, Some(v1::record::Payload::Flow(_))) => Err(bad(
            "a loss marker (LOG_ID_POLICY_ACTION_LOSS) must be a json_line".into(),
        )),
        (v1::LogId::Unknown, _) => Err(bad(format!(
            "log_id {} is not LOG_ID_POLICY_ACTION or LOG_ID_POLICY_ACTION_LOSS",
            r.log_id
        ))),
    }
}

#[expect(clippy::large_enum_variant, reason = "a handful per batch")]
enum PartBuilder {
    Flows(LogEntryBatchBuilder),
    Loss(LossEntryBatchBuilder),
}

/// Decodes `records` of `source_id` on `node`, received at `receive`, into partition batches.
/// Returns the parts and the newest event time. With a `window`, a record whose event time is
/// outside it around `receive` refuses the batch (live ingest); replay passes none, since what
/// was accepted stays accepted.
pub fn build_rows(
    node: &v1::NodeIdentity,
    source_id: &str,
    receive: Timestamp,
    records: &[v1::Record],
    window: Option<&TimeWindow>,
) -> Result<(Vec<PreparedPart>, Option<i64>), Rejection> {
    let labels = ResourceLabels {
        project_id: node.project_id.clone(),
        location: node.location.clone(),
        cluster_name: node.cluster_name.clone(),
        node_name: node.node_name.clone(),
    };
    let flow_log = log_name(&node.project_id, POLICY_ACTION_LOG_ID);
    let loss_log = log_name(&node.project_id, POLICY_ACTION_LOSS_LOG_ID);
    let flow_env = Envelope {
        log_name: &flow_log,
        resource_type: RESOURCE_TYPE,
        labels: &labels,
        receive_timestamp: receive,
        severity: Severity::Default,
    };
    let loss_env = Envelope {
        log_name: &loss_log,
        severity: Severity::Warning,
        ..flow_env
    };
    // insertId = FNV(node, source) ‖ sequence: the first half is the same for the whole batch.
    let prefix = &insert_id(&node.node_name, source_id, 0)[..16];
    let mut id = String::with_capacity(32);
    let mut builders: Vec<(Table, Hour, PartBuilder, Vec<u32>)> = Vec::new();
    let mut newest: Option<i64> = None;
    for (i, r) in records.iter().enumerate() {
        let decoded = decode_record(i, r)?;
        let (table, ts) = match &decoded {
            Decoded::Flow(f) => (Table::Flows, f.timestamp),
            Decoded::Loss(m) => (Table::Loss, m.timestamp),
        };
        if let Some(why) = window.and_then(|w| w.refuse(ts, receive)) {
            return Err(Rejection::new(
                RejectionCode::InvalidRecord,
                format!("record {i} (sequence {}): {why}", r.sequence),
            ));
        }
        newest = Some(newest.map_or(ts.unix_nanos(), |n| n.max(ts.unix_nanos())));
        let hour = Hour::of_nanos(ts.unix_nanos());
        let slot = match builders
            .iter()
            .position(|(t, h, _, _)| *t == table && *h == hour)
        {
            Some(s) => s,
            None => {
                // Most batches are one hour: its builder is sized for the whole batch; further
                // hours start small and grow, so a batch spread over many hours costs memory
                // in proportion to its records, not to records × hours.
                let capacity = if builders.is_empty() {
                    records.len()
                } else {
                    8
                };
                let b = match table {
                    Table::Loss => PartBuilder::Loss(LossEntryBatchBuilder::with_capacity(4)),
                    _ => PartBuilder::Flows(LogEntryBatchBuilder::with_capacity(capacity)),
                };
                builders.push((table, hour, b, Vec::new()));
                builders.len() - 1
            }
        };
        id.clear();
        id.push_str(prefix);
        let _ = write!(id, "{:016x}", r.sequence);
        let (_, _, b, rows) = &mut builders[slot];
        match (b, &decoded) {
            (PartBuilder::Flows(b), Decoded::Flow(f)) => b.append(&flow_env, &id, f),
            (PartBuilder::Loss(b), Decoded::Loss(m)) => b.append(&loss_env, &id, m),
            _ => unreachable!("the slot was chosen by table"),
        }
        rows.push(u32::try_from(i).expect("records per batch are bounded"));
    }
    let parts = builders
        .into_iter()
        .map(|(table, hour, b, rows)| {
            let batch = match b {
                PartBuilder::Flows(mut b) => b.finish(),
                PartBuilder::Loss(mut b) => b.finish(),
            }
            .map_err(|e| {
                Rejection::new(
                    RejectionCode::InvalidRecord,
                    format!("the records do not form rows: {e}"),
                )
            })?;
            Ok(PreparedPart {
                table,
                hour,
                batch,
                rows,
            })
        })
        .collect::<Result<Vec<_>, Rejection>>()?;
    Ok((parts, newest))
}

/// Checks, decodes and converts a received batch (CPU work: run it off the async runtime).
pub fn prepare(
    batch: v1::Batch,
    encoded_len: usize,
    limits: &Limits,
    receive: Timestamp,
) -> Result<PreparedBatch, Rejection> {
    check(&batch, encoded_len, limits)?;
    let node = batch.node.unwrap_or_default();
    let source_id = batch.source.map(|s| s.id).unwrap_or_default();
    let (parts, newest_event) = build_rows(
        &node,
        &source_id,
        receive,
        &batch.records,
        Some(&limits.window),
    )?;
    let mut wal_records = Vec::with_capacity(encoded_len);
    let mut record_offsets = Vec::with_capacity(batch.records.len());
    let mut sequences = Vec::with_capacity(batch.records.len());
    let mut starts = Vec::with_capacity(batch.records.len());
    for r in &batch.records {
        record_offsets.push(wal_records.len());
        sequences.push(r.sequence);
        starts.push(record_start(r));
        wal::encode_record(r, &mut wal_records);
    }
    Ok(PreparedBatch {
        batch_id: batch.batch_id,
        key: (node.node_name.clone(), source_id),
        node,
        receive,
        sequences,
        starts,
        parts,
        wal_records,
        record_offsets,
        newest_event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use verdict_schema::flat_loss_schema::batch_to_loss_entries;
    use verdict_schema::flat_schema::batch_to_log_entries;

    const FLOW: &str = r#"{"connection":{"src_ip":"10.84.0.180","dest_ip":"10.84.0.165","src_port":39610,"dest_port":8080,"protocol":"tcp","direction":"ingress"},"disposition":"deny","src":{"pod_name":"a","pod_namespace":"x","namespace":"x"},"dest":{"pod_name":"b","pod_namespace":"y","namespace":"y"},"count":3,"node_name":"n1","timestamp":"2026-01-01T00:59:59.5Z"}"#;
    const LOSS: &str = r#"{"timestamp":"2026-01-01T01:00:01Z","interval_start":"2026-01-01T01:00:00Z","node_name":"n1","reason":"rate_limit","disposition":"deny","dropped_records":3,"dropped_connections":7}"#;

    fn record(seq: u64, log: v1::LogId, line: &str) -> v1::Record {
        v1::Record {
            sequence: seq,
            log_id: log as i32,
            payload: Some(v1::record::Payload::JsonLine(
                line.as_bytes().to_vec().into(),
            )),
        }
    }

    fn batch(records: Vec<v1::Record>) -> v1::Batch {
        v1::Batch {
            schema_version: SCHEMA_VERSION as i32,
            batch_id: 7,
            node: Some(v1::NodeIdentity {
                node_name: "n1".into(),
                cluster_name: "c".into(),
                location: "l".into(),
                project_id: "p".into(),
            }),
            source: Some(v1::Source {
                id: "src-1".into(),
                kind: v1::SourceKind::PolicyActionLog as i32,
                path: String::new(),
            }),
            records,
        }
    }

    /// Wide enough for the fixed 2026-01-01 records whatever today's date is.
    const ANY_TIME: TimeWindow = TimeWindow {
        max_age: std::time::Duration::from_secs(100 * 365 * 86_400),
        max_ahead: std::time::Duration::from_secs(100 * 365 * 86_400),
    };

    const LIMITS: Limits = Limits {
        max_batch_bytes: 1 << 20,
        max_records: 10,
        max_record_bytes: 1 << 12,
        window: ANY_TIME,
        max_sequence_gap: 1 << 20,
    };

    #[test]
    fn records_become_partitioned_rows_with_envelopes() {
        let flow: PolicyActionRecord = serde_json::from_str(FLOW).unwrap();
        let mut later = flow.clone();
        later.timestamp = Timestamp::parse("2026-01-01T01:00:00Z").unwrap();
        let b = batch(vec![
            record(100, v1::LogId::PolicyAction, FLOW),
            v1::Record {
                sequence: 200,
                log_id: v1::LogId::PolicyAction as i32,
                payload: Some(v1::record::Payload::Flow(Box::new(v1::FlowRecord::from(
                    &later,
                )))),
            },
            record(300, v1::LogId::PolicyActionLoss, LOSS),
            record(400, v1::LogId::PolicyAction, FLOW),
        ]);
        let receive = Timestamp::parse("2026-01-01T01:00:02Z").unwrap();
        let p = prepare(b, 1000, &LIMITS, receive).unwrap();
        assert_eq!(p.key, ("n1".to_owned(), "src-1".to_owned()));
        assert_eq!(p.sequences, [100, 200, 300, 400]);
        let shape: Vec<_> = p
            .parts
            .iter()
            .map(|x| (x.table, x.hour.partition_path(), x.rows.clone()))
            .collect();
        assert_eq!(
            shape,
            [
                (Table::Flows, "dt=2026-01-01/hour=00".to_owned(), vec![0, 3]),
                (Table::Flows, "dt=2026-01-01/hour=01".to_owned(), vec![1]),
                (Table::Loss, "dt=2026-01-01/hour=01".to_owned(), vec![2]),
            ]
        );
        let entries = batch_to_log_entries(&p.parts[0].batch).unwrap();
        assert_eq!(entries[0].json_payload, flow);
        assert_eq!(entries[0].insert_id, insert_id("n1", "src-1", 100));
        assert_eq!(entries[1].insert_id, insert_id("n1", "src-1", 400));
        assert_eq!(entries[0].log_name, "projects/p/logs/policy-action");
        assert_eq!(entries[0].receive_timestamp, receive);
        assert_eq!(entries[0].resource.labels.cluster_name, "c");
        let loss = batch_to_loss_entries(&p.parts[2].batch).unwrap();
        assert_eq!(loss[0].json_payload.dropped_connections, 7);
        assert_eq!(loss[0].log_name, "projects/p/logs/policy-action-loss");
        assert_eq!(loss[0].insert_id, insert_id("n1", "src-1", 300));
        assert_eq!(
            p.newest_event,
            Some(
                Timestamp::parse("2026-01-01T01:00:01Z")
                    .unwrap()
                    .unix_nanos()
            )
        );

        // Dropping the first two records (duplicates) keeps the rest of each partition.
        assert_eq!(p.parts[0].without_first(2).unwrap().num_rows(), 1);
        assert!(p.parts[1].without_first(2).is_none());
        assert_eq!(p.parts[2].without_first(2).unwrap().num_rows(), 1);
        // And the WAL bytes of records 2.. are a suffix.
        let suffix = &p.wal_records[p.record_offsets[2]..];
        use prost::Message as _;
        let e = wal::WalEntry::decode(suffix).unwrap();
        assert_eq!(
            e.records.iter().map(|r| r.sequence).collect::<Vec<_>>(),
            [300, 400]
        );
    }

    #[test]
    fn rejections_say_what_and_where() {
        use RejectionCode as C;
        let ok = || batch(vec![record(1, v1::LogId::PolicyAction, FLOW)]);
        let reject =
            |b: v1::Batch, len: usize| prepare(b, len, &LIMITS, Timestamp::now()).unwrap_err();

        let mut b = ok();
        b.schema_version = 9;
        assert_eq!(reject(b, 10).code, C::UnsupportedSchemaVersion);
        let r = reject(ok(), 2 << 20);
        assert_eq!(r.code, C::TooLarge);
        assert!(r.message.contains("grpc.max_batch_bytes"), "{}", r.message);
        let mut b = ok();
        b.records = (1..=11)
            .map(|s| record(s, v1::LogId::PolicyAction, FLOW))
            .collect();
        assert_eq!(reject(b, 10).code, C::TooLarge);
        let mut b = ok();
        b.records[0] = record(1, v1::LogId::PolicyAction, &"x".repeat(5000));
        assert_eq!(reject(b, 10).code, C::TooLarge);
        let mut b = ok();
        b.node.as_mut().unwrap().node_name.clear();
        assert_eq!(reject(b, 10).message, "node.node_name is missing");
        let mut b = ok();
        b.source = None;
        assert_eq!(reject(b, 10).code, C::MissingIdentity);
        let mut b = ok();
        b.records.push(record(1, v1::LogId::PolicyAction, FLOW));
        let r = reject(b, 10);
        assert_eq!(r.code, C::OutOfOrder);
        assert!(
            r.message.contains("record 1 has sequence 1 after 1"),
            "{}",
            r.message
        );
        let mut b = ok();
        b.records
            .push(record(9, v1::LogId::PolicyAction, "{\"connection\": 12"));
        let r = reject(b, 10);
        assert_eq!(r.code, C::InvalidRecord);
        assert!(
            r.message
                .starts_with("record 1 (sequence 9): not a policy-action record"),
            "{}",
            r.message
        );
        let mut b = ok();
        b.records.push(record(9, v1::LogId::Unknown, FLOW));
        assert!(reject(b, 10).message.contains("log_id 0"));
        let mut b = ok();
        b.records.push(record(9, v1::LogId::PolicyActionLoss, FLOW));
        assert!(reject(b, 10).message.contains("not a loss marker"));
        let mut b = ok();
        b.records.push(v1::Record {
            sequence: 9,
            log_id: 1,
            payload: None,
        });
        assert!(reject(b, 10).message.contains("no payload"));
    }

    #[test]
    fn records_outside_the_time_window_refuse_their_batch_by_name() {
        let window = TimeWindow {
            max_age: std::time::Duration::from_secs(30 * 86_400),
            max_ahead: std::time::Duration::from_secs(86_400),
        };
        let limits = Limits { window, ..LIMITS };
        let receive = Timestamp::parse("2026-01-10T00:00:00Z").unwrap();
        let at = |ts: &str| FLOW.replace("2026-01-01T00:59:59.5Z", ts);
        // Inside: 9 days old, and 23 hours ahead.
        for ts in ["2026-01-01T00:00:00Z", "2026-01-10T23:00:00Z"] {
            let b = batch(vec![record(1, v1::LogId::PolicyAction, &at(ts))]);
            assert!(prepare(b, 100, &limits, receive).is_ok(), "{ts}");
        }
        for (ts, says) in [
            ("2100-01-01T00:00:00Z", "after the collector's clock"),
            ("2026-01-11T00:00:01Z", "grpc.max_record_ahead"),
            ("1970-01-01T00:00:00Z", "grpc.max_record_age"),
            ("2025-12-10T23:59:59Z", "more than 30days before"),
        ] {
            let b = batch(vec![
                record(
                    1,
                    v1::LogId::PolicyAction,
                    FLOW.replace("2026-01-01T00:59:59.5Z", "2026-01-09T00:00:00Z")
                        .as_str(),
                ),
                record(2, v1::LogId::PolicyAction, &at(ts)),
            ]);
            let r = prepare(b, 100, &limits, receive).unwrap_err();
            assert_eq!(r.code, RejectionCode::InvalidRecord, "{ts}");
            assert!(
                r.message.starts_with("record 1 (sequence 2): timestamp"),
                "{}",
                r.message
            );
            assert!(r.message.contains(says), "{ts}: {}", r.message);
        }
        // Replay is not windowed: what was accepted stays accepted.
        let old = batch(vec![record(
            1,
            v1::LogId::PolicyAction,
            &at("2020-01-01T00:00:00Z"),
        )]);
        let node = old.node.clone().unwrap();
        assert!(build_rows(&node, "s", receive, &old.records, None).is_ok());
    }

    #[test]
    fn a_batch_over_many_hours_costs_memory_by_records_not_records_times_hours() {
        let receive = Timestamp::parse("2026-01-31T00:00:00Z").unwrap();
        let records: Vec<v1::Record> = (0..700u64)
            .map(|i| {
                let ts = Timestamp::from_unix_nanos(
                    Timestamp::parse("2026-01-02T00:00:00Z")
                        .unwrap()
                        .unix_nanos()
                        + i as i64 * 3_600_000_000_000,
                );
                record(
                    i + 1,
                    v1::LogId::PolicyAction,
                    &FLOW.replace("2026-01-01T00:59:59.5Z", &ts.to_string()),
                )
            })
            .collect();
        let node = batch(Vec::new()).node.unwrap();
        let (parts, _) = build_rows(&node, "s", receive, &records, Some(&ANY_TIME)).unwrap();
        assert_eq!(parts.len(), 700);
        let bytes: usize = parts.iter().map(|p| p.batch.get_array_memory_size()).sum();
        let one_hour = {
            let (p, _) = build_rows(&node, "s", receive, &records[..1], Some(&ANY_TIME)).unwrap();
            p[0].batch.get_array_memory_size()
        };
        // Every partition is about as big as a one-record batch: no partition was allocated
        // for the 700 records of the whole batch.
        assert!(
            bytes < 700 * one_hour * 4,
            "{bytes} bytes for 700 one-row partitions (one: {one_hour})"
        );
    }

    #[test]
    fn a_batch_too_large_to_decode_is_named_from_its_bytes() {
        use prost::Message as _;
        let b = batch(vec![
            record(1, v1::LogId::PolicyAction, FLOW),
            record(2, v1::LogId::PolicyAction, FLOW),
            record(3, v1::LogId::PolicyActionLoss, LOSS),
        ]);
        let bytes = b.encode_to_vec();
        assert_eq!(
            peek_header(&bytes),
            Some(BatchHeader {
                batch_id: 7,
                key: ("n1".to_owned(), "src-1".to_owned()),
                records: 3,
            })
        );
        // Truncated anywhere inside a field, or not protobuf at all: not a batch.
        assert_eq!(peek_header(&bytes[..bytes.len() - 3]), None);
        assert_eq!(
            peek_header(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
            None
        );
        // A name longer than any valid one is left out rather than copied.
        let mut long = b.clone();
        long.source.as_mut().unwrap().id = "x".repeat(10_000);
        assert_eq!(peek_header(&long.encode_to_vec()).unwrap().key.1, "");
        assert_eq!(peek_header(&[]), Some(BatchHeader::default()));
    }
}
