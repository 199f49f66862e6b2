//! Rows that are durable in the write-ahead log but not yet in committed Parquet files, and the
//! state readers and the flusher share with the writer.
//!
//! Lock order: [`Shared::state`] is a leaf lock — nothing else is locked while it is held, and
//! it is held only for in-memory bookkeeping (never across I/O or `.await`).
//!
//! Consistency for readers: a [`TableSnapshot`] is taken under the lock, so it holds every row
//! exactly once — either in a committed file or in the unflushed rows (active or frozen), never
//! both: a flush's files become visible in the same critical section that drops its frozen rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use arrow_array::RecordBatch;

use crate::manifest::{FileEntry, SourceKey, SourceWatermark, forget_idle_sources};
use crate::table::{Hour, Table};

/// Buffered rows of the flow and loss tables, by hour.
#[derive(Debug, Default)]
pub struct RowBuffer {
    /// Indexed by `Table::index()` (flows, loss).
    tables: [BTreeMap<Hour, Vec<RecordBatch>>; 2],
    pub rows: usize,
    pub bytes: usize,
    /// When the oldest buffered row arrived.
    pub oldest: Option<Instant>,
}

impl RowBuffer {
    pub fn add(&mut self, table: Table, hour: Hour, batch: RecordBatch) {
        let i = match table {
            Table::Flows => 0,
            Table::Loss => 1,
            Table::Rollups => unreachable!("rollups are derived at flush"),
        };
        self.rows += batch.num_rows();
        self.bytes += batch.get_array_memory_size();
        self.oldest.get_or_insert_with(Instant::now);
        self.tables[i].entry(hour).or_default().push(batch);
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The buffered batches of `table` (empty for rollups), by hour.
    pub fn partitions(&self, table: Table) -> impl Iterator<Item = (&Hour, &Vec<RecordBatch>)> {
        let i = match table {
            Table::Flows => Some(0),
            Table::Loss => Some(1),
            Table::Rollups => None,
        };
        i.into_iter().flat_map(move |i| self.tables[i].iter())
    }

    fn batches(&self, table: Table) -> impl Iterator<Item = &RecordBatch> {
        self.partitions(table).flat_map(|(_, v)| v.iter())
    }
}

/// Rows handed to a flush: everything applied up to `wal_lsn`, with the watermarks as of it.
#[derive(Debug)]
pub struct Frozen {
    pub rows: RowBuffer,
    pub wal_lsn: u64,
    pub watermarks: HashMap<SourceKey, SourceWatermark>,
}

#[derive(Debug)]
pub struct State {
    /// Rows applied since the last freeze.
    pub active: RowBuffer,
    /// Rows being flushed (kept readable until their files are committed).
    pub frozen: Option<Arc<Frozen>>,
    /// LSN of the last WAL entry applied to `active`.
    pub applied_lsn: u64,
    /// Watermarks as of `applied_lsn`.
    pub watermarks: HashMap<SourceKey, SourceWatermark>,
    /// The committed files.
    pub committed: Arc<BTreeMap<String, FileEntry>>,
    /// Set when the WAL failed: nothing more is accepted.
    pub failed: Option<String>,
    /// Set at shutdown: the writer stops waiting for space.
    pub closing: bool,
}

/// What a reader sees of one table at one instant.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    /// Committed files, in path order.
    pub files: Vec<FileEntry>,
    /// Rows not in those files yet (flows and loss; for rollups see
    /// [`crate::rollup::aggregate_flows`] over the flows' unflushed rows).
    pub unflushed: Vec<RecordBatch>,
}

/// The newest durable position of the write-ahead log, published by the writer after each
/// group is fsynced and applied (the sinks follow it; they never read past it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DurableHead {
    /// LSN of the last applied entry.
    pub lsn: u64,
    /// Records applied since this process started (a running total, for lag in records).
    pub records: u64,
}

/// Batches of new flow rows held for live-tail readers before the slowest one loses some.
const TAIL_QUEUE_BATCHES: usize = 256;

/// Where the writer hands applied rows to the alert detectors: a bounded queue it never
/// waits on. When the detectors fall behind, batches are dropped from detection (and from the
/// log-based metrics) and counted; they are stored all the same.
#[derive(Debug)]
pub struct AppliedFeed {
    pub tx: std::sync::mpsc::SyncSender<(Table, RecordBatch)>,
    pub dropped: prometheus_client::metrics::counter::Counter,
}

impl AppliedFeed {
    /// Hands `rows` on, or counts them as dropped when the queue is full.
    pub fn send(&self, table: Table, rows: RecordBatch) {
        if self.tx.try_send((table, rows)).is_err() {
            self.dropped.inc();
        }
    }
}

/// The state shared by the writer, the flusher, background jobs and readers.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    /// The durable head (sinks subscribe to it). Sending never waits for a receiver.
    pub durable: tokio::sync::watch::Sender<DurableHead>,
    /// New flow rows as they are applied (live tail of the query API). Sent after the state
    /// lock is released; a receiver that falls behind loses the oldest batches (and is told).
    pub applied_flows: tokio::sync::broadcast::Sender<RecordBatch>,
    /// Applied rows for the alert detectors and log-based metrics (`alerts`), when they run.
    pub feed: std::sync::OnceLock<AppliedFeed>,
    /// Signalled when a flush frees memory (the writer waits on it for backpressure).
    space: Condvar,
    /// Woken when buffered rows reach the flush threshold.
    pub flush_wanted: tokio::sync::Notify,
    /// Woken after every completed flush.
    pub flushed: tokio::sync::Notify,
}

impl Shared {
    pub fn new(state: State) -> Self {
        let head = DurableHead {
            lsn: state.applied_lsn,
            records: 0,
        };
        Shared {
            durable: tokio::sync::watch::Sender::new(head),
            state: Mutex::new(state),
            applied_flows: tokio::sync::broadcast::Sender::new(TAIL_QUEUE_BATCHES),
            feed: std::sync::OnceLock::new(),
            space: Condvar::new(),
            flush_wanted: tokio::sync::Notify::new(),
            flushed: tokio::sync::Notify::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves bookkeeping half-done: fail loudly.
        self.state.lock().expect("collector state lock poisoned")
    }

    /// Blocks (on the writer thread) until unflushed memory is below `limit`, or shutdown.
    pub fn wait_for_space(&self, limit: usize) {
        let mut s = self.lock();
        while !s.closing && unflushed_bytes(&s) >= limit {
            s = self.space.wait(s).expect("collector state lock poisoned");
        }
    }

    /// Wakes the writer after memory was freed (or at shutdown).
    pub fn space_freed(&self) {
        self.space.notify_all();
    }

    /// Committed files and unflushed rows of `table`, consistent with each other.
    pub fn snapshot(&self, table: Table) -> TableSnapshot {
        snapshot_locked(&self.lock(), table)
    }

    /// Freezes the active rows for a flush (or returns the frozen rows of a flush that failed,
    /// to be retried), with the watermarks as of them; `None` when nothing is buffered.
    /// Watermarks of sources idle longer than `source_retention` (as of `now_nanos`) are
    /// forgotten first; the second value says how many.
    pub fn freeze(
        &self,
        now_nanos: i64,
        source_retention: std::time::Duration,
    ) -> Option<(Arc<Frozen>, usize)> {
        let mut s = self.lock();
        if let Some(f) = &s.frozen {
            return Some((Arc::clone(f), 0));
        }
        if s.active.is_empty() {
            return None;
        }
        let rows = std::mem::take(&mut s.active);
        let forgotten = forget_idle_sources(&mut s.watermarks, now_nanos, source_retention);
        let frozen = Arc::new(Frozen {
            rows,
            wal_lsn: s.applied_lsn,
            watermarks: s.watermarks.clone(),
        });
        s.frozen = Some(Arc::clone(&frozen));
        Some((frozen, forgotten))
    }

    /// The nodes that still have a watermark.
    pub fn live_nodes(&self) -> std::collections::HashSet<String> {
        self.lock()
            .watermarks
            .keys()
            .map(|(node, _)| node.clone())
            .collect()
    }

    /// Snapshots of two tables taken under one lock: consistent with each other (a flush cannot
    /// fall between them, so rows never count in one table's files and the other's unflushed).
    pub fn snapshot_pair(&self, a: Table, b: Table) -> (TableSnapshot, TableSnapshot) {
        let s = self.lock();
        (snapshot_locked(&s, a), snapshot_locked(&s, b))
    }
}

fn snapshot_locked(s: &State, table: Table) -> TableSnapshot {
    let files = s
        .committed
        .values()
        .filter(|f| f.table == table)
        .cloned()
        .collect();
    let mut unflushed: Vec<RecordBatch> = Vec::new();
    if let Some(f) = &s.frozen {
        unflushed.extend(f.rows.batches(table).cloned());
    }
    unflushed.extend(s.active.batches(table).cloned());
    TableSnapshot { files, unflushed }
}

/// Memory held by active and frozen rows.
pub fn unflushed_bytes(s: &State) -> usize {
    s.active.bytes + s.frozen.as_ref().map_or(0, |f| f.rows.bytes)
}

/// Rows held by active and frozen rows.
pub fn unflushed_rows(s: &State) -> usize {
    s.active.rows + s.frozen.as_ref().map_or(0, |f| f.rows.rows)
}
