//! The single writer: deduplicates batches against per-source watermarks, makes them durable in
//! the write-ahead log with group commit, applies them to the row buffer, and only then answers.
//!
//! # The exactly-once invariant
//!
//! For every (node, source), let W be its watermark. At every instant:
//!
//! 1. **Durable state = committed files + WAL entries after the commit log's `wal_lsn`.** The
//!    commit log (manifest) records, atomically with the files a flush adds, the WAL position
//!    `wal_lsn` those files cover and every watermark as of that position. WAL segments are
//!    deleted only when all their entries are at or below a committed `wal_lsn`.
//! 2. **A WAL entry is a decision, replayed verbatim.** It holds exactly the records that passed
//!    dedup and the source's new W (its last sequence). Replay (in LSN order, after the
//!    committed `wal_lsn`) adds those rows and sets W, so recovery rebuilds precisely the rows
//!    and watermarks the live process had — it never re-decides.
//! 3. **Dedup happens in one place, in LSN order.** This thread is the only one that reads or
//!    advances the deciding watermarks (`written`), and it frames entries in the order it
//!    decides them, so W in the WAL only grows per source and a record with sequence ≤ W is
//!    never written twice.
//! 4. **Acknowledge after durable.** A batch's `BatchResult` is sent only after the `fdatasync`
//!    of the group containing its entry (or, for an all-duplicate batch, of the group in which
//!    the thread last advanced that source — the same or an earlier one).
//! 5. **A failed write is undone before anything else is written.** After a WAL write or fsync
//!    error the file's tail is unknown: the failed group's batches are answered with an error
//!    (never acknowledged), the watermarks they advanced are put back, and the segment is cut
//!    back to its last synced length before a new segment takes the same LSNs. Until that
//!    succeeds (the disk has space again, the device answers) every batch is refused and
//!    `/healthz` says why; then ingest resumes without a restart. Nothing unacknowledged is
//!    ever counted on.
//!
//! So after kill -9 at any instant: every acknowledged record is in a committed file or in a
//! replayed entry (1, 4); no record is stored twice, because a record is written only above W
//! (3), replay restores W with the rows (2), and a flush commits rows together with the W they
//! imply (1). Dedup state is O(sources): one watermark per (node, source), forgotten after
//! `dedup.source_retention` without batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::task_tracker::TaskTrackerToken;
use verdict_schema::Timestamp;
use verdict_schema::proto::v1::RejectionCode;

use crate::buffer::{Shared, unflushed_bytes, unflushed_rows};
use crate::decode::{PreparedBatch, Rejection};
use crate::error::{Error, Result};
use crate::manifest::{SourceKey, SourceWatermark, forget_idle_sources};
use crate::metrics::Metrics;
use crate::table::Table;
use crate::wal::{WalEntry, WalWriter, frame_entry};

/// What became of an accepted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub stored: u64,
    pub duplicates: u64,
    /// The source's durable watermark after this batch (0 if nothing of it was ever stored).
    pub durable_sequence: u64,
}

/// What the writer did with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Durable (or a duplicate of what is).
    Stored(Outcome),
    /// Refused against the source's watermark (a sequence leaping too far past it); nothing
    /// stored, the watermark unchanged.
    Refused(Rejection),
}

/// A batch on its way to durability.
#[derive(Debug)]
pub struct WriteRequest {
    pub batch: PreparedBatch,
    pub reply: oneshot::Sender<Result<Written>>,
}

/// The way into the writer thread, shared by every stream; emptied at shutdown so the thread
/// ends once in-flight sends are done.
pub type WriterSender = Arc<std::sync::Mutex<Option<mpsc::Sender<WriteRequest>>>>;

/// Settings of the writer thread.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// `grpc.max_sequence_gap`: how far a batch's first new record may start past the source's
    /// watermark.
    pub max_sequence_gap: u64,
    pub max_group_bytes: usize,
    pub max_unflushed_bytes: usize,
    pub flush_rows: usize,
    pub source_retention: Duration,
}

enum Plan {
    /// Written as entry `lsn`, records `skip..` new.
    Apply { skip: usize, watermark: u64 },
    /// Nothing new; the source's watermark was `watermark`.
    Duplicate { watermark: u64 },
    /// Its first new record leaps too far past the watermark.
    Refuse(Rejection),
}

/// Starts the writer thread. `written` are the watermarks after WAL replay. The thread runs
/// until every sender of `rx` is gone and the queue is drained; it holds `running` (a token of
/// the collector's task set) until then, so waiting for the task set waits for it.
pub fn spawn(
    mut wal: WalWriter,
    mut written: HashMap<SourceKey, SourceWatermark>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    settings: WriterSettings,
    mut rx: mpsc::Receiver<WriteRequest>,
    running: TaskTrackerToken,
) -> Result<()> {
    std::thread::Builder::new()
        .name("verdict-wal-writer".into())
        .spawn(move || {
            let _running = running;
            let mut buf: Vec<u8> = Vec::with_capacity(settings.max_group_bytes.min(64 << 20));
            let mut last_expiry = Instant::now();
            // The first LSN of a group whose write failed and is not undone yet.
            let mut undo_from: Option<u64> = None;
            while let Some(first) = rx.blocking_recv() {
                let mut group = vec![first];
                let mut bytes = group[0].batch.wal_records.len();
                while bytes < settings.max_group_bytes {
                    match rx.try_recv() {
                        Ok(r) => {
                            bytes += r.batch.wal_records.len();
                            group.push(r);
                        }
                        Err(_) => break,
                    }
                }
                if let Some(first) = undo_from {
                    match wal.recover(first) {
                        Ok(()) => {
                            undo_from = None;
                            shared.lock().failed = None;
                            tracing::warn!("write-ahead log recovered after a failed write; accepting batches again");
                        }
                        Err(e) => {
                            let reason = format!("{e} (after a failed write)");
                            shared.lock().failed = Some(reason.clone());
                            for r in group {
                                let _ = r.reply.send(Err(Error::WalFailed(reason.clone())));
                            }
                            continue;
                        }
                    }
                }
                // Backpressure: when flushes fall behind, stop acknowledging until they catch up.
                shared.wait_for_space(settings.max_unflushed_bytes);

                buf.clear();
                let mut plans = Vec::with_capacity(group.len());
                let mut entries = 0u64;
                let first_lsn = wal.next_lsn();
                // The watermarks as they were, to put back if the group cannot be written.
                let mut before: Vec<(SourceKey, Option<SourceWatermark>)> = Vec::new();
                for r in &group {
                    let b = &r.batch;
                    let previous = written.get(&b.key).map(|w| w.sequence);
                    let skip = previous.map_or(0, |w| b.sequences.partition_point(|&s| s <= w));
                    // A source's first batch may start anywhere (a kernel's record numbers
                    // do not start at 0); after that, a record cannot start further past the
                    // watermark than skipped lines or overwritten records explain.
                    if let Some(w) = previous
                        && let Some(&start) = b.starts.get(skip)
                        && start.saturating_sub(w) > settings.max_sequence_gap
                    {
                        plans.push(Plan::Refuse(Rejection::new(
                            RejectionCode::OutOfOrder,
                            format!(
                                "record {skip} (sequence {}) starts {} past the source's watermark {w}; at most {} (grpc.max_sequence_gap)",
                                b.sequences[skip],
                                start - w,
                                settings.max_sequence_gap
                            ),
                        )));
                        continue;
                    }
                    if skip < b.sequences.len() {
                        let watermark = *b.sequences.last().expect("non-empty");
                        let lsn = wal.take_lsn();
                        let header = WalEntry {
                            node: Some(b.node.clone()),
                            source_id: b.key.1.clone(),
                            receive_unix_nanos: b.receive.unix_nanos(),
                            watermark,
                            records: Vec::new(),
                        };
                        frame_entry(&mut buf, lsn, &header, &b.wal_records[b.record_offsets[skip]..]);
                        entries += 1;
                        if !before.iter().any(|(k, _)| *k == b.key) {
                            before.push((b.key.clone(), written.get(&b.key).copied()));
                        }
                        written.insert(
                            b.key.clone(),
                            SourceWatermark {
                                sequence: watermark,
                                last_seen: b.receive.unix_nanos(),
                            },
                        );
                        plans.push(Plan::Apply { skip, watermark });
                    } else {
                        plans.push(Plan::Duplicate {
                            watermark: previous.unwrap_or(0),
                        });
                    }
                }

                let started = Instant::now();
                if let Err(e) = wal.write_group(&buf) {
                    let reason = e.to_string();
                    tracing::error!(error = %reason, "write-ahead log write failed; the group is refused and undone before anything else is written");
                    for (key, mark) in before {
                        match mark {
                            Some(m) => written.insert(key, m),
                            None => written.remove(&key),
                        };
                    }
                    undo_from = Some(first_lsn);
                    if let Err(e) = wal.recover(first_lsn) {
                        tracing::error!(error = %e, "undoing the failed write failed; refusing batches until it succeeds");
                        shared.lock().failed = Some(reason.clone());
                    } else {
                        undo_from = None;
                    }
                    for r in group {
                        let _ = r.reply.send(Err(Error::WalFailed(reason.clone())));
                    }
                    continue;
                }
                if !buf.is_empty() {
                    let w = &metrics.writer;
                    w.wal_commit_seconds.observe(started.elapsed().as_secs_f64());
                    w.wal_group_commits.inc();
                    w.wal_bytes.inc_by(buf.len() as u64);
                    w.wal_entries.inc_by(entries);
                }

                // Apply in LSN order, then answer.
                let mut stored = [0u64; 2];
                let mut duplicates = 0u64;
                let tailing = shared.applied_flows.receiver_count() > 0;
                let feed = shared.feed.get();
                let mut applied_flows = Vec::new();
                let mut observed = Vec::new();
                let (rows, mem, sources) = {
                    let mut s = shared.lock();
                    let mut lsn = s.applied_lsn;
                    for (r, plan) in group.iter().zip(&plans) {
                        if let Plan::Apply { skip, watermark } = plan {
                            let b = &r.batch;
                            lsn += 1;
                            for part in &b.parts {
                                if let Some(rows) = part.without_first(*skip) {
                                    stored[usize::from(part.table == Table::Loss)] += rows.num_rows() as u64;
                                    if tailing && part.table == Table::Flows {
                                        applied_flows.push(rows.clone());
                                    }
                                    if feed.is_some() {
                                        observed.push((part.table, rows.clone()));
                                    }
                                    s.active.add(part.table, part.hour, rows);
                                }
                            }
                            s.watermarks.insert(
                                b.key.clone(),
                                SourceWatermark {
                                    sequence: *watermark,
                                    last_seen: b.receive.unix_nanos(),
                                },
                            );
                        }
                    }
                    debug_assert_eq!(lsn + 1, wal.next_lsn());
                    s.applied_lsn = lsn;
                    (unflushed_rows(&s), unflushed_bytes(&s), s.watermarks.len())
                };
                for batch in applied_flows {
                    // No receiver left is fine: tail clients come and go.
                    let _ = shared.applied_flows.send(batch);
                }
                if let Some(feed) = feed {
                    for (table, rows) in observed {
                        feed.send(table, rows);
                    }
                }
                metrics.buffer.set_unflushed(rows, mem);
                metrics.buffer.sources.set(i64::try_from(sources).unwrap_or(i64::MAX));
                if rows >= settings.flush_rows {
                    shared.flush_wanted.notify_one();
                }
                if stored != [0, 0] {
                    // The group is fsynced and applied: sinks may now read up to this LSN. The
                    // head moves before any client hears "stored", so a sink's lag counts every
                    // record a client was told is stored.
                    let lsn = shared.lock().applied_lsn;
                    shared.durable.send_modify(|h| {
                        h.lsn = lsn;
                        h.records += stored[0] + stored[1];
                    });
                }
                for (r, plan) in group.into_iter().zip(plans) {
                    let n = r.batch.sequences.len() as u64;
                    let outcome = match plan {
                        Plan::Apply { skip, watermark } => Outcome {
                            stored: n - skip as u64,
                            duplicates: skip as u64,
                            durable_sequence: watermark,
                        },
                        Plan::Duplicate { watermark } => Outcome {
                            stored: 0,
                            duplicates: n,
                            durable_sequence: watermark,
                        },
                        Plan::Refuse(rejection) => {
                            let _ = r.reply.send(Ok(Written::Refused(rejection)));
                            continue;
                        }
                    };
                    duplicates += outcome.duplicates;
                    let _ = r.reply.send(Ok(Written::Stored(outcome)));
                }
                metrics.writer.stored(Table::Flows, stored[0]);
                metrics.writer.stored(Table::Loss, stored[1]);
                metrics.writer.records_deduplicated.inc_by(duplicates);

                if last_expiry.elapsed() > Duration::from_secs(60) {
                    last_expiry = Instant::now();
                    forget_idle_sources(
                        &mut written,
                        Timestamp::now().unix_nanos(),
                        settings.source_retention,
                    );
                }
            }
            tracing::debug!("write-ahead log writer stopped");
        })
        .map_err(|e| Error::io("starting the write-ahead log writer thread", e))?;
    Ok(())
}
