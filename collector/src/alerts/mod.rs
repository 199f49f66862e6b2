//! Deny-spike alerting and log-based metrics, on records as they are applied (acknowledged).
//! Configured by `[alerts]` ([`crate::config::alerts`]).
//!
//! - [`flow_metrics`]: the flow log counted on `/metrics` (`verdict_flow_*`), capped in series.
//! - [`engine`]: the detectors of `[[alerts.rules]]` (threshold, ratio, baseline, fan-out,
//!   silent nodes, loss), sliding windows per scope, hysteresis. **Its module doc says how time,
//!   the baseline and hysteresis work.**
//! - [`notify`]: Alertmanager API v2, webhooks, Kafka topics.
//! - [`history`]: the alert history (`GET /v1/alerts/history`), and the firing alerts a restart
//!   puts back.
//!
//! The writer thread hands every applied batch to a bounded queue it never waits on
//! ([`crate::buffer::AppliedFeed`]); one thread (`verdict-alerts`) counts them into the metrics
//! and the windows and evaluates the rules every `alerts.evaluation_interval`; one task enriches
//! fired alerts (their top sources, ports and destinations, by a query over the lake), writes
//! the history and notifies the receivers. At start the detectors are rebuilt from the lake:
//! firing alerts from the history, baselines from the one-minute rollups, windows from the
//! newest flows and loss markers — before ingest opens, so nothing is counted twice.

pub mod columns;
pub mod engine;
pub mod flow_metrics;
pub mod history;
pub mod notify;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;
use verdict_query::QueryEngine;
use verdict_schema::Timestamp;
use verdict_service::metrics::Registry;
use verdict_service::shutdown::{CancellationToken, TaskTracker};

use self::engine::{Alert, AlertEvent, Change, Engine, EngineSettings};
use self::flow_metrics::FlowMetrics;
use self::history::{History, HistoryEntry};
use self::notify::{Notifier, NotifyMetrics};
use crate::buffer::{AppliedFeed, Shared};
use crate::config::alerts::{AlertsConfig, RuleKind};
use crate::error::{Error, Result};
use crate::table::Table;

/// Applied batches queued for the detectors before new ones are dropped from detection.
const FEED_BATCHES: usize = 4096;
/// Evaluations' changes queued for the receivers before they are dropped (and counted).
const NOTIFY_QUEUE: usize = 1024;
/// Top values listed per annotation.
const TOP: usize = 5;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    rule: String,
    change: &'static str,
}

/// The detectors' own metrics (`verdict_collector_alert*`).
#[derive(Debug, Clone)]
struct AlertMetrics {
    firing: Family<RuleLabel, Gauge>,
    changes: Family<ChangeLabels, Counter>,
    feed_dropped: Counter,
    notify_dropped: Counter,
    late_rows: Counter,
    folded_rows: Counter,
    scopes: Gauge,
    evaluation_seconds: Histogram,
}

impl AlertMetrics {
    fn register(r: &mut Registry) -> AlertMetrics {
        let m = AlertMetrics {
            firing: Family::default(),
            changes: Family::default(),
            feed_dropped: Counter::default(),
            notify_dropped: Counter::default(),
            late_rows: Counter::default(),
            folded_rows: Counter::default(),
            scopes: Gauge::default(),
            evaluation_seconds: Histogram::new([0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
        };
        r.register(
            "verdict_collector_alerts_firing",
            "Alerts firing, by rule.",
            m.firing.clone(),
        );
        r.register(
            "verdict_collector_alert_changes",
            "Alerts fired, re-sent and resolved, by rule.",
            m.changes.clone(),
        );
        r.register(
            "verdict_collector_alert_feed_batches_dropped",
            "Applied batches the detectors and log-based metrics missed because they fell behind (the records are stored all the same).",
            m.feed_dropped.clone(),
        );
        r.register(
            "verdict_collector_alert_notify_batches_dropped",
            "Evaluations whose changes were not sent: the receivers were over 1,024 evaluations behind.",
            m.notify_dropped.clone(),
        );
        r.register(
            "verdict_collector_alert_late_rows",
            "Flow rows left out of detection windows: received more than alerts.max_lateness after their event time.",
            m.late_rows.clone(),
        );
        r.register(
            "verdict_collector_alert_folded_rows",
            "Rows watched under the scope value \"other\": their rule tracked max_scopes values.",
            m.folded_rows.clone(),
        );
        r.register(
            "verdict_collector_alert_scopes",
            "Scope values the detectors track, over all rules.",
            m.scopes.clone(),
        );
        r.register(
            "verdict_collector_alert_evaluation_seconds",
            "Time to evaluate every rule once.",
            m.evaluation_seconds.clone(),
        );
        m
    }
}

/// What the HTTP API reads: the alerts firing now and the history.
#[derive(Debug)]
pub struct Alerts {
    firing: Mutex<BTreeMap<String, Alert>>,
    /// The base of alert links: `alerts.external_url`, else the HTTP listener's address.
    external_url: Arc<std::sync::OnceLock<String>>,
    history: Option<Mutex<History>>,
    enabled: bool,
}

/// `GET /v1/alerts`.
#[derive(Debug, Serialize)]
pub struct AlertList {
    pub alerts: Vec<Alert>,
}

impl Alerts {
    /// The alerts firing now.
    pub fn firing(&self) -> Vec<Alert> {
        self.firing
            .lock()
            .expect("alerts lock")
            .values()
            .cloned()
            .collect()
    }

    /// One alert (firing, else the newest history entry with this id).
    pub fn get(&self, id: &str) -> Option<Alert> {
        if let Some(a) = self.firing.lock().expect("alerts lock").get(id) {
            return Some(a.clone());
        }
        let h = self.history.as_ref()?.lock().expect("history lock");
        h.recent(usize::MAX)
            .ok()?
            .into_iter()
            .find(|e| e.alert.id == id)
            .map(|e| e.alert)
    }

    /// The newest `limit` history entries, newest first.
    pub fn history(&self, limit: usize) -> std::io::Result<Vec<HistoryEntry>> {
        match &self.history {
            Some(h) => h.lock().expect("history lock").recent(limit),
            None => Ok(Vec::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The HTTP listener's address, for alert links when `alerts.external_url` is empty
    /// (`http.listen` may be port 0 until bound).
    pub fn set_listen_address(&self, addr: std::net::SocketAddr) {
        let _ = self.external_url.set(format!("http://{addr}"));
    }
}

/// What alerting needs from the collector.
#[derive(Debug)]
pub struct AlertingContext<'a> {
    pub config: &'a AlertsConfig,
    pub data_dir: &'a Path,
    pub project: String,
    /// `http.listen`, for links when `alerts.external_url` is empty.
    pub http_listen: std::net::SocketAddr,
    pub buffer: Arc<Shared>,
    /// Queries over the lake (rebuild at start, enrichment of fired alerts).
    pub query: QueryEngine,
    pub build: crate::sinks::sink::BuildContext,
    pub stop: CancellationToken,
    pub tasks: &'a TaskTracker,
}

/// Starts the log-based metrics and the detectors (rebuilt from the lake) and returns what the
/// HTTP API reads. Call before ingest opens.
pub async fn start(cx: AlertingContext<'_>, registry: &mut Registry) -> Result<Arc<Alerts>> {
    let c = cx.config;
    let flow_metrics = Arc::new(FlowMetrics::register(registry, &c.metrics));
    let metrics = AlertMetrics::register(registry);
    let notify_metrics = NotifyMetrics::register(registry);
    let external = Arc::new(std::sync::OnceLock::new());
    if !c.external_url.is_empty() {
        let _ = external.set(c.external_url.clone());
    } else if cx.http_listen.port() != 0 {
        let _ = external.set(format!("http://{}", cx.http_listen));
    }
    let now = Timestamp::now().unix_nanos();
    let mut engine = Engine::new(
        if c.enabled { &c.rules } else { &[] },
        EngineSettings {
            max_lateness_nanos: c.max_lateness.as_nanos() as i64,
            resend_nanos: c.resend_interval.as_nanos() as i64,
        },
    );
    let (history, firing) = if c.enabled {
        let dir = cx.data_dir.join("alerts");
        let (history, entries) = History::open(&dir, c.history_max_bytes.0).map_err(|e| {
            Error::setting_caused(
                "data_dir",
                format!("cannot open the alert history in {}", dir.display()),
                e,
            )
        })?;
        let firing = history::active(&entries);
        engine.restore(&firing, now);
        (Some(Mutex::new(history)), firing)
    } else {
        (None, Vec::new())
    };
    if c.enabled && !c.rules.is_empty() {
        let started = Instant::now();
        match rebuild(&mut engine, &cx.query, c, now).await {
            Ok(rows) => tracing::info!(
                rows,
                restored = firing.len(),
                seconds = started.elapsed().as_secs_f64(),
                "alert detectors rebuilt from the lake"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "alert detectors could not be rebuilt from the lake; their windows and baselines start empty")
            }
        }
    }
    let alerts = Arc::new(Alerts {
        external_url: Arc::clone(&external),
        firing: Mutex::new(firing.into_iter().map(|a| (a.id.clone(), a)).collect()),
        history,
        enabled: c.enabled,
    });
    if !c.enabled && !c.metrics.enabled {
        return Ok(alerts);
    }
    let notifier = Notifier::new(
        &c.receivers,
        external,
        c.resend_interval,
        cx.project.clone(),
        notify_metrics,
        cx.build.clone(),
    )
    .map_err(|e| Error::setting("alerts.receivers", e))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(FEED_BATCHES);
    let _ = cx.buffer.feed.set(AppliedFeed {
        tx,
        dropped: metrics.feed_dropped.clone(),
    });
    let (events_tx, events_rx) = mpsc::channel::<Vec<AlertEvent>>(64);
    let detector = Detector {
        engine,
        flow_metrics,
        metrics: metrics.clone(),
        buffer: Arc::clone(&cx.buffer),
        interval: c.evaluation_interval,
        events: events_tx,
        stop: cx.stop.clone(),
        counted: Default::default(),
    };
    let token = cx.tasks.token();
    std::thread::Builder::new()
        .name("verdict-alerts".into())
        .spawn(move || {
            let _running = token;
            detector.run(rx);
        })
        .map_err(|e| Error::io("starting the alert detector thread", e))?;
    cx.tasks.spawn(deliver(
        events_rx,
        Arc::clone(&alerts),
        notifier,
        cx.query.clone(),
        c.clone(),
        metrics,
    ));
    Ok(alerts)
}

struct Detector {
    engine: Engine,
    flow_metrics: Arc<FlowMetrics>,
    metrics: AlertMetrics,
    buffer: Arc<Shared>,
    interval: Duration,
    events: mpsc::Sender<Vec<AlertEvent>>,
    stop: CancellationToken,
    /// Engine counters already added to the metrics.
    counted: engine::EngineCounters,
}

impl Detector {
    fn run(mut self, rx: std::sync::mpsc::Receiver<(Table, RecordBatch)>) {
        let mut next = Instant::now() + self.interval;
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            let wait = next.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait.min(Duration::from_millis(500))) {
                Ok((table, rows)) => self.observe(table, &rows),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next {
                next = Instant::now() + self.interval;
                self.evaluate();
            }
        }
        tracing::debug!("alert detector stopped");
    }

    fn observe(&mut self, table: Table, rows: &RecordBatch) {
        let result = match table {
            Table::Flows => self
                .flow_metrics
                .observe_flows(rows)
                .and_then(|()| self.engine.observe_flows(rows)),
            Table::Loss => self
                .flow_metrics
                .observe_loss(rows)
                .and_then(|()| self.engine.observe_loss(rows)),
            Table::Rollups => Ok(()),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, table = table.label(), "alert detector could not read applied rows");
        }
    }

    fn evaluate(&mut self) {
        let started = Instant::now();
        let mut nodes: HashMap<String, i64> = HashMap::new();
        for ((node, _), w) in &self.buffer.lock().watermarks {
            let t = nodes.entry(node.clone()).or_insert(w.last_seen);
            *t = (*t).max(w.last_seen);
        }
        for (node, &last) in &nodes {
            self.engine.node_seen(node, last);
        }
        self.flow_metrics
            .set_nodes(&nodes, crate::metrics::MAX_NODE_SERIES);
        let events = self.engine.evaluate(Timestamp::now().unix_nanos());
        let c = self.engine.counters();
        self.metrics
            .late_rows
            .inc_by(c.late_rows - self.counted.late_rows);
        self.metrics
            .folded_rows
            .inc_by(c.folded_rows - self.counted.folded_rows);
        self.counted = c;
        self.metrics
            .scopes
            .set(i64::try_from(self.engine.tracked_scopes()).unwrap_or(i64::MAX));
        self.metrics
            .evaluation_seconds
            .observe(started.elapsed().as_secs_f64());
        // Every evaluation, even without events: receivers retry what they still owe.
        if self.events.try_send(events).is_err() {
            tracing::warn!(
                "alert delivery is behind; this evaluation's changes wait for the next re-send"
            );
        }
    }
}

/// Enriches, records and sends the alert changes of each evaluation.
async fn deliver(
    mut rx: mpsc::Receiver<Vec<AlertEvent>>,
    alerts: Arc<Alerts>,
    notifier: Notifier,
    query: QueryEngine,
    config: AlertsConfig,
    metrics: AlertMetrics,
) {
    let notify = (!notifier.is_empty()).then(|| {
        let (tx, rx) = mpsc::channel(NOTIFY_QUEUE);
        tokio::spawn(self::notify(rx, notifier));
        tx
    });
    // Annotations found when an alert fired, sent again with its re-sends and resolve.
    let mut found: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    for a in alerts.firing() {
        found.insert(a.id.clone(), a.annotations.clone());
    }
    while let Some(mut events) = rx.recv().await {
        let now = Timestamp::now();
        for e in &mut events {
            let a = &mut e.alert;
            if e.change == Change::Fired {
                let annotations = enrich(&query, a, &config, now).await;
                found.insert(a.id.clone(), annotations);
            }
            if let Some(x) = found.get(&a.id) {
                a.annotations = x.clone();
            }
            if e.change == Change::Resolved {
                found.remove(&a.id);
            }
            metrics
                .changes
                .get_or_create(&ChangeLabels {
                    rule: a.rule.clone(),
                    change: notify::change_label(e.change),
                })
                .inc();
            match e.change {
                Change::Fired => {
                    tracing::warn!(alert = %a.rule, scope = %a.scope_value, summary = %a.summary, "alert fired")
                }
                Change::Resolved => {
                    tracing::info!(alert = %a.rule, scope = %a.scope_value, "alert resolved")
                }
                Change::Resent => {}
            }
            if let Some(entry) = history::entry(e.change, a, now)
                && let Some(h) = &alerts.history
                && let Err(err) = h.lock().expect("history lock").append(&entry)
            {
                tracing::error!(error = %err, "cannot write the alert history");
            }
            let mut firing = alerts.firing.lock().expect("alerts lock");
            match e.change {
                Change::Resolved => {
                    firing.remove(&a.id);
                }
                _ => {
                    firing.insert(a.id.clone(), a.clone());
                }
            }
        }
        {
            let firing = alerts.firing.lock().expect("alerts lock");
            metrics.firing.clear();
            for a in firing.values() {
                metrics
                    .firing
                    .get_or_create(&RuleLabel {
                        rule: a.rule.clone(),
                    })
                    .inc();
            }
        }
        if let Some(tx) = &notify
            && tx.try_send(events).is_err()
        {
            metrics.notify_dropped.inc();
            tracing::warn!(
                "alert receivers are far behind: this evaluation's changes are not sent (firing alerts are re-sent)"
            );
        }
    }
}

/// Sends each evaluation's changes to the receivers, apart from recording them, so a slow or
/// hanging receiver (each send is bounded by its `timeout`) never holds back the history or
/// `/v1/alerts`. Changes queued while it was busy go out together.
async fn notify(mut rx: mpsc::Receiver<Vec<AlertEvent>>, mut notifier: Notifier) {
    while let Some(mut events) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            events.extend(more);
        }
        notifier.send(&events).await;
    }
}

/// The top sources, ports and destinations of a fired alert's records, from the lake.
async fn enrich(
    query: &QueryEngine,
    alert: &Alert,
    config: &AlertsConfig,
    now: Timestamp,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(rule) = config.rules.iter().find(|r| r.name == alert.rule) else {
        return out;
    };
    if matches!(rule.kind, RuleKind::NodeSilent | RuleKind::Loss) {
        return out;
    }
    let window = rule.window.max(Duration::from_secs(10));
    let since = now.unix_nanos() - window.as_nanos() as i64;
    let event_since = since - config.max_lateness.as_nanos() as i64;
    for (name, expr) in [
        (
            "top_sources",
            "COALESCE(src_pod_namespace || '/' || src_pod_name, src_ip)",
        ),
        ("top_ports", "protocol || '/' || CAST(dest_port AS VARCHAR)"),
        (
            "top_destinations",
            "COALESCE(dest_pod_namespace || '/' || dest_pod_name, dest_ip)",
        ),
    ] {
        let sql = format!(
            "SELECT {expr} AS v, SUM(\"count\") AS n FROM policy_action \
             WHERE {} AND receive_timestamp >= to_timestamp_nanos({since}) \
             AND timestamp >= to_timestamp_nanos({event_since}) \
             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {TOP}",
            alert.sql_condition
        );
        match query.sql(&sql).await {
            Ok(out_rows) => {
                let mut parts = Vec::new();
                for b in &out_rows.batches {
                    let v = columns::StrCol::of(b, "v");
                    let n = columns::IntCol::of(b, "n");
                    match (v, n) {
                        (Ok(v), Ok(n)) => {
                            for i in 0..b.num_rows() {
                                parts.push(format!("{} ({})", v.get(i).unwrap_or("-"), n.get(i)));
                            }
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::warn!(error = %e, alert = %alert.rule, "cannot read the alert's {name}")
                        }
                    }
                }
                if !parts.is_empty() {
                    out.insert(name.to_owned(), parts.join(", "));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, alert = %alert.rule, "cannot list the alert's {name}")
            }
        }
    }
    out
}

/// Rebuilds windows and baselines from the lake (after [`Engine::restore`]); returns the rows
/// read.
async fn rebuild(
    engine: &mut Engine,
    query: &QueryEngine,
    c: &AlertsConfig,
    now: i64,
) -> std::result::Result<usize, String> {
    let mut rows = 0;
    let history = c
        .rules
        .iter()
        .filter(|r| r.kind == RuleKind::Baseline)
        .map(|r| r.history())
        .max();
    if let Some(h) = history {
        let from = now - h.as_nanos() as i64;
        let sql = format!(
            "SELECT minute, cluster_name, src_namespace, dest_namespace, dest_workload_name, disposition, \
             SUM(connections) AS connections FROM policy_action_1m \
             WHERE disposition = 'deny' AND minute >= to_timestamp_nanos({from}) \
             GROUP BY 1, 2, 3, 4, 5, 6"
        );
        let out = query.sql(&sql).await.map_err(|e| e.to_string())?;
        rows += out.num_rows();
        engine
            .seed_rollups(&out.batches, now)
            .map_err(|e| e.to_string())?;
    }
    let window = c
        .rules
        .iter()
        .filter(|r| !matches!(r.kind, RuleKind::NodeSilent))
        .map(|r| r.window)
        .max()
        .unwrap_or_default();
    if !window.is_zero() {
        let from = now - window.as_nanos() as i64 - 1_000_000_000;
        let event_from = from - c.max_lateness.as_nanos() as i64;
        // Seconds of arrival, aggregated: what the windows count.
        let sql = format!(
            "SELECT date_trunc('second', receive_timestamp) AS receive_timestamp, MAX(timestamp) AS timestamp, \
             disposition, SUM(\"count\") AS \"count\", cluster_name, dest_pod_namespace, dest_workload_name, \
             src_pod_namespace, src_ip, dest_port, dest_pod_name, dest_ip, node_name \
             FROM policy_action WHERE receive_timestamp >= to_timestamp_nanos({from}) \
             AND timestamp >= to_timestamp_nanos({event_from}) \
             GROUP BY 1, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13 ORDER BY 1"
        );
        let out = query.sql(&sql).await.map_err(|e| e.to_string())?;
        rows += out.num_rows();
        for b in &out.batches {
            engine.observe_flows(b).map_err(|e| e.to_string())?;
        }
        let sql = format!(
            "SELECT receive_timestamp, node_name, cluster_name, dropped_connections FROM policy_action_loss \
             WHERE receive_timestamp >= to_timestamp_nanos({from}) AND timestamp >= to_timestamp_nanos({event_from})"
        );
        let out = query.sql(&sql).await.map_err(|e| e.to_string())?;
        rows += out.num_rows();
        for b in &out.batches {
            engine.observe_loss(b).map_err(|e| e.to_string())?;
        }
    }
    Ok(rows)
}
