//! `[alerts]`: the log-based metrics (`[alerts.metrics]`), the detectors (`[[alerts.rules]]`)
//! and where alerts go (`[[alerts.receivers]]`), with their defaults and checks.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::{ByteSize, ConfigProblem, Secret, humantime_serde_compat};

pub const DEFAULT_EVALUATION_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_LATENESS: Duration = Duration::from_secs(120);
pub const DEFAULT_HISTORY_MAX_BYTES: u64 = 16 << 20;
pub const DEFAULT_METRICS_MAX_SERIES: usize = 10_000;
pub const DEFAULT_MAX_SCOPES: usize = 10_000;
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
pub const DEFAULT_KEEP_FIRING_FOR: Duration = Duration::from_secs(30);
pub const DEFAULT_CLEAR_RATIO: f64 = 0.8;
pub const DEFAULT_BASELINE_HISTORY: Duration = Duration::from_secs(3600);
pub const DEFAULT_BASELINE_MIN_HISTORY: Duration = Duration::from_secs(600);
pub const DEFAULT_RECEIVER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest window a rule may use (its per-second buckets are kept in memory per scope).
pub const MAX_WINDOW: Duration = Duration::from_secs(600);
/// The longest baseline history (one value per minute per scope).
pub const MAX_BASELINE_HISTORY: Duration = Duration::from_secs(24 * 3600);

/// The labels the log-based metrics may carry.
pub const METRIC_LABELS: [&str; 8] = [
    "disposition",
    "direction",
    "src_namespace",
    "dest_namespace",
    "src_workload",
    "dest_workload",
    "protocol",
    "enforcement",
];

/// `[alerts]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Off: no detectors run and no alert is sent (the log-based metrics have their own switch).
    pub enabled: bool,
    /// How often every rule is evaluated over its window.
    #[serde(with = "humantime_serde_compat")]
    pub evaluation_interval: Duration,
    /// A firing alert is sent again this often (Alertmanager forgets alerts that are not
    /// re-sent), and it expires at four times this unless re-sent or resolved.
    #[serde(with = "humantime_serde_compat")]
    pub resend_interval: Duration,
    /// Records received more than this after their event time (a node catching up after an
    /// outage) count in the log-based metrics and the lake but not in detection windows: a
    /// backlog arriving at once is not an attack happening now.
    #[serde(with = "humantime_serde_compat")]
    pub max_lateness: Duration,
    /// The collector's address as users reach it, for the links in alerts (`generatorURL`).
    /// Empty: `http://` plus `http.listen`.
    pub external_url: String,
    /// The alert history (`DATA_DIR/alerts/history.jsonl`) is compacted to its newest half
    /// past this size.
    pub history_max_bytes: ByteSize,
    /// The project in the `logName` of alert messages sent to topics
    /// (`projects/PROJECT/logs/verdict-alerts`).
    pub project_id: String,
    pub metrics: FlowMetricsConfig,
    /// The detectors. Absent: the built-in set ([`default_rules`]); an empty list: none.
    pub rules: Vec<RuleConfig>,
    /// Where alerts are sent, besides `GET /v1/alerts` and the collector's log.
    pub receivers: Vec<ReceiverConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            evaluation_interval: DEFAULT_EVALUATION_INTERVAL,
            resend_interval: DEFAULT_RESEND_INTERVAL,
            max_lateness: DEFAULT_MAX_LATENESS,
            external_url: String::new(),
            history_max_bytes: ByteSize(DEFAULT_HISTORY_MAX_BYTES),
            project_id: "verdict-local".to_owned(),
            metrics: FlowMetricsConfig::default(),
            rules: default_rules(),
            receivers: Vec::new(),
        }
    }
}

/// `[alerts.metrics]`: counters of the flow log on `/metrics`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowMetricsConfig {
    pub enabled: bool,
    /// The labels of `verdict_flow_connections_total` and `verdict_flow_records_total`, from
    /// [`METRIC_LABELS`].
    pub labels: Vec<String>,
    /// Series at most per metric; records of further label sets are counted under the label
    /// value `other` (and in `verdict_flow_metric_series_folded_total`).
    pub max_series: usize,
}

impl Default for FlowMetricsConfig {
    fn default() -> Self {
        FlowMetricsConfig {
            enabled: true,
            labels: [
                "disposition",
                "direction",
                "src_namespace",
                "dest_namespace",
            ]
            .map(String::from)
            .to_vec(),
            max_series: DEFAULT_METRICS_MAX_SERIES,
        }
    }
}

/// What a rule detects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Denied connections per second over `window` above `rate`.
    Threshold,
    /// The denied share of the scope's connections over `window` above `percent`, with at
    /// least `min_rate` connections per second.
    Ratio,
    /// Denied connections per second over `window` above `factor` times the scope's own
    /// normal rate (learned over `history`), and above `floor`.
    Baseline,
    /// One scope (usually a source IP) denied on `ports` distinct destination ports or `pods`
    /// distinct destinations within `window`: a scan.
    FanOut,
    /// A node that sent records before has sent none for `silent_for`.
    NodeSilent,
    /// Loss markers: nodes dropped at least `min_dropped` connections from the log within
    /// `window` (rate limit, aggregation overflow, lost events, write failures).
    Loss,
}

impl RuleKind {
    pub fn label(self) -> &'static str {
        match self {
            RuleKind::Threshold => "threshold",
            RuleKind::Ratio => "ratio",
            RuleKind::Baseline => "baseline",
            RuleKind::FanOut => "fan_out",
            RuleKind::NodeSilent => "node_silent",
            RuleKind::Loss => "loss",
        }
    }
}

/// What a rule watches separately: one alert per scope value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Cluster,
    DestNamespace,
    DestWorkload,
    SrcNamespace,
    SrcIp,
    Node,
}

impl Scope {
    pub fn label(self) -> &'static str {
        match self {
            Scope::Cluster => "cluster",
            Scope::DestNamespace => "dest_namespace",
            Scope::DestWorkload => "dest_workload",
            Scope::SrcNamespace => "src_namespace",
            Scope::SrcIp => "src_ip",
            Scope::Node => "node",
        }
    }
}

/// Alert severity (the `severity` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    #[default]
    Warning,
    Info,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One `[[alerts.rules]]` entry. Which of the numeric settings apply depends on `kind`; a
/// setting another kind uses is refused, so a typo cannot pass silently.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The `alertname`: 1–64 letters, digits, `-` or `_`, unique.
    pub name: String,
    pub kind: RuleKind,
    /// Default: `dest_namespace` (`node` for `node_silent`, `cluster` for `loss`).
    #[serde(default)]
    pub scope: Option<Scope>,
    #[serde(default)]
    pub severity: Severity,
    /// The sliding window the rate (or the distinct targets, or the loss) is measured over.
    #[serde(default = "default_window", with = "humantime_serde_compat")]
    pub window: Duration,
    /// How long the condition must hold before the alert fires (0: at the first evaluation).
    #[serde(default, rename = "for", with = "humantime_serde_compat")]
    pub for_: Duration,
    /// Hysteresis: a firing alert resolves only after its value stayed below
    /// `clear_ratio` × the threshold for this long.
    #[serde(default = "default_keep_firing_for", with = "humantime_serde_compat")]
    pub keep_firing_for: Duration,
    #[serde(default = "default_clear_ratio")]
    pub clear_ratio: f64,
    /// Scope values tracked at most; the records of further ones are watched together under
    /// the value `other`.
    #[serde(default = "default_max_scopes")]
    pub max_scopes: usize,
    /// `threshold`: denied connections per second.
    #[serde(default)]
    pub rate: Option<f64>,
    /// `ratio`: denied share in percent.
    #[serde(default)]
    pub percent: Option<f64>,
    /// `ratio`: connections per second (allowed and denied) at least.
    #[serde(default)]
    pub min_rate: Option<f64>,
    /// `baseline`: times the scope's normal rate.
    #[serde(default)]
    pub factor: Option<f64>,
    /// `baseline`: denied connections per second at least (quiet scopes do not page).
    #[serde(default)]
    pub floor: Option<f64>,
    /// `baseline`: how much past the normal rate is learned from (one value per minute).
    #[serde(default, with = "humantime_serde_compat_opt")]
    pub history: Option<Duration>,
    /// `baseline`: learned history needed before the rule can fire for a scope.
    #[serde(default, with = "humantime_serde_compat_opt")]
    pub min_history: Option<Duration>,
    /// `fan_out`: distinct destination ports.
    #[serde(default)]
    pub ports: Option<usize>,
    /// `fan_out`: distinct destination pods (or addresses, for non-pod destinations).
    #[serde(default)]
    pub pods: Option<usize>,
    /// `node_silent`: silence that fires.
    #[serde(default, with = "humantime_serde_compat_opt")]
    pub silent_for: Option<Duration>,
    /// `node_silent`: a node silent this long is taken as removed; its alert resolves.
    #[serde(default, with = "humantime_serde_compat_opt")]
    pub forget_after: Option<Duration>,
    /// `loss`: dropped connections within the window at least.
    #[serde(default)]
    pub min_dropped: Option<u64>,
}

fn default_window() -> Duration {
    DEFAULT_WINDOW
}
fn default_keep_firing_for() -> Duration {
    DEFAULT_KEEP_FIRING_FOR
}
fn default_clear_ratio() -> f64 {
    DEFAULT_CLEAR_RATIO
}
fn default_max_scopes() -> usize {
    DEFAULT_MAX_SCOPES
}

mod humantime_serde_compat_opt {
    use std::time::Duration;

    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::humantime_serde_compat::deserialize(d).map(Some)
    }
}

impl RuleConfig {
    /// A rule of `kind` named `name` with every optional setting unset.
    pub fn new(name: &str, kind: RuleKind) -> RuleConfig {
        RuleConfig {
            name: name.to_owned(),
            kind,
            scope: None,
            severity: Severity::Warning,
            window: DEFAULT_WINDOW,
            for_: Duration::ZERO,
            keep_firing_for: DEFAULT_KEEP_FIRING_FOR,
            clear_ratio: DEFAULT_CLEAR_RATIO,
            max_scopes: DEFAULT_MAX_SCOPES,
            rate: None,
            percent: None,
            min_rate: None,
            factor: None,
            floor: None,
            history: None,
            min_history: None,
            ports: None,
            pods: None,
            silent_for: None,
            forget_after: None,
            min_dropped: None,
        }
    }

    /// The scope, or the kind's default.
    pub fn scope(&self) -> Scope {
        self.scope.unwrap_or(match self.kind {
            RuleKind::NodeSilent => Scope::Node,
            RuleKind::Loss => Scope::Cluster,
            _ => Scope::DestNamespace,
        })
    }

    pub fn rate(&self) -> f64 {
        self.rate.unwrap_or(50.0)
    }
    pub fn percent(&self) -> f64 {
        self.percent.unwrap_or(50.0)
    }
    pub fn min_rate(&self) -> f64 {
        self.min_rate.unwrap_or(5.0)
    }
    pub fn factor(&self) -> f64 {
        self.factor.unwrap_or(6.0)
    }
    pub fn floor(&self) -> f64 {
        self.floor.unwrap_or(1.0)
    }
    pub fn history(&self) -> Duration {
        self.history.unwrap_or(DEFAULT_BASELINE_HISTORY)
    }
    pub fn min_history(&self) -> Duration {
        self.min_history.unwrap_or(DEFAULT_BASELINE_MIN_HISTORY)
    }
    pub fn ports(&self) -> usize {
        self.ports.unwrap_or(20)
    }
    pub fn pods(&self) -> usize {
        self.pods.unwrap_or(50)
    }
    pub fn silent_for(&self) -> Duration {
        self.silent_for.unwrap_or(Duration::from_secs(300))
    }
    pub fn forget_after(&self) -> Duration {
        self.forget_after.unwrap_or(Duration::from_secs(86_400))
    }
    pub fn min_dropped(&self) -> u64 {
        self.min_dropped.unwrap_or(1)
    }

    /// The problems of this rule, each naming its setting (`alerts.rules[NAME].rate`).
    fn problems(&self, at: &str, out: &mut Vec<ConfigProblem>) {
        let mut bad = |setting: &str, message: String| {
            out.push(ConfigProblem {
                setting: format!("{at}.{setting}"),
                message,
            })
        };
        if !valid_name(&self.name) {
            bad(
                "name",
                format!("{:?}: use 1–64 letters, digits, '-' or '_'", self.name),
            );
        }
        let kind = self.kind;
        // The settings each kind reads; any other numeric setting given is refused.
        let used: &[&str] = match kind {
            RuleKind::Threshold => &["rate"],
            RuleKind::Ratio => &["percent", "min_rate"],
            RuleKind::Baseline => &["factor", "floor", "history", "min_history"],
            RuleKind::FanOut => &["ports", "pods"],
            RuleKind::NodeSilent => &["silent_for", "forget_after"],
            RuleKind::Loss => &["min_dropped"],
        };
        let given = [
            ("rate", self.rate.is_some()),
            ("percent", self.percent.is_some()),
            ("min_rate", self.min_rate.is_some()),
            ("factor", self.factor.is_some()),
            ("floor", self.floor.is_some()),
            ("history", self.history.is_some()),
            ("min_history", self.min_history.is_some()),
            ("ports", self.ports.is_some()),
            ("pods", self.pods.is_some()),
            ("silent_for", self.silent_for.is_some()),
            ("forget_after", self.forget_after.is_some()),
            ("min_dropped", self.min_dropped.is_some()),
        ];
        for (setting, set) in given {
            if set && !used.contains(&setting) {
                bad(
                    setting,
                    format!(
                        "a {} rule does not use it (it uses: {})",
                        kind.label(),
                        used.join(", ")
                    ),
                );
            }
        }
        let scope = self.scope();
        let node_kind = matches!(kind, RuleKind::NodeSilent | RuleKind::Loss);
        if kind == RuleKind::NodeSilent && scope != Scope::Node {
            bad(
                "scope",
                "a node_silent rule watches nodes: scope = \"node\"".into(),
            );
        }
        if kind == RuleKind::Loss && !matches!(scope, Scope::Node | Scope::Cluster) {
            bad(
                "scope",
                "a loss rule watches \"node\" or \"cluster\"".into(),
            );
        }
        if !node_kind && scope == Scope::Node {
            bad(
                "scope",
                format!(
                    "a {} rule watches flows: cluster, dest_namespace, dest_workload, src_namespace or src_ip",
                    kind.label()
                ),
            );
        }
        if self.window < Duration::from_secs(1) || self.window > MAX_WINDOW {
            bad("window", "must be between 1s and 10m".into());
        }
        if !(self.clear_ratio > 0.0 && self.clear_ratio <= 1.0) {
            bad("clear_ratio", "must be in (0, 1]".into());
        }
        if self.max_scopes == 0 || self.max_scopes > 1_000_000 {
            bad("max_scopes", "must be between 1 and 1000000".into());
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.rate()) {
            bad("rate", "must be a positive number".into());
        }
        if !(self.percent() > 0.0 && self.percent() < 100.0) {
            bad("percent", "must be between 0 and 100 (exclusive)".into());
        }
        if !(self.min_rate().is_finite() && self.min_rate() >= 0.0) {
            bad("min_rate", "must be zero or positive".into());
        }
        if !(self.factor().is_finite() && self.factor() > 1.0) {
            bad("factor", "must be above 1".into());
        }
        if !positive(self.floor()) {
            bad("floor", "must be a positive number".into());
        }
        if self.history() < Duration::from_secs(600) || self.history() > MAX_BASELINE_HISTORY {
            bad("history", "must be between 10m and 24h".into());
        }
        if self.min_history() > self.history() {
            bad("min_history", "must be at most history".into());
        }
        if self.ports() == 0 || self.ports() > 65_535 {
            bad("ports", "must be between 1 and 65535".into());
        }
        if self.pods() == 0 || self.pods() > 100_000 {
            bad("pods", "must be between 1 and 100000".into());
        }
        if self.silent_for() < Duration::from_secs(10) {
            bad("silent_for", "must be at least 10s".into());
        }
        if self.forget_after() <= self.silent_for() {
            bad("forget_after", "must be longer than silent_for".into());
        }
        if self.min_dropped() == 0 {
            bad("min_dropped", "must be positive".into());
        }
    }
}

/// A kind of receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKind {
    /// Prometheus Alertmanager: `POST URL/api/v2/alerts` (URL is Alertmanager's base).
    Alertmanager,
    /// `POST URL` with Alertmanager's webhook payload (version 4).
    Webhook,
    /// A Kafka topic (`kafka://HOST:PORT/TOPIC`): one JSON message per alert change.
    Sink,
}

/// One `[[alerts.receivers]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Names the receiver in metrics and logs: 1–64 letters, digits, `-` or `_`, unique.
    pub name: String,
    pub kind: ReceiverKind,
    pub url: String,
    /// `Authorization: Bearer` for Alertmanager and webhooks, read from this file at each send
    /// (rotated credentials need no restart).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Or the token itself (redacted when the configuration is printed).
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Extra CA certificates (PEM) for `https://` receivers, beside the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_receiver_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Only alerts of these rules (empty: all).
    #[serde(default)]
    pub rules: Vec<String>,
    /// A `sink` receiver's destination settings, as in `[[sinks]]` (`[alerts.receivers.kafka]`:
    /// the brokers' options, compression, topic creation). The message key is the alert's id.
    #[serde(default)]
    pub kafka: Option<toml::Value>,
}

impl ReceiverConfig {
    /// A `sink` receiver as a sink definition (JSON) and its destination sections.
    pub fn sink_definition(
        &self,
    ) -> (
        crate::sinks::definition::SinkConfig,
        Vec<(String, toml::Value)>,
    ) {
        let definition = crate::sinks::definition::SinkConfig {
            name: self.name.clone(),
            destination: self.url.clone(),
            description: String::new(),
            disabled: false,
            filter: String::new(),
            exclusions: Vec::new(),
            format: crate::sinks::definition::Format::Json,
            delivery: Default::default(),
        };
        let sections = self
            .kafka
            .clone()
            .map(|v| ("kafka".to_owned(), v))
            .into_iter()
            .collect();
        (definition, sections)
    }
}

fn default_receiver_timeout() -> Duration {
    DEFAULT_RECEIVER_TIMEOUT
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The detectors that run when `[[alerts.rules]]` is absent: a flood of denies into a
/// namespace, denies far above a namespace's own normal, a source scanning ports or pods,
/// silent nodes and dropped log records.
pub fn default_rules() -> Vec<RuleConfig> {
    let mut flood = RuleConfig::new("VerdictDenyFlood", RuleKind::Threshold);
    flood.severity = Severity::Critical;
    flood.rate = Some(50.0);
    flood.window = Duration::from_secs(10);
    // 6x: on a labelled synthetic day (load-tests/alert-quality.sh) 4x paged dozens of times a
    // day on a noisy batch job; 6x none to a few, while every flood and all but the quietest
    // ramps are still caught.
    let mut spike = RuleConfig::new("VerdictDenySpike", RuleKind::Baseline);
    spike.factor = Some(6.0);
    spike.floor = Some(1.0);
    spike.window = Duration::from_secs(30);
    let mut ratio = RuleConfig::new("VerdictDenyRatio", RuleKind::Ratio);
    ratio.percent = Some(50.0);
    ratio.min_rate = Some(5.0);
    ratio.window = Duration::from_secs(60);
    ratio.for_ = Duration::from_secs(60);
    let mut scan = RuleConfig::new("VerdictPortScan", RuleKind::FanOut);
    scan.scope = Some(Scope::SrcIp);
    scan.ports = Some(20);
    scan.pods = Some(50);
    scan.window = Duration::from_secs(60);
    let mut silent = RuleConfig::new("VerdictNodeSilent", RuleKind::NodeSilent);
    silent.silent_for = Some(Duration::from_secs(300));
    silent.forget_after = Some(Duration::from_secs(86_400));
    let mut loss = RuleConfig::new("VerdictFlowLogLoss", RuleKind::Loss);
    loss.scope = Some(Scope::Node);
    loss.severity = Severity::Info;
    loss.window = Duration::from_secs(60);
    loss.min_dropped = Some(1);
    vec![flood, spike, ratio, scan, silent, loss]
}

impl AlertsConfig {
    /// Every problem of `[alerts]`, each naming its setting.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut bad = |setting: &str, message: &str| {
            out.push(ConfigProblem {
                setting: format!("alerts.{setting}"),
                message: message.to_owned(),
            })
        };
        if self.evaluation_interval < Duration::from_millis(100)
            || self.evaluation_interval > Duration::from_secs(60)
        {
            bad("evaluation_interval", "must be between 100ms and 1m");
        }
        if self.resend_interval < Duration::from_secs(1) {
            bad("resend_interval", "must be at least 1s");
        }
        if self.max_lateness < Duration::from_secs(1) {
            bad("max_lateness", "must be at least 1s");
        }
        let url = &self.external_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            bad("external_url", "must be an http:// or https:// URL");
        }
        if self.project_id.is_empty() || self.project_id.contains('/') {
            bad("project_id", "must be a non-empty name without '/'");
        }
        if self.history_max_bytes.0 < 64 << 10 {
            bad("history_max_bytes", "must be at least 64KiB");
        }
        let m = &self.metrics;
        for (i, l) in m.labels.iter().enumerate() {
            if !METRIC_LABELS.contains(&l.as_str()) {
                out.push(ConfigProblem {
                    setting: format!("alerts.metrics.labels[{i}]"),
                    message: format!("{l:?} is not one of {}", METRIC_LABELS.join(", ")),
                });
            } else if m.labels[..i].contains(l) {
                out.push(ConfigProblem {
                    setting: format!("alerts.metrics.labels[{i}]"),
                    message: format!("{l:?} is listed twice"),
                });
            }
        }
        if m.max_series == 0 || m.max_series > 1_000_000 {
            out.push(ConfigProblem {
                setting: "alerts.metrics.max_series".into(),
                message: "must be between 1 and 1000000".into(),
            });
        }
        for (i, r) in self.rules.iter().enumerate() {
            let at = if valid_name(&r.name) {
                format!("alerts.rules[{}]", r.name)
            } else {
                format!("alerts.rules[{i}]")
            };
            r.problems(&at, &mut out);
            if self.rules[..i].iter().any(|o| o.name == r.name) {
                out.push(ConfigProblem {
                    setting: format!("{at}.name"),
                    message: "another rule has this name".into(),
                });
            }
        }
        for (i, r) in self.receivers.iter().enumerate() {
            let at = if valid_name(&r.name) {
                format!("alerts.receivers[{}]", r.name)
            } else {
                format!("alerts.receivers[{i}]")
            };
            let mut bad = |setting: &str, message: String| {
                out.push(ConfigProblem {
                    setting: format!("{at}.{setting}"),
                    message,
                })
            };
            if !valid_name(&r.name) {
                bad(
                    "name",
                    format!("{:?}: use 1–64 letters, digits, '-' or '_'", r.name),
                );
            }
            if self.receivers[..i].iter().any(|o| o.name == r.name) {
                bad("name", "another receiver has this name".into());
            }
            let http = r.url.starts_with("http://") || r.url.starts_with("https://");
            match r.kind {
                ReceiverKind::Alertmanager | ReceiverKind::Webhook if !http => {
                    bad("url", format!("{:?}: an http:// or https:// URL", r.url))
                }
                ReceiverKind::Sink if !r.url.starts_with("kafka://") => bad(
                    "url",
                    format!(
                        "{:?}: kafka://HOST:PORT/TOPIC (Pub/Sub topics are not supported for alerts yet: route them through Alertmanager or a webhook)",
                        r.url
                    ),
                ),
                _ => {}
            }
            if r.kind == ReceiverKind::Sink {
                // The destination and its section, checked as a sink's (so a kafka:// URL in a
                // build without Kafka says so).
                let (definition, sections) = r.sink_definition();
                if let Err(problems) = crate::sinks::registry::parse(&definition, sections) {
                    for (setting, message) in problems {
                        bad(&setting, message);
                    }
                }
            } else if r.kafka.is_some() {
                bad(
                    "kafka",
                    "destination settings are for sink receivers only".into(),
                );
            }
            if r.kind == ReceiverKind::Sink
                && (r.bearer_token.is_some()
                    || r.bearer_token_file.is_some()
                    || r.ca_file.is_some())
            {
                bad(
                    "bearer_token",
                    "a sink receiver takes no HTTP credentials (its URL's destination settings apply)".into(),
                );
            }
            if r.bearer_token.is_some() && r.bearer_token_file.is_some() {
                bad(
                    "bearer_token",
                    "give bearer_token or bearer_token_file, not both".into(),
                );
            }
            if let Some(path) = r.ca_file.as_ref().or(r.bearer_token_file.as_ref())
                && !path.is_file()
            {
                bad("ca_file", format!("{} is not a file", path.display()));
            }
            if r.timeout.is_zero() || r.timeout > Duration::from_secs(300) {
                bad("timeout", "must be between 1ms and 5m".into());
            }
            for rule in &r.rules {
                if !self.rules.iter().any(|x| &x.name == rule) {
                    bad("rules", format!("no rule is named {rule:?}"));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AlertsConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_default_rules_are_valid() {
        assert!(AlertsConfig::default().problems().is_empty());
        assert_eq!(AlertsConfig::default().rules.len(), 6);
    }

    #[test]
    fn a_setting_the_kind_does_not_use_is_refused_by_name() {
        let c = parse(
            r#"
            [[rules]]
            name = "flood"
            kind = "threshold"
            rate = 10
            factor = 3
            "#,
        );
        let p = c.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].setting, "alerts.rules[flood].factor");
        assert!(p[0].message.contains("uses: rate"), "{}", p[0].message);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let c = parse(
            r#"
            [metrics]
            labels = ["dest_namespace", "pod_ip", "dest_namespace"]
            max_series = 0
            [[rules]]
            name = "a b"
            kind = "node_silent"
            scope = "src_ip"
            [[rules]]
            name = "ok"
            kind = "ratio"
            percent = 120
            window = "1h"
            [[receivers]]
            name = "am"
            kind = "alertmanager"
            url = "kafka://x:1/t"
            rules = ["nope"]
            "#,
        );
        let settings: Vec<String> = c.problems().into_iter().map(|p| p.setting).collect();
        for want in [
            "alerts.metrics.labels[1]",
            "alerts.metrics.labels[2]",
            "alerts.metrics.max_series",
            "alerts.rules[0].name",
            "alerts.rules[0].scope",
            "alerts.rules[ok].percent",
            "alerts.rules[ok].window",
            "alerts.receivers[am].url",
            "alerts.receivers[am].rules",
        ] {
            assert!(
                settings.iter().any(|s| s == want),
                "{want} missing from {settings:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        assert!(
            toml::from_str::<AlertsConfig>("[[rules]]\nname='x'\nkind='threshold'\nrat=3").is_err()
        );
        assert!(toml::from_str::<AlertsConfig>("[[rules]]\nname='x'\nkind='magic'").is_err());
    }
}
