//! The task of one sink: follow the log from the sink's cursor, route, deliver with retries,
//! dead-letter what is refused, then move the cursor (see the invariant in [`super`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::cursor::CursorFile;
use super::dead_letter::{Appended, DeadLetter, DeadLetterFile};
use super::registry::ValidSink;
use super::route::{Routed, Selection, route};
use super::sink::{BuildContext, Sink, SinkError};
use crate::buffer::DurableHead;
use crate::wal::{TailEntry, WalTail};

/// Counters and gauges of one sink (label `sink="NAME"`), shared by its runner and `/metrics`.
#[derive(Debug, Default)]
pub struct SinkState {
    /// The durable cursor (LSN).
    pub cursor: AtomicU64,
    /// Records processed through the cursor since start, on the durable head's running total
    /// (`DurableHead::records`); lag in records is the head's total minus this.
    pub position_records: AtomicI64,
    /// Receive time (ns) of the oldest record read but not yet finished; 0 when none.
    pub oldest_pending_nanos: AtomicI64,
    pub records_read: AtomicU64,
    pub records_excluded: AtomicU64,
    pub records_delivered: AtomicU64,
    pub records_dead_lettered: AtomicU64,
    pub records_dropped_retention: AtomicU64,
    pub records_dropped_undecodable: AtomicU64,
    /// Refused records not dead-lettered because the file reached its bound.
    pub records_dropped_dead_letter_full: AtomicU64,
    pub entries_dropped: AtomicU64,
    pub retries: AtomicU64,
    pub batches: AtomicU64,
    /// False while the destination is failing.
    pub healthy: AtomicBool,
    /// True once the runner stopped because the definition does not work.
    pub failed: AtomicBool,
    pub last_error: Mutex<Option<String>>,
}

impl SinkState {
    pub(crate) fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().expect("sink state lock") = e;
    }
}

/// Entries deleted from the log before some sink read them: LSN → records.
pub type LostEntries = BTreeMap<u64, u64>;

/// Everything a sink's task needs.
#[derive(Debug)]
pub struct Runner {
    pub definition: ValidSink,
    pub build: BuildContext,
    pub state: Arc<SinkState>,
    pub wal_dir: std::path::PathBuf,
    pub cursor: CursorFile,
    pub dead_letter: DeadLetterFile,
    pub head: watch::Receiver<DurableHead>,
    pub stop: watch::Receiver<bool>,
    pub lost: Arc<Mutex<LostEntries>>,
    /// The cursor the sink starts from.
    pub start: u64,
}

/// Why the task ends.
enum Exit {
    Stopped,
    Failed(String),
}

/// Runs the sink until it is stopped (or its definition turns out unusable).
pub async fn run(mut r: Runner) {
    let name = r.definition.config.name.clone();
    match run_inner(&mut r).await {
        Exit::Stopped => tracing::info!(sink = %name, "sink stopped"),
        Exit::Failed(e) => {
            tracing::error!(sink = %name, error = %e, "sink stopped: its destination refuses the definition; fix it and reload");
            r.state.failed.store(true, Ordering::Relaxed);
            r.state.set_error(Some(e));
        }
    }
}

fn selection(r: &Runner) -> Selection {
    let c = &r.definition.config;
    Selection {
        include: verdict_filter::parse(&c.filter).expect("validated"),
        exclude: c
            .exclusions
            .iter()
            .filter(|x| !x.disabled)
            .map(|x| verdict_filter::parse(&x.filter).expect("validated"))
            .collect(),
    }
}

/// Waits `d`, or returns false when the sink is stopped meanwhile.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => false,
        () = tokio::time::sleep(d) => true,
    }
}

async fn run_inner(r: &mut Runner) -> Exit {
    let name = r.definition.config.name.clone();
    let delivery = r.definition.config.delivery.clone();
    let selection = Arc::new(selection(r));
    let mut tail = Some(WalTail::new(&r.wal_dir, r.start + 1));
    let mut sink: Option<Box<dyn Sink>> = None;
    // Entries sent but held by the sink (object storage) until its next flush:
    // (last LSN, records read, records accepted for delivery).
    let mut held: Option<(u64, i64, u64)> = None;
    let mut backoff = delivery.initial_backoff;
    loop {
        if *r.stop.borrow() {
            if let (Some(s), Some((lsn, records, accepted))) = (sink.as_mut(), held) {
                match s.flush().await {
                    Ok(()) => {
                        r.state
                            .records_delivered
                            .fetch_add(accepted, Ordering::Relaxed);
                        commit(r, lsn, records).await;
                    }
                    Err(e) => {
                        tracing::warn!(sink = %name, error = %e.chain(), "could not deliver held records at stop; they are sent again at the next start")
                    }
                }
            }
            return Exit::Stopped;
        }
        // A destination is built lazily and rebuilt after it was found unreachable at build.
        if sink.is_none() {
            match r
                .definition
                .destination
                .build(&r.definition.config, &r.build)
                .await
            {
                Ok(s) => {
                    sink = Some(s);
                    backoff = delivery.initial_backoff;
                }
                Err(e @ SinkError::Definition { .. }) => return Exit::Failed(e.chain()),
                Err(e) => {
                    unhealthy(r, &name, &e);
                    if !pause(&mut r.stop, backoff).await {
                        continue;
                    }
                    backoff = (backoff * 2).min(delivery.max_backoff);
                    continue;
                }
            }
        }
        let s = sink.as_mut().expect("built above");

        // Flush what the sink holds when it is due.
        if let (Some(due), Some((lsn, records, accepted))) = (s.flush_due(), held)
            && due <= Instant::now()
        {
            match s.flush().await {
                Ok(()) => {
                    held = None;
                    r.state
                        .records_delivered
                        .fetch_add(accepted, Ordering::Relaxed);
                    commit(r, lsn, records).await;
                    healthy(r);
                    backoff = delivery.initial_backoff;
                }
                Err(e) => {
                    r.state.retries.fetch_add(1, Ordering::Relaxed);
                    unhealthy(r, &name, &e);
                    pause(&mut r.stop, backoff).await;
                    backoff = (backoff * 2).min(delivery.max_backoff);
                }
            }
            continue;
        }

        let head = *r.head.borrow_and_update();
        let next = tail
            .as_ref()
            .expect("the tail is returned after each read")
            .next_lsn();
        if next > head.lsn {
            // Caught up: wait for new records, a flush deadline or stop.
            let due = s.flush_due();
            tokio::select! {
                _ = r.stop.wait_for(|s| *s) => {}
                _ = r.head.changed() => {}
                () = sleep_until(due) => {}
            }
            continue;
        }

        // Read and route a batch off the runtime threads (disk and JSON work).
        let mut t = tail.take().expect("present");
        let max = delivery.batch_records;
        let sel = Arc::clone(&selection);
        let read = tokio::task::spawn_blocking(move || {
            let read = t.read(head.lsn, max);
            let routed = read.as_ref().ok().map(|read| route(&read.entries, &sel));
            (t, read, routed)
        })
        .await;
        let (t, read, routed) = match read {
            Ok(x) => x,
            Err(e) => return Exit::Failed(format!("reading the write-ahead log: {e}")),
        };
        tail = Some(t);
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                // A damaged log is not something retrying fixes quickly; keep trying slowly.
                unhealthy(
                    r,
                    &name,
                    &SinkError::Unavailable {
                        message: format!("reading the write-ahead log: {e}"),
                        source: None,
                    },
                );
                pause(&mut r.stop, delivery.max_backoff).await;
                tail = Some(WalTail::new(
                    &r.wal_dir,
                    r.state.cursor.load(Ordering::Relaxed) + 1,
                ));
                continue;
            }
        };
        let routed = routed.expect("routed when read");
        if let Some(gap) = &read.missing {
            let records: u64 = r
                .lost
                .lock()
                .expect("lost entries lock")
                .range(gap.clone())
                .map(|(_, n)| n)
                .sum();
            r.state
                .entries_dropped
                .fetch_add(gap.end - gap.start, Ordering::Relaxed);
            r.state
                .records_dropped_retention
                .fetch_add(records, Ordering::Relaxed);
            r.state
                .position_records
                .fetch_add(i64::try_from(records).unwrap_or(0), Ordering::Relaxed);
            tracing::error!(sink = %name, first_lsn = gap.start, last_lsn = gap.end - 1, records, "write-ahead log entries were deleted before this sink read them (wal.max_sink_retention_bytes); their records are dropped for it");
        }
        let Some(last) = read.entries.last().map(|e: &TailEntry| e.lsn) else {
            // Only a gap: move the cursor past it, so a restart does not count it again.
            if let Some(gap) = &read.missing
                && held.is_none()
            {
                commit(r, gap.end - 1, 0).await;
            }
            continue;
        };
        let records = i64::try_from(routed.read).unwrap_or(i64::MAX);
        r.state
            .records_read
            .fetch_add(routed.read, Ordering::Relaxed);
        r.state
            .records_excluded
            .fetch_add(routed.excluded, Ordering::Relaxed);
        r.state
            .records_dropped_undecodable
            .fetch_add(routed.undecodable, Ordering::Relaxed);
        if held.is_none() {
            r.state
                .oldest_pending_nanos
                .store(routed.first_receive_nanos.unwrap_or(0), Ordering::Relaxed);
        }
        let accepted = if routed.routed.is_empty() {
            0
        } else {
            match deliver(r, s, &routed.routed, &mut backoff).await {
                Some(n) => n,
                // Stopped while retrying: the batch is not finished, the cursor stays.
                None => return Exit::Stopped,
            }
        };
        if s.flush_due().is_some() {
            let (_, r0, a0) = held.unwrap_or((0, 0, 0));
            held = Some((last, r0 + records, a0 + accepted));
        } else {
            let (_, r0, a0) = held.take().unwrap_or((0, 0, 0));
            r.state
                .records_delivered
                .fetch_add(a0 + accepted, Ordering::Relaxed);
            commit(r, last, r0 + records).await;
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn healthy(r: &Runner) {
    if !r.state.healthy.swap(true, Ordering::Relaxed) {
        tracing::info!(sink = %r.definition.config.name, "destination accepts records again");
        r.state.set_error(None);
    }
}

fn unhealthy(r: &Runner, name: &str, e: &SinkError) {
    let text = e.chain();
    if r.state.healthy.swap(false, Ordering::Relaxed) {
        tracing::warn!(sink = %name, error = %text, "destination unavailable; retrying with backoff (ingest and other sinks are unaffected)");
    }
    r.state.set_error(Some(text));
}

/// Saves the cursor at `lsn` after `records` more records are finished with.
async fn commit(r: &Runner, lsn: u64, records: i64) {
    let c = r.cursor.clone();
    match tokio::task::spawn_blocking(move || c.save(lsn)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(sink = %r.definition.config.name, error = %e, "saving the sink cursor failed; records since the last save are sent again after a restart")
        }
        Err(e) => {
            tracing::error!(sink = %r.definition.config.name, error = %e, "sink cursor task failed")
        }
    }
    r.state.cursor.store(lsn, Ordering::Relaxed);
    r.state
        .position_records
        .fetch_add(records, Ordering::Relaxed);
    r.state.oldest_pending_nanos.store(0, Ordering::Relaxed);
}

/// Delivers `routed` until every record is delivered (or, for a gathering sink, accepted) or
/// dead-lettered; returns how many were delivered, or `None` if the sink was stopped first.
async fn deliver(
    r: &mut Runner,
    sink: &mut Box<dyn Sink>,
    routed: &[Routed],
    backoff: &mut Duration,
) -> Option<u64> {
    let mut accepted = 0u64;
    let name = r.definition.config.name.clone();
    let delivery = r.definition.config.delivery.clone();
    let mut todo: Vec<usize> = (0..routed.len()).collect();
    let mut attempts = vec![0u32; routed.len()];
    while !todo.is_empty() {
        if *r.stop.borrow() {
            return None;
        }
        let batch: Vec<&Routed> = todo.iter().map(|&i| &routed[i]).collect();
        r.state.batches.fetch_add(1, Ordering::Relaxed);
        let result = tokio::select! {
            res = sink.send(&batch) => res,
            _ = r.stop.wait_for(|s| *s) => return None,
        };
        match result {
            Err(e) => {
                r.state.retries.fetch_add(1, Ordering::Relaxed);
                unhealthy(r, &name, &e);
                if !pause(&mut r.stop, *backoff).await {
                    return None;
                }
                *backoff = (*backoff * 2).min(delivery.max_backoff);
                if sink.broken() {
                    tracing::warn!(sink = %name, "the destination client is unusable after the error; building a new one");
                    match r
                        .definition
                        .destination
                        .build(&r.definition.config, &r.build)
                        .await
                    {
                        Ok(s) => *sink = s,
                        Err(e) => unhealthy(r, &name, &e),
                    }
                }
            }
            Ok(refused) => {
                let delivered = batch.len() - refused.len();
                accepted += delivered as u64;
                if delivered > 0 || refused.is_empty() {
                    healthy(r);
                    *backoff = delivery.initial_backoff;
                }
                let mut dead = Vec::new();
                let mut again = Vec::new();
                for f in refused {
                    let i = todo[f.index];
                    attempts[i] += 1;
                    if f.permanent || attempts[i] >= delivery.max_attempts {
                        dead.push((i, f.error));
                    } else {
                        again.push(i);
                    }
                }
                if !dead.is_empty() {
                    let now =
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                    let letters: Vec<DeadLetter<'_>> = dead
                        .iter()
                        .map(|(i, e)| DeadLetter {
                            sink: &name,
                            destination: &r.definition.config.destination,
                            time: now.clone(),
                            error: e,
                            attempts: attempts[*i],
                            lsn: routed[*i].lsn,
                            entry: &routed[*i].entry,
                        })
                        .collect();
                    // Durable before the cursor passes them.
                    let lines = super::dead_letter::encode(&letters);
                    let file = r.dead_letter.clone();
                    let written = tokio::task::spawn_blocking(move || file.append(&lines))
                        .await
                        .unwrap_or_else(|e| {
                            Err(crate::Error::io(
                                "dead-letter task",
                                std::io::Error::other(e),
                            ))
                        });
                    match written {
                        Err(e) => {
                            tracing::error!(sink = %name, error = %e, "writing dead letters failed; retrying them");
                            again.extend(dead.iter().map(|(i, _)| *i));
                        }
                        Ok(Appended::Written) => {
                            r.state
                                .records_dead_lettered
                                .fetch_add(dead.len() as u64, Ordering::Relaxed);
                            tracing::warn!(sink = %name, records = dead.len(), file = %r.dead_letter.path().display(), first_error = %dead[0].1, "records refused by the destination were dead-lettered");
                        }
                        Ok(Appended::Full) => {
                            r.state
                                .records_dropped_dead_letter_full
                                .fetch_add(dead.len() as u64, Ordering::Relaxed);
                            tracing::error!(sink = %name, records = dead.len(), file = %r.dead_letter.path().display(), first_error = %dead[0].1, "records refused by the destination were dropped: the dead-letter file is full (delivery.max_dead_letter_bytes)");
                        }
                    }
                }
                again.sort_unstable();
                todo = again;
                if !todo.is_empty() {
                    r.state.retries.fetch_add(1, Ordering::Relaxed);
                    if !pause(&mut r.stop, *backoff).await {
                        return None;
                    }
                    *backoff = (*backoff * 2).min(delivery.max_backoff);
                }
            }
        }
    }
    Some(accepted)
}
