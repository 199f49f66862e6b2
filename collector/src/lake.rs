//! The lake: Parquet files in object storage, the commit log that says which of them are the
//! table, and the snapshot readers see. Flush, compaction and retention change the lake only
//! through [`Lake::upload`], [`Lake::commit`] and [`Lake::discard`]; queries and sinks read it
//! through [`Lake::snapshot`]. See docs/design.md, "Storage and exactly-once".
//!
//! # Publishing
//!
//! A change is visible exactly when its commit-log entry is written: [`Lake::commit`] holds the
//! commit log's lock while it writes the entry, and then, in one critical section of the
//! buffer's state lock, publishes the new file set and — for a flush, whose change carries the
//! WAL position it covers — drops the frozen rows that the new files now hold. A
//! [`TableSnapshot`] taken under that lock therefore holds every row exactly once: in a
//! committed file or in the unflushed rows, never both and never neither.
//!
//! A change that removes files is refused (nothing written) unless every file it removes is
//! still committed, so two maintenance jobs can never remove one file twice or commit a merge
//! of files retention already deleted. Files a commit removes are deleted from storage after
//! it; files uploaded for a change that is then refused or fails are discarded. Whatever a crash
//! leaves behind (files of this instance the log does not name) is deleted by
//! [`Lake::remove_leftovers`] at the next start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow_array::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use verdict_schema::Timestamp;

use crate::buffer::{Shared, TableSnapshot};
use crate::error::{Error, Result};
use crate::manifest::{Change, CommitLog, FileEntry, ManifestState};
use crate::metrics::LakeMetrics;
use crate::parquet_file::{self, EncodedFile};
use crate::storage::Storage;
use crate::table::{Hour, Table};

/// Uploads running at once.
const UPLOAD_CONCURRENCY: usize = 4;

/// The lake of one collector instance.
#[derive(Debug)]
pub struct Lake {
    storage: Storage,
    instance_id: String,
    /// Serializes commits; held across the commit-log write (never while the state lock is).
    log: tokio::sync::Mutex<CommitLog>,
    /// The unflushed rows and the published file set readers snapshot together.
    buffer: Arc<Shared>,
    file_seq: AtomicU64,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Lake {
    /// The lake over `storage` whose committed state is `log`; `buffer` holds the rows not yet
    /// flushed, and its published file set must be `log`'s.
    pub fn new(
        storage: Storage,
        instance_id: String,
        log: CommitLog,
        buffer: Arc<Shared>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Lake {
        Lake {
            storage,
            instance_id,
            log: tokio::sync::Mutex::new(log),
            buffer,
            file_seq: AtomicU64::new(0),
            metrics,
        }
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    fn metrics(&self) -> &LakeMetrics {
        &self.metrics.lake
    }

    /// Deletes what interrupted flushes and compactions left: files of this instance that the
    /// commit log does not name, and local staging files. Returns how many data files.
    pub async fn remove_leftovers(&self) -> Result<usize> {
        let committed = self.committed();
        let mut deleted = 0;
        for table in Table::ALL {
            self.storage.remove_local_staging_files(table.dir()).await?;
            for (path, _) in self.storage.list(table.dir()).await? {
                if file_instance(&path) == Some(self.instance_id.as_str())
                    && !committed.contains_key(&path)
                {
                    self.storage.delete(&path).await?;
                    deleted += 1;
                }
            }
        }
        self.storage
            .remove_local_staging_files(crate::storage::METADATA_DIR)
            .await?;
        self.metrics().orphan_files_deleted.inc_by(deleted as u64);
        Ok(deleted)
    }

    /// The committed state of the commit log (files, watermarks, WAL position).
    pub async fn committed_state(&self) -> ManifestState {
        self.log.lock().await.state().clone()
    }

    /// The published file set (every table), as of the last commit.
    pub fn committed(&self) -> Arc<BTreeMap<String, FileEntry>> {
        Arc::clone(&self.buffer.lock().committed)
    }

    /// The committed files of `table`, in path order.
    pub fn committed_files(&self, table: Table) -> Vec<FileEntry> {
        self.buffer.snapshot(table).files
    }

    /// Committed files and not-yet-flushed rows of `table`, consistent with each other (each
    /// row in exactly one of them). For [`Table::Rollups`] the unflushed part is the rollup of
    /// the unflushed flow rows.
    pub fn snapshot(&self, table: Table) -> Result<TableSnapshot> {
        match table {
            Table::Rollups => {
                // One lock for both: a flush between them would count its rows twice (as
                // unflushed flows rolled up here and in the rollup files it committed).
                let (flows, mut s) = self.buffer.snapshot_pair(Table::Flows, Table::Rollups);
                s.unflushed = if flows.unflushed.is_empty() {
                    Vec::new()
                } else {
                    vec![
                        crate::rollup::aggregate_flows(&flows.unflushed)
                            .map_err(|e| Error::arrow("rolling up unflushed flows", e))?,
                    ]
                };
                Ok(s)
            }
            _ => Ok(self.buffer.snapshot(table)),
        }
    }

    /// New flow rows as they are applied (the live tail); a receiver that falls behind loses
    /// the oldest batches and is told so.
    pub fn subscribe_applied_flows(&self) -> tokio::sync::broadcast::Receiver<RecordBatch> {
        self.buffer.applied_flows.subscribe()
    }

    /// Reads and decodes one committed file; `None` when it is gone (removed meanwhile).
    pub async fn read(&self, file: &FileEntry) -> Result<Option<Vec<RecordBatch>>> {
        let Some(bytes) = self.storage.get(&file.path).await? else {
            return Ok(None);
        };
        let batches = tokio::task::spawn_blocking(move || parquet_file::decode(bytes))
            .await
            .map_err(|e| Error::io("decoding task", std::io::Error::other(e)))??;
        Ok(Some(batches))
    }

    /// A unique file name of this instance: `UNIXMS-SEQ.INSTANCE.parquet` (instance ids contain
    /// no dots, so the instance is the second-to-last dot-separated part).
    fn new_file_name(&self) -> String {
        let ms = Timestamp::now().unix_nanos() / 1_000_000;
        let seq = self.file_seq.fetch_add(1, Ordering::Relaxed);
        format!("{ms:013}-{seq:06}.{}.parquet", self.instance_id)
    }

    /// Uploads encoded files (each of its table and hour), returning their entries. Uploaded
    /// files are invisible until a [`commit`](Self::commit) adds them.
    pub async fn upload(&self, files: Vec<(Table, Hour, EncodedFile)>) -> Result<Vec<FileEntry>> {
        futures::stream::iter(files.into_iter().map(|(table, hour, f)| {
            let path = Storage::data_file(table, hour, &self.new_file_name());
            async move {
                let entry = FileEntry {
                    path: path.clone(),
                    table,
                    hour,
                    rows: f.rows,
                    bytes: f.bytes.len() as u64,
                    min_time: f.min_time,
                    max_time: f.max_time,
                };
                self.storage.put(&path, f.bytes).await?;
                self.metrics().file_written(table, entry.bytes);
                Ok::<_, Error>(entry)
            }
        }))
        .buffer_unordered(UPLOAD_CONCURRENCY)
        .try_collect()
        .await
    }

    /// Deletes uploaded-but-uncommitted files (best effort: leftovers are removed at next
    /// start).
    pub async fn discard(&self, files: &[FileEntry]) {
        for f in files {
            if let Err(e) = self.storage.delete(&f.path).await {
                tracing::warn!(path = %f.path, error = %e, "could not delete an uncommitted file");
            }
        }
    }

    /// Commits `change` and publishes it (see the module doc). Returns `false`, committing
    /// nothing, when a file it removes is no longer committed; the caller discards what it
    /// uploaded. On error nothing may be assumed about the commit (a write that timed out may
    /// have landed): the caller keeps its uploaded files, which are either committed or
    /// leftovers for the next start. After a commit the removed files are deleted.
    pub async fn commit(&self, change: Change) -> Result<bool> {
        let removed = change.removed.clone();
        {
            let mut log = self.log.lock().await;
            if !removed.iter().all(|p| log.state().files.contains_key(p)) {
                return Ok(false);
            }
            let covers_frozen_rows = change.checkpoint.is_some();
            let started = Instant::now();
            log.commit(change).await?;
            self.metrics()
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            let committed = Arc::new(log.state().files.clone());
            let mut s = self.buffer.lock();
            s.committed = committed;
            if covers_frozen_rows {
                s.frozen = None;
            }
        }
        for p in &removed {
            if let Err(e) = self.storage.delete(p).await {
                tracing::warn!(path = %p, error = %e, "could not delete a file removed from the lake (removed at next start)");
            }
        }
        Ok(true)
    }
}

/// The instance that wrote a data file, from its name.
pub fn file_instance(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?;
    match name.split('.').collect::<Vec<_>>().as_slice() {
        [_, instance, "parquet"] => Some(instance),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::file_instance;

    #[test]
    fn instance_is_read_back_from_file_names() {
        assert_eq!(
            file_instance(
                "policy_action/dt=2026-01-01/hour=00/1767225600000-000001.collector-0.parquet"
            ),
            Some("collector-0")
        );
        assert_eq!(file_instance("x/y.parquet"), None);
        assert_eq!(file_instance("x/y.txt"), None);
    }
}
