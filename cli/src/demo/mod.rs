//! `verdict demo`: the whole of Verdict on one machine with no external service.
//!
//! In one process: a collector on local storage (gRPC ingest, HTTP API), a node agent for the
//! shop cluster in `examples/shop` (the eBPF datapath when it loads, otherwise the userspace
//! one — it says which), the shipper streaming the node's `policy_action.log` to the collector,
//! and a traffic generator playing `examples/shop.traffic.yaml`. It prints where to look and
//! commands to try, then a status line every few seconds until Ctrl-C (or `--duration`), and
//! stops the parts in data-flow order so nothing written is lost: traffic, node (drains its
//! pipeline into the log), shipper (ships and checkpoints the rest), collector (flushes).

mod ebpf_node;
mod sockets;
pub mod traffic;

pub use ebpf_node::node_main;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use verdict_policy::IpBlockMode;
use verdict_policy::engine::EnforcementMode;
use verdict_probe::agent::{AgentConfig, DEFAULT_EVENT_QUEUE};
use verdict_probe::node::{AttemptInput, DatapathChoice as NodeDatapath, NodeConfig};
use verdict_probe::pipeline::PipelineConfig;
use verdict_service::shutdown::CancellationToken;

use self::traffic::{Scenario, TrafficGenerator};

/// The demo cluster, embedded so `verdict demo` works from any directory.
const SHOP_MANIFESTS: [(&str, &str); 3] = [
    (
        "cluster.yaml",
        include_str!("../../../examples/shop/cluster.yaml"),
    ),
    (
        "policies.yaml",
        include_str!("../../../examples/shop/policies.yaml"),
    ),
    (
        "network-logging.yaml",
        include_str!("../../../examples/shop/network-logging.yaml"),
    ),
];
const SHOP_TRAFFIC: &str = include_str!("../../../examples/shop.traffic.yaml");
/// The node the shop's pods run on (examples/shop/cluster.yaml).
pub const NODE_NAME: &str = "demo-node-1";
/// How often traffic is generated.
const TICK: Duration = Duration::from_millis(100);

/// `verdict demo` options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where everything is kept (manifests, node logs, shipper checkpoints, the lake).
    pub dir: PathBuf,
    pub grpc_listen: std::net::SocketAddr,
    pub http_listen: std::net::SocketAddr,
    /// Multiplies every traffic rate.
    pub speed: f64,
    /// Stop after this long (default: run until Ctrl-C).
    pub duration: Option<Duration>,
    /// Seconds between status lines (0: none).
    pub status_every: Duration,
    pub datapath: DatapathChoice,
    /// An Alertmanager (`http://HOST:PORT`) the demo's alerts are sent to.
    pub alertmanager: Option<String>,
}

/// Which datapath the demo's node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatapathChoice {
    /// eBPF when it can run here (root, iproute2, a kernel that loads the programs), else
    /// userspace.
    Auto,
    Ebpf,
    Userspace,
}

/// The node half of the demo: in this process (userspace datapath) or in the lab's node
/// namespace (eBPF).
enum Node {
    InProcess(Box<InProcessNode>),
    Kernel(ebpf_node::NodeProcess),
}

pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let dirs = DemoDirs::prepare(&options.dir)?;
    let stop = verdict_service::shutdown::on_signals()?;

    // The collector: local lake and WAL under the demo folder, default everything else.
    let mut config = verdict_collector::Config {
        data_dir: dirs.collector.clone(),
        ..verdict_collector::Config::default()
    };
    config.grpc.listen = options.grpc_listen;
    config.http.listen = options.http_listen;
    config.flush.max_age = Duration::from_secs(2);
    config.alerts = demo_alerts(options.alertmanager.as_deref());
    let listeners = verdict_collector::Listeners::bind(&config)
        .await
        .context("starting the collector (is another `verdict demo` or collector running? use --grpc-listen/--http-listen)")?;
    let (collector, _) = verdict_collector::Collector::open(config)
        .await
        .context("opening the collector")?;
    let collector = Arc::new(collector);
    let collector_stop = CancellationToken::new();
    let collector_task = {
        let (collector, stop) = (Arc::clone(&collector), collector_stop.clone());
        tokio::spawn(async move { collector.run(listeners, stop).await })
    };

    // The shipper: the node's log folder to the collector, checkpoints in the demo folder.
    let shipper = verdict_shipper::Shipper::start(
        verdict_shipper::Config {
            log_dir: Some(dirs.node_log.parent().expect("node folder").to_owned()),
            collector: format!("http://{}", options.grpc_listen),
            checkpoint_dir: dirs.root.join("shipper"),
            identity: verdict_shipper::config::Identity {
                node_name: NODE_NAME.to_owned(),
                cluster_name: "demo".to_owned(),
                location: "local".to_owned(),
                project_id: "verdict-demo".to_owned(),
            },
            metrics_addr: None,
            ..verdict_shipper::Config::default()
        },
        verdict_shipper::Listeners::default(),
    )
    .await
    .context("starting the shipper")?;

    // The node.
    let (mut node, datapath_note) = start_node(&options, &dirs).await?;
    let datapath = match &node {
        Node::InProcess(_) => "userspace",
        Node::Kernel(_) => "ebpf",
    };

    print_banner(&options, &dirs, datapath, &datapath_note, started.elapsed());

    let mut status = tokio::time::interval(if options.status_every.is_zero() {
        Duration::from_secs(3600)
    } else {
        options.status_every
    });
    status.tick().await;
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut alert_check = tokio::time::interval(Duration::from_millis(500));
    let mut alerts_shown = 0usize;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = sleep_until(deadline) => break,
            _ = alert_check.tick() => {
                alerts_shown = print_new_alerts(started.elapsed(), &collector, alerts_shown);
            }
            _ = status.tick(), if !options.status_every.is_zero() => {
                print_status(started.elapsed(), &node, &shipper, &collector);
            }
            _ = ticks.tick() => {
                if let Node::InProcess(n) = &mut node {
                    n.play().await?;
                }
            }
        }
    }
    eprintln!("stopping: traffic, node, shipper, collector …");
    match node {
        Node::InProcess(n) => n.stop().await?,
        Node::Kernel(p) => tokio::task::spawn_blocking(move || p.stop())
            .await
            .context("node process")??,
    }
    // The node has written its last records: ship them before the collector goes.
    let written = count_lines(&dirs.node_log) as u64;
    let drained = tokio::time::Instant::now() + Duration::from_secs(10);
    while shipped_records(&shipper) < written && tokio::time::Instant::now() < drained {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shipper.shutdown().await;
    collector_stop.cancel();
    collector_task
        .await
        .context("collector task")?
        .context("collector")?;
    eprintln!(
        "stopped cleanly: {written} records written by the node, {} stored by the collector; data kept in {}",
        collector
            .metrics()
            .writer
            .records_stored(verdict_collector::Table::Flows),
        options.dir.display()
    );
    Ok(())
}

/// Starts the node with the datapath asked for; the note says why eBPF was not used.
async fn start_node(options: &DemoOptions, dirs: &DemoDirs) -> anyhow::Result<(Node, String)> {
    let mut note = String::new();
    if options.datapath != DatapathChoice::Userspace {
        let attempt = match ebpf_node::unavailable_reason() {
            Some(reason) => Err(anyhow::anyhow!(reason)),
            None => {
                let engine = load_engine(&dirs.manifests)?;
                let (flows, bursts) = shop_scenario(&engine)?;
                let generator = TrafficGenerator::new(flows, bursts, options.speed);
                let addresses = generator.addresses();
                let directory = ebpf_node::plan(&engine, &addresses);
                let (dirs_root, speed) = (dirs.root.clone(), options.speed);
                tokio::task::spawn_blocking(move || {
                    ebpf_node::start(&DemoDirs::at(&dirs_root), &directory, &addresses, speed)
                })
                .await
                .context("starting the node process")?
            }
        };
        match attempt {
            Ok(process) => return Ok((Node::Kernel(process), note)),
            Err(e) if options.datapath == DatapathChoice::Ebpf => {
                return Err(e.context("starting the eBPF datapath"));
            }
            Err(e) => note = format!(" (eBPF unavailable: {e:#})"),
        }
    }
    let (attempts, attempts_rx) = tokio::sync::mpsc::channel(4096);
    let node = verdict_probe::node::Node::start(
        node_config(
            dirs,
            NodeDatapath::Userspace,
            Some(AttemptInput::Channel(attempts_rx)),
        ),
        verdict_probe::node::Listeners::default(),
    )
    .await
    .context("starting the node agent on the demo manifests")?;
    let snapshot = node.snapshots().borrow().clone();
    let (flows, bursts) = shop_scenario(&snapshot.engine)?;
    let changed = flows
        .iter()
        .filter(|f| f.decide(&snapshot.engine) != f.spec.expect)
        .count();
    if changed > 0 {
        eprintln!(
            "note: {changed} of the scenario's flows get a different verdict than it expects (edited policies in {}?)",
            dirs.manifests.display()
        );
    }
    let metrics = Arc::clone(node.metrics());
    let node_stop = CancellationToken::new();
    let running = tokio::spawn(node.run(node_stop.clone()));
    Ok((
        Node::InProcess(Box::new(InProcessNode {
            generator: TrafficGenerator::new(flows, bursts, options.speed),
            attempts,
            metrics,
            stop: node_stop,
            running,
            started: Instant::now(),
            due: Vec::new(),
        })),
        note,
    ))
}

/// The userspace datapath of a node in this process, judging generated attempts.
struct InProcessNode {
    generator: TrafficGenerator,
    /// Into the node's datapath.
    attempts: tokio::sync::mpsc::Sender<verdict_probe::datapath::Attempt>,
    metrics: Arc<verdict_probe::metrics::Metrics>,
    stop: CancellationToken,
    running: tokio::task::JoinHandle<Result<(), verdict_probe::node::NodeError>>,
    started: Instant,
    due: Vec<verdict_probe::datapath::Attempt>,
}

impl InProcessNode {
    /// Hands the node what is due (it applies policy changes itself).
    async fn play(&mut self) -> anyhow::Result<()> {
        self.generator
            .advance(self.started.elapsed(), &mut self.due);
        for attempt in self.due.drain(..) {
            self.attempts
                .send(attempt)
                .await
                .context("node pipeline stopped")?;
        }
        Ok(())
    }

    /// Stops the node: it judges what it was handed, then drains its pipeline into the log.
    async fn stop(self) -> anyhow::Result<()> {
        drop(self.attempts);
        let stop = self.stop;
        let ended = tokio::time::timeout(Duration::from_secs(5), self.running);
        match ended.await {
            Ok(r) => Ok(r.context("node task")??),
            Err(_) => {
                stop.cancel();
                anyhow::bail!("the node did not stop within 5 s")
            }
        }
    }
}

/// The collector's detectors for the demo: the defaults, with the flood threshold at the
/// scale of the shop's traffic (its port-scan burst, 200 denied ports at once, passes 10/s
/// over 10 s; the steady denies stay far below), evaluated every second; alerts go to
/// `alertmanager` when given.
fn demo_alerts(alertmanager: Option<&str>) -> verdict_collector::config::alerts::AlertsConfig {
    use verdict_collector::config::alerts::{AlertsConfig, ReceiverConfig, ReceiverKind, RuleKind};
    let mut alerts = AlertsConfig {
        evaluation_interval: Duration::from_secs(1),
        ..AlertsConfig::default()
    };
    for r in &mut alerts.rules {
        if r.kind == RuleKind::Threshold {
            r.rate = Some(10.0);
            r.window = Duration::from_secs(10);
            r.keep_firing_for = Duration::from_secs(5);
        }
    }
    if let Some(url) = alertmanager {
        alerts.receivers.push(ReceiverConfig {
            name: "alertmanager".into(),
            kind: ReceiverKind::Alertmanager,
            url: url.to_owned(),
            bearer_token_file: None,
            bearer_token: None,
            ca_file: None,
            timeout: Duration::from_secs(10),
            rules: Vec::new(),
            kafka: None,
        });
    }
    alerts
}

/// Prints the alert changes recorded since the first `shown` (oldest first); returns how many
/// have been shown.
fn print_new_alerts(
    elapsed: Duration,
    collector: &verdict_collector::Collector,
    shown: usize,
) -> usize {
    let Ok(mut entries) = collector.alerts().history(10_000) else {
        return shown;
    };
    entries.reverse();
    for e in entries.iter().skip(shown) {
        let a = &e.alert;
        let mut line = format!(
            "[{:>4} s] ALERT {} {} {}={}: {}",
            elapsed.as_secs(),
            e.change,
            a.rule,
            a.scope,
            a.scope_value,
            a.summary
        );
        if e.change == "fired"
            && let Some(top) = a.annotations.get("top_sources")
        {
            line.push_str(&format!(" · top sources: {top}"));
        }
        println!("{line}");
    }
    entries.len().max(shown)
}

/// The node's configuration for the demo's manifests and node log.
fn node_config(
    dirs: &DemoDirs,
    datapath: NodeDatapath,
    attempts: Option<AttemptInput>,
) -> NodeConfig {
    NodeConfig {
        cluster: verdict_cluster::StateSource::Manifests {
            dir: dirs.manifests.clone(),
            interval: Duration::from_secs(1),
        },
        agent: AgentConfig {
            log_path: dirs.node_log.clone(),
            max_log_bytes: verdict_probe::log_writer::DEFAULT_MAX_BYTES,
            keep_log_files: verdict_probe::log_writer::DEFAULT_KEEP,
            pipeline: PipelineConfig {
                node_name: NODE_NAME.to_owned(),
                ..PipelineConfig::default()
            },
            ipblock_mode: IpBlockMode::DataplaneV2,
            event_queue: DEFAULT_EVENT_QUEUE,
        },
        datapath,
        bpf_pin_dir: PathBuf::from(ebpf_node::PIN_DIR),
        uplinks: Vec::new(),
        node_name: Some(NODE_NAME.to_owned()),
        mode: EnforcementMode::Enforce,
        udp_idle_window: verdict_probe::datapath::DEFAULT_IDLE_WINDOW,
        attempts,
    }
}

fn load_engine(manifests: &Path) -> anyhow::Result<verdict_policy::Engine> {
    let loaded = verdict_policy::manifests::load_dir(manifests)?;
    Ok(verdict_policy::Engine::build(
        &loaded.state,
        IpBlockMode::DataplaneV2,
    )?)
}

/// The shop's traffic, resolved against the cluster.
fn shop_scenario(
    engine: &verdict_policy::Engine,
) -> anyhow::Result<(Vec<traffic::ResolvedFlow>, Vec<traffic::BurstPlan>)> {
    let scenario = Scenario::parse(SHOP_TRAFFIC, "examples/shop.traffic.yaml")?;
    Ok(scenario.resolve(engine, "examples/shop.traffic.yaml")?)
}

fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The demo folder's layout.
#[derive(Debug)]
struct DemoDirs {
    root: PathBuf,
    manifests: PathBuf,
    node_log: PathBuf,
    collector: PathBuf,
}

impl DemoDirs {
    /// Creates the folders; writes the shop manifests unless they are there already (so a
    /// user's edits survive a restart: the node reloads them while running).
    fn prepare(dir: &Path) -> anyhow::Result<DemoDirs> {
        let dir =
            std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
        let dirs = DemoDirs::at(&dir);
        let (manifests, node, collector) = (&dirs.manifests, dir.join("node"), &dirs.collector);
        for d in [manifests, &node, collector] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        for (name, text) in SHOP_MANIFESTS {
            let path = manifests.join(name);
            if !path.exists() {
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Ok(dirs)
    }

    /// The layout under `root` (nothing created).
    fn at(root: &Path) -> DemoDirs {
        DemoDirs {
            root: root.to_owned(),
            manifests: root.join("manifests"),
            node_log: root.join("node").join("policy_action.log"),
            collector: root.join("collector"),
        }
    }
}

/// How the user runs this binary: `verdict` when that is what PATH finds, else its path (a
/// fresh checkout runs `target/debug/verdict`).
fn cli_name() -> String {
    let Ok(exe) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "verdict".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .any(|d| std::fs::canonicalize(d.join("verdict")).is_ok_and(|p| p == exe))
    });
    if on_path {
        return "verdict".into();
    }
    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(Path::to_owned))
        .unwrap_or_else(|| exe.clone());
    shown.display().to_string()
}

fn print_banner(
    options: &DemoOptions,
    dirs: &DemoDirs,
    datapath: &str,
    datapath_note: &str,
    elapsed: Duration,
) {
    let http = options.http_listen;
    let cli = cli_name();
    let alerts = match &options.alertmanager {
        Some(url) => format!("printed here as they fire, and sent to the Alertmanager at {url}"),
        None => "printed here as they fire (the port-scan bursts into shop; --alertmanager URL sends them on)".to_owned(),
    };
    let collector_flag = if http.to_string() == "127.0.0.1:8080" {
        String::new()
    } else {
        format!(" --collector http://{http}")
    };
    println!(
        "Verdict demo — a shop cluster on one node, everything on this machine (ready in {:.1} s)
  node       {NODE_NAME}, datapath: {datapath}{datapath_note}
  manifests  {} (edit a policy: the node reloads it within a second)
  node log   {}
  collector  gRPC {}, HTTP http://{http}, lake {}
  alerts     {alerts}
Try:
  {cli} logs read 'jsonPayload.disposition=\"deny\"' --limit 5{collector_flag}
  {cli} sql 'SELECT dest_pod_namespace, dest_pod_name, count(*) AS denies FROM policy_action WHERE disposition = ''deny'' GROUP BY 1, 2 ORDER BY denies DESC'{collector_flag}
  {cli} policy explain --manifests {} 'sandbox/rogue-client-8c7b6d5f4-zz9kd -> shop/redis-0:6379'
  {cli} alerts list{collector_flag}
Ctrl-C stops everything.",
        elapsed.as_secs_f64(),
        dirs.manifests.display(),
        dirs.node_log.display(),
        options.grpc_listen,
        dirs.collector.join("lake").display(),
        dirs.manifests.display(),
    );
}

fn print_status(
    elapsed: Duration,
    node: &Node,
    shipper: &verdict_shipper::ShipperHandle,
    collector: &verdict_collector::Collector,
) {
    let acked = shipped_records(shipper);
    let stored = collector
        .metrics()
        .writer
        .records_stored(verdict_collector::Table::Flows);
    match node {
        Node::InProcess(n) => {
            let m = &n.metrics;
            println!(
                "[{:>4} s] node: connections allowed {} denied {} · records written {} · shipped {acked} · stored {stored}",
                elapsed.as_secs(),
                m.allowed_connections.get(),
                m.denied_connections.get(),
                m.generated_logs_allow.get() + m.generated_logs_deny.get(),
            );
        }
        // The node process prints its own line.
        Node::Kernel(_) => println!(
            "[{:>4} s] shipper: shipped {acked} · collector: stored {stored}",
            elapsed.as_secs()
        ),
    }
}

/// Records of `policy_action.log` the collector has acknowledged.
fn shipped_records(shipper: &verdict_shipper::ShipperHandle) -> u64 {
    shipper
        .metrics()
        .input(verdict_shipper::input::LogFileInput::POLICY_ACTION)
        .records_acked
        .get()
}
