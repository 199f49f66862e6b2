//! `verdict-probe`: the node agent.
//!
//! Datapaths: `ebpf` (TC programs on every local pod's veth: the kernel enforces, events come
//! through a ring buffer) or `userspace` (connection attempts as JSON lines from `--attempts`,
//! judged by the engine). `auto` (the default) uses eBPF when it loads and says why not otherwise.
//! Either way records go to `policy_action.log` exactly as GKE Dataplane V2 writes them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use verdict_policy::IpBlockMode;
use verdict_policy::engine::EnforcementMode;
use verdict_probe::agent::{AgentConfig, DEFAULT_EVENT_QUEUE, DEFAULT_LOG_PATH};
use verdict_probe::log_writer::{DEFAULT_KEEP, DEFAULT_MAX_BYTES};
use verdict_probe::node::{AttemptInput, DatapathChoice, Listeners, NodeConfig};
use verdict_probe::pipeline::{
    DEFAULT_MAX_AGGREGATION_ENTRIES, DEFAULT_RATE_LIMIT, PipelineConfig,
};

#[derive(Debug, Parser)]
#[command(
    name = "verdict-probe",
    version,
    about = "Verdict node agent: NetworkPolicy verdicts logged in GKE's policy-action format"
)]
struct Args {
    #[command(flatten)]
    cluster: verdict_cluster::StateArgs,
    /// Which datapath enforces and reports connections.
    #[arg(long, value_enum, default_value_t = DatapathArg::Auto)]
    datapath: DatapathArg,
    /// Where the eBPF maps are pinned (kept across restarts: enforcement and conntrack survive).
    #[arg(long, default_value = "/sys/fs/bpf/verdict")]
    bpf_pin_dir: PathBuf,
    /// The node's interfaces towards other nodes (repeatable): Service traffic from local pods to
    /// backends on other nodes gets its egress decision there, after kube-proxy's DNAT. `auto`:
    /// the interfaces of the node's default routes.
    #[arg(long, value_name = "IFACE")]
    uplink: Vec<String>,
    /// Remove Verdict's TC programs from every interface and its pinned maps, then exit.
    #[arg(long)]
    uninstall: bool,
    /// With --uninstall: keep running until stopped afterwards, answering /healthz on
    /// --metrics-addr once the node is clean (a DaemonSet that is ready when every node is).
    #[arg(long, requires = "uninstall")]
    stay: bool,
    /// This node's name: only its pods produce records. Default: $NODE_NAME, else every pod.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Where records go; policy_action_loss.log is written beside it.
    #[arg(long, default_value = DEFAULT_LOG_PATH)]
    log_path: PathBuf,
    /// Rotate the log when it would pass this many bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BYTES)]
    max_log_bytes: u64,
    /// Rotated files kept (policy_action.log.1 ... .N).
    #[arg(long, default_value_t = DEFAULT_KEEP)]
    keep_log_files: usize,
    /// Log records per second per node (no burst); 0 disables the limit.
    #[arg(long, default_value_t = DEFAULT_RATE_LIMIT)]
    rate_limit: u32,
    /// Deny aggregation window.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    deny_aggregation_window: Duration,
    /// Open deny windows at most; past it denies are dropped and counted.
    #[arg(long, default_value_t = DEFAULT_MAX_AGGREGATION_ENTRIES)]
    max_deny_aggregation_entries: usize,
    /// Idle time after which a UDP/ICMP 5-tuple is a new connection.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    udp_idle_window: Duration,
    /// How long a superseded policy state is kept to judge late events.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    attribution_grace: Duration,
    /// How often the manifest folder is checked for changes.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    reload_interval: Duration,
    /// enforce: drop what policy denies; audit: log it, drop nothing. Namespaces override with
    /// the annotation verdict.dev/enforcement.
    #[arg(long, value_enum, default_value_t = Mode::Enforce)]
    mode: Mode,
    #[arg(long, value_enum, default_value_t = IpBlockArg::DataplaneV2)]
    ipblock_mode: IpBlockArg,
    /// Prometheus metrics address.
    #[arg(long, default_value = "0.0.0.0:9990")]
    metrics_addr: String,
    /// Connection attempts for the userspace datapath, JSON lines ({"src_ip","dest_ip","src_port",
    /// "dest_port","protocol","timestamp"?}); `-` for stdin. The probe stops when they end.
    #[arg(long, value_name = "FILE")]
    attempts: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DatapathArg {
    /// eBPF if it loads (and no --attempts are given), else userspace.
    Auto,
    Ebpf,
    Userspace,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Enforce,
    Audit,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum IpBlockArg {
    DataplaneV2,
    Calico,
}

async fn bind_metrics(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics address {addr}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    verdict_service::logging::init("info");
    let args = Args::parse();
    // Installed before anything else so a stop request that comes early is never fatal.
    let shutdown = verdict_service::shutdown::on_signals()?;
    if args.uninstall {
        verdict_probe::kernel::datapath::uninstall_everywhere(&args.bpf_pin_dir)?;
        eprintln!(
            "removed Verdict's TC programs and {}",
            args.bpf_pin_dir.display()
        );
        if args.stay {
            // Ready (/healthz on --metrics-addr) only now that the node is clean.
            let listener = bind_metrics(&args.metrics_addr).await?;
            let registry = std::sync::Arc::new(verdict_service::metrics::Registry::default());
            verdict_service::metrics::serve(listener, registry, shutdown).await?;
        }
        return Ok(());
    }
    let listener = bind_metrics(&args.metrics_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, log = %args.log_path.display(), "verdict-probe running");
    let config = NodeConfig {
        cluster: args.cluster.source(args.reload_interval),
        agent: AgentConfig {
            log_path: args.log_path.clone(),
            max_log_bytes: args.max_log_bytes,
            keep_log_files: args.keep_log_files,
            pipeline: PipelineConfig {
                node_name: args.node_name.clone().unwrap_or_default(),
                rate_limit: args.rate_limit,
                aggregation_window: args.deny_aggregation_window,
                max_aggregation_entries: args.max_deny_aggregation_entries,
                ..PipelineConfig::default()
            }
            .with_generation_grace(args.attribution_grace),
            ipblock_mode: match args.ipblock_mode {
                IpBlockArg::DataplaneV2 => IpBlockMode::DataplaneV2,
                IpBlockArg::Calico => IpBlockMode::Calico,
            },
            event_queue: DEFAULT_EVENT_QUEUE,
        },
        datapath: match args.datapath {
            DatapathArg::Auto => DatapathChoice::Auto,
            DatapathArg::Ebpf => DatapathChoice::Ebpf,
            DatapathArg::Userspace => DatapathChoice::Userspace,
        },
        bpf_pin_dir: args.bpf_pin_dir.clone(),
        uplinks: args.uplink.clone(),
        node_name: args.node_name.clone(),
        mode: match args.mode {
            Mode::Enforce => EnforcementMode::Enforce,
            Mode::Audit => EnforcementMode::Audit,
        },
        udp_idle_window: args.udp_idle_window,
        attempts: args.attempts.as_ref().map(|p| {
            if p.as_os_str() == "-" {
                AttemptInput::Stdin
            } else {
                AttemptInput::File(p.clone())
            }
        }),
    };
    let listeners = Listeners {
        metrics: Some(listener),
    };
    verdict_probe::node::run(config, listeners, shutdown)
        .await
        .context("the node agent")?;
    Ok(())
}
