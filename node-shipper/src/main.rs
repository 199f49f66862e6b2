//! `verdict-shipper`: ships this node's policy-action logs (and iptables drops) to the
//! collector. Flags and environment variables; see node-shipper/README.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use verdict_shipper::config::{
    BackoffConfig, BatchConfig, Config, EventsConfig, Identity, IptablesConfig, Secret, TlsConfig,
};
use verdict_shipper::{Listeners, Shipper, config};

#[derive(Debug, Parser)]
#[command(
    name = "verdict-shipper",
    version,
    about = "Ships node-local policy-action logs to the Verdict collector"
)]
struct Args {
    /// Folder of policy_action.log and policy_action_loss.log.
    #[arg(long, env = "VERDICT_SHIPPER_LOG_DIR", default_value = config::DEFAULT_LOG_DIR)]
    log_dir: PathBuf,
    /// Do not ship the probe's logs (only the iptables source).
    #[arg(long)]
    no_policy_logs: bool,
    /// Collector gRPC URL (https:// needs --tls-ca).
    #[arg(long, env = "VERDICT_COLLECTOR", default_value = config::DEFAULT_COLLECTOR)]
    collector: String,
    /// File holding this node's bearer token for the collector (its first line). The token may
    /// also come from $VERDICT_SHIPPER_TOKEN; never from an argument, which every process on the
    /// node can read. It is sent only over TLS or to a collector on loopback. The file is read
    /// again before every new stream (a projected ServiceAccount token rotates).
    #[arg(long, env = "VERDICT_SHIPPER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Refused: a token on the command line is visible to every process (use --token-file).
    #[arg(long, hide = true)]
    token: Option<String>,
    /// CA certificate (PEM) of the collector.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Name to verify in the collector's certificate (default: the URL's host).
    #[arg(long)]
    tls_domain: Option<String>,
    /// Where acknowledged positions are kept.
    #[arg(long, env = "VERDICT_SHIPPER_CHECKPOINT_DIR", default_value = config::DEFAULT_CHECKPOINT_DIR)]
    checkpoint_dir: PathBuf,
    /// Node name (default: the host name).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    #[arg(long, env = "CLUSTER_NAME", default_value = "local")]
    cluster: String,
    #[arg(long, env = "CLUSTER_LOCATION", default_value = "local")]
    location: String,
    #[arg(long, env = "PROJECT_ID", default_value = "verdict-local")]
    project: String,
    #[arg(long, default_value_t = config::DEFAULT_BATCH_MAX_RECORDS)]
    batch_max_records: usize,
    #[arg(long, default_value_t = config::DEFAULT_BATCH_MAX_BYTES)]
    batch_max_bytes: usize,
    /// Longest a record waits for its batch to fill.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    batch_max_age: Duration,
    /// How often files are checked for new lines.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "200ms")]
    poll_interval: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    checkpoint_interval: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "200ms")]
    backoff_initial: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    backoff_max: Duration,
    /// Prometheus /metrics address ("off" to disable).
    #[arg(long, default_value = config::DEFAULT_METRICS_ADDR)]
    metrics_addr: String,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    shutdown_timeout: Duration,
    /// Kernel log with iptables LOG lines (/var/log/kern.log, /dev/kmsg): enables the iptables source.
    #[arg(long)]
    iptables_log: Option<PathBuf>,
    /// LOG --log-prefix of drop rules (repeatable).
    #[arg(long = "iptables-prefix", default_value = config::DEFAULT_IPTABLES_PREFIX)]
    iptables_prefixes: Vec<String>,
    /// Repeats of a drop within this window are not shipped.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    iptables_dedup_window: Duration,
    /// Cluster state for IP → pod: a folder of manifests (watched) instead of the Kubernetes API.
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,
    /// The kubeconfig for the Kubernetes API (cluster state unless --manifests; Events).
    /// Default: in-cluster when running in a pod, else $KUBECONFIG or ~/.kube/config.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// No reverse DNS for unknown IPs in Event messages.
    #[arg(long)]
    no_reverse_dns: bool,
    /// Post a PacketDrop Event to each affected pod.
    #[arg(long)]
    post_events: bool,
    /// Sustained Events per second (burst: --events-burst).
    #[arg(long, default_value_t = config::DEFAULT_EVENTS_PER_SECOND)]
    events_per_second: f64,
    #[arg(long, default_value_t = config::DEFAULT_EVENTS_BURST)]
    events_burst: u32,
}

impl Args {
    fn into_config(self) -> anyhow::Result<Config> {
        if self.token.is_some() {
            anyhow::bail!(
                "--token puts the token in the process list, readable by every process on the node: \
                 use --token-file PATH or $VERDICT_SHIPPER_TOKEN"
            );
        }
        let metrics_addr = match self.metrics_addr.as_str() {
            "off" | "" => None,
            a => Some(
                a.parse::<SocketAddr>()
                    .map_err(|e| anyhow::anyhow!("--metrics-addr {a:?}: {e}"))?,
            ),
        };
        let iptables = self.iptables_log.map(|log_path| IptablesConfig {
            log_path,
            prefixes: self.iptables_prefixes,
            dedup_window: self.iptables_dedup_window,
            manifests: self.manifests,
            kubeconfig: self.kubeconfig,
            context: self.context,
            reverse_dns: !self.no_reverse_dns,
            events: self.post_events.then(|| {
                let d = EventsConfig::default();
                EventsConfig {
                    per_second: self.events_per_second,
                    burst: self.events_burst,
                    ..d
                }
            }),
            ..IptablesConfig::default()
        });
        Ok(Config {
            token_file: self.token_file.clone(),
            log_dir: (!self.no_policy_logs).then_some(self.log_dir),
            collector: self.collector,
            token: match (&self.token_file, std::env::var("VERDICT_SHIPPER_TOKEN")) {
                (Some(path), _) => Some(
                    config::read_token_file(path)
                        .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?,
                ),
                (None, Ok(t)) if !t.trim().is_empty() => Some(Secret::new(t.trim())),
                _ => None,
            },
            tls: self.tls_ca.map(|ca_file| TlsConfig {
                ca_file,
                cert_file: self.tls_cert,
                key_file: self.tls_key,
                domain: self.tls_domain,
            }),
            checkpoint_dir: self.checkpoint_dir,
            identity: Identity {
                node_name: self
                    .node_name
                    .unwrap_or_else(|| Identity::default().node_name),
                cluster_name: self.cluster,
                location: self.location,
                project_id: self.project,
            },
            batch: BatchConfig {
                max_records: self.batch_max_records,
                max_bytes: self.batch_max_bytes,
                max_age: self.batch_max_age,
            },
            poll_interval: self.poll_interval,
            checkpoint_interval: self.checkpoint_interval,
            backoff: BackoffConfig {
                initial: self.backoff_initial,
                max: self.backoff_max,
            },
            metrics_addr,
            max_line_bytes: config::DEFAULT_MAX_LINE_BYTES,
            shutdown_timeout: self.shutdown_timeout,
            iptables,
        })
    }
}

fn main() -> std::process::ExitCode {
    verdict_service::logging::init("info");
    let config = match Args::parse().into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("verdict-shipper: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Err(errors) = config.validate() {
        for e in errors {
            eprintln!("verdict-shipper: {e}");
        }
        return std::process::ExitCode::from(2);
    }
    // One thread: the shipper is IO-bound and small; disk reads are page-cache reads of at most
    // one batch, checkpoints go to the blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("verdict-shipper: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Signal handlers first: a stop request that comes early is never fatal.
        let shutdown = match verdict_service::shutdown::on_signals() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("verdict-shipper: cannot install signal handlers: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let started = match Listeners::bind(&config).await {
            Ok(listeners) => Shipper::start(config, listeners).await,
            Err(e) => Err(e),
        };
        let handle = match started {
            Ok(h) => h,
            Err(e) => {
                eprintln!("verdict-shipper: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        // Tests and scripts wait for this line.
        println!(
            "verdict-shipper started metrics={}",
            handle
                .metrics_addr()
                .map_or_else(|| "off".to_owned(), |a| a.to_string())
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        handle.run(shutdown).await;
        std::process::ExitCode::SUCCESS
    })
}
