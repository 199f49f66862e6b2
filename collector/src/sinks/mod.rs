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
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod object_export;
#[cfg(feature = "pubsub")]
pub mod pubsub;
pub mod registry;
pub mod route;
pub mod runner;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::buffer::DurableHead;
use crate::config::ParquetConfig;
use crate::error::Result;
pub use definition::{RejectedSink, SinkDefinition, ValidSink};
pub use route::Routed;

/// A boxed future returned by [`Sink`] methods (the trait is used as `dyn Sink`).
pub type SinkFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A destination. The runner hands it filtered records in log order and moves the sink's
/// cursor once they are delivered; implementations only talk to their destination.
pub trait Sink: Send + fmt::Debug {
    /// Sends `records`. `Ok` lists the records the destination refused (by index into
    /// `records`); all others are delivered — or, for a sink that gathers records
    /// ([`flush_due`](Self::flush_due) is `Some`), held until [`flush`](Self::flush).
    /// `Err` means nothing can be said about the batch (the destination is unreachable): the
    /// runner sends it all again later.
    fn send<'a>(
        &'a mut self,
        records: &'a [&'a Routed],
    ) -> SinkFuture<'a, Result<Vec<Refused>, SinkError>>;

    /// Delivers every held record (object storage: writes the files). Streaming sinks hold
    /// nothing.
    fn flush(&mut self) -> SinkFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }

    /// When held records must be flushed; `None` when nothing is held.
    fn flush_due(&self) -> Option<Instant> {
        None
    }

    /// Whether the client is unusable after an error (e.g. a fenced Kafka producer) and must be
    /// built anew before retrying.
    fn broken(&self) -> bool {
        false
    }
}

/// A record the destination refused.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Index into the records given to [`Sink::send`].
    pub index: usize,
    /// Refused for good (too large, invalid): dead-lettered at once. Otherwise retried up to
    /// `delivery.max_attempts`.
    pub permanent: bool,
    pub error: String,
}

/// Why a sink could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The destination cannot be reached or refuses the whole batch for now: retry later.
    #[error("{message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The sink cannot work as defined (a setting the destination refuses): it is stopped and
    /// reported; the other sinks keep running.
    #[error("{message}")]
    Definition {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl SinkError {
    pub fn unavailable(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        SinkError::Unavailable {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    pub fn definition(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        SinkError::Definition {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The message with its causes.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            let _ = write!(s, ": {c}");
            cause = c.source();
        }
        s
    }
}

/// What every destination may use when it is built.
#[derive(Debug, Clone)]
pub struct BuildContext {
    pub parquet: ParquetConfig,
}

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
struct Registry {
    running: BTreeMap<String, Running>,
    rejected: Vec<RejectedSink>,
}

/// Entries deleted from the log before some sink read them: LSN → records.
type LostEntries = BTreeMap<u64, u64>;

/// The running sinks of a collector.
#[derive(Debug)]
pub struct Sinks {
    settings: SinksSettings,
    durable: watch::Receiver<DurableHead>,
    registry: tokio::sync::Mutex<Registry>,
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
            registry: tokio::sync::Mutex::new(Registry::default()),
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
        let mut reg = self.registry.lock().await;
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
                        problems: vec![crate::config::ConfigProblem {
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
        let dead_letter = dead_letter::DeadLetterFile::new(
            definition
                .config
                .delivery
                .dead_letter_file
                .clone()
                .unwrap_or_else(|| {
                    definition::default_dead_letter_file(&self.settings.data_dir, &name)
                }),
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
        let mut reg = self.registry.lock().await;
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

/// The sinks' metrics (`verdict_collector_sink_*{sink="NAME"}`), read at each scrape from the
/// running sinks' states: sinks come and go with reloads, and a removed sink's series go with
/// it.
#[derive(Debug)]
pub struct SinkMetrics {
    sinks: Arc<Sinks>,
}

impl SinkMetrics {
    pub fn new(sinks: Arc<Sinks>) -> SinkMetrics {
        SinkMetrics { sinks }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct SinkLabel {
    sink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct SinkReasonLabel {
    sink: String,
    reason: &'static str,
}

/// Encodes one family: `name` of `kind`, one sample per label set.
fn encode_family<L: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, f64)>,
) -> Result<(), fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let sample = family.encode_family(&labels)?;
        match kind {
            // Counters and gauges of sinks are whole numbers except lag seconds.
            MetricType::Counter => ConstCounter::new(value as u64).encode(sample)?,
            _ => ConstGauge::new(value).encode(sample)?,
        }
    }
    Ok(())
}

impl Collector for SinkMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let sinks = &self.sinks;
        let head = *sinks.durable.borrow();
        let now = verdict_schema::Timestamp::now().unix_nanos();
        let states: Vec<(String, Arc<SinkState>)> = sinks
            .states
            .lock()
            .expect("sink states lock")
            .iter()
            .map(|(n, (_, s))| (n.clone(), Arc::clone(s)))
            .collect();
        let rejected: Vec<String> = sinks
            .rejected
            .lock()
            .expect("sink states lock")
            .iter()
            .map(|r| r.name.clone())
            .collect();
        let per_sink = |get: &dyn Fn(&SinkState) -> f64| {
            states
                .iter()
                .map(|(sink, s)| (SinkLabel { sink: sink.clone() }, get(s)))
                .collect::<Vec<_>>()
        };
        let u = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        type Get = fn(&SinkState) -> f64;
        let counters: [(&str, &str, Get); 7] = [
            (
                "verdict_collector_sink_records_read",
                "Records read from the write-ahead log.",
                |s| g2(&s.records_read) as f64,
            ),
            (
                "verdict_collector_sink_records_excluded",
                "Records not selected by the sink's filter or exclusions.",
                |s| g2(&s.records_excluded) as f64,
            ),
            (
                "verdict_collector_sink_records_delivered",
                "Records the destination acknowledged.",
                |s| g2(&s.records_delivered) as f64,
            ),
            (
                "verdict_collector_sink_records_dead_lettered",
                "Records refused by the destination and written to the dead-letter file.",
                |s| g2(&s.records_dead_lettered) as f64,
            ),
            (
                "verdict_collector_sink_entries_dropped",
                "Write-ahead log entries deleted before the sink read them.",
                |s| g2(&s.entries_dropped) as f64,
            ),
            (
                "verdict_collector_sink_retries",
                "Failed sends retried (destination unavailable or records refused).",
                |s| g2(&s.retries) as f64,
            ),
            (
                "verdict_collector_sink_batches",
                "Batches handed to the destination.",
                |s| g2(&s.batches) as f64,
            ),
        ];
        for (name, help, get) in counters {
            encode_family(
                &mut encoder,
                name,
                help,
                MetricType::Counter,
                per_sink(&get),
            )?;
        }
        encode_family(
            &mut encoder,
            "verdict_collector_sink_cursor_lsn",
            "The sink's durable cursor (write-ahead log sequence number).",
            MetricType::Gauge,
            per_sink(&|s| u(&s.cursor)),
        )?;
        encode_family(
            &mut encoder,
            "verdict_collector_sink_records_dropped",
            "Records a sink will never send, by reason (wal_retention: deleted from the log before the sink read them; undecodable).",
            MetricType::Counter,
            states.iter().flat_map(|(sink, s)| {
                [
                    ("wal_retention", u(&s.records_dropped_retention)),
                    ("undecodable", u(&s.records_dropped_undecodable)),
                ]
                .map(|(reason, v)| {
                    (
                        SinkReasonLabel {
                            sink: sink.clone(),
                            reason,
                        },
                        v,
                    )
                })
            }),
        )?;
        encode_family(
            &mut encoder,
            "verdict_collector_sink_lag_records",
            "Durable records the sink has not finished with.",
            MetricType::Gauge,
            per_sink(&|s| lag(s, head, now).0 as f64),
        )?;
        encode_family(
            &mut encoder,
            "verdict_collector_sink_lag_seconds",
            "Age (since receipt) of the oldest record the sink has read but not finished with; 0 when caught up.",
            MetricType::Gauge,
            per_sink(&|s| lag(s, head, now).1),
        )?;
        encode_family(
            &mut encoder,
            "verdict_collector_sink_up",
            "1 while the destination accepts records, 0 while it fails.",
            MetricType::Gauge,
            per_sink(&|s| {
                f64::from(u8::from(
                    s.healthy.load(Ordering::Relaxed) && !s.failed.load(Ordering::Relaxed),
                ))
            }),
        )?;
        encode_family(
            &mut encoder,
            "verdict_collector_sink_rejected",
            "1 for a sink whose definition was rejected (see the log or GET /sinks).",
            MetricType::Gauge,
            rejected.into_iter().map(|sink| (SinkLabel { sink }, 1.0)),
        )?;
        Ok(())
    }
}

fn g2(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
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
