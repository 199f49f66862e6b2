//! The shipper's configuration. The binary fills it from flags and environment variables; in
//! process (`verdict demo`) it is built directly. Every default works on one machine next to a
//! `verdict-probe` and a `verdict-collector` started with their defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const DEFAULT_LOG_DIR: &str = "/var/log/network";
pub const DEFAULT_COLLECTOR: &str = "http://127.0.0.1:9000";
pub const DEFAULT_CHECKPOINT_DIR: &str = "/var/lib/verdict-shipper";
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9991";
pub const DEFAULT_BATCH_MAX_RECORDS: usize = 4096;
pub const DEFAULT_BATCH_MAX_BYTES: usize = 2 * 1024 * 1024;
pub const DEFAULT_BATCH_MAX_AGE: Duration = Duration::from_millis(500);
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(200);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The collector's default `grpc.max_record_bytes` (1 MiB): a longer line cannot be stored.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;
pub const DEFAULT_IPTABLES_PREFIX: &str = "calico-drop:";
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(60);
pub const DEFAULT_DEDUP_ENTRIES: usize = 65_536;
pub const DEFAULT_DNS_CACHE_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_EVENTS_PER_SECOND: f64 = 5.0;
pub const DEFAULT_EVENTS_BURST: u32 = 20;
pub const DEFAULT_EVENTS_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_EVENTS_QUEUE: usize = 1024;
/// The in-cluster service account files.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

pub use verdict_service::secret::Secret;

mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Who is shipping: the LogEntry envelope's `resource.labels` and the dedup identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Kubernetes node name (`--node-name`, `$NODE_NAME`; default: the host name).
    pub node_name: String,
    /// Cluster name (`--cluster`, `$CLUSTER_NAME`).
    pub cluster_name: String,
    /// Zone or region (`--location`, `$CLUSTER_LOCATION`).
    pub location: String,
    /// Project id (`--project`, `$PROJECT_ID`); the collector requires one.
    pub project_id: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            node_name: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into()),
            cluster_name: "local".into(),
            location: "local".into(),
            project_id: "verdict-local".into(),
        }
    }
}

/// Client TLS towards the collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate (PEM) the collector's certificate must chain to.
    pub ca_file: PathBuf,
    /// Client certificate and key (PEM) for mutual TLS; both or neither.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Name to verify in the collector's certificate (default: the URL's host).
    pub domain: Option<String>,
}

/// When a batch is sent: whichever limit is reached first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Records per batch (the collector's default limit is 10,000).
    pub max_records: usize,
    /// Bytes of record payload per batch (the collector's default limit is 16 MiB).
    pub max_bytes: usize,
    /// Longest a record waits for its batch to fill.
    #[serde(with = "duration_text")]
    pub max_age: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: DEFAULT_BATCH_MAX_RECORDS,
            max_bytes: DEFAULT_BATCH_MAX_BYTES,
            max_age: DEFAULT_BATCH_MAX_AGE,
        }
    }
}

/// Reconnection backoff: exponential with full jitter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    #[serde(with = "duration_text")]
    pub initial: Duration,
    #[serde(with = "duration_text")]
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: DEFAULT_BACKOFF_INITIAL,
            max: DEFAULT_BACKOFF_MAX,
        }
    }
}

/// The kube-iptables-tailer source: iptables LOG lines of dropped packets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IptablesConfig {
    /// A kernel log file (`/var/log/kern.log`, followed across rotations like any log) or
    /// `/dev/kmsg` (read with its own sequence numbers).
    pub log_path: PathBuf,
    /// `--log-prefix` values of the drop rules (`calico-drop:` for Calico).
    pub prefixes: Vec<String>,
    /// A drop of the same (src, dst, protocol, dst port) within this window is a repeat and is
    /// not shipped again (counted as `repeat`).
    #[serde(with = "duration_text")]
    pub dedup_window: Duration,
    /// Distinct drops remembered for the window; the oldest are forgotten beyond it.
    pub dedup_entries: usize,
    /// Cluster state (Pods, Services, Nodes) for naming IPs: a folder of manifests, watched.
    /// Without it, the Kubernetes API (below) when there is one; with neither, every endpoint is
    /// `{"instance": IP}`.
    pub manifests: Option<PathBuf>,
    /// The kubeconfig for the API server (cluster state, Events); default: in-cluster when
    /// running in a pod, else `$KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    pub context: Option<String>,
    #[serde(with = "duration_text")]
    pub reload_interval: Duration,
    /// Reverse DNS for IPs that are neither pods, Services nor nodes (Event messages only).
    pub reverse_dns: bool,
    #[serde(with = "duration_text")]
    pub dns_cache_ttl: Duration,
    /// Post a Kubernetes Event (reason `PacketDrop`) to each affected pod.
    pub events: Option<EventsConfig>,
}

impl Default for IptablesConfig {
    fn default() -> Self {
        IptablesConfig {
            log_path: PathBuf::from("/var/log/kern.log"),
            prefixes: vec![DEFAULT_IPTABLES_PREFIX.into()],
            dedup_window: DEFAULT_DEDUP_WINDOW,
            dedup_entries: DEFAULT_DEDUP_ENTRIES,
            manifests: None,
            kubeconfig: None,
            context: None,
            reload_interval: Duration::from_secs(1),
            reverse_dns: true,
            dns_cache_ttl: DEFAULT_DNS_CACHE_TTL,
            events: None,
        }
    }
}

impl IptablesConfig {
    /// How to reach the API server.
    pub fn api_options(&self) -> verdict_cluster::api::ApiOptions {
        verdict_cluster::api::ApiOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }

    /// Where IP → pod names come from: the manifest folder, else the API server when one is
    /// configured or found, else nowhere.
    pub fn state_source(&self) -> Option<verdict_cluster::StateSource> {
        match &self.manifests {
            Some(dir) => Some(verdict_cluster::StateSource::Manifests {
                dir: dir.clone(),
                interval: self.reload_interval,
            }),
            None if self.kubeconfig.is_some()
                || self.context.is_some()
                || verdict_cluster::api::default_available() =>
            {
                Some(verdict_cluster::StateSource::Api(self.api_options()))
            }
            None => None,
        }
    }
}

/// How Events are posted (through the API server of [`IptablesConfig::api_options`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Sustained Event posts per second, and the burst above it; the rest are dropped.
    pub per_second: f64,
    pub burst: u32,
    /// Attempts per Event (429, 5xx and connection errors are retried with backoff).
    pub max_attempts: u32,
    #[serde(with = "duration_text")]
    pub initial_backoff: Duration,
    #[serde(with = "duration_text")]
    pub max_backoff: Duration,
    /// Events waiting to be posted; beyond it new ones are dropped (counted).
    pub queue: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            per_second: DEFAULT_EVENTS_PER_SECOND,
            burst: DEFAULT_EVENTS_BURST,
            max_attempts: DEFAULT_EVENTS_MAX_ATTEMPTS,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            queue: DEFAULT_EVENTS_QUEUE,
        }
    }
}

/// Everything the shipper needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Folder of `policy_action.log` and `policy_action_loss.log` (the probe's `--log-path`
    /// folder). `None`: ship only the iptables source.
    pub log_dir: Option<PathBuf>,
    /// Collector gRPC URL; `https://` with [`Config::tls`].
    pub collector: String,
    /// The node's bearer token sent in `authorization` (`--token-file` or
    /// `$VERDICT_SHIPPER_TOKEN`; never a command-line argument, which any process can read).
    /// Only sent over TLS, or to a collector on loopback.
    pub token: Option<Secret>,
    /// The file `token` was read from: read again before every new stream, so a token the
    /// kubelet rotates (a projected ServiceAccount token) is always current.
    pub token_file: Option<PathBuf>,
    pub tls: Option<TlsConfig>,
    /// Where acknowledged positions are kept, one JSON file per input.
    pub checkpoint_dir: PathBuf,
    pub identity: Identity,
    pub batch: BatchConfig,
    /// How often files are checked for new lines.
    #[serde(with = "duration_text")]
    pub poll_interval: Duration,
    /// How often acknowledged positions are written (and always at shutdown): a crash re-sends
    /// at most this much, which the collector drops as duplicates.
    #[serde(with = "duration_text")]
    pub checkpoint_interval: Duration,
    pub backoff: BackoffConfig,
    /// Prometheus `/metrics`; `None`: not served.
    pub metrics_addr: Option<SocketAddr>,
    /// Lines longer than this are malformed (cut, counted, not shipped).
    pub max_line_bytes: usize,
    /// How long shutdown waits for the last acknowledgements.
    #[serde(with = "duration_text")]
    pub shutdown_timeout: Duration,
    /// The iptables drop source; `None`: off.
    pub iptables: Option<IptablesConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log_dir: Some(PathBuf::from(DEFAULT_LOG_DIR)),
            collector: DEFAULT_COLLECTOR.into(),
            token: None,
            token_file: None,
            tls: None,
            checkpoint_dir: PathBuf::from(DEFAULT_CHECKPOINT_DIR),
            identity: Identity::default(),
            batch: BatchConfig::default(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            backoff: BackoffConfig::default(),
            metrics_addr: Some(DEFAULT_METRICS_ADDR.parse().expect("valid default")),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            iptables: None,
        }
    }
}

impl Config {
    /// Every problem at once, each naming its setting.
    pub fn validate(&self) -> Result<(), Vec<Error>> {
        let mut errors = Vec::new();
        let mut bad = |setting: &str, message: &str| errors.push(Error::config(setting, message));
        if !(self.collector.starts_with("http://") || self.collector.starts_with("https://")) {
            bad("collector", "must be an http:// or https:// URL");
        }
        if self.collector.starts_with("https://") && self.tls.is_none() {
            bad("tls-ca", "an https:// collector needs --tls-ca");
        }
        if self.token.is_some()
            && self.collector.starts_with("http://")
            && !collector_is_loopback(&self.collector)
        {
            bad(
                "token-file",
                "the token would cross the network in clear text: use an https:// collector (with --tls-ca)",
            );
        }
        if let Some(tls) = &self.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            bad("tls-cert", "--tls-cert and --tls-key go together");
        }
        for (setting, value) in [
            ("node-name", &self.identity.node_name),
            ("project", &self.identity.project_id),
        ] {
            if value.is_empty() {
                bad(
                    setting,
                    "must not be empty (the collector refuses batches without it)",
                );
            }
        }
        if self.batch.max_records == 0 {
            bad("batch-max-records", "must be at least 1");
        }
        if self.batch.max_bytes < 1024 {
            bad("batch-max-bytes", "must be at least 1024");
        }
        if self.poll_interval.is_zero() {
            bad("poll-interval", "must be positive");
        }
        if self.backoff.initial.is_zero() || self.backoff.max < self.backoff.initial {
            bad("backoff", "initial must be positive and at most max");
        }
        if self.log_dir.is_none() && self.iptables.is_none() {
            bad(
                "log-dir",
                "nothing to ship: give --log-dir or --iptables-log",
            );
        }
        if let Some(ipt) = &self.iptables {
            if ipt.prefixes.is_empty() || ipt.prefixes.iter().any(String::is_empty) {
                bad("iptables-prefix", "at least one non-empty prefix");
            }
            if let Some(ev) = &ipt.events
                && !(ev.per_second > 0.0 && ev.burst > 0 && ev.max_attempts > 0)
            {
                bad("events", "per-second, burst and attempts must be positive");
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Whether a collector URL's host is a loopback address (`localhost`, `127.0.0.0/8`, `::1`).
pub fn collector_is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads a token file: its first line, trimmed (files written by hand or mounted from a
/// Kubernetes Secret often end with a newline).
pub fn read_token_file(path: &Path) -> std::io::Result<Secret> {
    let text = std::fs::read_to_string(path)?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} holds no token", path.display()),
        ));
    }
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_problems_are_all_named() {
        Config::default().validate().unwrap();
        let c = Config {
            collector: "127.0.0.1:9000".into(),
            log_dir: None,
            ..Config::default()
        };
        let errors: Vec<String> = c
            .validate()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "collector: must be an http:// or https:// URL",
                "log-dir: nothing to ship: give --log-dir or --iptables-log"
            ]
        );
        assert_eq!(format!("{:?}", Secret::new("s3cret")), "Secret(<redacted>)");
    }

    #[test]
    fn a_token_never_crosses_the_network_in_clear_text() {
        let with = |collector: &str| Config {
            collector: collector.into(),
            token: Some(Secret::new("node-token-0123456789")),
            ..Config::default()
        };
        for ok in [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://[::1]:9000",
        ] {
            assert!(with(ok).validate().is_ok(), "{ok}");
        }
        let e = with("http://collector.verdict:9000")
            .validate()
            .unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].to_string()
                .starts_with("token-file: the token would cross the network in clear text"),
            "{}",
            e[0]
        );
        assert!(!collector_is_loopback("http://10.0.0.1:9000"));
        assert!(collector_is_loopback("https://127.0.0.2"));
    }

    #[test]
    fn token_files_hold_one_token() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "node-token-0123456789\n").unwrap();
        assert_eq!(
            read_token_file(&p).unwrap().expose(),
            "node-token-0123456789"
        );
        std::fs::write(&p, "\n").unwrap();
        assert!(
            read_token_file(&p)
                .unwrap_err()
                .to_string()
                .contains("holds no token")
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_str::<Config>(r#"{"colector": "http://x"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `colector`"), "{e}");
        let c: Config =
            serde_json::from_str(r#"{"batch": {"max_age": "2s"}, "poll_interval": "50ms"}"#)
                .unwrap();
        assert_eq!(c.batch.max_age, Duration::from_secs(2));
        assert_eq!(c.batch.max_records, DEFAULT_BATCH_MAX_RECORDS);
    }
}
