//! Object storage export (separate from the lake): the records a sink selects, gathered for a
//! time window (`object_storage.window`, or until `max_records`), then written as one file per
//! table and hour partition under the destination, in the lake's hive layout:
//!
//! ```text
//! PREFIX/policy_action/dt=YYYY-MM-DD/hour=HH/FIRSTLSN-LASTLSN.SINK.parquet   (or .jsonl)
//! PREFIX/policy_action_loss/dt=…/hour=…/…                                     (loss markers)
//! ```
//!
//! Parquet files use the lake's flat schema (zstd, sorted, statistics), so the BigQuery,
//! Athena and Trino DDL in `sql/warehouse/` reads them; JSON lines files hold LogEntry JSON, one
//! entry per line (BigQuery `NEWLINE_DELIMITED_JSON` with `sql/warehouse/bigquery_log_entry_schema.json`).
//!
//! Records are held in memory until their window's files are uploaded; only then does the
//! runner move the sink's cursor. A file's name is the LSN range it covers, and a failed flush
//! is retried with the same records, so a retry overwrites rather than duplicates; after a
//! crash the window is rebuilt from the log (at least once: files may then overlap by LSN
//! range — dedup by `insertId`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use verdict_schema::flat_loss_schema::loss_entries_to_batch;
use verdict_schema::flat_schema::log_entries_to_batch;

use super::config::ObjectExportConfig;
use crate::config::sections::ParquetConfig;
use crate::config::values::StorageKind;
use crate::sinks::definition::Format;
use crate::sinks::route::Routed;
use crate::sinks::route::TypedEntry;
use crate::sinks::sink::{Refused, Sink, SinkError, SinkFuture};
use crate::storage::Storage;
use crate::table::{Hour, Table};

#[derive(Debug)]
pub struct ObjectExport {
    name: String,
    storage: Storage,
    format: Format,
    window: Duration,
    max_records: usize,
    parquet: ParquetConfig,
    held: Vec<Routed>,
    /// When the first held record was taken.
    opened: Option<Instant>,
}

impl ObjectExport {
    pub fn build(
        name: &str,
        url: &str,
        kind: StorageKind,
        format: Format,
        config: &ObjectExportConfig,
        parquet: &ParquetConfig,
    ) -> Result<ObjectExport, SinkError> {
        let url = if kind == StorageKind::Local {
            url.strip_prefix("file://").unwrap_or(url)
        } else {
            url
        };
        let storage = Storage::open_url(
            url,
            &config.options.0,
            &format!("sinks.{name}.destination"),
            &format!("sinks.{name}.object_storage.options"),
        )
        .map_err(|e| SinkError::definition(format!("cannot open {url}"), e))?;
        Ok(ObjectExport {
            name: name.to_owned(),
            storage,
            format,
            window: config.window,
            max_records: config.max_records,
            parquet: parquet.clone(),
            held: Vec::new(),
            opened: None,
        })
    }

    /// The path of the file of `table`/`hour` holding records of entries `first..=last`.
    fn file_path(&self, table: Table, hour: Hour, first: u64, last: u64) -> String {
        let ext = match self.format {
            Format::Parquet => "parquet",
            Format::Json => "jsonl",
        };
        format!(
            "{}/{}/{first:020}-{last:020}.{}.{ext}",
            table.dir(),
            hour.partition_path(),
            self.name
        )
    }

    async fn write_files(&mut self) -> Result<(), SinkError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let first = self.held.first().map_or(0, |r| r.lsn);
        let last = self.held.last().map_or(0, |r| r.lsn);
        let mut parts: BTreeMap<(Table, Hour), Vec<&Routed>> = BTreeMap::new();
        for r in &self.held {
            parts
                .entry((r.table, Hour::of_nanos(r.timestamp_nanos)))
                .or_default()
                .push(r);
        }
        for ((table, hour), records) in parts {
            let bytes = match self.format {
                Format::Json => {
                    let mut buf =
                        Vec::with_capacity(records.iter().map(|r| r.json.len() + 1).sum());
                    for r in &records {
                        buf.extend_from_slice(&r.json);
                        buf.push(b'\n');
                    }
                    Bytes::from(buf)
                }
                Format::Parquet => {
                    let cfg = self.parquet.clone();
                    let typed: Vec<TypedEntry> = records.iter().map(|r| r.typed.clone()).collect();
                    tokio::task::spawn_blocking(move || encode_parquet(&cfg, table, typed))
                        .await
                        .map_err(|e| SinkError::Unavailable {
                            message: format!("encoding task: {e}"),
                            source: None,
                        })??
                }
            };
            let path = self.file_path(table, hour, first, last);
            self.storage.put(&path, bytes).await.map_err(|e| {
                SinkError::unavailable(format!("writing {path} to {}", self.storage.url()), e)
            })?;
            tracing::debug!(sink = %self.name, path, records = records.len(), "exported");
        }
        self.held.clear();
        self.opened = None;
        Ok(())
    }
}

/// One Parquet file of `table` from typed entries, in the lake's schema and encoding.
fn encode_parquet(
    cfg: &ParquetConfig,
    table: Table,
    typed: Vec<TypedEntry>,
) -> Result<Bytes, SinkError> {
    let bad = |e: arrow_schema::ArrowError| SinkError::Definition {
        message: format!("records do not form {} rows: {e}", table.label()),
        source: None,
    };
    let batch = match table {
        Table::Loss => {
            let entries: Vec<_> = typed
                .into_iter()
                .filter_map(|t| match t {
                    TypedEntry::Loss(e) => Some(e),
                    TypedEntry::Flow(_) | TypedEntry::Alert => None,
                })
                .collect();
            loss_entries_to_batch(&entries).map_err(bad)?
        }
        _ => {
            let entries: Vec<_> = typed
                .into_iter()
                .filter_map(|t| match t {
                    TypedEntry::Flow(e) => Some(e),
                    TypedEntry::Loss(_) | TypedEntry::Alert => None,
                })
                .collect();
            log_entries_to_batch(&entries).map_err(bad)?
        }
    };
    crate::parquet_file::encode(cfg, table, &[batch])
        .map(|f| f.bytes)
        .map_err(|e| SinkError::Definition {
            message: format!("encoding Parquet: {e}"),
            source: None,
        })
}

impl Sink for ObjectExport {
    fn send<'a>(
        &'a mut self,
        records: &'a [&'a Routed],
    ) -> SinkFuture<'a, Result<Vec<Refused>, SinkError>> {
        Box::pin(async move {
            if self.opened.is_none() {
                self.opened = Some(Instant::now());
            }
            self.held.extend(records.iter().map(|r| (*r).clone()));
            Ok(Vec::new())
        })
    }

    fn flush(&mut self) -> SinkFuture<'_, Result<(), SinkError>> {
        Box::pin(self.write_files())
    }

    fn flush_due(&self) -> Option<Instant> {
        let opened = self.opened?;
        if self.held.len() >= self.max_records {
            Some(Instant::now())
        } else {
            Some(opened + self.window)
        }
    }
}
