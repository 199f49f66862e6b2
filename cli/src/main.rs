//! `verdict`: the user-facing command line.
//!
//! - `verdict policy check`: judge connections against manifests, print verdicts and the exact
//!   policy-action records that would be written.
//! - `verdict policy explain`: why a connection is allowed or denied, and how to change that.
//! - `verdict logs read|tail`: Logging-filter queries against a collector or local files
//!   (`logs`); `verdict sql`: SQL against a collector (`sql`); `verdict alerts list|history`:
//!   the collector's alerts (`alerts`); `query_client`: their HTTP client.
//!
//! Exit status: 0 on success, 2 on bad input (manifests, connections, arguments).

mod alerts;
mod demo;
mod logs;
mod policy_check;
mod policy_explain;
mod query_client;
mod sql;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "verdict",
    version,
    about = "Kubernetes NetworkPolicy enforcement with GKE-compatible allow/deny logging"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check and explain NetworkPolicies against a folder of manifests.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run all of Verdict on this machine with a demo shop cluster and live traffic: a
    /// collector on local storage, a node, the shipper and a traffic generator.
    Demo(DemoArgs),
    #[command(hide = true)]
    DemoNode(DemoNodeArgs),
    /// Read or tail policy-action log entries with a Logging query (filter).
    #[command(subcommand)]
    Logs(LogsCommand),
    /// Run one read-only SQL statement against a collector's lake.
    Sql(SqlArgs),
    /// The alerts a collector's deny-spike detectors fired: firing now, or their history.
    #[command(subcommand)]
    Alerts(AlertsCommand),
}

#[derive(Debug, Subcommand)]
enum AlertsCommand {
    /// The alerts firing now, with their top sources, ports and destinations.
    List(AlertsListArgs),
    /// Alerts fired and resolved, newest first.
    History(AlertsHistoryArgs),
}

#[derive(Debug, Args)]
struct AlertsListArgs {
    #[command(flatten)]
    collector: CollectorArgs,
    #[arg(long, value_enum, default_value_t = LogsFormat::Table)]
    format: LogsFormat,
}

#[derive(Debug, Args)]
struct AlertsHistoryArgs {
    #[command(flatten)]
    collector: CollectorArgs,
    /// Entries at most.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
    #[arg(long, value_enum, default_value_t = LogsFormat::Table)]
    format: LogsFormat,
}

#[derive(Debug, Subcommand)]
enum LogsCommand {
    /// Entries matching FILTER, from a collector or (--file) from local files, like
    /// `gcloud logging read`.
    Read(LogsReadArgs),
    /// New entries matching FILTER as the collector stores them.
    Tail(LogsTailArgs),
}

/// Where the collector's query API is.
#[derive(Debug, Args)]
struct CollectorArgs {
    /// The collector's HTTP address.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    collector: String,
    /// File holding a bearer token for the collector's query API (its query.auth_tokens; the
    /// first line). Or $VERDICT_TOKEN; never an argument, which every process can read.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Refused: a token on the command line is visible to every process (use --token-file).
    #[arg(long, hide = true)]
    token: Option<String>,
}

impl CollectorArgs {
    /// The token of `--token-file` or `$VERDICT_TOKEN`.
    fn token(&self) -> anyhow::Result<Option<String>> {
        if self.token.is_some() {
            anyhow::bail!(
                "--token puts the token in the process list, readable by every process: use \
                 --token-file PATH or $VERDICT_TOKEN"
            );
        }
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?;
            let token = text.lines().next().unwrap_or_default().trim();
            if token.is_empty() {
                anyhow::bail!("--token-file {}: holds no token", path.display());
            }
            return Ok(Some(token.to_owned()));
        }
        Ok(std::env::var("VERDICT_TOKEN")
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()))
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogsFormat {
    Json,
    Table,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogsOrder {
    Asc,
    Desc,
}

#[derive(Debug, Args)]
struct LogsReadArgs {
    /// A query in the Logging query language ('' for every entry).
    filter: String,
    #[command(flatten)]
    collector: CollectorArgs,
    /// Only entries newer than this, unless FILTER restricts timestamp (default 1d from a
    /// collector, none with --file).
    #[arg(long, value_parser = humantime::parse_duration)]
    freshness: Option<std::time::Duration>,
    /// At most this many entries (default: all).
    #[arg(long)]
    limit: Option<usize>,
    /// By timestamp (default desc, newest first); not with --file (file order).
    #[arg(long, value_enum)]
    order: Option<LogsOrder>,
    #[arg(long, value_enum, default_value_t = LogsFormat::Table)]
    format: LogsFormat,
    /// Read these files (LogEntries or bare policy-action records, JSON lines) instead of a
    /// collector; repeatable.
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// With a collector: only this project's entries. With --file: the project of wrapped
    /// records (default local).
    #[arg(long)]
    project: Option<String>,
    /// With --file: the location of wrapped records (default local).
    #[arg(long)]
    location: Option<String>,
    /// With --file: the cluster of wrapped records (default local).
    #[arg(long)]
    cluster: Option<String>,
}

#[derive(Debug, Args)]
struct LogsTailArgs {
    /// A query in the Logging query language ('' for every entry).
    filter: String,
    #[command(flatten)]
    collector: CollectorArgs,
    #[arg(long, value_enum, default_value_t = LogsFormat::Table)]
    format: LogsFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SqlFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Args)]
struct SqlArgs {
    /// One SELECT (or WITH … SELECT, VALUES) or EXPLAIN statement.
    query: String,
    #[command(flatten)]
    collector: CollectorArgs,
    #[arg(long, value_enum, default_value_t = SqlFormat::Table)]
    format: SqlFormat,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Folder for the demo's manifests, node logs, shipper checkpoints and Parquet lake.
    #[arg(long, value_name = "DIR", default_value = "verdict-demo")]
    dir: PathBuf,
    /// The collector's gRPC ingest address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    grpc_listen: std::net::SocketAddr,
    /// The collector's HTTP address (query API, metrics).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_listen: std::net::SocketAddr,
    /// Multiplies every traffic rate of the scenario.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Stop after this long (e.g. 30s); default: run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Seconds between status lines (0: none).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    status_every: std::time::Duration,
    /// `auto`: the eBPF datapath (pods as network namespaces, real traffic) when it can run
    /// here (root, iproute2, eBPF), else the userspace one.
    #[arg(long, value_enum, default_value_t = DemoDatapath::Auto)]
    datapath: DemoDatapath,
    /// Also send the demo's alerts to this Prometheus Alertmanager (its base URL,
    /// e.g. http://127.0.0.1:9093).
    #[arg(long, value_name = "URL")]
    alertmanager: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DemoDatapath {
    Auto,
    Ebpf,
    Userspace,
}

/// The demo's node process, started by `verdict demo` inside the lab's node namespace.
#[derive(Debug, Args)]
struct DemoNodeArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    speed: f64,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Judge connections (JSON lines) and print each verdict with the records GKE would write.
    Check(CheckArgs),
    /// Explain one connection: which policies apply, which rule matched or why none did, and
    /// the smallest change that would allow it.
    Explain(ExplainArgs),
}

/// Where the cluster comes from and how ipBlock treats pods.
#[derive(Debug, Args)]
struct ClusterArgs {
    /// `--manifests DIR` (multi-document `.yaml`/`.yml`/`.json` files), or a live cluster's
    /// state read once through its API server (`--kubeconfig`, `--context`; read only).
    #[command(flatten)]
    state: verdict_cluster::StateArgs,
    /// `dataplane-v2`: an ipBlock never matches pod IPs (GKE Dataplane V2 / Cilium);
    /// `calico`: it does.
    #[arg(long, value_enum, default_value_t = IpBlockModeArg::DataplaneV2)]
    ipblock_mode: IpBlockModeArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum IpBlockModeArg {
    DataplaneV2,
    Calico,
}

impl From<IpBlockModeArg> for verdict_policy::IpBlockMode {
    fn from(m: IpBlockModeArg) -> Self {
        match m {
            IpBlockModeArg::DataplaneV2 => verdict_policy::IpBlockMode::DataplaneV2,
            IpBlockModeArg::Calico => verdict_policy::IpBlockMode::Calico,
        }
    }
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// JSON lines of connections (`-` for standard input):
    /// {"src": "NS/POD"|"ip:ADDR"|"node:NODE", "dest": "NS/POD"|"ip:ADDR", "protocol": "TCP"|"UDP"|"SCTP",
    /// "port": N, "src_port": N (optional), "timestamp": RFC 3339 (optional)}
    #[arg(long, value_name = "FILE")]
    connections: PathBuf,
}

#[derive(Debug, Args)]
struct ExplainArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The connection: 'SRC -> DEST:PORT[/PROTO]', where SRC and DEST are NS/POD, ip:ADDR or
    /// node:NODE (IPv6 in brackets: ip:[fd00::1]:80/TCP); PROTO defaults to TCP.
    connection: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Library warnings (and, in the demo's node process, the datapath's readiness) on stderr.
    verdict_service::logging::init("warn");
    let result = match cli.command {
        Command::Policy(PolicyCommand::Check(a)) => policy_check::run(
            &a.cluster.state.source(std::time::Duration::ZERO),
            a.cluster.ipblock_mode.into(),
            &a.connections,
        ),
        Command::Policy(PolicyCommand::Explain(a)) => policy_explain::run(
            &a.cluster.state.source(std::time::Duration::ZERO),
            a.cluster.ipblock_mode.into(),
            &a.connection,
        ),
        Command::Demo(a) => run_demo(a),
        Command::Logs(LogsCommand::Read(a)) => a.collector.token().and_then(|token| {
            logs::read(logs::ReadOptions {
                filter: a.filter,
                collector: a.collector.collector,
                token,
                freshness: a.freshness,
                limit: a.limit,
                order: a.order.map(|o| match o {
                    LogsOrder::Asc => logs::Order::Asc,
                    LogsOrder::Desc => logs::Order::Desc,
                }),
                format: logs_format(a.format),
                files: a.files,
                project: a.project,
                location: a.location,
                cluster: a.cluster,
            })
        }),
        Command::Logs(LogsCommand::Tail(a)) => a.collector.token().and_then(|token| {
            logs::tail(logs::TailOptions {
                filter: a.filter,
                collector: a.collector.collector,
                token,
                format: logs_format(a.format),
            })
        }),
        Command::Sql(a) => a.collector.token().and_then(|token| {
            sql::run(sql::SqlOptions {
                query: a.query,
                collector: a.collector.collector,
                token,
                format: match a.format {
                    SqlFormat::Table => sql::Format::Table,
                    SqlFormat::Json => sql::Format::Json,
                    SqlFormat::Csv => sql::Format::Csv,
                },
            })
        }),
        Command::Alerts(AlertsCommand::List(a)) => a.collector.token().and_then(|token| {
            alerts::run(alerts::AlertsOptions {
                collector: a.collector.collector,
                token,
                format: alerts_format(a.format),
                history: None,
            })
        }),
        Command::Alerts(AlertsCommand::History(a)) => a.collector.token().and_then(|token| {
            alerts::run(alerts::AlertsOptions {
                collector: a.collector.collector,
                token,
                format: alerts_format(a.format),
                history: Some(a.limit as usize),
            })
        }),
        Command::DemoNode(a) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(demo::node_main(a.dir, a.speed))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn alerts_format(f: LogsFormat) -> alerts::Format {
    match f {
        LogsFormat::Json => alerts::Format::Json,
        LogsFormat::Table => alerts::Format::Table,
    }
}

fn logs_format(f: LogsFormat) -> logs::Format {
    match f {
        LogsFormat::Json => logs::Format::Json,
        LogsFormat::Table => logs::Format::Table,
    }
}

fn run_demo(a: DemoArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(demo::run(demo::DemoOptions {
        dir: a.dir,
        grpc_listen: a.grpc_listen,
        http_listen: a.http_listen,
        speed: a.speed,
        duration: a.duration,
        status_every: a.status_every,
        datapath: match a.datapath {
            DemoDatapath::Auto => demo::DatapathChoice::Auto,
            DemoDatapath::Ebpf => demo::DatapathChoice::Ebpf,
            DemoDatapath::Userspace => demo::DatapathChoice::Userspace,
        },
        alertmanager: a.alertmanager,
    }))
}

/// Reads the cluster state (a manifest folder, or the API server once), prints warnings to
/// stderr, and compiles the engine. In a folder an invalid NetworkLogging is an error (fix the
/// file); read from a cluster it is reported and not applied, as the agents do.
fn load_engine(
    source: &verdict_cluster::StateSource,
    mode: verdict_policy::IpBlockMode,
) -> anyhow::Result<verdict_policy::Engine> {
    let (state, warnings) = match source {
        verdict_cluster::StateSource::Manifests { dir, .. } => {
            let loaded = verdict_policy::manifests::load_dir(dir)?;
            let warnings = loaded.warnings.iter().map(ToString::to_string).collect();
            (loaded.state, warnings)
        }
        verdict_cluster::StateSource::Api(_) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let update = runtime.block_on(source.read_once())?;
            let mut warnings = update.warnings;
            if let Some(e) = update.rejected_network_logging {
                warnings.push(format!(
                    "NetworkLogging default: {e}; not applied (nothing is logged)"
                ));
            }
            (update.state, warnings)
        }
    };
    let loaded = verdict_policy::manifests::Loaded {
        state,
        ..Default::default()
    };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if mode == verdict_policy::IpBlockMode::DataplaneV2 {
        for w in verdict_policy::dataplane_v2::dataplane_v2_warnings(&loaded.state) {
            eprintln!("warning: {w}");
        }
    }
    Ok(verdict_policy::Engine::build(&loaded.state, mode)?)
}
