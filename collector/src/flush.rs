//! Flushing: buffered rows become Parquet files (one per table and hour, plus the rollups of
//! the flow rows), committed in one commit-log entry together with the WAL position and the
//! watermarks they correspond to; then the WAL segments they cover are deleted.
//!
//! A flush is triggered by `flush.max_rows` buffered rows or by the oldest row reaching
//! `flush.max_age`. Flushes run one at a time. A failed flush keeps its frozen rows (readable,
//! still in the WAL) and is retried with backoff; ingest continues until
//! `flush.max_unflushed_bytes`, then pauses (backpressure).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;
use verdict_schema::Timestamp;

use crate::buffer::{Frozen, unflushed_bytes, unflushed_rows};
use crate::collector::Inner;
use crate::error::{Error, Result};
use crate::manifest::{Change, CommitKind, FileEntry};
use crate::parquet_file::{self, EncodedFile};
use crate::rollup;
use crate::storage::Storage;
use crate::table::{Hour, Table};
use crate::writer::forget_idle_sources;

/// Uploads running at once.
const UPLOAD_CONCURRENCY: usize = 4;

/// Freezes the buffered rows (or takes the frozen rows of a failed attempt).
fn freeze(inner: &Inner) -> Option<Arc<Frozen>> {
    let mut s = inner.shared.lock();
    if let Some(f) = &s.frozen {
        return Some(Arc::clone(f));
    }
    if s.active.is_empty() {
        return None;
    }
    let rows = std::mem::take(&mut s.active);
    let forgotten = forget_idle_sources(
        &mut s.watermarks,
        Timestamp::now().unix_nanos(),
        inner.config.dedup.source_retention,
    );
    if forgotten > 0 {
        inner
            .metrics
            .sources_forgotten
            .fetch_add(forgotten as u64, Ordering::Relaxed);
        let live: HashSet<&str> = s.watermarks.keys().map(|(n, _)| n.as_str()).collect();
        inner.metrics.retain_nodes(&live);
    }
    let frozen = Arc::new(Frozen {
        rows,
        wal_lsn: s.applied_lsn,
        watermarks: s.watermarks.clone(),
    });
    s.frozen = Some(Arc::clone(&frozen));
    Some(frozen)
}

/// A unique file name of this instance: `UNIXMS-SEQ.INSTANCE.parquet` (instance ids contain no
/// dots, so the instance is the second-to-last dot-separated part).
pub(crate) fn new_file_name(inner: &Inner) -> String {
    let ms = Timestamp::now().unix_nanos() / 1_000_000;
    let seq = inner.file_seq.fetch_add(1, Ordering::Relaxed);
    format!("{ms:013}-{seq:06}.{}.parquet", inner.config.instance_id)
}

/// The instance that wrote a data file, from its name.
pub(crate) fn file_instance(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?;
    match name.split('.').collect::<Vec<_>>().as_slice() {
        [_, instance, "parquet"] => Some(instance),
        _ => None,
    }
}

/// Encodes and uploads `encoded` files of `table`/`hour`, returning their entries.
pub(crate) async fn upload(
    inner: &Inner,
    files: Vec<(Table, Hour, EncodedFile)>,
) -> Result<Vec<FileEntry>> {
    let storage: &Storage = &inner.storage;
    futures::stream::iter(files.into_iter().map(|(table, hour, f)| {
        let path = Storage::data_file(table, hour, &new_file_name(inner));
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
            storage.put(&path, f.bytes).await?;
            inner.metrics.file_written(table, entry.bytes);
            Ok::<_, Error>(entry)
        }
    }))
    .buffer_unordered(UPLOAD_CONCURRENCY)
    .try_collect()
    .await
}

/// Deletes uploaded-but-uncommitted files (best effort: leftovers are removed at next start).
pub(crate) async fn discard(inner: &Inner, files: &[FileEntry]) {
    for f in files {
        if let Err(e) = inner.storage.delete(&f.path).await {
            tracing::warn!(path = %f.path, error = %e, "could not delete an uncommitted file");
        }
    }
}

/// Rows per flushed file: larger partitions are split so their files are encoded in parallel.
const ROWS_PER_FLUSH_FILE: usize = 512 * 1024;

/// What one encoding job makes.
enum Job {
    /// One file of flow or loss rows.
    Rows(Table, Hour, Vec<RecordBatch>),
    /// The rollup file of a partition's flow rows.
    Rollup(Hour, Vec<RecordBatch>),
}

/// Encodes the files of a flush, one blocking task per file, as many at once as there are
/// cores (encoding is CPU work; the runtime threads stay free).
async fn encode_parallel(
    cfg: &crate::config::ParquetConfig,
    frozen: &Frozen,
) -> Result<Vec<(Table, Hour, EncodedFile)>> {
    let mut jobs = Vec::new();
    for table in [Table::Flows, Table::Loss] {
        for (hour, batches) in frozen.rows.partitions(table) {
            if table == Table::Flows {
                jobs.push(Job::Rollup(*hour, batches.clone()));
            }
            let mut chunk = Vec::new();
            let mut rows = 0;
            for b in batches {
                if rows >= ROWS_PER_FLUSH_FILE {
                    jobs.push(Job::Rows(table, *hour, std::mem::take(&mut chunk)));
                    rows = 0;
                }
                rows += b.num_rows();
                chunk.push(b.clone());
            }
            if !chunk.is_empty() {
                jobs.push(Job::Rows(table, *hour, chunk));
            }
        }
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    futures::stream::iter(jobs.into_iter().map(|job| {
        let cfg = cfg.clone();
        async move {
            tokio::task::spawn_blocking(move || match job {
                Job::Rows(table, hour, batches) => {
                    Ok((table, hour, parquet_file::encode(&cfg, table, &batches)?))
                }
                Job::Rollup(hour, batches) => {
                    let r = rollup::aggregate_flows(&batches)
                        .map_err(|e| Error::arrow("rolling up flows", e))?;
                    Ok((
                        Table::Rollups,
                        hour,
                        parquet_file::encode_sorted(&cfg, Table::Rollups, &r)?,
                    ))
                }
            })
            .await
            .map_err(|e| Error::io("encoding task", std::io::Error::other(e)))?
        }
    }))
    .buffer_unordered(cores)
    .try_collect()
    .await
}

/// Runs one flush, if there is anything to flush. Returns whether rows were committed.
pub async fn flush_once(inner: &Inner) -> Result<bool> {
    let _one_at_a_time = inner.flush_lock.lock().await;
    let Some(frozen) = freeze(inner) else {
        return Ok(false);
    };
    let started = Instant::now();
    let encoded = encode_parallel(&inner.config.parquet, &frozen).await?;
    let encoded_at = started.elapsed();
    let added = upload(inner, encoded).await?;
    let uploaded_at = started.elapsed();
    let change = Change {
        kind: CommitKind::Flush,
        checkpoint: Some((frozen.wal_lsn, frozen.watermarks.clone())),
        added: added.clone(),
        removed: Vec::new(),
    };
    {
        let mut log = inner.commit_log.lock().await;
        let t = Instant::now();
        // On error the files stay: a commit that failed ambiguously (written, then a timeout)
        // may name them. Unnamed ones are leftovers the next start deletes.
        log.commit(change).await?;
        inner.metrics.manifest_commit_seconds.observe(t.elapsed());
        let committed = Arc::new(log.state().files.clone());
        let mut s = inner.shared.lock();
        s.committed = committed;
        s.frozen = None;
        inner
            .metrics
            .unflushed_rows
            .store(unflushed_rows(&s) as u64, Ordering::Relaxed);
        inner
            .metrics
            .unflushed_bytes
            .store(unflushed_bytes(&s) as u64, Ordering::Relaxed);
    }
    inner.shared.space_freed();
    inner.metrics.flushes.fetch_add(1, Ordering::Relaxed);
    inner.metrics.flush_seconds.observe(started.elapsed());
    tracing::debug!(
        rows = frozen.rows.rows,
        bytes = frozen.rows.bytes,
        files = added.len(),
        ?encoded_at,
        ?uploaded_at,
        committed_at = ?started.elapsed(),
        "flushed"
    );
    inner.shared.flushed.notify_waiters();

    let lsn = frozen.wal_lsn;
    // Segments still needed by a sink stay (up to wal.max_sink_retention_bytes).
    let truncate = {
        let (sinks, dir) = (Arc::clone(&inner.sinks), inner.wal_dir.clone());
        move || {
            let through = sinks.truncation_point(lsn)?;
            crate::wal::truncate_through(&dir, through)
        }
    };
    match tokio::task::spawn_blocking(truncate).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "deleting committed WAL segments failed"),
        Err(e) => tracing::warn!(error = %e, "WAL truncation task failed"),
    }
    Ok(true)
}

/// Flushes by size or age until `shutdown`, retrying failures with backoff.
pub async fn run(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let max_age = inner.config.flush.max_age;
    let idle_check = (max_age / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut backoff = Duration::from_millis(100);
    loop {
        let wait = {
            let s = inner.shared.lock();
            if s.frozen.is_some() {
                Duration::ZERO
            } else {
                s.active.oldest.map_or(idle_check, |o| {
                    (o + max_age).saturating_duration_since(Instant::now())
                })
            }
        };
        tokio::select! {
            _ = crate::collector::stopped(&mut shutdown) => return,
            _ = inner.shared.flush_wanted.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        let due = {
            let s = inner.shared.lock();
            s.frozen.is_some()
                || s.active.rows >= inner.config.flush.max_rows
                || s.active.oldest.is_some_and(|o| o.elapsed() >= max_age)
        };
        if !due {
            continue;
        }
        match flush_once(&inner).await {
            Ok(_) => backoff = Duration::from_millis(100),
            Err(e) => {
                inner.metrics.flush_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, retry_in = ?backoff, "flush failed; the rows stay in the write-ahead log and are retried");
                tokio::select! {
                    _ = crate::collector::stopped(&mut shutdown) => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
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
