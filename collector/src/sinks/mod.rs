//! Sinks: route stored records to Kafka, Pub/Sub and object storage, each through its own
//! filters, at least once, without ever slowing ingest.
//!
//! # The delivery invariant
//!
//! 1. **Sinks read only durable records.** A sink follows the write-ahead log ([`crate::wal`])
//!    up to the writer's published [`DurableHead`]: entries are fsynced and applied before the
//!    head moves past them. Ingest never waits for a sink — the writer only publishes a number.
//! 2. **Each sink has its own durable cursor** ([`cursor`]): the LSN of the last entry whose
//!    every record was delivered (acknowledged by the destination: a Kafka delivery report,
//!    a Pub/Sub publish response, an uploaded object), dead-lettered with its error
//!    ([`dead_letter`]), or filtered out. It is saved only after that, so after any crash the
//!    sink resumes after its cursor and re-sends at most what followed it: at least once.
//!    Consumers dedup by `insertId` (stable, derived from node, source and sequence).
//! 3. **The log outlives every running sink's cursor, up to a bound.** A segment is deleted
//!    once it is committed to Parquet *and* every running sink's cursor is past it — except
//!    that segments kept only for sinks may hold at most `wal.max_sink_retention_bytes`; past
//!    that the oldest are deleted anyway, and a sink that had not read them counts their
//!    records in `verdict_collector_sink_records_dropped_total{reason="wal_retention"}` and
//!    continues after them (after a restart the count of such a gap is not known and only its
//!    entries are counted, `…_sink_entries_dropped_total`). A sink that is down for a long
//!    time therefore costs disk up to that bound, never memory and never ingest throughput,
//!    and catches up from its cursor when the destination returns.
//! 4. **Failures are bounded and counted.** An unreachable destination is retried with
//!    exponential backoff (`delivery.initial_backoff` … `max_backoff`) without limit — the sink
//!    lags, its lag (records and seconds) is a metric. A record the destination refuses for
//!    good, or keeps refusing `delivery.max_attempts` times while accepting others, goes to
//!    the sink's dead-letter file with the error. Every record read is counted as delivered,
//!    excluded, dead-lettered or dropped.
//!
//! A new sink starts at the newest durable record (like a Cloud Logging sink, it routes what
//! arrives after it is created). A removed sink's cursor stops holding the log; re-adding the
//! name resumes from the old cursor when the log still holds it. Definitions are validated one
//! by one ([`config`]): a bad one is rejected with its name, the others run; [`Sinks::apply`]
//! re-reads definitions at run time (the binary calls it on SIGHUP), restarting only sinks
//! whose definition changed.
//!
//! Modules: [`definition`] (definitions and validation), [`registry`] (the destinations),
//! [`cursor`], [`dead_letter`], [`route`] (entries to filtered LogEntries), [`runner`] (the
//! per-sink task), and one folder per destination holding its settings and its [`Sink`]:
//! `kafka` (cargo feature `kafka`), `pubsub` (cargo feature `pubsub`), [`object_export`].

pub mod cursor;
pub mod dead_letter;
pub mod definition;
pub mod destination;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod metrics;
pub mod object_export;
#[cfg(feature = "pubsub")]
pub mod pubsub;
pub mod registry;
pub mod route;
pub mod runner;
pub mod sink;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::registry::{RejectedSink, SinkDefinition, ValidSink};
use self::runner::{LostEntries, SinkState};
use self::sink::BuildContext;
use crate::buffer::DurableHead;
use crate::error::Result;

/// Settings of the sinks as a whole.
#[derive(Debug, Clone)]
pub struct SinksSettings {
    pub wal_dir: PathBuf,
    pub data_dir: PathBuf,
    pub max_retention_bytes: u64,
    pub build: BuildContext,
}

#[derive(Debug)]
struct Running {
    definition: ValidSink,
    state: Arc<SinkState>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct RunningSinks {
    running: BTreeMap<String, Running>,
    rejected: Vec<RejectedSink>,
}

/// The running sinks of a collector.
#[derive(Debug)]
pub struct Sinks {
    settings: SinksSettings,
    durable: watch::Receiver<DurableHead>,
    running: tokio::sync::Mutex<RunningSinks>,
    /// What `/metrics` and the log truncation see (a std lock: never held across I/O).
    states: Mutex<BTreeMap<String, (String, Arc<SinkState>)>>,
    rejected: Mutex<Vec<RejectedSink>>,
    lost: Arc<Mutex<LostEntries>>,
}

/// What [`Sinks::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub started: Vec<String>,
    pub restarted: Vec<String>,
    pub unchanged: Vec<String>,
    pub stopped: Vec<String>,
    pub rejected: Vec<RejectedSink>,
}

/// How long a stopping sink may take to flush what it holds.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// One sink's status, for `GET /sinks`.
#[derive(Debug, Clone, Serialize)]
pub struct SinkStatus {
    pub name: String,
    pub destination: String,
    /// `running`, `failing` (retrying), `stopped` (definition refused by the destination) or
    /// `rejected` (invalid definition).
    pub state: &'static str,
    pub cursor_lsn: Option<u64>,
    pub lag_records: Option<i64>,
    pub lag_seconds: Option<f64>,
    pub error: Option<String>,
}

impl Sinks {
    pub fn new(settings: SinksSettings, durable: watch::Receiver<DurableHead>) -> Sinks {
        Sinks {
            settings,
            durable,
            running: tokio::sync::Mutex::new(RunningSinks::default()),
            states: Mutex::new(BTreeMap::new()),
            rejected: Mutex::new(Vec::new()),
            lost: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// Makes the running sinks those `definitions` describe: starts new ones, restarts changed
    /// ones (keeping their cursors), stops removed or disabled ones, leaves unchanged ones
    /// alone. Invalid definitions are rejected by name (an invalid definition of a running
    /// sink stops it: what runs is always what the file says).
    pub async fn apply(&self, definitions: &[SinkDefinition]) -> ApplyReport {
        let mut valid = Vec::new();
        let mut rejected = Vec::new();
        for d in definitions {
            match d {
                SinkDefinition::Valid(v) => valid.push(v.as_ref().clone()),
                SinkDefinition::Rejected(r) => rejected.push(r.clone()),
            }
        }
        for r in &rejected {
            tracing::error!(sink = %r.name, "{r}");
        }
        let mut report = ApplyReport {
            rejected: rejected.clone(),
            ..ApplyReport::default()
        };
        let mut reg = self.running.lock().await;
        let wanted: BTreeMap<String, ValidSink> = valid
            .into_iter()
            .filter(|v| !v.config.disabled)
            .map(|v| (v.config.name.clone(), v))
            .collect();
        let names: Vec<String> = reg.running.keys().cloned().collect();
        for name in names {
            let same = wanted
                .get(&name)
                .is_some_and(|w| *w == reg.running[&name].definition);
            if same && !reg.running[&name].state.failed.load(Ordering::Relaxed) {
                report.unchanged.push(name);
                continue;
            }
            let running = reg.running.remove(&name).expect("listed above");
            stop_runner(&name, running.stop, running.task).await;
            if !wanted.contains_key(&name) {
                self.states.lock().expect("sink states lock").remove(&name);
                report.stopped.push(name);
            }
        }
        for (name, definition) in wanted {
            if reg.running.contains_key(&name) {
                continue;
            }
            let restarted = self
                .states
                .lock()
                .expect("sink states lock")
                .contains_key(&name);
            match self.start(definition).await {
                Ok(running) => {
                    self.states.lock().expect("sink states lock").insert(
                        name.clone(),
                        (
                            running.definition.config.destination.clone(),
                            Arc::clone(&running.state),
                        ),
                    );
                    reg.running.insert(name.clone(), running);
                    if restarted {
                        report.restarted.push(name);
                    } else {
                        report.started.push(name);
                    }
                }
                Err(e) => {
                    let r = RejectedSink {
                        name: name.clone(),
                        problems: vec![crate::config::values::ConfigProblem {
                            setting: format!("sinks.{name}"),
                            message: format!("cannot start: {e}"),
                        }],
                    };
                    tracing::error!(sink = %name, "{r}");
                    self.states.lock().expect("sink states lock").remove(&name);
                    report.rejected.push(r);
                }
            }
        }
        reg.rejected = report.rejected.clone();
        *self.rejected.lock().expect("sink states lock") = report.rejected.clone();
        tracing::info!(
            started = ?report.started,
            restarted = ?report.restarted,
            unchanged = ?report.unchanged,
            stopped = ?report.stopped,
            rejected = report.rejected.len(),
            "sinks applied"
        );
        report
    }

    async fn start(&self, definition: ValidSink) -> Result<Running> {
        let name = definition.config.name.clone();
        let cursor = cursor::CursorFile::new(&self.settings.wal_dir, &name);
        let head = *self.durable.borrow();
        let saved = {
            let c = cursor.clone();
            tokio::task::spawn_blocking(move || c.load())
                .await
                .map_err(|e| crate::Error::io("sink cursor task", std::io::Error::other(e)))??
        };
        let start = match saved {
            Some(lsn) if lsn <= head.lsn => lsn,
            Some(lsn) => {
                tracing::warn!(sink = %name, cursor = lsn, head = head.lsn, "the sink's cursor is past the log's end (was the write-ahead log replaced?); starting at the end");
                head.lsn
            }
            None => head.lsn,
        };
        if saved != Some(start) {
            let c = cursor.clone();
            tokio::task::spawn_blocking(move || c.save(start))
                .await
                .map_err(|e| crate::Error::io("sink cursor task", std::io::Error::other(e)))??;
        }
        // Records between the cursor and the head: the initial lag.
        let backlog = if start < head.lsn {
            let dir = self.settings.wal_dir.clone();
            tokio::task::spawn_blocking(move || crate::wal::count_records(&dir, start, head.lsn))
                .await
                .map_err(|e| crate::Error::io("sink backlog task", std::io::Error::other(e)))??
        } else {
            0
        };
        let existing = self
            .states
            .lock()
            .expect("sink states lock")
            .get(&name)
            .map(|(_, s)| Arc::clone(s));
        let state = existing.unwrap_or_default();
        state.cursor.store(start, Ordering::Relaxed);
        state.position_records.store(
            i64::try_from(head.records).unwrap_or(i64::MAX) - i64::try_from(backlog).unwrap_or(0),
            Ordering::Relaxed,
        );
        state.failed.store(false, Ordering::Relaxed);
        state.healthy.store(true, Ordering::Relaxed);
        state.set_error(None);
        let (stop, stop_rx) = watch::channel(false);
        let delivery = &definition.config.delivery;
        let dead_letter = dead_letter::DeadLetterFile::new(
            delivery.dead_letter_file.clone().unwrap_or_else(|| {
                definition::default_dead_letter_file(&self.settings.data_dir, &name)
            }),
            delivery.max_dead_letter_bytes.0,
        );
        let task = tokio::spawn(runner::run(runner::Runner {
            definition: definition.clone(),
            build: self.settings.build.clone(),
            state: Arc::clone(&state),
            wal_dir: self.settings.wal_dir.clone(),
            cursor,
            dead_letter,
            head: self.durable.clone(),
            stop: stop_rx,
            lost: Arc::clone(&self.lost),
            start,
        }));
        tracing::info!(sink = %name, destination = %definition.config.destination, cursor = start, backlog, "sink started");
        Ok(Running {
            definition,
            state,
            stop,
            task,
        })
    }

    /// Stops every sink (each flushes what it holds, within a grace period).
    pub async fn stop_all(&self) {
        let mut reg = self.running.lock().await;
        let running = std::mem::take(&mut reg.running);
        for (name, r) in running {
            stop_runner(&name, r.stop, r.task).await;
        }
    }

    /// The LSN through which the log may be truncated, given that flushes committed everything
    /// through `committed_lsn` (blocking: reads segment sizes; run it off the runtime).
    pub fn truncation_point(&self, committed_lsn: u64) -> Result<u64> {
        let cursors: Vec<u64> = self
            .states
            .lock()
            .expect("sink states lock")
            .values()
            .map(|(_, s)| s.cursor.load(Ordering::Relaxed))
            .collect();
        let Some(&slowest) = cursors.iter().min() else {
            self.lost.lock().expect("lost entries lock").clear();
            return Ok(committed_lsn);
        };
        self.lost
            .lock()
            .expect("lost entries lock")
            .retain(|lsn, _| *lsn > slowest);
        if slowest >= committed_lsn {
            return Ok(committed_lsn);
        }
        let mut floor = slowest;
        let segs = crate::wal::segment_sizes(&self.settings.wal_dir)?;
        // Segments deletable by the commit log but kept for sinks, oldest first.
        let mut kept: Vec<(u64, u64, u64)> = Vec::new(); // (first, last, bytes)
        for (i, (first, bytes)) in segs.iter().enumerate() {
            let Some((next, _)) = segs.get(i + 1) else {
                break;
            };
            let last = next - 1;
            if last <= committed_lsn && last > slowest {
                kept.push((*first, last, *bytes));
            }
        }
        let mut retained: u64 = kept.iter().map(|k| k.2).sum();
        for (first, last, bytes) in kept {
            if retained <= self.settings.max_retention_bytes {
                break;
            }
            let counts = crate::wal::segment_record_counts(&self.settings.wal_dir, first)?;
            let mut lost = self.lost.lock().expect("lost entries lock");
            for (lsn, n) in counts {
                if lsn > slowest {
                    lost.insert(lsn, n);
                }
            }
            drop(lost);
            tracing::warn!(
                segment_first_lsn = first,
                segment_last_lsn = last,
                slowest_sink_cursor = slowest,
                max = self.settings.max_retention_bytes,
                "write-ahead log kept for lagging sinks exceeds wal.max_sink_retention_bytes; deleting a segment they have not read"
            );
            floor = last;
            retained -= bytes;
        }
        Ok(floor.min(committed_lsn))
    }

    /// Status of every sink, valid or not.
    pub fn status(&self) -> Vec<SinkStatus> {
        let head = *self.durable.borrow();
        let now = verdict_schema::Timestamp::now().unix_nanos();
        let mut out: Vec<SinkStatus> = self
            .states
            .lock()
            .expect("sink states lock")
            .iter()
            .map(|(name, (destination, s))| {
                let (lag_records, lag_seconds) = lag(s, head, now);
                SinkStatus {
                    name: name.clone(),
                    destination: destination.clone(),
                    state: if s.failed.load(Ordering::Relaxed) {
                        "stopped"
                    } else if s.healthy.load(Ordering::Relaxed) {
                        "running"
                    } else {
                        "failing"
                    },
                    cursor_lsn: Some(s.cursor.load(Ordering::Relaxed)),
                    lag_records: Some(lag_records),
                    lag_seconds: Some(lag_seconds),
                    error: s.last_error.lock().expect("sink state lock").clone(),
                }
            })
            .collect();
        for r in self.rejected.lock().expect("sink states lock").iter() {
            out.push(SinkStatus {
                name: r.name.clone(),
                destination: String::new(),
                state: "rejected",
                cursor_lsn: None,
                lag_records: None,
                lag_seconds: None,
                error: Some(r.to_string()),
            });
        }
        out
    }
}

/// (records, seconds) a sink lags the durable head.
fn lag(s: &SinkState, head: DurableHead, now_nanos: i64) -> (i64, f64) {
    let records = (i64::try_from(head.records).unwrap_or(i64::MAX)
        - s.position_records.load(Ordering::Relaxed))
    .max(0);
    let oldest = s.oldest_pending_nanos.load(Ordering::Relaxed);
    let secs = if oldest == 0 {
        0.0
    } else {
        (now_nanos - oldest).max(0) as f64 / 1e9
    };
    (records, secs)
}

async fn stop_runner(name: &str, stop: watch::Sender<bool>, mut task: JoinHandle<()>) {
    let _ = stop.send(true);
    if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
        tracing::warn!(sink = %name, "the sink did not stop within {STOP_GRACE:?}; aborted (it resumes from its cursor)");
        task.abort();
        let _ = task.await;
    }
}
