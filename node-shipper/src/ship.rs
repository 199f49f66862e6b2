//! The shipping loop of one input: read, batch, stream, checkpoint.
//!
//! # Invariants
//!
//! - **At most one batch in flight per input.** The next batch fills while the collector works
//!   on the current one, so batches grow with the collector's latency (adaptive batching) and
//!   memory stays bounded: one batch in flight, one being built, one read ahead — each at most
//!   `batch.max_bytes`. While the collector is unreachable nothing more is read: the records
//!   wait in the node's log files (no spool).
//!   One in flight is also what makes a refused batch recoverable: the collector leaves a
//!   source's watermark where it was after a rejection, and nothing later of the source has
//!   been sent, so the batch can be sent again without the records it refused.
//! - **Checkpoint only what was acknowledged.** The position written is always the last
//!   sequence of an acknowledged (or finally refused) batch; a crash re-sends at most what came
//!   after it, and the collector drops those records as duplicates by its per-source watermark.
//! - **Order per source.** Batches of a source are sent in sequence order; after a broken
//!   stream the unacknowledged batch is sent again first, on a new stream, before anything else.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use verdict_schema::proto::v1;
use verdict_schema::{LossMarker, PolicyActionRecord};

use crate::collector_client::{Backoff, IngestStream};
use crate::config::{BackoffConfig, BatchConfig, Secret};
use crate::input::{Input, Position, Run, SourceInfo, save_position};
use crate::metrics::{DropReason, InputMetrics, mark_checkpoint};

/// What the loop of one input needs besides the input.
#[derive(Debug, Clone)]
pub struct ShipSettings {
    pub node: v1::NodeIdentity,
    pub batch: BatchConfig,
    pub poll_interval: Duration,
    pub checkpoint_interval: Duration,
    pub checkpoint_file: PathBuf,
    pub backoff: BackoffConfig,
    pub shutdown_timeout: Duration,
    pub token: Option<Secret>,
    /// Re-read before each new stream (see [`crate::config::Config::token_file`]).
    pub token_file: Option<std::path::PathBuf>,
}

/// The token to open a stream with: the token file's current content, else (unreadable: logged)
/// the last token read.
fn current_token(settings: &ShipSettings, last: &mut Option<String>) -> Option<String> {
    if let Some(path) = &settings.token_file {
        match crate::config::read_token_file(path) {
            Ok(t) => *last = Some(t.expose().to_owned()),
            Err(e) => tracing::warn!(
                file = %path.display(),
                "the token file cannot be read (the last token read is used): {e}"
            ),
        }
    }
    last.clone()
}

#[derive(Debug)]
struct Building {
    source: Arc<SourceInfo>,
    records: Vec<v1::Record>,
    bytes: usize,
    started: Instant,
}

#[derive(Debug)]
struct InFlight {
    source: Arc<SourceInfo>,
    /// The batch as sent, shared with the stream (its `batch_id` is set per send).
    batch: Arc<v1::Batch>,
    bytes: usize,
    first_read: Instant,
    /// The batch id on the current stream; None until (re)sent.
    batch_id: Option<u64>,
    sent_before: bool,
}

impl InFlight {
    fn new(b: Building, node: &v1::NodeIdentity) -> InFlight {
        let batch = v1::Batch {
            schema_version: verdict_schema::proto::SCHEMA_VERSION as i32,
            batch_id: 0,
            node: Some(node.clone()),
            source: Some(v1::Source {
                id: b.source.id.clone(),
                kind: b.source.kind as i32,
                path: b.source.path.display().to_string(),
            }),
            records: b.records,
        };
        InFlight {
            source: b.source,
            batch: Arc::new(batch),
            bytes: b.bytes,
            first_read: b.started,
            batch_id: None,
            sent_before: false,
        }
    }

    fn records(&self) -> &[v1::Record] {
        &self.batch.records
    }

    fn last_sequence(&self) -> Option<u64> {
        self.records().last().map(|r| r.sequence)
    }
}

/// Moves records from `carry` into the batch being built while they belong to its source and
/// fit. Returns whether the batch must go now (full, or the next record is another source's).
fn fill(carry: &mut VecDeque<Run>, building: &mut Option<Building>, limits: &BatchConfig) -> bool {
    while let Some(run) = carry.front_mut() {
        let b = building.get_or_insert_with(|| Building {
            source: Arc::clone(&run.source),
            records: Vec::with_capacity(limits.max_records.min(run.entries.len().max(1024))),
            bytes: 0,
            started: Instant::now(),
        });
        if !Arc::ptr_eq(&b.source, &run.source) && b.source.id != run.source.id {
            return !b.records.is_empty();
        }
        let mut taken = 0;
        let mut bytes = b.bytes;
        for e in &run.entries {
            if (!b.records.is_empty() || taken > 0)
                && (b.records.len() + taken + 1 > limits.max_records
                    || bytes + e.bytes > limits.max_bytes)
            {
                break;
            }
            bytes += e.bytes;
            taken += 1;
        }
        b.bytes = bytes;
        // Move the entries (their payloads are shared slices: no copy) into the batch.
        b.records
            .extend(run.entries.drain(..taken).map(|e| v1::Record {
                sequence: e.sequence,
                log_id: e.log_id as i32,
                payload: Some(e.payload),
            }));
        if run.entries.is_empty() {
            carry.pop_front();
        } else {
            return true;
        }
    }
    building
        .as_ref()
        .is_some_and(|b| b.records.len() >= limits.max_records || b.bytes >= limits.max_bytes)
}

/// Why a record of a refused batch is invalid, checked the way the collector checks it.
fn invalid_reason(r: &v1::Record) -> Option<String> {
    let log = v1::LogId::try_from(r.log_id).unwrap_or(v1::LogId::Unknown);
    match (&r.payload, log) {
        (Some(v1::record::Payload::JsonLine(line)), v1::LogId::PolicyAction) => {
            serde_json::from_slice::<PolicyActionRecord>(line)
                .err()
                .map(|e| format!("not a policy-action record: {e}"))
        }
        (Some(v1::record::Payload::JsonLine(line)), v1::LogId::PolicyActionLoss) => {
            serde_json::from_slice::<LossMarker>(line)
                .err()
                .map(|e| format!("not a loss marker: {e}"))
        }
        (Some(v1::record::Payload::Flow(f)), _) => PolicyActionRecord::try_from(f.as_ref())
            .err()
            .map(|e| e.to_string()),
        _ => Some("no payload or log id".into()),
    }
}

/// The sequence a rejection message names (`record 3 (sequence 4096): …`).
fn named_sequence(message: &str) -> Option<u64> {
    let rest = &message[message.find("(sequence ")? + "(sequence ".len()..];
    rest[..rest.find(')')?].parse().ok()
}

/// Ships `input` until `shutdown` is cancelled, then flushes what was read (for up to the
/// shutdown timeout) and writes the final checkpoint.
pub async fn ship(
    mut input: Box<dyn Input>,
    channel: Channel,
    settings: ShipSettings,
    metrics: Arc<InputMetrics>,
    shutdown: CancellationToken,
) {
    let name = input.name();
    let limits = settings.batch.clone();
    let mut token = settings.token.as_ref().map(|t| t.expose().to_owned());
    let mut backoff = Backoff::new(settings.backoff.clone());
    let mut carry: VecDeque<Run> = VecDeque::new();
    let mut building: Option<Building> = None;
    let mut in_flight: Option<InFlight> = None;
    let mut stream: Option<IngestStream> = None;
    let mut retry_at = Instant::now();
    let mut next_poll = Instant::now();
    let mut pending_checkpoint: Option<Position> = None;
    let mut last_checkpoint = Instant::now();
    let mut last_gauges = Instant::now() - Duration::from_secs(10);
    let mut stopping: Option<Instant> = None;

    loop {
        let now = Instant::now();
        // 1. Read ahead, at most one batch's worth beyond the batch being built.
        let carried: usize = carry
            .iter()
            .map(|r| r.entries.iter().map(|e| e.bytes).sum::<usize>())
            .sum();
        if stopping.is_none() && now >= next_poll && carried < limits.max_bytes {
            match input.read(limits.max_bytes - carried) {
                Ok(runs) if runs.is_empty() => next_poll = now + settings.poll_interval,
                Ok(runs) => carry.extend(runs),
                Err(e) => {
                    tracing::warn!(input = name, "reading failed (retrying): {e}");
                    next_poll = now + settings.poll_interval;
                }
            }
        }
        let full = fill(&mut carry, &mut building, &limits);
        let ready = building
            .as_ref()
            .is_some_and(|b| full || b.started + limits.max_age <= now || stopping.is_some());

        // 2. A stream, when there is something to send.
        if stream.is_none() && (in_flight.is_some() || ready) && now >= retry_at {
            let current = current_token(&settings, &mut token);
            match IngestStream::open(channel.clone(), current.as_deref()).await {
                Ok(s) => stream = Some(s),
                Err(status) => {
                    metrics.stream_failures.inc();
                    let wait = backoff.fail();
                    retry_at = Instant::now() + wait;
                    tracing::warn!(input = name, code = ?status.code(),
                        "cannot open a stream to the collector (retry in {wait:?}): {}", status.message());
                }
            }
        }

        // 3. Send: the unacknowledged batch again after a reconnect, else the next one.
        if let Some(s) = stream.as_mut() {
            if in_flight.is_none() && ready {
                let b = building.take().expect("ready implies a batch");
                metrics.records_shipped.inc_by(b.records.len() as u64);
                in_flight = Some(InFlight::new(b, &settings.node));
            }
            if let Some(f) = in_flight.as_mut()
                && f.batch_id.is_none()
            {
                if f.sent_before {
                    metrics.records_retried.inc_by(f.records().len() as u64);
                }
                match s.send(Arc::clone(&f.batch)).await {
                    Ok(id) => {
                        f.batch_id = Some(id);
                        f.sent_before = true;
                    }
                    Err(status) => {
                        stream = None;
                        metrics.stream_failures.inc();
                        retry_at = Instant::now() + backoff.fail();
                        tracing::warn!(input = name, "stream broke: {}", status.message());
                    }
                }
            }
        }

        // 4. Done?
        if let Some(deadline) = stopping {
            let flushed = in_flight.is_none() && building.is_none();
            if flushed || Instant::now() >= deadline {
                if !flushed {
                    tracing::warn!(
                        input = name,
                        "shutdown timeout: unacknowledged records stay in the log and are sent after restart"
                    );
                }
                break;
            }
        }

        // 5. Gauges and the periodic checkpoint.
        if now.duration_since(last_gauges) >= Duration::from_millis(500) {
            last_gauges = now;
            let in_memory = carried
                + building.as_ref().map_or(0, |b| b.bytes)
                + in_flight.as_ref().map_or(0, |f| f.bytes);
            metrics
                .lag_bytes
                .set(i64::try_from(input.unread_bytes() + in_memory as u64).unwrap_or(i64::MAX));
            let oldest = in_flight
                .as_ref()
                .map(|f| f.first_read)
                .or(building.as_ref().map(|b| b.started));
            metrics.lag_seconds.set(oldest.map_or(0.0, |t| {
                // Milliseconds, as the exposition showed them before.
                (now.duration_since(t).as_millis() as f64) / 1000.0
            }));
        }
        if pending_checkpoint.is_some()
            && now.duration_since(last_checkpoint) >= settings.checkpoint_interval
        {
            write_checkpoint(&settings, &mut pending_checkpoint, &metrics, name).await;
            last_checkpoint = now;
        }

        // 6. Wait for an acknowledgement, the next poll, a batch's age, a retry, or shutdown.
        let mut wake = now + settings.checkpoint_interval.max(Duration::from_millis(50));
        if stopping.is_none() && carried < limits.max_bytes {
            wake = wake.min(next_poll);
        }
        // A batch's age matters only when it could be sent; with one in flight the
        // acknowledgement is what we wait for (else this would spin on a past deadline).
        if let Some(b) = &building
            && in_flight.is_none()
        {
            wake = wake.min(b.started + limits.max_age);
        }
        // The retry time matters only for something that would be sent (a building batch that
        // is not ready yet is woken for by its age above; waking for a past retry time instead
        // would spin until it is).
        if stream.is_none() && (in_flight.is_some() || ready) {
            wake = wake.min(retry_at);
        }
        if let Some(d) = stopping {
            wake = wake.min(d);
        }
        let awaiting = in_flight.as_ref().is_some_and(|f| f.batch_id.is_some());
        tokio::select! {
            result = async { stream.as_mut().expect("awaiting implies a stream").next().await }, if awaiting && stream.is_some() => {
                match result {
                    Ok(r) => {
                        let f = in_flight.take().expect("awaiting implies a batch");
                        if Some(r.batch_id) != f.batch_id {
                            tracing::warn!(input = name, "the collector answered batch {} for {:?}; reconnecting", r.batch_id, f.batch_id);
                            in_flight = Some(InFlight { batch_id: None, ..f });
                            stream = None;
                            continue;
                        }
                        backoff.reset();
                        in_flight = settle(f, r, &metrics, &mut pending_checkpoint, name);
                    }
                    Err(status) => {
                        stream = None;
                        metrics.stream_failures.inc();
                        let wait = backoff.fail();
                        retry_at = Instant::now() + wait;
                        if let Some(f) = in_flight.as_mut() {
                            f.batch_id = None;
                        }
                        tracing::warn!(input = name, code = ?status.code(),
                            "stream to the collector broke (resending in {wait:?}): {}", status.message());
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
            _ = shutdown.cancelled(), if stopping.is_none() => {
                stopping = Some(Instant::now() + settings.shutdown_timeout);
            }
        }
    }
    write_checkpoint(&settings, &mut pending_checkpoint, &metrics, name).await;
    metrics.lag_seconds.set(0.0);
}

/// Applies a batch's result. Returns the batch to send again (without refused records), if any.
fn settle(
    mut f: InFlight,
    r: v1::BatchResult,
    metrics: &InputMetrics,
    pending_checkpoint: &mut Option<Position>,
    name: &str,
) -> Option<InFlight> {
    let Some(rejection) = r.rejection else {
        metrics.records_acked.inc_by(f.records().len() as u64);
        metrics.batches_acked.inc();
        if let Some(last) = f.last_sequence() {
            *pending_checkpoint = Some(f.source.origin.at(last));
        }
        return None;
    };
    let last = f.last_sequence();
    let path = f.source.path.display().to_string();
    // Find what the collector refused: every record it would refuse, else the one it names.
    let before = f.records().len();
    let mut refused = Vec::new();
    // The stream is done with the batch by now; if not, this takes a copy.
    let records = &mut Arc::make_mut(&mut f.batch).records;
    records.retain(|rec| match invalid_reason(rec) {
        Some(why) => {
            refused.push((rec.sequence, why));
            false
        }
        None => true,
    });
    if refused.is_empty()
        && let Some(seq) = named_sequence(&rejection.message)
    {
        records.retain(|rec| rec.sequence != seq);
        refused.push((seq, rejection.message.clone()));
    }
    if refused.is_empty() {
        // Nothing we can take out to make it acceptable: the whole batch is dropped.
        metrics.count_drop(DropReason::Rejected, before as u64);
        tracing::error!(
            input = name,
            "batch of {before} records from {path} (source {}) refused and dropped: {}",
            f.source.id,
            rejection.message
        );
    } else {
        metrics.count_drop(DropReason::Malformed, refused.len() as u64);
        for (seq, why) in &refused {
            tracing::warn!(
                input = name,
                "malformed record skipped: {path} (source {}) line ending at offset {seq}: {why}",
                f.source.id
            );
        }
        if !records.is_empty() {
            f.batch_id = None;
            f.sent_before = false;
            f.bytes = records
                .iter()
                .map(|r| match &r.payload {
                    Some(v1::record::Payload::JsonLine(l)) => l.len(),
                    _ => 64,
                })
                .sum();
            return Some(f);
        }
    }
    if let Some(last) = last {
        *pending_checkpoint = Some(f.source.origin.at(last));
    }
    None
}

async fn write_checkpoint(
    settings: &ShipSettings,
    pending: &mut Option<Position>,
    metrics: &Arc<InputMetrics>,
    name: &str,
) {
    let Some(position) = pending.take() else {
        return;
    };
    let path = settings.checkpoint_file.clone();
    let p = position.clone();
    match tokio::task::spawn_blocking(move || save_position(&path, &p)).await {
        Ok(Ok(())) => mark_checkpoint(metrics),
        Ok(Err(e)) => {
            tracing::warn!(
                input = name,
                "checkpoint {}: {e}",
                settings.checkpoint_file.display()
            );
            *pending = Some(position);
        }
        Err(e) => {
            tracing::warn!(input = name, "checkpoint task: {e}");
            *pending = Some(position);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Entry, Origin};

    fn run(id: &str, seqs: &[u64]) -> Run {
        Run {
            source: Arc::new(SourceInfo {
                id: id.into(),
                kind: v1::SourceKind::PolicyActionLog,
                path: "/x".into(),
                origin: Origin::Kmsg { boot_id: id.into() },
            }),
            entries: seqs
                .iter()
                .map(|s| Entry {
                    sequence: *s,
                    log_id: v1::LogId::PolicyAction,
                    payload: v1::record::Payload::JsonLine(vec![b'x'; 10].into()),
                    bytes: 10,
                })
                .collect(),
        }
    }

    #[test]
    fn batches_close_on_size_count_and_source_change() {
        let limits = BatchConfig {
            max_records: 3,
            max_bytes: 25,
            max_age: Duration::from_secs(1),
        };
        let mut carry: VecDeque<Run> = [run("a", &[1, 2]), run("b", &[3])].into();
        let mut b = None;
        assert!(
            fill(&mut carry, &mut b, &limits),
            "b's record cannot join a's batch"
        );
        assert_eq!(b.as_ref().unwrap().records.len(), 2);
        assert_eq!(carry.len(), 1);
        b = None;
        let mut carry: VecDeque<Run> = [run("a", &[1, 2, 3, 4])].into();
        assert!(
            fill(&mut carry, &mut b, &limits),
            "25 bytes hold two 10-byte records"
        );
        assert_eq!(
            b.as_ref()
                .unwrap()
                .records
                .iter()
                .map(|r| r.sequence)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(carry[0].entries.len(), 2);
        assert!(b.unwrap().records.iter().all(|r| r.payload.is_some()));
    }

    #[test]
    fn rejection_messages_name_a_sequence() {
        assert_eq!(
            named_sequence("record 3 (sequence 4096): not a policy-action record: x"),
            Some(4096)
        );
        assert_eq!(named_sequence("node.project_id is missing"), None);
    }
}
