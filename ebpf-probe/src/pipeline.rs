//! The logging pipeline: verdict events in, GKE policy-action lines out — exactly
//! docs/design.md, "Logging semantics (GKE Dataplane V2)":
//!
//! 1. judge logging with the engine's decision (NetworkLogging, delegate annotations, kubelet
//!    probes, unisolated pods) using the policy generation the event was decided with;
//! 2. enrich into a record (pod, workload, node; `{instance}` for non-pods); audit-mode records
//!    carry `enforcement: "audit"`;
//! 3. aggregate denies over 5 s (bounded table; overflow is dropped and counted);
//! 4. rate-limit emitted records (default 500/s, no burst; drops counted as records and
//!    connections);
//! 5. account every drop in one-second loss markers for `policy_action_loss.log`.
//!
//! The pipeline does no IO and reads no clock: callers pass `now`, so it is deterministic and
//! tests drive it with a paused tokio clock. Output accumulates in [`Output`] buffers that the
//! agent hands to the writer thread.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use verdict_policy::engine::{EnforcementMode, Flow, SideVerdict};
use verdict_schema::{
    Direction, Disposition, Enforcement, LossMarker, LossReason, PolicyActionRecord, Timestamp,
};

use crate::aggregation::{Added, DenyAggregator};
use crate::event::VerdictEvent;
use crate::log_writer::Output;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use verdict_cluster::{Generations, PolicySnapshot};

/// GKE's per-node limit.
pub const DEFAULT_RATE_LIMIT: u32 = 500;
/// GKE's deny aggregation window.
pub const DEFAULT_AGGREGATION_WINDOW: Duration = Duration::from_secs(5);
/// Open deny windows kept at most (about 4 MB); past it, new denies are dropped and counted.
pub const DEFAULT_MAX_AGGREGATION_ENTRIES: usize = 16_384;
/// How long a superseded policy generation stays available for late events.
pub const DEFAULT_GENERATION_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// This node's name (records' `node_name` come from the enforced pod; this names loss markers).
    pub node_name: String,
    /// Records per second; 0 disables the limit.
    pub rate_limit: u32,
    pub aggregation_window: Duration,
    pub max_aggregation_entries: usize,
    pub generation_grace: Duration,
}

impl PipelineConfig {
    pub fn with_generation_grace(mut self, grace: Duration) -> Self {
        self.generation_grace = grace;
        self
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            node_name: String::new(),
            rate_limit: DEFAULT_RATE_LIMIT,
            aggregation_window: DEFAULT_AGGREGATION_WINDOW,
            max_aggregation_entries: DEFAULT_MAX_AGGREGATION_ENTRIES,
            generation_grace: DEFAULT_GENERATION_GRACE,
        }
    }
}

/// Counters kept without atomics on the hot path, published per batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    pub allowed_connections: u64,
    pub denied_connections: u64,
    pub audit_denied_connections: u64,
    pub generated_allow: u64,
    pub generated_deny: u64,
    pub ratelimit_dropped_logs: u64,
    pub ratelimit_dropped_connections: u64,
    pub aggregation_failures: u64,
    pub lost_events: u64,
    pub unknown_generation_events: u64,
}

const LOSS_INTERVAL_NANOS: i64 = 1_000_000_000;

/// Drops of the current one-second interval, by (reason, disposition).
#[derive(Debug, Default)]
struct LossCounter {
    node_name: String,
    interval_start: Option<i64>,
    counts: BTreeMap<(LossReason, Option<Disposition>), (u64, u64)>,
}

impl LossCounter {
    fn add(
        &mut self,
        reason: LossReason,
        d: Option<Disposition>,
        records: u64,
        connections: u64,
        now: i64,
        out: &mut Vec<u8>,
    ) {
        if self
            .interval_start
            .is_some_and(|s| now >= s + LOSS_INTERVAL_NANOS)
        {
            self.flush(out);
        }
        self.interval_start
            .get_or_insert(now - now.rem_euclid(LOSS_INTERVAL_NANOS));
        let e = self.counts.entry((reason, d)).or_default();
        e.0 += records;
        e.1 += connections;
    }

    fn flush_due(&mut self, now: i64, out: &mut Vec<u8>) {
        if self
            .interval_start
            .is_some_and(|s| now >= s + LOSS_INTERVAL_NANOS)
        {
            self.flush(out);
        }
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        let Some(start) = self.interval_start.take() else {
            return;
        };
        for ((reason, disposition), (records, connections)) in std::mem::take(&mut self.counts) {
            let m = LossMarker {
                timestamp: Timestamp::from_unix_nanos(start + LOSS_INTERVAL_NANOS),
                interval_start: Timestamp::from_unix_nanos(start),
                node_name: self.node_name.clone(),
                reason,
                disposition,
                dropped_records: records,
                dropped_connections: connections,
            };
            serde_json::to_writer(&mut *out, &m).expect("serializing to memory");
            out.push(b'\n');
        }
    }
}

#[derive(Debug)]
pub struct LoggingPipeline {
    generations: Generations,
    aggregator: DenyAggregator,
    limiter: RateLimiter,
    losses: LossCounter,
    counters: Counters,
    /// The counters as last published.
    published: Counters,
    output: Output,
    expired: Vec<PolicyActionRecord>,
}

impl LoggingPipeline {
    pub fn new(config: PipelineConfig, initial: Arc<PolicySnapshot>) -> Self {
        LoggingPipeline {
            generations: Generations::new(initial, config.generation_grace),
            aggregator: DenyAggregator::new(
                config.aggregation_window,
                config.max_aggregation_entries,
            ),
            limiter: RateLimiter::new(config.rate_limit),
            losses: LossCounter {
                node_name: config.node_name.clone(),
                ..LossCounter::default()
            },
            counters: Counters::default(),
            published: Counters::default(),
            output: Output::default(),
            expired: Vec::new(),
        }
    }

    /// Makes a new policy generation current (older ones stay for late events).
    pub fn install(&mut self, snapshot: Arc<PolicySnapshot>, now: Timestamp) {
        self.generations.install(snapshot, now);
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Handles one verdict event decided at `event.timestamp`, at time `now`.
    pub fn handle(&mut self, event: VerdictEvent, now: Timestamp) {
        // Counted per direction decided here, and only where policy applies: a side no policy
        // isolates is allowed by default, not by policy.
        if event.allowed {
            if event.isolated {
                self.counters.allowed_connections += 1;
            }
        } else {
            self.counters.denied_connections += 1;
            if event.enforcement == EnforcementMode::Audit {
                self.counters.audit_denied_connections += 1;
            }
        }
        let snapshot = match self.generations.get(event.generation) {
            Some(s) => s.clone(),
            None => {
                self.counters.unknown_generation_events += 1;
                self.generations.current().clone()
            }
        };
        let engine = &snapshot.engine;
        let flow = Flow {
            src: engine.resolve_ip(event.src_ip),
            dest: engine.resolve_ip(event.dest_ip),
            protocol: event.protocol,
            dest_port: event.dest_port,
        };
        let enforced = match event.direction {
            Direction::Ingress => flow.dest,
            Direction::Egress => flow.src,
        };
        let side = SideVerdict {
            direction: event.direction,
            enforced_pod: enforced.pod(),
            isolated: event.isolated,
            allowed: event.allowed,
            reason: event.reason,
            allowing: event.allowing,
            isolating: Vec::new(),
        };
        let Some(mut record) = engine.record(&flow, event.src_port, &side, event.timestamp) else {
            return;
        };
        if event.enforcement == EnforcementMode::Audit {
            record.enforcement = Some(Enforcement::Audit);
        }
        match record.disposition {
            Disposition::Allow => self.emit(record, now),
            Disposition::Deny => match self.aggregator.add(record) {
                Added::Aggregated | Added::Opened { closed: None } => {}
                Added::Opened {
                    closed: Some(closed),
                } => self.emit(closed, now),
                Added::Overflow(r) => {
                    self.counters.aggregation_failures += 1;
                    self.losses.add(
                        LossReason::AggregationOverflow,
                        Some(Disposition::Deny),
                        1,
                        r.count,
                        now.unix_nanos(),
                        &mut self.output.loss_markers,
                    );
                }
            },
        }
    }

    /// Records `n` events lost before reaching the pipeline (ring buffer or channel full).
    pub fn lost_events(&mut self, n: u64, now: Timestamp) {
        if n == 0 {
            return;
        }
        self.counters.lost_events += n;
        self.losses.add(
            LossReason::LostEvents,
            None,
            n,
            n,
            now.unix_nanos(),
            &mut self.output.loss_markers,
        );
    }

    fn emit(&mut self, record: PolicyActionRecord, now: Timestamp) {
        if !self.limiter.admit(now) {
            self.counters.ratelimit_dropped_logs += 1;
            self.counters.ratelimit_dropped_connections += record.count;
            self.losses.add(
                LossReason::RateLimit,
                Some(record.disposition),
                1,
                record.count,
                now.unix_nanos(),
                &mut self.output.loss_markers,
            );
            return;
        }
        match record.disposition {
            Disposition::Allow => self.counters.generated_allow += 1,
            Disposition::Deny => self.counters.generated_deny += 1,
        }
        serde_json::to_writer(&mut self.output.records, &record).expect("serializing to memory");
        self.output.records.push(b'\n');
    }

    /// Closes deny windows that have ended, flushes a finished loss interval, forgets expired
    /// generations. Call at least a few times per second.
    pub fn tick(&mut self, now: Timestamp) {
        self.generations.expire(now);
        let mut expired = std::mem::take(&mut self.expired);
        self.aggregator.expire(now, &mut expired);
        for r in expired.drain(..) {
            self.emit(r, now);
        }
        self.expired = expired;
        self.losses
            .flush_due(now.unix_nanos(), &mut self.output.loss_markers);
    }

    /// Emits every open deny window and the pending loss markers (clean shutdown loses nothing).
    pub fn finish(&mut self, now: Timestamp) {
        let mut pending = Vec::new();
        self.aggregator.drain(&mut pending);
        for r in pending {
            self.emit(r, now);
        }
        self.losses.flush(&mut self.output.loss_markers);
    }

    /// Takes the lines produced so far.
    pub fn take_output(&mut self) -> Output {
        std::mem::take(&mut self.output)
    }

    pub fn has_output(&self) -> bool {
        !self.output.records.is_empty() || !self.output.loss_markers.is_empty()
    }

    /// Publishes the counters to the shared metrics (what changed since the last publish).
    pub fn publish(&mut self, m: &Metrics) {
        let (c, p) = (&self.counters, &self.published);
        let add = |counter: &prometheus_client::metrics::counter::Counter, now: u64, then: u64| {
            if now > then {
                counter.inc_by(now - then);
            }
        };
        add(
            &m.allowed_connections,
            c.allowed_connections,
            p.allowed_connections,
        );
        add(
            &m.denied_connections,
            c.denied_connections,
            p.denied_connections,
        );
        add(
            &m.audit_denied_connections,
            c.audit_denied_connections,
            p.audit_denied_connections,
        );
        add(
            &m.generated_logs_allow,
            c.generated_allow,
            p.generated_allow,
        );
        add(&m.generated_logs_deny, c.generated_deny, p.generated_deny);
        add(
            &m.ratelimit_dropped_logs,
            c.ratelimit_dropped_logs,
            p.ratelimit_dropped_logs,
        );
        add(
            &m.ratelimit_dropped_connections,
            c.ratelimit_dropped_connections,
            p.ratelimit_dropped_connections,
        );
        add(
            &m.aggregation_failures,
            c.aggregation_failures,
            p.aggregation_failures,
        );
        add(&m.lost_events, c.lost_events, p.lost_events);
        add(
            &m.unknown_generation_events,
            c.unknown_generation_events,
            p.unknown_generation_events,
        );
        m.aggregation_table_entries
            .set(i64::try_from(self.aggregator.len()).unwrap_or(i64::MAX));
        m.policy_generation
            .set(i64::try_from(self.generations.current().generation).unwrap_or(i64::MAX));
        self.published = self.counters.clone();
    }
}
