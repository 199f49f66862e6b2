//! The conformance fixture entries of `verdict-filter` as a lake: Parquet files laid out like
//! the collector's (one file per event hour, rows sorted by time, small row groups so pruning
//! has something to prune) or as unflushed RecordBatches.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use verdict_query::lake::LakeTableDef;
use verdict_query::{FixedLake, LakeFile, LakeSnapshot};
use verdict_schema::LogEntry;

pub const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// The fixture entries as LogEntries, in order.
pub fn fixture_entries() -> Vec<LogEntry> {
    verdict_filter::conformance::entries()
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("fixture entries are LogEntries"))
        .collect()
}

pub fn flows_def() -> LakeTableDef {
    LakeTableDef {
        name: "policy_action",
        schema: verdict_schema::flat_schema::log_entry_schema(),
        time_column: "timestamp",
    }
}

/// A lake whose `policy_action` holds `entries` only as unflushed rows.
pub fn memory_lake(entries: &[LogEntry]) -> FixedLake {
    let batch = verdict_schema::flat_schema::log_entries_to_batch(entries).unwrap();
    let mut snapshots = HashMap::new();
    snapshots.insert(
        "policy_action".to_owned(),
        LakeSnapshot {
            files: Vec::new(),
            unflushed: vec![batch],
        },
    );
    FixedLake {
        store: Arc::new(object_store::memory::InMemory::new()),
        tables: vec![flows_def()],
        snapshots,
    }
}

/// Writes `entries` as one Parquet file per event hour under `dir`
/// (`policy_action/dt=…/hour=…/part.parquet`), `row_group_rows` rows per row group, and
/// returns the lake; `unflushed` entries stay in memory.
pub fn parquet_lake(
    dir: &std::path::Path,
    entries: &[LogEntry],
    unflushed: &[LogEntry],
    row_group_rows: usize,
) -> FixedLake {
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap());
    let mut by_hour: std::collections::BTreeMap<i64, Vec<LogEntry>> = Default::default();
    for e in entries {
        by_hour
            .entry(e.timestamp.unix_nanos().div_euclid(NANOS_PER_HOUR))
            .or_default()
            .push(e.clone());
    }
    let mut files = Vec::new();
    for (hour, mut group) in by_hour {
        group.sort_by_key(|e| e.timestamp.unix_nanos());
        let batch = verdict_schema::flat_schema::log_entries_to_batch(&group).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(row_group_rows))
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let mut buf = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let relative = format!("policy_action/hour={hour}/part-0.parquet");
        let full = dir.join(&relative);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, &buf).unwrap();
        files.push(LakeFile {
            path: Path::from(relative),
            size: buf.len() as u64,
            min_time: group.first().unwrap().timestamp.unix_nanos(),
            max_time: group.last().unwrap().timestamp.unix_nanos(),
        });
    }
    let unflushed = if unflushed.is_empty() {
        Vec::new()
    } else {
        vec![verdict_schema::flat_schema::log_entries_to_batch(unflushed).unwrap()]
    };
    let mut snapshots = HashMap::new();
    snapshots.insert(
        "policy_action".to_owned(),
        LakeSnapshot { files, unflushed },
    );
    FixedLake {
        store,
        tables: vec![flows_def()],
        snapshots,
    }
}

/// The `insert_id`s of a result, as fixture indices (sorted).
pub fn indices_of(batches: &[RecordBatch], entries: &[LogEntry]) -> Vec<usize> {
    use datafusion::arrow::array::{Array, AsArray};
    let mut out = Vec::new();
    for b in batches {
        let ids = datafusion::arrow::compute::cast(
            b.column_by_name("insert_id").unwrap(),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let ids = ids.as_string::<i32>();
        for i in 0..ids.len() {
            let id = ids.value(i);
            out.push(
                entries
                    .iter()
                    .position(|e| e.insert_id == id)
                    .unwrap_or_else(|| panic!("unknown insert_id {id}")),
            );
        }
    }
    out.sort_unstable();
    out
}
