//! The flush task: buffered rows become Parquet files (one per table and hour, plus the rollups of
//! the flow rows), committed in one commit-log entry together with the WAL position and the
//! watermarks they correspond to; then the WAL segments they cover are deleted.
//!
//! A flush is triggered by `flush.max_rows` buffered rows or by the oldest row reaching
//! `flush.max_age`. Flushes run one at a time. A failed flush keeps its frozen rows (readable,
//! still in the WAL) and is retried with backoff; ingest continues until
//! `flush.max_unflushed_bytes`, then pauses (backpressure).
//!
//! It freezes the buffer, encodes, [uploads](Lake::upload) and [commits](Lake::commit) through
//! the lake — the commit carries the WAL position and watermarks the files cover, and publishing
//! it drops the frozen rows — and then deletes the WAL segments that neither the lake nor a sink
//! still needs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;
use verdict_schema::Timestamp;

use crate::buffer::{Frozen, Shared, unflushed_bytes, unflushed_rows};
use crate::config::sections::{FlushConfig, ParquetConfig};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::manifest::{Change, CommitKind};
use crate::metrics::Metrics;
use crate::parquet_file::{self, EncodedFile};
use crate::rollup;
use crate::sinks::Sinks;
use crate::table::{Hour, Table};

/// What the flush task needs besides the lake and the buffer.
#[derive(Debug, Clone)]
pub struct FlushSettings {
    pub flush: FlushConfig,
    pub parquet: ParquetConfig,
    /// `dedup.source_retention`: watermarks idle this long are forgotten at a flush.
    pub source_retention: Duration,
    /// The write-ahead log, whose committed segments a flush deletes.
    pub wal_dir: PathBuf,
}

/// Flushes the buffer into the lake, one flush at a time.
#[derive(Debug)]
pub struct Flusher {
    lake: Arc<Lake>,
    buffer: Arc<Shared>,
    /// The running sinks: WAL segments they have not read yet are kept.
    sinks: Arc<Sinks>,
    settings: FlushSettings,
    metrics: Arc<Metrics>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Flusher {
    pub fn new(
        lake: Arc<Lake>,
        buffer: Arc<Shared>,
        sinks: Arc<Sinks>,
        settings: FlushSettings,
        metrics: Arc<Metrics>,
    ) -> Flusher {
        Flusher {
            lake,
            buffer,
            sinks,
            settings,
            metrics,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs one flush, if there is anything to flush. Returns whether rows were committed.
    pub async fn flush_once(&self) -> Result<bool> {
        let _one_at_a_time = self.one_at_a_time.lock().await;
        let Some((frozen, forgotten)) = self.buffer.freeze(
            Timestamp::now().unix_nanos(),
            self.settings.source_retention,
        ) else {
            return Ok(false);
        };
        if forgotten > 0 {
            self.metrics
                .buffer
                .sources_forgotten
                .inc_by(forgotten as u64);
            let live = self.buffer.live_nodes();
            self.metrics
                .ingest
                .retain_nodes(&live.iter().map(String::as_str).collect());
        }
        let started = Instant::now();
        let encoded = encode_parallel(&self.settings.parquet, &frozen).await?;
        let encoded_at = started.elapsed();
        let added = self.lake.upload(encoded).await?;
        let uploaded_at = started.elapsed();
        let files = added.len();
        let change = Change {
            kind: CommitKind::Flush,
            checkpoint: Some((frozen.wal_lsn, frozen.watermarks.clone())),
            added,
            removed: Vec::new(),
        };
        // On error the files stay: a commit that failed ambiguously (written, then a timeout)
        // may name them. Unnamed ones are leftovers the next start deletes. A flush removes
        // nothing, so the lake cannot refuse it.
        self.lake.commit(change).await?;
        {
            let s = self.buffer.lock();
            self.metrics
                .buffer
                .set_unflushed(unflushed_rows(&s), unflushed_bytes(&s));
        }
        self.buffer.space_freed();
        self.metrics.flush.observe(started.elapsed());
        tracing::debug!(
            rows = frozen.rows.rows,
            bytes = frozen.rows.bytes,
            files,
            ?encoded_at,
            ?uploaded_at,
            committed_at = ?started.elapsed(),
            "flushed"
        );
        self.buffer.flushed.notify_waiters();

        let lsn = frozen.wal_lsn;
        // Segments still needed by a sink stay (up to wal.max_sink_retention_bytes).
        let truncate = {
            let (sinks, dir) = (Arc::clone(&self.sinks), self.settings.wal_dir.clone());
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

    /// Flushes everything buffered now (and waits for it).
    pub async fn flush_all(&self) -> Result<()> {
        while self.flush_once().await? {}
        Ok(())
    }
}

/// Flushes by size or age until `stop`, retrying failures with backoff.
pub async fn run(flusher: Arc<Flusher>, stop: CancellationToken) {
    let max_age = flusher.settings.flush.max_age;
    let max_rows = flusher.settings.flush.max_rows;
    let idle_check = (max_age / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut backoff = Duration::from_millis(100);
    loop {
        let wait = {
            let s = flusher.buffer.lock();
            if s.frozen.is_some() {
                Duration::ZERO
            } else {
                s.active.oldest.map_or(idle_check, |o| {
                    (o + max_age).saturating_duration_since(Instant::now())
                })
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = flusher.buffer.flush_wanted.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        let due = {
            let s = flusher.buffer.lock();
            s.frozen.is_some()
                || s.active.rows >= max_rows
                || s.active.oldest.is_some_and(|o| o.elapsed() >= max_age)
        };
        if !due {
            continue;
        }
        match flusher.flush_once().await {
            Ok(_) => backoff = Duration::from_millis(100),
            Err(e) => {
                flusher.metrics.flush.failures.inc();
                tracing::warn!(error = %e, retry_in = ?backoff, "flush failed; the rows stay in the write-ahead log and are retried");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
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
    cfg: &ParquetConfig,
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
