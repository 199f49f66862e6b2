//! The detectors: sliding windows per rule and scope, fed with applied rows, evaluated on a
//! clock the caller passes (the collector's, or a simulation's), each alert moving through
//! inactive → pending → firing → resolved with hysteresis.
//!
//! # Time
//!
//! Windows are counted by **arrival** (the rows' `receive_timestamp`): what the collector
//! acknowledged in the last `window` seconds. Rows that arrive more than `max_lateness` after
//! their event time (a node catching up after an outage) are left out of the windows, so a
//! backlog is not taken for an attack happening now.
//!
//! # Baseline
//!
//! A `baseline` rule learns each scope's normal from its own past: the denied connections per
//! second of every minute of the last `history` (default 1 h). The normal is their **median**
//! and the spread 1.4826 × their median absolute deviation (MAD), a robust standard deviation.
//! The rule fires when the rate over `window` exceeds the largest of `floor`,
//! `factor` × normal and normal + 6 × spread. Why this model: a median ignores earlier spikes
//! (up to half the history) where a mean or an EWMA is dragged up by them; the spread term keeps
//! naturally noisy scopes (batch jobs) from paging on their usual bursts; the trailing hour
//! follows the diurnal curve, whose change within an hour is far below `factor`; and it needs
//! no days of history to learn a season, so a restart (which rebuilds it from the rollups) or a
//! new namespace is watched within `min_history`. Minutes in which the scope's alert is
//! pending or firing are not learned, so a long attack never becomes the normal.
//!
//! # Hysteresis
//!
//! A condition must hold for the rule's `for` before its alert fires; a firing alert resolves
//! only after its value stayed under `clear_ratio` × the threshold for `keep_firing_for`. While
//! firing it is re-sent every `resend_interval`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use serde::{Deserialize, Serialize};
use verdict_schema::Timestamp;
use verdict_schema::flat_schema::col;

use super::columns::{IntCol, StrCol};
use crate::config::alerts::{RuleConfig, RuleKind, Scope};

const NANOS: i64 = 1_000_000_000;
/// The scope value records beyond a rule's `max_scopes` are watched under.
pub const OTHER: &str = "other";
/// How far above its spread a baseline rate must be.
const SPREAD_FACTOR: f64 = 6.0;

/// An alert, as sent and as kept in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Fingerprint of the labels (16 hex digits): one alert per rule and scope value.
    pub id: String,
    pub rule: String,
    /// The rule's kind (`threshold`, `ratio`, …).
    pub kind: String,
    pub severity: String,
    /// What the rule watches (`dest_namespace`, `src_ip`, …) and the watched value.
    pub scope: String,
    pub scope_value: String,
    /// `alertname`, `severity` and the scope's labels (`dest_namespace="shop"`).
    pub labels: BTreeMap<String, String>,
    /// The measured value when the alert last changed or was sent, and its threshold.
    pub value: f64,
    pub threshold: f64,
    pub summary: String,
    /// A Logs Explorer filter for the records behind the alert.
    pub filter: String,
    /// A SQL condition over `policy_action` for the same records (without time bounds).
    pub sql_condition: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    /// Annotations added when the alert fires: its top sources, ports and destinations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What happened to an alert at an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Fired,
    /// Still firing: sent again (`resend_interval`).
    Resent,
    Resolved,
}

#[derive(Debug, Clone)]
pub struct AlertEvent {
    pub change: Change,
    pub alert: Alert,
}

/// Settings every rule shares.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    pub max_lateness_nanos: i64,
    pub resend_nanos: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Inactive,
    Pending {
        since: i64,
    },
    Firing {
        since: i64,
        last_sent: i64,
        clear_since: Option<i64>,
    },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    sec: i64,
    deny: u64,
    total: u64,
}

/// The learned per-minute history of a scope.
#[derive(Debug, Clone)]
struct Baseline {
    /// Denied connections per second of each past minute (NaN: not learned).
    minutes: VecDeque<f32>,
    /// The minute being counted, and its denied connections so far.
    minute: i64,
    current: f64,
    normal: f64,
    spread: f64,
    learned: usize,
}

impl Baseline {
    fn new(minute: i64) -> Baseline {
        Baseline {
            minutes: VecDeque::new(),
            minute,
            current: 0.0,
            normal: 0.0,
            spread: 0.0,
            learned: 0,
        }
    }

    /// Closes every minute before `minute` (learning them only when `learning`).
    fn roll_to(&mut self, minute: i64, learning: bool, keep: usize) {
        if minute <= self.minute {
            return;
        }
        let closed = (minute - self.minute).min(keep as i64 + 1);
        for i in 0..closed {
            let v = if !learning {
                f32::NAN
            } else if i == 0 {
                (self.current / 60.0) as f32
            } else {
                0.0
            };
            self.minutes.push_back(v);
            if self.minutes.len() > keep {
                self.minutes.pop_front();
            }
        }
        self.minute = minute;
        self.current = 0.0;
        self.recompute();
    }

    fn recompute(&mut self) {
        let mut v: Vec<f64> = self
            .minutes
            .iter()
            .filter(|x| !x.is_nan())
            .map(|&x| f64::from(x))
            .collect();
        self.learned = v.len();
        if v.is_empty() {
            self.normal = 0.0;
            self.spread = 0.0;
            return;
        }
        let normal = median(&mut v);
        let mut dev: Vec<f64> = v.iter().map(|x| (x - normal).abs()).collect();
        self.normal = normal;
        self.spread = 1.4826 * median(&mut dev);
    }
}

fn median(v: &mut [f64]) -> f64 {
    let n = v.len();
    let mid = n / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let m = *m;
    if n % 2 == 1 {
        m
    } else {
        let lower = v[..mid].iter().copied().fold(f64::MIN, f64::max);
        (lower + m) / 2.0
    }
}

/// Distinct targets a scope was denied on within the window.
#[derive(Debug, Clone, Default)]
struct FanOut {
    ports: HashMap<i64, i64>,
    pods: HashMap<String, i64>,
}

#[derive(Debug, Clone)]
struct ScopeState {
    buckets: VecDeque<Bucket>,
    deny: u64,
    total: u64,
    baseline: Option<Baseline>,
    fan: Option<FanOut>,
    phase: Phase,
    last_data_sec: i64,
    /// Node rules: the node's last record (ns).
    last_seen: i64,
    /// The last evaluated value and threshold.
    value: f64,
    threshold: f64,
}

impl ScopeState {
    fn new(kind: RuleKind, sec: i64) -> ScopeState {
        ScopeState {
            buckets: VecDeque::new(),
            deny: 0,
            total: 0,
            baseline: (kind == RuleKind::Baseline).then(|| Baseline::new(sec.div_euclid(60))),
            fan: (kind == RuleKind::FanOut).then(FanOut::default),
            phase: Phase::Inactive,
            last_data_sec: sec,
            last_seen: 0,
            value: 0.0,
            threshold: 0.0,
        }
    }

    fn add(&mut self, sec: i64, deny: u64, total: u64) {
        match self.buckets.back_mut() {
            Some(b) if b.sec == sec => {
                b.deny += deny;
                b.total += total;
            }
            Some(b) if b.sec > sec => {
                // Out of order arrival (rows of one batch share a second, batches are applied
                // in order; a rebuild may feed older rows later): count it in the newest bucket.
                b.deny += deny;
                b.total += total;
            }
            _ => self.buckets.push_back(Bucket { sec, deny, total }),
        }
        self.deny += deny;
        self.total += total;
        self.last_data_sec = self.last_data_sec.max(sec);
    }

    fn expire(&mut self, oldest_sec: i64) {
        while let Some(b) = self.buckets.front() {
            if b.sec >= oldest_sec {
                break;
            }
            self.deny -= b.deny;
            self.total -= b.total;
            self.buckets.pop_front();
        }
    }

    fn learning(&self) -> bool {
        self.phase == Phase::Inactive
    }
}

#[derive(Debug)]
struct RuleState {
    config: RuleConfig,
    scope: Scope,
    window_secs: i64,
    scopes: HashMap<String, ScopeState>,
    /// Records watched under [`OTHER`] because `max_scopes` were tracked.
    folded: u64,
}

impl RuleState {
    fn state(&mut self, key: &str, sec: i64) -> &mut ScopeState {
        let kind = self.config.kind;
        let key = if self.scopes.contains_key(key) {
            key
        } else if self.scopes.len() < self.config.max_scopes {
            self.scopes
                .insert(key.to_owned(), ScopeState::new(kind, sec));
            key
        } else {
            self.folded += 1;
            if !self.scopes.contains_key(OTHER) {
                self.scopes
                    .insert(OTHER.to_owned(), ScopeState::new(kind, sec));
            }
            OTHER
        };
        self.scopes.get_mut(key).expect("inserted above")
    }
}

/// Counters the engine keeps for its metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Rows left out of windows: they arrived more than `max_lateness` after their event time.
    pub late_rows: u64,
    /// Rows watched under `other` because a rule tracked `max_scopes` scope values.
    pub folded_rows: u64,
}

/// The detectors of every rule.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<RuleState>,
    settings: EngineSettings,
    /// Each node's last record (ns), for `node_silent` rules.
    nodes: HashMap<String, i64>,
    late_rows: u64,
    key: String,
}

fn scope_key(scope: Scope, cols: &FlowCols<'_>, i: usize, key: &mut String) -> bool {
    key.clear();
    let value = match scope {
        Scope::Cluster => cols.cluster.get(i),
        Scope::DestNamespace => cols.dest_ns.get(i),
        Scope::SrcNamespace => cols.src_ns.get(i),
        Scope::SrcIp => cols.src_ip.get(i),
        Scope::DestWorkload => match (cols.dest_ns.get(i), cols.dest_workload.get(i)) {
            (Some(ns), Some(w)) => {
                let _ = write!(key, "{ns}/{w}");
                return true;
            }
            _ => None,
        },
        Scope::Node => cols.node.get(i),
    };
    match value {
        Some(v) => {
            key.push_str(v);
            true
        }
        None => false,
    }
}

struct FlowCols<'a> {
    disposition: StrCol<'a>,
    count: IntCol<'a>,
    timestamp: IntCol<'a>,
    receive: IntCol<'a>,
    cluster: StrCol<'a>,
    dest_ns: StrCol<'a>,
    dest_workload: StrCol<'a>,
    src_ns: StrCol<'a>,
    src_ip: StrCol<'a>,
    dest_port: IntCol<'a>,
    dest_pod: StrCol<'a>,
    dest_ip: StrCol<'a>,
    node: StrCol<'a>,
}

impl<'a> FlowCols<'a> {
    fn of(b: &'a RecordBatch) -> Result<FlowCols<'a>, ArrowError> {
        Ok(FlowCols {
            disposition: StrCol::of(b, col::DISPOSITION)?,
            count: IntCol::of(b, col::COUNT)?,
            timestamp: IntCol::of(b, col::TIMESTAMP)?,
            receive: IntCol::of(b, col::RECEIVE_TIMESTAMP)?,
            cluster: StrCol::of(b, col::CLUSTER_NAME)?,
            dest_ns: StrCol::of(b, col::DEST_POD_NAMESPACE)?,
            dest_workload: StrCol::of(b, col::DEST_WORKLOAD_NAME)?,
            src_ns: StrCol::of(b, col::SRC_POD_NAMESPACE)?,
            src_ip: StrCol::of(b, col::SRC_IP)?,
            dest_port: IntCol::of(b, col::DEST_PORT)?,
            dest_pod: StrCol::of(b, col::DEST_POD_NAME)?,
            dest_ip: StrCol::of(b, col::DEST_IP)?,
            node: StrCol::of(b, col::NODE_NAME)?,
        })
    }
}

impl Engine {
    pub fn new(rules: &[RuleConfig], settings: EngineSettings) -> Engine {
        Engine {
            rules: rules
                .iter()
                .map(|r| RuleState {
                    config: r.clone(),
                    scope: r.scope(),
                    window_secs: i64::try_from(r.window.as_secs()).unwrap_or(1).max(1),
                    scopes: HashMap::new(),
                    folded: 0,
                })
                .collect(),
            settings,
            nodes: HashMap::new(),
            late_rows: 0,
            key: String::new(),
        }
    }

    pub fn counters(&self) -> EngineCounters {
        EngineCounters {
            late_rows: self.late_rows,
            folded_rows: self.rules.iter().map(|r| r.folded).sum(),
        }
    }

    /// Scope values tracked, over all rules.
    pub fn tracked_scopes(&self) -> usize {
        self.rules.iter().map(|r| r.scopes.len()).sum()
    }

    /// Counts applied flow rows (the flat schema) into every flow rule's windows.
    pub fn observe_flows(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        let c = FlowCols::of(batch)?;
        let n = batch.num_rows();
        let lateness = self.settings.max_lateness_nanos;
        let mut on_time = Vec::with_capacity(n);
        for i in 0..n {
            let late = c.receive.get(i) - c.timestamp.get(i) > lateness;
            self.late_rows += u64::from(late);
            on_time.push(!late);
        }
        let mut key = std::mem::take(&mut self.key);
        for rule in &mut self.rules {
            let kind = rule.config.kind;
            if matches!(kind, RuleKind::NodeSilent | RuleKind::Loss) {
                continue;
            }
            for (i, &on_time) in on_time.iter().enumerate() {
                if !on_time {
                    continue;
                }
                let deny = c.disposition.get(i) == Some("deny");
                if !deny && kind != RuleKind::Ratio {
                    continue;
                }
                if !scope_key(rule.scope, &c, i, &mut key) {
                    continue;
                }
                let conns = u64::try_from(c.count.get(i)).unwrap_or(0).max(1);
                let sec = c.receive.get(i).div_euclid(NANOS);
                let (keep, max_ports, max_pods) = (
                    baseline_minutes(&rule.config),
                    2 * rule.config.ports(),
                    2 * rule.config.pods(),
                );
                let state = rule.state(&key, sec);
                if let Some(b) = &mut state.baseline {
                    let minute = sec.div_euclid(60);
                    let learning = state.phase == Phase::Inactive;
                    b.roll_to(minute, learning, keep);
                    if deny && minute == b.minute {
                        b.current += conns as f64;
                    }
                }
                state.add(sec, if deny { conns } else { 0 }, conns);
                if let Some(fan) = &mut state.fan {
                    // Bounded: past twice the thresholds the rule fires anyway.
                    if fan.ports.len() < max_ports || fan.ports.contains_key(&c.dest_port.get(i)) {
                        fan.ports.insert(c.dest_port.get(i), sec);
                    }
                    let pod = c.dest_pod.get(i).or_else(|| c.dest_ip.get(i)).unwrap_or("");
                    if let Some(t) = fan.pods.get_mut(pod) {
                        *t = sec;
                    } else if fan.pods.len() < max_pods {
                        fan.pods.insert(pod.to_owned(), sec);
                    }
                }
            }
        }
        self.key = key;
        Ok(())
    }

    /// Counts applied loss markers (the flat loss schema) into every `loss` rule's windows.
    pub fn observe_loss(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        let node = StrCol::of(batch, col::NODE_NAME)?;
        let cluster = StrCol::of(batch, col::CLUSTER_NAME)?;
        let dropped = IntCol::of(batch, "dropped_connections")?;
        let receive = IntCol::of(batch, col::RECEIVE_TIMESTAMP)?;
        for rule in &mut self.rules {
            if rule.config.kind != RuleKind::Loss {
                continue;
            }
            for i in 0..batch.num_rows() {
                let key = match rule.scope {
                    Scope::Node => node.get(i),
                    _ => cluster.get(i),
                };
                let Some(key) = key else { continue };
                let n = u64::try_from(dropped.get(i)).unwrap_or(0);
                let sec = receive.get(i).div_euclid(NANOS);
                rule.state(key, sec).add(sec, n, n);
            }
        }
        Ok(())
    }

    /// A node's last record (ns since the epoch), for `node_silent` rules.
    pub fn node_seen(&mut self, node: &str, last_nanos: i64) {
        match self.nodes.get_mut(node) {
            Some(t) => *t = (*t).max(last_nanos),
            None => {
                self.nodes.insert(node.to_owned(), last_nanos);
            }
        }
    }

    /// Learns baseline history from one-minute rollups (`policy_action_1m` rows) after a
    /// restart. Call after [`restore`](Self::restore), before new rows; `now` is the current time.
    pub fn seed_rollups(
        &mut self,
        batches: &[RecordBatch],
        now_nanos: i64,
    ) -> Result<(), ArrowError> {
        use crate::rollup::col as r;
        let now_minute = now_nanos.div_euclid(NANOS).div_euclid(60);
        let mut per: Vec<HashMap<String, BTreeMap<i64, f64>>> =
            vec![HashMap::new(); self.rules.len()];
        for b in batches {
            let minute = IntCol::of(b, r::MINUTE)?;
            let disposition = StrCol::of(b, r::DISPOSITION)?;
            let cluster = StrCol::of(b, r::CLUSTER_NAME)?;
            let dest_ns = StrCol::of(b, r::DEST_NAMESPACE)?;
            let dest_wl = StrCol::of(b, r::DEST_WORKLOAD_NAME)?;
            let src_ns = StrCol::of(b, r::SRC_NAMESPACE)?;
            let conns = IntCol::of(b, r::CONNECTIONS)?;
            for i in 0..b.num_rows() {
                if disposition.get(i) != Some("deny") {
                    continue;
                }
                for (ri, rule) in self.rules.iter().enumerate() {
                    if rule.config.kind != RuleKind::Baseline {
                        continue;
                    }
                    let key = match rule.scope {
                        Scope::Cluster => cluster.get(i).map(str::to_owned),
                        Scope::DestNamespace => dest_ns.get(i).map(str::to_owned),
                        Scope::SrcNamespace => src_ns.get(i).map(str::to_owned),
                        Scope::DestWorkload => match (dest_ns.get(i), dest_wl.get(i)) {
                            (Some(n), Some(w)) => Some(format!("{n}/{w}")),
                            _ => None,
                        },
                        // Rollups have no source IPs: those baselines are learned anew.
                        Scope::SrcIp | Scope::Node => None,
                    };
                    let Some(key) = key else { continue };
                    let m = minute.get(i).div_euclid(NANOS).div_euclid(60);
                    *per[ri].entry(key).or_default().entry(m).or_default() += conns.get(i) as f64;
                }
            }
        }
        for (rule, seeds) in self.rules.iter_mut().zip(per) {
            let keep = baseline_minutes(&rule.config);
            for (key, minutes) in seeds {
                let Some((&first, _)) = minutes.iter().next() else {
                    continue;
                };
                let first = first.max(now_minute - keep as i64);
                if rule.scopes.len() >= rule.config.max_scopes && !rule.scopes.contains_key(&key) {
                    continue;
                }
                let state = rule
                    .scopes
                    .entry(key)
                    .or_insert_with(|| ScopeState::new(RuleKind::Baseline, first * 60));
                // Minutes since a restored alert started are not learned.
                let firing_from = match state.phase {
                    Phase::Firing { since, .. } | Phase::Pending { since } => {
                        since.div_euclid(NANOS).div_euclid(60)
                    }
                    Phase::Inactive => i64::MAX,
                };
                let mut b = Baseline::new(first);
                for m in first..now_minute {
                    let v = if m >= firing_from {
                        f32::NAN
                    } else {
                        (minutes.get(&m).copied().unwrap_or(0.0) / 60.0) as f32
                    };
                    b.minutes.push_back(v);
                    if b.minutes.len() > keep {
                        b.minutes.pop_front();
                    }
                }
                b.minute = now_minute;
                b.recompute();
                state.baseline = Some(b);
                state.last_data_sec = state.last_data_sec.max((now_minute - 1) * 60);
            }
        }
        Ok(())
    }

    /// Puts alerts that were firing before a restart back (from the history), so they are
    /// neither fired again nor left unresolved.
    pub fn restore(&mut self, alerts: &[Alert], now_nanos: i64) {
        for a in alerts.iter().filter(|a| a.status == "firing") {
            let Some(rule) = self.rules.iter_mut().find(|r| {
                r.config.name == a.rule
                    && r.config.kind.label() == a.kind
                    && r.scope.label() == a.scope
            }) else {
                continue;
            };
            let sec = now_nanos.div_euclid(NANOS);
            let kind = rule.config.kind;
            let state = rule
                .scopes
                .entry(a.scope_value.clone())
                .or_insert_with(|| ScopeState::new(kind, sec));
            state.phase = Phase::Firing {
                since: a.started_at.unix_nanos(),
                last_sent: i64::MIN / 2,
                clear_since: None,
            };
            state.value = a.value;
            state.threshold = a.threshold;
        }
    }

    /// The alerts firing now.
    pub fn firing(&self) -> Vec<Alert> {
        let mut out = Vec::new();
        for rule in &self.rules {
            for (key, s) in &rule.scopes {
                if let Phase::Firing { since, .. } = s.phase {
                    out.push(alert(&rule.config, rule.scope, key, s, since, None));
                }
            }
        }
        out.sort_by(|a, b| (&a.rule, &a.scope_value).cmp(&(&b.rule, &b.scope_value)));
        out
    }

    /// Evaluates every rule at `now` (ns since the epoch): windows slide, scopes idle for long
    /// are forgotten, and alerts fire, are re-sent or resolve.
    pub fn evaluate(&mut self, now_nanos: i64) -> Vec<AlertEvent> {
        let now_sec = now_nanos.div_euclid(NANOS);
        let resend = self.settings.resend_nanos;
        let mut events = Vec::new();
        for rule in &mut self.rules {
            let cfg = rule.config.clone();
            if cfg.kind == RuleKind::NodeSilent {
                for (node, &last) in &self.nodes {
                    let silent = now_nanos - last;
                    if silent > cfg.silent_for().as_nanos() as i64
                        && !rule.scopes.contains_key(node)
                    {
                        if rule.scopes.len() >= cfg.max_scopes {
                            continue;
                        }
                        rule.scopes
                            .insert(node.clone(), ScopeState::new(cfg.kind, now_sec));
                    }
                    if let Some(s) = rule.scopes.get_mut(node) {
                        s.last_seen = last;
                    }
                }
            }
            let oldest = now_sec - rule.window_secs + 1;
            let keep = baseline_minutes(&cfg);
            let mut forget = Vec::new();
            for (key, s) in rule.scopes.iter_mut() {
                s.expire(oldest);
                let learning = s.learning();
                if let Some(b) = &mut s.baseline {
                    b.roll_to(now_sec.div_euclid(60), learning, keep);
                }
                if let Some(f) = &mut s.fan {
                    f.ports.retain(|_, t| *t >= oldest);
                    f.pods.retain(|_, t| *t >= oldest);
                }
                let window = rule.window_secs as f64;
                let (value, threshold, breach, clear) = match cfg.kind {
                    RuleKind::Threshold => {
                        let v = s.deny as f64 / window;
                        let t = cfg.rate();
                        (v, t, v > t, v < t * cfg.clear_ratio)
                    }
                    RuleKind::Ratio => {
                        let total = s.total as f64 / window;
                        let v = if s.total == 0 {
                            0.0
                        } else {
                            100.0 * s.deny as f64 / s.total as f64
                        };
                        let t = cfg.percent();
                        (
                            v,
                            t,
                            v > t && total >= cfg.min_rate(),
                            v < t * cfg.clear_ratio || total < cfg.min_rate() * cfg.clear_ratio,
                        )
                    }
                    RuleKind::Baseline => {
                        let v = s.deny as f64 / window;
                        let b = s.baseline.as_ref().expect("baseline rules keep one");
                        let min = (cfg.min_history().as_secs() / 60) as usize;
                        let t = if b.learned >= min.max(1) {
                            cfg.floor()
                                .max(cfg.factor() * b.normal)
                                .max(b.normal + SPREAD_FACTOR * b.spread)
                        } else {
                            f64::INFINITY
                        };
                        // An infinite threshold (no history yet) clears.
                        (v, t, v > t, v < t * cfg.clear_ratio || t.is_infinite())
                    }
                    RuleKind::FanOut => {
                        let f = s.fan.as_ref().expect("fan-out rules keep targets");
                        let (p, d) = (f.ports.len() as f64, f.pods.len() as f64);
                        let (tp, td) = (cfg.ports() as f64, cfg.pods() as f64);
                        let (v, t) = if p / tp >= d / td { (p, tp) } else { (d, td) };
                        (
                            v,
                            t,
                            p >= tp || d >= td,
                            p < tp * cfg.clear_ratio && d < td * cfg.clear_ratio,
                        )
                    }
                    RuleKind::NodeSilent => {
                        let silent = (now_nanos - s.last_seen) as f64 / NANOS as f64;
                        let t = cfg.silent_for().as_secs_f64();
                        let gone = silent > cfg.forget_after().as_secs_f64();
                        (silent, t, silent > t && !gone, silent <= t || gone)
                    }
                    RuleKind::Loss => {
                        let v = s.deny as f64;
                        let t = cfg.min_dropped() as f64;
                        (v, t, v >= t, v < t * cfg.clear_ratio)
                    }
                };
                let for_ = cfg.for_.as_nanos() as i64;
                let keep_firing = cfg.keep_firing_for.as_nanos() as i64;
                let before = s.phase;
                s.phase = match s.phase {
                    Phase::Inactive if breach && for_ == 0 => Phase::Firing {
                        since: now_nanos,
                        last_sent: i64::MIN / 2,
                        clear_since: None,
                    },
                    Phase::Inactive if breach => Phase::Pending { since: now_nanos },
                    Phase::Pending { .. } if !breach => Phase::Inactive,
                    Phase::Pending { since } if now_nanos - since >= for_ => Phase::Firing {
                        since: now_nanos,
                        last_sent: i64::MIN / 2,
                        clear_since: None,
                    },
                    Phase::Firing {
                        since,
                        last_sent,
                        clear_since,
                    } => {
                        if clear {
                            let from = clear_since.unwrap_or(now_nanos);
                            if now_nanos - from >= keep_firing {
                                Phase::Inactive
                            } else {
                                Phase::Firing {
                                    since,
                                    last_sent,
                                    clear_since: Some(from),
                                }
                            }
                        } else {
                            Phase::Firing {
                                since,
                                last_sent,
                                clear_since: None,
                            }
                        }
                    }
                    p => p,
                };
                s.value = value;
                s.threshold = threshold;
                match (before, s.phase) {
                    (Phase::Firing { since, .. }, Phase::Inactive) => {
                        events.push(AlertEvent {
                            change: Change::Resolved,
                            alert: alert(&cfg, rule.scope, key, s, since, Some(now_nanos)),
                        });
                    }
                    (
                        _,
                        Phase::Firing {
                            since,
                            last_sent,
                            clear_since,
                        },
                    ) => {
                        let fired = !matches!(before, Phase::Firing { .. });
                        if fired || now_nanos - last_sent >= resend {
                            s.phase = Phase::Firing {
                                since,
                                last_sent: now_nanos,
                                clear_since,
                            };
                            events.push(AlertEvent {
                                change: if fired { Change::Fired } else { Change::Resent },
                                alert: alert(&cfg, rule.scope, key, s, since, None),
                            });
                        }
                    }
                    _ => {}
                }
                let idle = s.phase == Phase::Inactive
                    && s.buckets.is_empty()
                    && s.fan
                        .as_ref()
                        .is_none_or(|f| f.ports.is_empty() && f.pods.is_empty())
                    // A baseline is kept until its whole history is quiet.
                    && (cfg.kind != RuleKind::Baseline || now_sec - s.last_data_sec > keep as i64 * 60);
                if idle {
                    forget.push(key.clone());
                }
            }
            for k in forget {
                rule.scopes.remove(&k);
            }
        }
        // Nodes gone for longer than every node rule's forget_after are dropped.
        let longest = self
            .rules
            .iter()
            .filter(|r| r.config.kind == RuleKind::NodeSilent)
            .map(|r| r.config.forget_after().as_nanos() as i64)
            .max()
            .unwrap_or(0);
        self.nodes.retain(|_, last| now_nanos - *last <= longest);
        events
    }
}

fn baseline_minutes(cfg: &RuleConfig) -> usize {
    (cfg.history().as_secs() / 60).max(1) as usize
}

/// A quoted string of the filter language.
fn quote_filter(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A quoted SQL string literal.
fn quote_sql(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The scope's labels, its description, its filter and its SQL condition.
fn describe(scope: Scope, value: &str) -> (Vec<(&'static str, String)>, String, String, String) {
    if value == OTHER {
        return (
            vec![(scope.label(), OTHER.to_owned())],
            format!("{} values past the rule's max_scopes", scope.label()),
            String::new(),
            "TRUE".into(),
        );
    }
    match scope {
        Scope::Cluster => (
            vec![("cluster", value.to_owned())],
            format!("cluster {value}"),
            format!("resource.labels.cluster_name={}", quote_filter(value)),
            format!("cluster_name = {}", quote_sql(value)),
        ),
        Scope::DestNamespace => (
            vec![("dest_namespace", value.to_owned())],
            format!("namespace {value}"),
            format!("jsonPayload.dest.pod_namespace={}", quote_filter(value)),
            format!("dest_pod_namespace = {}", quote_sql(value)),
        ),
        Scope::DestWorkload => {
            let (ns, w) = value.split_once('/').unwrap_or(("", value));
            (
                vec![
                    ("dest_namespace", ns.to_owned()),
                    ("dest_workload", w.to_owned()),
                ],
                format!("workload {ns}/{w}"),
                format!(
                    "jsonPayload.dest.pod_namespace={} AND jsonPayload.dest.workload_name={}",
                    quote_filter(ns),
                    quote_filter(w)
                ),
                format!(
                    "dest_pod_namespace = {} AND dest_workload_name = {}",
                    quote_sql(ns),
                    quote_sql(w)
                ),
            )
        }
        Scope::SrcNamespace => (
            vec![("src_namespace", value.to_owned())],
            format!("source namespace {value}"),
            format!("jsonPayload.src.pod_namespace={}", quote_filter(value)),
            format!("src_pod_namespace = {}", quote_sql(value)),
        ),
        Scope::SrcIp => (
            vec![("src_ip", value.to_owned())],
            format!("source {value}"),
            format!("jsonPayload.connection.src_ip={}", quote_filter(value)),
            format!("src_ip = {}", quote_sql(value)),
        ),
        Scope::Node => (
            vec![("node", value.to_owned())],
            format!("node {value}"),
            format!("resource.labels.node_name={}", quote_filter(value)),
            format!("resource_node_name = {}", quote_sql(value)),
        ),
    }
}

/// FNV-1a 64 over the labels, sorted: the alert's identity.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xfe]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn alert(
    cfg: &RuleConfig,
    scope: Scope,
    key: &str,
    s: &ScopeState,
    since: i64,
    resolved: Option<i64>,
) -> Alert {
    let (scope_labels, what, scope_filter, scope_sql) = describe(scope, key);
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_owned(), cfg.name.clone());
    labels.insert("severity".to_owned(), cfg.severity.label().to_owned());
    for (k, v) in scope_labels {
        labels.insert(k.to_owned(), v);
    }
    let window = humantime::format_duration(cfg.window).to_string();
    let (v, t) = (s.value, s.threshold);
    let summary = match cfg.kind {
        RuleKind::Threshold => {
            format!("{v:.1} denied connections/s to {what} over {window} (threshold {t}/s)")
        }
        RuleKind::Ratio => {
            format!("{v:.0}% of the connections of {what} denied over {window} (threshold {t}%)")
        }
        RuleKind::Baseline => format!(
            "{v:.1} denied connections/s to {what} over {window}: above its threshold {t:.1}/s ({}× its normal rate)",
            cfg.factor()
        ),
        RuleKind::FanOut => format!(
            "{what} was denied on {v:.0} distinct destination ports or pods within {window} (threshold {t})"
        ),
        RuleKind::NodeSilent => format!(
            "{what} has sent no records for {} (threshold {})",
            humantime::format_duration(std::time::Duration::from_secs(v.max(0.0) as u64)),
            humantime::format_duration(cfg.silent_for())
        ),
        RuleKind::Loss => {
            format!("{what} dropped {v:.0} connections from the flow log within {window}")
        }
    };
    let deny = matches!(
        cfg.kind,
        RuleKind::Threshold | RuleKind::Baseline | RuleKind::FanOut
    );
    let filter = match cfg.kind {
        RuleKind::Loss => {
            let mut f = "logName:\"policy-action-loss\"".to_owned();
            if !scope_filter.is_empty() && scope == Scope::Node {
                f = format!("{f} AND jsonPayload.node_name={}", quote_filter(key));
            }
            f
        }
        _ => [
            deny.then(|| "jsonPayload.disposition=\"deny\"".to_owned()),
            (!scope_filter.is_empty()).then_some(scope_filter),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" AND "),
    };
    let sql_condition = if deny {
        format!("disposition = 'deny' AND {scope_sql}")
    } else {
        scope_sql
    };
    Alert {
        id: fingerprint(&labels),
        rule: cfg.name.clone(),
        kind: cfg.kind.label().to_owned(),
        severity: cfg.severity.label().to_owned(),
        scope: scope.label().to_owned(),
        scope_value: key.to_owned(),
        labels,
        value: if v.is_finite() { v } else { 0.0 },
        threshold: if t.is_finite() { t } else { 0.0 },
        summary,
        filter,
        sql_condition,
        status: if resolved.is_some() {
            "resolved"
        } else {
            "firing"
        }
        .to_owned(),
        started_at: Timestamp::from_unix_nanos(since),
        resolved_at: resolved.map(Timestamp::from_unix_nanos),
        annotations: BTreeMap::new(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use verdict_schema::flat_schema::log_entries_to_batch;
    use verdict_schema::log_entry::{LogEntry, NodeIdentity};

    use super::*;

    pub(crate) const T0: i64 = 1_780_000_000 * NANOS;

    /// One flow row: received at `recv_sec` after T0 (event time a second earlier).
    #[derive(Clone)]
    pub(crate) struct Row {
        pub recv_sec: i64,
        pub deny: bool,
        pub src_ip: &'static str,
        pub dest_ns: &'static str,
        pub dest_port: u16,
        pub dest_pod: String,
        pub count: u64,
        pub late_secs: i64,
    }

    pub(crate) fn row(recv_sec: i64, deny: bool, dest_ns: &'static str) -> Row {
        Row {
            recv_sec,
            deny,
            src_ip: "10.0.0.9",
            dest_ns,
            dest_port: 8080,
            dest_pod: "web-0".into(),
            count: 1,
            late_secs: 1,
        }
    }

    pub(crate) fn batch(rows: &[Row]) -> RecordBatch {
        let node = NodeIdentity {
            project_id: "p".into(),
            location: "l".into(),
            cluster_name: "c1".into(),
            node_name: "n1".into(),
        };
        let entries: Vec<LogEntry> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let recv = T0 + r.recv_sec * NANOS;
                let ts = Timestamp::from_unix_nanos(recv - r.late_secs * NANOS);
                let mut json = serde_json::json!({
                    "connection": {"src_ip": r.src_ip, "dest_ip": "10.1.0.1", "src_port": 4000,
                        "dest_port": r.dest_port, "protocol": "tcp", "direction": "ingress"},
                    "disposition": if r.deny { "deny" } else { "allow" },
                    "src": {"instance": r.src_ip},
                    "dest": {"pod_name": r.dest_pod, "pod_namespace": r.dest_ns, "namespace": r.dest_ns,
                        "workload_name": "web", "workload_kind": "StatefulSet"},
                    "count": r.count, "node_name": "n1", "timestamp": ts,
                });
                if !r.deny {
                    json["policies"] = serde_json::json!([{"name": "p", "namespace": r.dest_ns}]);
                }
                let record = serde_json::from_value(json).unwrap();
                LogEntry::policy_action(record, &node, Timestamp::from_unix_nanos(recv), format!("{i:032x}"))
            })
            .collect();
        log_entries_to_batch(&entries).unwrap()
    }

    fn engine(rules: Vec<RuleConfig>) -> Engine {
        Engine::new(
            &rules,
            EngineSettings {
                max_lateness_nanos: 120 * NANOS,
                resend_nanos: 60 * NANOS,
            },
        )
    }

    fn at(sec: i64) -> i64 {
        T0 + sec * NANOS
    }

    fn flood(rate: f64) -> RuleConfig {
        let mut r = RuleConfig::new("flood", RuleKind::Threshold);
        r.rate = Some(rate);
        r.window = Duration::from_secs(10);
        r.keep_firing_for = Duration::from_secs(10);
        r
    }

    /// `n` denies per second into `ns` during [from, to).
    fn denies(e: &mut Engine, ns: &'static str, from: i64, to: i64, n: u64) {
        for s in from..to {
            let mut r = row(s, true, ns);
            r.count = n;
            e.observe_flows(&batch(&[r])).unwrap();
        }
    }

    #[test]
    fn a_threshold_fires_once_is_resent_and_resolves_with_hysteresis() {
        let mut e = engine(vec![flood(50.0)]);
        denies(&mut e, "shop", 0, 10, 100);
        let ev = e.evaluate(at(9));
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].change, Change::Fired);
        let a = &ev[0].alert;
        assert_eq!(a.labels["alertname"], "flood");
        assert_eq!(a.labels["dest_namespace"], "shop");
        assert_eq!(a.value, 100.0);
        assert_eq!(
            a.filter,
            "jsonPayload.disposition=\"deny\" AND jsonPayload.dest.pod_namespace=\"shop\""
        );
        assert!(
            a.summary
                .contains("100.0 denied connections/s to namespace shop"),
            "{}",
            a.summary
        );
        // Still above: nothing new until the re-send interval.
        denies(&mut e, "shop", 10, 20, 100);
        assert!(e.evaluate(at(19)).is_empty());
        denies(&mut e, "shop", 20, 70, 100);
        let ev = e.evaluate(at(69));
        assert_eq!(
            ev.iter().map(|x| x.change).collect::<Vec<_>>(),
            [Change::Resent]
        );
        // Between the clear level (40/s) and the threshold: keeps firing.
        denies(&mut e, "shop", 70, 90, 45);
        assert!(e.evaluate(at(89)).is_empty());
        // Below the clear level: resolves only after keep_firing_for (10 s).
        denies(&mut e, "shop", 90, 100, 1);
        assert!(e.evaluate(at(99)).is_empty());
        denies(&mut e, "shop", 100, 110, 1);
        let ev = e.evaluate(at(109));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].change, Change::Resolved);
        assert_eq!(
            ev[0].alert.resolved_at,
            Some(Timestamp::from_unix_nanos(at(109)))
        );
        assert_eq!(ev[0].alert.id, a.id);
        assert!(e.firing().is_empty());
    }

    #[test]
    fn for_delays_firing_and_a_dip_resets_it() {
        let mut r = flood(50.0);
        r.for_ = Duration::from_secs(10);
        let mut e = engine(vec![r]);
        denies(&mut e, "shop", 0, 10, 100);
        assert!(e.evaluate(at(9)).is_empty(), "pending");
        denies(&mut e, "shop", 10, 15, 100);
        assert!(e.evaluate(at(14)).is_empty(), "still pending");
        denies(&mut e, "shop", 15, 30, 100);
        let ev = e.evaluate(at(29));
        assert_eq!(ev[0].change, Change::Fired);
    }

    #[test]
    fn late_rows_and_allows_do_not_count_as_denies() {
        let mut e = engine(vec![flood(5.0)]);
        let mut rows = Vec::new();
        for s in 0..10 {
            let mut late = row(s, true, "shop");
            late.count = 100;
            late.late_secs = 600;
            rows.push(late);
            let mut allow = row(s, false, "shop");
            allow.count = 100;
            rows.push(allow);
        }
        e.observe_flows(&batch(&rows)).unwrap();
        assert!(e.evaluate(at(9)).is_empty());
        assert_eq!(e.counters().late_rows, 10);
    }

    #[test]
    fn ratio_needs_the_share_and_the_volume() {
        let mut r = RuleConfig::new("ratio", RuleKind::Ratio);
        r.percent = Some(50.0);
        r.min_rate = Some(5.0);
        r.window = Duration::from_secs(10);
        let mut e = engine(vec![r]);
        // 80 % denied but only 1 connection/s: below the volume.
        for s in 0..10 {
            let mut rows = vec![row(s, false, "quiet")];
            rows[0].count = if s % 5 == 0 { 1 } else { 0 };
            let d = row(s, true, "quiet");
            rows.push(d);
            e.observe_flows(&batch(&rows[1..])).unwrap();
        }
        assert!(e.evaluate(at(9)).is_empty());
        for s in 10..20 {
            let mut d = row(s, true, "busy");
            d.count = 30;
            let mut a = row(s, false, "busy");
            a.count = 10;
            e.observe_flows(&batch(&[d, a])).unwrap();
        }
        let ev = e.evaluate(at(19));
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].alert.labels["dest_namespace"], "busy");
        assert_eq!(ev[0].alert.value, 75.0);
        assert!(
            !ev[0].alert.filter.contains("disposition"),
            "a ratio's records are all of the scope's"
        );
    }

    fn spike() -> RuleConfig {
        let mut r = RuleConfig::new("spike", RuleKind::Baseline);
        r.factor = Some(4.0);
        r.floor = Some(1.0);
        r.window = Duration::from_secs(30);
        r.history = Some(Duration::from_secs(3600));
        r.min_history = Some(Duration::from_secs(600));
        r
    }

    #[test]
    fn a_baseline_learns_the_normal_and_fires_far_above_it_only() {
        let mut e = engine(vec![spike()]);
        // 20 minutes at 5 denies/s: the normal.
        for s in 0..1200 {
            denies(&mut e, "shop", s, s + 1, 5);
            if s % 30 == 29 {
                assert!(e.evaluate(at(s)).is_empty(), "at {s}");
            }
        }
        // 3x the normal: under factor 4.
        denies(&mut e, "shop", 1200, 1230, 15);
        assert!(e.evaluate(at(1229)).is_empty());
        // 10x: fires.
        denies(&mut e, "shop", 1230, 1260, 50);
        let ev = e.evaluate(at(1259));
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].change, Change::Fired);
        assert!(
            (ev[0].alert.threshold - 20.0).abs() < 1.0,
            "{}",
            ev[0].alert.threshold
        );
        // A long attack is not learned as the normal: still firing 20 minutes later.
        for s in 1260..2460 {
            denies(&mut e, "shop", s, s + 1, 50);
        }
        let ev = e.evaluate(at(2459));
        assert!(ev.iter().all(|x| x.change == Change::Resent), "{ev:?}");
        assert_eq!(e.firing().len(), 1);
    }

    #[test]
    fn a_quiet_scope_below_the_floor_and_a_new_scope_do_not_page() {
        let mut e = engine(vec![spike()]);
        for s in 0..900 {
            if s % 60 == 0 {
                denies(&mut e, "quiet", s, s + 1, 1);
            }
        }
        e.evaluate(at(899));
        // 30 denies in 30 s from a normal of ~0.02/s: 50x, but 1/s is the floor.
        denies(&mut e, "quiet", 900, 930, 1);
        assert!(e.evaluate(at(929)).is_empty());
        // A scope with no history cannot be judged against it.
        denies(&mut e, "new", 930, 960, 500);
        assert!(e.evaluate(at(959)).is_empty());
    }

    #[test]
    fn fan_out_counts_distinct_ports_per_source() {
        let mut r = RuleConfig::new("scan", RuleKind::FanOut);
        r.scope = Some(Scope::SrcIp);
        r.ports = Some(20);
        r.window = Duration::from_secs(60);
        let mut e = engine(vec![r]);
        let mut rows = Vec::new();
        for p in 0..25u16 {
            let mut x = row(i64::from(p), true, "shop");
            x.src_ip = "10.9.9.9";
            x.dest_port = 1000 + p;
            rows.push(x);
            // A busy client on one port is no scan.
            let mut y = row(i64::from(p), true, "shop");
            y.src_ip = "10.0.0.1";
            y.count = 500;
            rows.push(y);
        }
        e.observe_flows(&batch(&rows)).unwrap();
        let ev = e.evaluate(at(25));
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].alert.labels["src_ip"], "10.9.9.9");
        assert_eq!(ev[0].alert.value, 25.0);
        // The targets leave the window: it resolves (after keep_firing_for).
        assert!(e.evaluate(at(80)).is_empty());
        let ev = e.evaluate(at(125));
        assert_eq!(ev[0].change, Change::Resolved);
    }

    #[test]
    fn silent_nodes_fire_and_resolve_when_they_send_again_or_are_gone() {
        let mut r = RuleConfig::new("silent", RuleKind::NodeSilent);
        r.silent_for = Some(Duration::from_secs(300));
        r.forget_after = Some(Duration::from_secs(3600));
        r.keep_firing_for = Duration::ZERO;
        let mut e = engine(vec![r]);
        e.node_seen("n1", at(0));
        e.node_seen("n2", at(0));
        assert!(e.evaluate(at(200)).is_empty());
        e.node_seen("n2", at(250));
        let ev = e.evaluate(at(320));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].alert.labels["node"], "n1");
        assert!(
            ev[0].alert.summary.contains("no records for 5m 20s"),
            "{}",
            ev[0].alert.summary
        );
        e.node_seen("n1", at(330));
        let ev = e.evaluate(at(331));
        assert_eq!(ev[0].change, Change::Resolved);
        // n2 goes silent, then past forget_after: resolves as removed, and is forgotten.
        let ev = e.evaluate(at(600));
        assert_eq!(ev[0].alert.labels["node"], "n2");
        let ev = e.evaluate(at(250 + 3601));
        assert!(
            ev.iter()
                .any(|x| x.change == Change::Resolved && x.alert.labels["node"] == "n2"),
            "{ev:?}"
        );
    }

    #[test]
    fn restored_alerts_are_not_fired_again_and_still_resolve() {
        let mut e = engine(vec![flood(50.0)]);
        denies(&mut e, "shop", 0, 10, 100);
        let fired = e.evaluate(at(9)).remove(0).alert;
        let mut e = engine(vec![flood(50.0)]);
        e.restore(std::slice::from_ref(&fired), at(20));
        denies(&mut e, "shop", 20, 30, 100);
        let ev = e.evaluate(at(29));
        assert_eq!(
            ev.iter().map(|x| x.change).collect::<Vec<_>>(),
            [Change::Resent]
        );
        assert_eq!(ev[0].alert.started_at, fired.started_at);
        // Quiet after the restart: resolved, not left hanging.
        let mut e = engine(vec![flood(50.0)]);
        e.restore(std::slice::from_ref(&fired), at(20));
        e.evaluate(at(21));
        let ev = e.evaluate(at(40));
        assert_eq!(
            ev.iter().map(|x| x.change).collect::<Vec<_>>(),
            [Change::Resolved]
        );
    }

    #[test]
    fn baselines_are_rebuilt_from_rollups_after_a_restart() {
        // 20 minutes of 5 denies/s into shop, as the lake's one-minute rollups hold them.
        let rows: Vec<Row> = (0..1200)
            .map(|s| {
                let mut r = row(s, true, "shop");
                r.count = 5;
                r
            })
            .collect();
        let rollups = crate::rollup::aggregate_flows(&[batch(&rows)]).unwrap();
        let mut e = engine(vec![spike()]);
        e.seed_rollups(std::slice::from_ref(&rollups), at(1200))
            .unwrap();
        // 3x the normal: nothing; 10x: fires at once, without live history.
        denies(&mut e, "shop", 1200, 1230, 15);
        assert!(e.evaluate(at(1229)).is_empty());
        denies(&mut e, "shop", 1230, 1260, 50);
        let ev = e.evaluate(at(1259));
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert!(
            (ev[0].alert.threshold - 20.0).abs() < 1.0,
            "{}",
            ev[0].alert.threshold
        );
        // A restored firing alert's minutes are not learned: the attack in the rollups since it
        // started does not become the normal.
        let fired = ev[0].alert.clone();
        let attack: Vec<Row> = (1200..1800)
            .map(|s| {
                let mut r = row(s, true, "shop");
                r.count = 50;
                r
            })
            .collect();
        let both = crate::rollup::aggregate_flows(&[batch(&rows), batch(&attack)]).unwrap();
        let mut e = engine(vec![spike()]);
        e.restore(std::slice::from_ref(&fired), at(1800));
        e.seed_rollups(&[both], at(1800)).unwrap();
        denies(&mut e, "shop", 1800, 1830, 50);
        let ev = e.evaluate(at(1829));
        assert_eq!(
            ev.iter().map(|x| x.change).collect::<Vec<_>>(),
            [Change::Resent],
            "{ev:?}"
        );
        assert!(
            (ev[0].alert.threshold - 20.0).abs() < 1.0,
            "{}",
            ev[0].alert.threshold
        );
    }

    #[test]
    fn scopes_past_the_cap_are_watched_together_as_other() {
        let mut r = flood(50.0);
        r.max_scopes = 2;
        let mut e = engine(vec![r]);
        let names = ["a", "b", "c", "d"];
        for s in 0..10 {
            let rows: Vec<Row> = names
                .iter()
                .map(|n| {
                    let mut x = row(s, true, n);
                    x.count = 30;
                    x
                })
                .collect();
            e.observe_flows(&batch(&rows)).unwrap();
        }
        assert_eq!(e.tracked_scopes(), 3);
        assert_eq!(e.counters().folded_rows, 20);
        let ev = e.evaluate(at(9));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].alert.scope_value, OTHER);
    }

    #[test]
    fn filters_quote_values() {
        let (_, _, f, sql) = describe(Scope::DestNamespace, "a\"b'c");
        assert_eq!(f, "jsonPayload.dest.pod_namespace=\"a\\\"b'c\"");
        assert_eq!(sql, "dest_pod_namespace = 'a\"b''c'");
        verdict_filter::parse(&f).unwrap();
    }
}
