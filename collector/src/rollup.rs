//! One-minute rollups of flow records, written beside the raw rows (`policy_action_1m/`, same
//! hive partitions) so dashboards over months read thousands of rows instead of billions.
//!
//! A rollup row counts the flow records of one minute that share a key: cluster, source and
//! destination namespace, workload kind and name, direction, disposition, protocol and
//! destination port. `records` is how many log records, `connections` the sum of their `count`
//! (an aggregated deny stands for `count` attempts).
//!
//! Rows are additive partial aggregates: every flush writes the rollups of the rows it flushes,
//! so one minute's key can appear in several files until compaction merges them into one row.
//! Readers therefore always `SUM(records)`, `SUM(connections)` grouped by the key columns.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, LazyLock};

use arrow_array::builder::{Int32Builder, Int64Builder, TimestampNanosecondBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampNanosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use verdict_schema::flat_schema::col as flow;

type Dict = arrow_array::builder::StringDictionaryBuilder<Int32Type>;

/// Rollup column names.
pub mod col {
    pub const MINUTE: &str = "minute";
    pub const CLUSTER_NAME: &str = "cluster_name";
    pub const SRC_NAMESPACE: &str = "src_namespace";
    pub const SRC_WORKLOAD_KIND: &str = "src_workload_kind";
    pub const SRC_WORKLOAD_NAME: &str = "src_workload_name";
    pub const DEST_NAMESPACE: &str = "dest_namespace";
    pub const DEST_WORKLOAD_KIND: &str = "dest_workload_kind";
    pub const DEST_WORKLOAD_NAME: &str = "dest_workload_name";
    pub const DIRECTION: &str = "direction";
    pub const DISPOSITION: &str = "disposition";
    pub const PROTOCOL: &str = "protocol";
    pub const DEST_PORT: &str = "dest_port";
    pub const RECORDS: &str = "records";
    pub const CONNECTIONS: &str = "connections";
}

/// The string key columns, in schema order (after `minute`).
const KEY_STRINGS: [&str; 10] = [
    col::CLUSTER_NAME,
    col::SRC_NAMESPACE,
    col::SRC_WORKLOAD_KIND,
    col::SRC_WORKLOAD_NAME,
    col::DEST_NAMESPACE,
    col::DEST_WORKLOAD_KIND,
    col::DEST_WORKLOAD_NAME,
    col::DIRECTION,
    col::DISPOSITION,
    col::PROTOCOL,
];

/// The flow columns the key strings come from (a pod's namespace is `pod_namespace`; non-pod
/// endpoints have null namespace and workload).
const FLOW_SOURCES: [&str; 10] = [
    flow::CLUSTER_NAME,
    flow::SRC_POD_NAMESPACE,
    flow::SRC_WORKLOAD_KIND,
    flow::SRC_WORKLOAD_NAME,
    flow::DEST_POD_NAMESPACE,
    flow::DEST_WORKLOAD_KIND,
    flow::DEST_WORKLOAD_NAME,
    flow::DIRECTION,
    flow::DISPOSITION,
    flow::PROTOCOL,
];

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let dict = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let mut fields = vec![Field::new(
        col::MINUTE,
        DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        false,
    )];
    for name in KEY_STRINGS {
        let nullable = !matches!(
            name,
            col::CLUSTER_NAME | col::DIRECTION | col::DISPOSITION | col::PROTOCOL
        );
        fields.push(Field::new(name, dict(), nullable));
    }
    fields.push(Field::new(col::DEST_PORT, DataType::Int32, false));
    fields.push(Field::new(col::RECORDS, DataType::Int64, false));
    fields.push(Field::new(col::CONNECTIONS, DataType::Int64, false));
    Arc::new(Schema::new(fields))
});

/// The schema of rollup files.
pub fn rollup_schema() -> SchemaRef {
    SCHEMA.clone()
}

const NANOS_PER_MINUTE: i64 = 60_000_000_000;

/// FxHash (as in rustc): a fast non-cryptographic hasher for the small integer keys below.
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_i64(&mut self, i: i64) {
        self.add(i as u64);
    }

    fn write_i32(&mut self, i: i32) {
        self.add(u64::from(i as u32));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Fx = BuildHasherDefault<FxHasher>;

/// Strings seen while aggregating, as small integer ids (0 is null).
#[derive(Default)]
struct Interner<'a> {
    ids: HashMap<&'a str, u32, Fx>,
    strings: Vec<&'a str>,
}

impl<'a> Interner<'a> {
    fn id(&mut self, s: &'a str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        self.strings.push(s);
        let id = self.strings.len() as u32;
        self.ids.insert(s, id);
        id
    }

    fn get(&self, id: u32) -> Option<&'a str> {
        (id != 0).then(|| self.strings[id as usize - 1])
    }

    /// The ids of a string column's rows: each dictionary value is interned once per batch.
    fn column(&mut self, batch: &'a RecordBatch, name: &str) -> Result<Vec<u32>, ArrowError> {
        let a = batch
            .column_by_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("missing column {name}")))?;
        match a.data_type() {
            DataType::Utf8 => {
                let s = a.as_string::<i32>();
                Ok(s.iter().map(|v| v.map_or(0, |v| self.id(v))).collect())
            }
            DataType::Dictionary(_, _) => {
                let d = a.as_dictionary_opt::<Int32Type>().ok_or_else(|| {
                    ArrowError::SchemaError(format!("{name}: unexpected dictionary"))
                })?;
                let values = d.values().as_string_opt::<i32>().ok_or_else(|| {
                    ArrowError::SchemaError(format!("{name}: unexpected dictionary"))
                })?;
                let remap: Vec<u32> = values.iter().map(|v| v.map_or(0, |v| self.id(v))).collect();
                let keys = d.keys();
                Ok((0..d.len())
                    .map(|i| {
                        if keys.is_null(i) {
                            0
                        } else {
                            remap[keys.value(i) as usize]
                        }
                    })
                    .collect())
            }
            other => Err(ArrowError::SchemaError(format!(
                "{name}: expected strings, found {other}"
            ))),
        }
    }
}

fn primitive<'a, T: arrow_array::ArrowPrimitiveType>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a arrow_array::PrimitiveArray<T>, ArrowError> {
    batch
        .column_by_name(name)
        .and_then(|a| a.as_primitive_opt::<T>())
        .ok_or_else(|| ArrowError::SchemaError(format!("missing or mistyped column {name}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    minute: i64,
    strings: [u32; 10],
    dest_port: i32,
}

#[derive(Default)]
struct Sums {
    records: i64,
    connections: i64,
}

type Groups = HashMap<Key, Sums, Fx>;

fn finish(groups: Groups, names: &Interner<'_>) -> Result<RecordBatch, ArrowError> {
    let mut rows: Vec<(Key, Sums)> = groups.into_iter().collect();
    // Output order: minute, then the key strings, then the port.
    rows.sort_unstable_by(|(a, _), (b, _)| {
        a.minute
            .cmp(&b.minute)
            .then_with(|| {
                a.strings
                    .iter()
                    .zip(&b.strings)
                    .map(|(x, y)| names.get(*x).cmp(&names.get(*y)))
                    .find(|o| o.is_ne())
                    .unwrap_or(Ordering::Equal)
            })
            .then_with(|| a.dest_port.cmp(&b.dest_port))
    });
    let n = rows.len();
    let mut minute = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut strings: Vec<Dict> = (0..KEY_STRINGS.len()).map(|_| Dict::new()).collect();
    let mut port = Int32Builder::with_capacity(n);
    let mut records = Int64Builder::with_capacity(n);
    let mut connections = Int64Builder::with_capacity(n);
    for (k, s) in &rows {
        minute.append_value(k.minute);
        for (b, id) in strings.iter_mut().zip(k.strings) {
            b.append_option(names.get(id));
        }
        port.append_value(k.dest_port);
        records.append_value(s.records);
        connections.append_value(s.connections);
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(minute.finish())];
    columns.extend(strings.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(port.finish()));
    columns.push(Arc::new(records.finish()));
    columns.push(Arc::new(connections.finish()));
    RecordBatch::try_new(rollup_schema(), columns)
}

/// The one-minute rollup of flow batches (flat flow schema), one row per (minute, key), sorted.
pub fn aggregate_flows(batches: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
    let mut names = Interner::default();
    let mut groups = Groups::default();
    for b in batches {
        let ts = primitive::<TimestampNanosecondType>(b, flow::TIMESTAMP)?;
        let port = primitive::<Int32Type>(b, flow::DEST_PORT)?;
        let count = primitive::<Int64Type>(b, flow::COUNT)?;
        let ids = FLOW_SOURCES
            .iter()
            .map(|name| names.column(b, name))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, t) in ts.values().iter().enumerate() {
            let key = Key {
                minute: t.div_euclid(NANOS_PER_MINUTE) * NANOS_PER_MINUTE,
                strings: std::array::from_fn(|j| ids[j][i]),
                dest_port: port.value(i),
            };
            let s = groups.entry(key).or_default();
            s.records += 1;
            s.connections = s.connections.saturating_add(count.value(i));
        }
    }
    finish(groups, &names)
}

/// Merges rollup batches: rows with equal minute and key become one, their counts summed.
pub fn merge_rollups(batches: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
    let mut names = Interner::default();
    let mut groups = Groups::default();
    for b in batches {
        let minute = primitive::<TimestampNanosecondType>(b, col::MINUTE)?;
        let port = primitive::<Int32Type>(b, col::DEST_PORT)?;
        let records = primitive::<Int64Type>(b, col::RECORDS)?;
        let connections = primitive::<Int64Type>(b, col::CONNECTIONS)?;
        let ids = KEY_STRINGS
            .iter()
            .map(|name| names.column(b, name))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, m) in minute.values().iter().enumerate() {
            let key = Key {
                minute: *m,
                strings: std::array::from_fn(|j| ids[j][i]),
                dest_port: port.value(i),
            };
            let s = groups.entry(key).or_default();
            s.records = s.records.saturating_add(records.value(i));
            s.connections = s.connections.saturating_add(connections.value(i));
        }
    }
    finish(groups, &names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use verdict_schema::flat_schema::log_entries_to_batch;
    use verdict_schema::{LogEntry, NodeIdentity, PolicyActionRecord, Timestamp};

    fn flow(json: &str) -> LogEntry {
        let r: PolicyActionRecord = serde_json::from_str(json).unwrap();
        LogEntry::policy_action(
            r,
            &NodeIdentity {
                cluster_name: "c1".into(),
                node_name: "n1".into(),
                ..NodeIdentity::default()
            },
            Timestamp::from_unix_nanos(0),
            "id".into(),
        )
    }

    fn rec(ts: &str, disposition: &str, port: u16, count: u64) -> LogEntry {
        flow(&format!(
            r#"{{"connection":{{"src_ip":"10.0.0.1","dest_ip":"10.0.0.2","src_port":40000,"dest_port":{port},"protocol":"tcp","direction":"ingress"}},"disposition":"{disposition}","src":{{"pod_name":"a-1","pod_namespace":"x","namespace":"x","workload_name":"a-5d","workload_kind":"ReplicaSet"}},"dest":{{"pod_name":"b-1","pod_namespace":"y","namespace":"y","workload_name":"b-7f","workload_kind":"ReplicaSet"}},"count":{count},"node_name":"n1","timestamp":"{ts}"}}"#
        ))
    }

    fn column_i64(b: &RecordBatch, name: &str) -> Vec<i64> {
        primitive::<Int64Type>(b, name).unwrap().values().to_vec()
    }

    #[test]
    fn flows_roll_up_per_minute_and_key() {
        let one = log_entries_to_batch(&[
            rec("2026-01-01T00:00:01Z", "allow", 80, 1),
            rec("2026-01-01T00:00:59.9Z", "allow", 80, 1),
            rec("2026-01-01T00:00:30Z", "deny", 80, 7),
        ])
        .unwrap();
        let two = log_entries_to_batch(&[
            rec("2026-01-01T00:01:00Z", "allow", 80, 1),
            rec("2026-01-01T00:00:02Z", "allow", 443, 1),
            rec("2026-01-01T00:00:03Z", "deny", 80, 2),
        ])
        .unwrap();
        let r = aggregate_flows(&[one.clone(), two.clone()]).unwrap();
        assert_eq!(r.schema(), rollup_schema());
        // Sorted by minute, then key: (00:00, allow, 80), (00:00, allow, 443), (00:00, deny, 80),
        // (00:01, allow, 80).
        assert_eq!(column_i64(&r, col::RECORDS), [2, 1, 2, 1]);
        assert_eq!(column_i64(&r, col::CONNECTIONS), [2, 1, 9, 1]);
        let mut names = Interner::default();
        let ns = names.column(&r, col::DEST_NAMESPACE).unwrap();
        assert_eq!(names.get(ns[0]), Some("y"));
        let wk = names.column(&r, col::SRC_WORKLOAD_NAME).unwrap();
        assert_eq!(names.get(wk[0]), Some("a-5d"));

        // Rolling up parts separately and merging equals rolling up everything at once.
        let parts = [
            aggregate_flows(&[one]).unwrap(),
            aggregate_flows(&[two]).unwrap(),
        ];
        assert_eq!(merge_rollups(&parts).unwrap(), r);
    }
}
