//! From write-ahead log entries to the records a sink sends: each record decoded exactly as at
//! ingest, wrapped in its LogEntry envelope (the same insertId, receive time and resource as the
//! stored row), then kept when it matches the sink's inclusion filter and none of its enabled
//! exclusions.

use bytes::Bytes;
use verdict_filter::Filter;
use verdict_schema::Timestamp;
use verdict_schema::log_entry::{LogEntry, LossLogEntry, NodeIdentity, insert_id};

use crate::decode::{Decoded, decode_record};
use crate::table::Table;
use crate::wal::TailEntry;

/// A record on its way to a destination.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The write-ahead log entry it came from.
    pub lsn: u64,
    /// Flow (`policy-action`) or loss marker (`policy-action-loss`).
    pub table: Table,
    pub insert_id: String,
    /// Event time (ns since the epoch): picks the hour partition of exported files.
    pub timestamp_nanos: i64,
    /// The LogEntry as JSON, for keys and attributes.
    pub entry: serde_json::Value,
    /// The LogEntry JSON as sent.
    pub json: Bytes,
    pub typed: TypedEntry,
}

/// The typed LogEntry (for Parquet export).
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "almost every entry is a flow; boxing would add an allocation per record"
)]
pub enum TypedEntry {
    Flow(LogEntry),
    Loss(LossLogEntry),
    /// An alert change sent to a Kafka or Pub/Sub alert receiver (`alerts::notify`): not a
    /// stored record, never given to object storage.
    Alert,
}

/// A sink's inclusion filter and exclusions, compiled.
#[derive(Debug, Clone)]
pub struct Selection {
    pub include: Filter,
    pub exclude: Vec<Filter>,
}

impl Selection {
    pub fn selects(&self, entry: &serde_json::Value) -> bool {
        self.include.matches(entry) && !self.exclude.iter().any(|x| x.matches(entry))
    }
}

/// What routing a run of entries found.
#[derive(Debug, Default)]
pub struct RouteOutcome {
    pub routed: Vec<Routed>,
    /// Records read.
    pub read: u64,
    /// Records not selected by the filters.
    pub excluded: u64,
    /// Records that no longer decode (cannot happen for entries the writer wrote; counted
    /// as dropped if it does).
    pub undecodable: u64,
    /// Receive time of the first entry (ns).
    pub first_receive_nanos: Option<i64>,
}

/// Decodes, envelopes and filters the records of `entries`.
pub fn route(entries: &[TailEntry], selection: &Selection) -> RouteOutcome {
    let mut out = RouteOutcome {
        first_receive_nanos: entries.first().map(|e| e.entry.receive_unix_nanos),
        ..RouteOutcome::default()
    };
    for TailEntry { lsn, entry } in entries {
        let node = entry.node.clone().unwrap_or_default();
        let identity = NodeIdentity {
            project_id: node.project_id,
            location: node.location,
            cluster_name: node.cluster_name,
            node_name: node.node_name,
        };
        let receive = Timestamp::from_unix_nanos(entry.receive_unix_nanos);
        for (i, record) in entry.records.iter().enumerate() {
            out.read += 1;
            let id = insert_id(&identity.node_name, &entry.source_id, record.sequence);
            let (table, typed) = match decode_record(i, record) {
                Ok(Decoded::Flow(f)) => (
                    Table::Flows,
                    TypedEntry::Flow(LogEntry::policy_action(f, &identity, receive, id.clone())),
                ),
                Ok(Decoded::Loss(m)) => (
                    Table::Loss,
                    TypedEntry::Loss(LossLogEntry::loss(m, &identity, receive, id.clone())),
                ),
                Err(r) => {
                    tracing::error!(lsn, error = %r.message, "a write-ahead log record no longer decodes; dropped for sinks");
                    out.undecodable += 1;
                    continue;
                }
            };
            let (value, json, ts) = match &typed {
                TypedEntry::Flow(e) => (
                    serde_json::to_value(e),
                    serde_json::to_vec(e),
                    e.timestamp.unix_nanos(),
                ),
                TypedEntry::Loss(e) => (
                    serde_json::to_value(e),
                    serde_json::to_vec(e),
                    e.timestamp.unix_nanos(),
                ),
                // Built only by alert receivers, never from the log.
                TypedEntry::Alert => continue,
            };
            let (Ok(value), Ok(json)) = (value, json) else {
                out.undecodable += 1;
                continue;
            };
            if !selection.selects(&value) {
                out.excluded += 1;
                continue;
            }
            out.routed.push(Routed {
                lsn: *lsn,
                table,
                insert_id: id,
                timestamp_nanos: ts,
                entry: value,
                json: Bytes::from(json),
                typed,
            });
        }
    }
    out
}

/// The value at a dotted LogEntry path (`jsonPayload.dest.namespace`) as text: strings as they
/// are, numbers and booleans printed; `None` when absent, null, or an object/array.
pub fn field_text(entry: &serde_json::Value, path: &str) -> Option<String> {
    let mut v = entry;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_as_text() {
        let e = serde_json::json!({"insertId": "ab", "jsonPayload": {"dest": {"namespace": "shop"}, "count": 3, "x": null}});
        assert_eq!(
            field_text(&e, "jsonPayload.dest.namespace").as_deref(),
            Some("shop")
        );
        assert_eq!(field_text(&e, "jsonPayload.count").as_deref(), Some("3"));
        assert_eq!(field_text(&e, "insertId").as_deref(), Some("ab"));
        assert_eq!(field_text(&e, "jsonPayload.x"), None);
        assert_eq!(field_text(&e, "jsonPayload.dest"), None);
        assert_eq!(field_text(&e, "jsonPayload.src.namespace"), None);
    }
}
