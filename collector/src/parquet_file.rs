//! Encoding and decoding of the Parquet files the collector stores.
//!
//! Layout choices, for the filters queries make (time range, namespace, pod, IP):
//! - rows are sorted by (`disposition`, `dest_namespace`, `src_namespace`, `timestamp`) before
//!   writing. Denies are then contiguous, so the queries Verdict exists for (`disposition =
//!   deny`: alerts, "why is my traffic blocked?") skip every page of allows — most of a
//!   cluster's records — by the page index; a namespace filter touches few row groups and pages
//!   (one run per disposition); and within a namespace the time order keeps `timestamp` ranges
//!   of pages narrow. Time ranges coarser than an hour are pruned by the hive partitions. Sorting
//!   also puts similar rows together, which is most of why a record costs ~20 bytes stored;
//! - page-level statistics (column and offset indexes) on every column;
//! - bloom filters on the high-cardinality columns compared by equality (pod names and IPs),
//!   where min/max statistics cannot help; sized for the rows of the file and folded down by
//!   the writer, so small files get small filters;
//! - dictionary encoding for every string column (low cardinality: namespaces, workloads,
//!   enums) with zstd on top; `timestamp` is delta-encoded (sorted runs, no dictionary);
//! - the sort order is recorded in the row-group metadata (`sorting_columns`).
//!
//! Encoding is CPU work: callers run [`encode`] on a blocking thread, never on the runtime.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampNanosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_ord::sort::{SortColumn, SortOptions, lexsort_to_indices};
use arrow_schema::DataType;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use verdict_schema::flat_schema::col as flow;

use crate::config::sections::ParquetConfig;
use crate::error::{Error, Result};
use crate::rollup::col as rollup;
use crate::table::Table;

/// Largest number of distinct values a bloom filter is sized for (it is folded down to what
/// the row group actually holds).
const BLOOM_MAX_NDV: u64 = 32 * 1024;

/// Columns rows are sorted by, per table.
pub fn sort_columns(table: Table) -> &'static [&'static str] {
    match table {
        Table::Flows => &[
            flow::DISPOSITION,
            flow::DEST_NAMESPACE,
            flow::SRC_NAMESPACE,
            flow::TIMESTAMP,
        ],
        Table::Loss => &[flow::TIMESTAMP],
        Table::Rollups => &[rollup::MINUTE],
    }
}

/// High-cardinality columns compared by equality, which get bloom filters.
fn bloom_columns(table: Table) -> &'static [&'static str] {
    match table {
        Table::Flows => &[
            flow::SRC_POD_NAME,
            flow::DEST_POD_NAME,
            flow::SRC_IP,
            flow::DEST_IP,
        ],
        Table::Loss | Table::Rollups => &[],
    }
}

/// Writer properties for a file of `table` with `rows` rows.
pub fn writer_properties(cfg: &ParquetConfig, table: Table, rows: usize) -> WriterProperties {
    let schema = table.schema();
    let sorting: Vec<SortingColumn> = sort_columns(table)
        .iter()
        .filter_map(|name| schema.index_of(name).ok())
        .map(|i| SortingColumn {
            column_idx: i32::try_from(i).unwrap_or(i32::MAX),
            descending: false,
            nulls_first: true,
        })
        .collect();
    let level = ZstdLevel::try_new(cfg.zstd_level).unwrap_or_default();
    let mut b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(cfg.row_group_rows))
        .set_data_page_row_count_limit(cfg.data_page_rows)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_dictionary_enabled(true)
        .set_sorting_columns(Some(sorting))
        .set_created_by(format!("verdict-collector {}", env!("CARGO_PKG_VERSION")));
    for ts in [flow::TIMESTAMP, rollup::MINUTE] {
        if schema.index_of(ts).is_ok() {
            b = b
                .set_column_dictionary_enabled(ColumnPath::from(ts), false)
                .set_column_encoding(ColumnPath::from(ts), Encoding::DELTA_BINARY_PACKED);
        }
    }
    if schema.index_of(flow::INSERT_ID).is_ok() {
        // Unique per row: a dictionary never pays.
        b = b.set_column_dictionary_enabled(ColumnPath::from(flow::INSERT_ID), false);
    }
    if cfg.bloom_filters {
        let ndv = (rows as u64).clamp(1, BLOOM_MAX_NDV);
        for name in bloom_columns(table) {
            b = b
                .set_column_bloom_filter_enabled(ColumnPath::from(*name), true)
                .set_column_bloom_filter_fpp(ColumnPath::from(*name), cfg.bloom_filter_fpp)
                .set_column_bloom_filter_max_ndv(ColumnPath::from(*name), ndv);
        }
    }
    b.build()
}

/// Concatenates `batches` and sorts the rows by the table's sort columns.
///
/// The sort columns are strings followed by one timestamp. Strings are replaced by their rank
/// among the distinct values (computed once per dictionary value), so rows are sorted by
/// integer keys — several times faster than comparing strings row against row.
pub fn sort_rows(table: Table, batches: &[RecordBatch]) -> Result<RecordBatch> {
    let schema = table.schema();
    let all = arrow_select::concat::concat_batches(&schema, batches)
        .map_err(|e| Error::arrow("concatenating batches", e))?;
    if all.num_rows() < 2 {
        return Ok(all);
    }
    let columns: Vec<&ArrayRef> = sort_columns(table)
        .iter()
        .map(|name| all.column(schema.index_of(name).expect("sort column exists")))
        .collect();
    let indices = match sort_by_ranks(&columns) {
        Some(indices) => indices,
        None => {
            let keys: Vec<SortColumn> = columns
                .iter()
                .map(|c| SortColumn {
                    values: Arc::clone(c),
                    options: Some(SortOptions {
                        descending: false,
                        nulls_first: true,
                    }),
                })
                .collect();
            lexsort_to_indices(&keys, None).map_err(|e| Error::arrow("sorting rows", e))?
        }
    };
    arrow_select::take::take_record_batch(&all, &indices)
        .map_err(|e| Error::arrow("reordering rows", e))
}

/// Row order for string columns then one timestamp column, nulls first, when the strings'
/// ranks pack into 64 bits (each takes the bits of its largest rank: 2 for a disposition, 32 for
/// anything); `None` for other shapes.
fn sort_by_ranks(columns: &[&ArrayRef]) -> Option<UInt32Array> {
    let (time, strings) = columns.split_last()?;
    let time = time.as_primitive_opt::<TimestampNanosecondType>()?;
    let ranks: Vec<Vec<u32>> = strings
        .iter()
        .map(|c| string_ranks(c))
        .collect::<Option<_>>()?;
    let widths: Vec<u32> = ranks
        .iter()
        .map(|r| u32::BITS - r.iter().max().copied().unwrap_or(0).leading_zeros())
        .collect();
    if widths.iter().sum::<u32>() > u64::BITS {
        return None;
    }
    let n = time.len();
    let mut keys: Vec<(u64, i64, u32)> = (0..n)
        .map(|i| {
            let packed = ranks
                .iter()
                .zip(&widths)
                .fold(0u64, |acc, (r, &w)| (acc << w) | u64::from(r[i]));
            let t = if time.is_null(i) {
                i64::MIN
            } else {
                time.value(i)
            };
            (packed, t, i as u32)
        })
        .collect();
    keys.sort_unstable();
    Some(UInt32Array::from_iter_values(keys.into_iter().map(|k| k.2)))
}

/// Each row's rank among the distinct strings of a (plain or dictionary) string column; null
/// ranks 0, equal strings rank equal.
fn string_ranks(a: &ArrayRef) -> Option<Vec<u32>> {
    fn rank_values<'a>(values: impl Iterator<Item = Option<&'a str>>) -> Vec<u32> {
        let values: Vec<Option<&str>> = values.collect();
        let mut order: Vec<u32> = (0..values.len() as u32).collect();
        order.sort_unstable_by(|&x, &y| values[x as usize].cmp(&values[y as usize]));
        let mut out = vec![0u32; values.len()];
        let mut rank = 0u32;
        let mut previous: Option<Option<&str>> = None;
        for i in order {
            let v = values[i as usize];
            if v.is_some() && previous != Some(v) {
                rank += 1;
                previous = Some(v);
            }
            out[i as usize] = if v.is_none() { 0 } else { rank };
        }
        out
    }
    match a.data_type() {
        DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
            let d = a.as_dictionary::<Int32Type>();
            let values = d.values().as_string::<i32>();
            let value_rank = rank_values(values.iter());
            let keys = d.keys();
            Some(
                (0..d.len())
                    .map(|i| {
                        if keys.is_null(i) {
                            0
                        } else {
                            value_rank[keys.value(i) as usize]
                        }
                    })
                    .collect(),
            )
        }
        DataType::Utf8 => Some(rank_values(a.as_string::<i32>().iter())),
        _ => None,
    }
}

/// One encoded file.
#[derive(Debug)]
pub struct EncodedFile {
    pub bytes: Bytes,
    pub rows: u64,
    /// Smallest and largest event time (`timestamp`, or `minute` for rollups), nanoseconds.
    pub min_time: i64,
    pub max_time: i64,
}

/// Sorts `batches` (all of `table`'s schema) and encodes them as one Parquet file.
pub fn encode(cfg: &ParquetConfig, table: Table, batches: &[RecordBatch]) -> Result<EncodedFile> {
    let sorted = sort_rows(table, batches)?;
    encode_sorted(cfg, table, &sorted)
}

/// Encodes rows already in the table's sort order.
pub fn encode_sorted(
    cfg: &ParquetConfig,
    table: Table,
    sorted: &RecordBatch,
) -> Result<EncodedFile> {
    let rows = sorted.num_rows();
    let (min_time, max_time) = time_range(table, sorted);
    let props = writer_properties(cfg, table, rows);
    let mut out = Vec::with_capacity(rows * 24 + 4096);
    let mut w = ArrowWriter::try_new(&mut out, table.schema(), Some(props))
        .map_err(|e| Error::parquet("starting a file", e))?;
    w.write(sorted)
        .map_err(|e| Error::parquet("writing rows", e))?;
    w.close().map_err(|e| Error::parquet("closing a file", e))?;
    Ok(EncodedFile {
        bytes: Bytes::from(out),
        rows: rows as u64,
        min_time,
        max_time,
    })
}

fn time_range(table: Table, batch: &RecordBatch) -> (i64, i64) {
    let name = match table {
        Table::Rollups => rollup::MINUTE,
        Table::Flows | Table::Loss => flow::TIMESTAMP,
    };
    let Some(ts) = batch.column_by_name(name).and_then(|c| {
        c.as_any()
            .downcast_ref::<arrow_array::TimestampNanosecondArray>()
    }) else {
        return (0, 0);
    };
    let min = ts.values().iter().copied().min().unwrap_or(0);
    let max = ts.values().iter().copied().max().unwrap_or(0);
    (min, max)
}

/// Decodes a whole Parquet file into batches (with the schema stored in the file).
pub fn decode(bytes: Bytes) -> Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| Error::parquet("reading a file footer", e))?
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| Error::parquet("opening a file", e))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::arrow("decoding rows", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use verdict_schema::flat_schema::{batch_to_log_entries, log_entries_to_batch};
    use verdict_schema::{LogEntry, NodeIdentity, PolicyActionRecord, Timestamp};

    fn entry(ns: &str, ts: &str) -> LogEntry {
        let r: PolicyActionRecord = serde_json::from_str(&format!(
            r#"{{"connection":{{"src_ip":"10.0.0.1","dest_ip":"10.0.0.2","src_port":40000,"dest_port":80,"protocol":"tcp","direction":"ingress"}},"disposition":"allow","policies":[{{"name":"p","namespace":"{ns}"}}],"src":{{"pod_name":"a","pod_namespace":"x","namespace":"x"}},"dest":{{"pod_name":"b","pod_namespace":"{ns}","namespace":"{ns}"}},"count":1,"node_name":"n1","timestamp":"{ts}"}}"#
        ))
        .unwrap();
        LogEntry::policy_action(
            r,
            &NodeIdentity::default(),
            Timestamp::from_unix_nanos(1),
            format!("{ns}-{ts}"),
        )
    }

    #[test]
    fn rank_sort_orders_like_a_string_sort() {
        let mut entries = Vec::new();
        for (i, ns) in ["b", "a", "c", "a", "b", "a", "c", "b"].iter().enumerate() {
            let mut e = entry(ns, &format!("2026-01-01T00:00:0{}Z", 9 - i));
            if i % 3 == 1 {
                e.json_payload.disposition = verdict_schema::record::Disposition::Deny;
            }
            entries.push(e);
        }
        // A source namespace that is an instance (null) sorts first.
        let mut odd = entry("a", "2026-01-01T00:00:00Z");
        odd.json_payload.src = verdict_schema::Endpoint::Instance {
            instance: "1.2.3.4".parse().unwrap(),
        };
        entries.push(odd);
        let batch = log_entries_to_batch(&entries).unwrap();
        let half = log_entries_to_batch(&entries[..3]).unwrap();
        let rest = log_entries_to_batch(&entries[3..]).unwrap();
        let ours = sort_rows(Table::Flows, &[half, rest]).unwrap();
        let schema = Table::Flows.schema();
        let keys: Vec<SortColumn> = sort_columns(Table::Flows)
            .iter()
            .map(|n| SortColumn {
                values: Arc::clone(batch.column(schema.index_of(n).unwrap())),
                options: Some(SortOptions {
                    descending: false,
                    nulls_first: true,
                }),
            })
            .collect();
        let reference = arrow_select::take::take_record_batch(
            &batch,
            &lexsort_to_indices(&keys, None).unwrap(),
        )
        .unwrap();
        assert_eq!(
            batch_to_log_entries(&ours).unwrap(),
            batch_to_log_entries(&reference).unwrap()
        );
    }

    #[test]
    fn files_round_trip_sorted_with_statistics_and_blooms() {
        let entries = vec![
            entry("b", "2026-01-01T00:00:02Z"),
            entry("a", "2026-01-01T00:00:03Z"),
            entry("b", "2026-01-01T00:00:01Z"),
        ];
        let batch = log_entries_to_batch(&entries).unwrap();
        let f = encode(&ParquetConfig::default(), Table::Flows, &[batch]).unwrap();
        assert_eq!(f.rows, 3);
        assert_eq!(
            (f.min_time, f.max_time),
            (
                Timestamp::parse("2026-01-01T00:00:01Z")
                    .unwrap()
                    .unix_nanos(),
                Timestamp::parse("2026-01-01T00:00:03Z")
                    .unwrap()
                    .unix_nanos()
            )
        );
        let back = decode(f.bytes.clone()).unwrap();
        let got: Vec<LogEntry> = back
            .iter()
            .flat_map(|b| batch_to_log_entries(b).unwrap())
            .collect();
        assert_eq!(
            got,
            vec![entries[1].clone(), entries[2].clone(), entries[0].clone()]
        );

        let meta = parquet::file::reader::SerializedFileReader::new(f.bytes).unwrap();
        use parquet::file::reader::FileReader;
        let rg = meta.metadata().row_group(0);
        assert!(rg.sorting_columns().is_some_and(|s| s.len() == 4));
        // Parquet leaf columns (policies has three), by path.
        let leaf = |name: &str| {
            rg.columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .unwrap()
        };
        assert!(leaf(flow::DEST_POD_NAME).bloom_filter_offset().is_some());
        assert!(leaf(flow::SRC_IP).bloom_filter_offset().is_some());
        assert!(leaf(flow::DEST_NAMESPACE).bloom_filter_offset().is_none());
        let ts = leaf(flow::TIMESTAMP);
        assert!(ts.statistics().is_some_and(|s| s.min_bytes_opt().is_some()));
        assert!(ts.column_index_offset().is_some(), "page index written");
        assert!(ts.offset_index_offset().is_some());
    }
}
