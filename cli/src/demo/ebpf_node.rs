//! The demo's eBPF mode: the shop's pods become network namespaces plugged into a lab node
//! namespace (routed-CNI style, [`verdict_probe::lab`]), the kernel datapath enforces on their
//! veths, and the traffic is real TCP and UDP between them.
//!
//! Two processes: `verdict demo` keeps the collector and the shipper in the root namespace
//! (where the CLI reaches them on 127.0.0.1) and starts `verdict demo-node` inside the node
//! namespace with `ip netns exec`, which gives it the node's interfaces and /sys — the datapath
//! finds pod veths there. The node process writes `policy_action.log` into the demo folder
//! that the shipper tails, like a node agent and a shipper sharing a host path.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use verdict_policy::Engine;
use verdict_policy::engine::EndpointKind;
use verdict_probe::kernel::datapath::uninstall_everywhere;
use verdict_probe::lab::{Lab, LabError};
use verdict_probe::node::{DatapathChoice, Listeners, Node};
use verdict_service::shutdown::CancellationToken;

use super::sockets::{NetnsDirectory, SocketPlayer, start_servers};
use super::traffic::TrafficGenerator;
use super::{DemoDirs, TICK};

pub const NODE_NETNS: &str = "vdemo-node";
const OUTSIDE_NETNS: &str = "vdemo-outside";
/// Where the node process pins its maps (removed when it stops).
pub const PIN_DIR: &str = "/sys/fs/bpf/verdict-demo";
/// The node's InternalIP in examples/shop/cluster.yaml (kubelet traffic would come from it).
const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 5);
/// The line the node process prints once the kernel datapath decides traffic.
const READY: &str = "datapath: ebpf, ready";

/// One namespace per pod address; everything outside the cluster shares one namespace.
pub fn plan(engine: &Engine, addresses: &BTreeSet<IpAddr>) -> NetnsDirectory {
    let mut directory = NetnsDirectory::default();
    for ip in addresses {
        let ns = match engine.resolve_ip(*ip).kind {
            EndpointKind::Pod(_) => format!("vdemo-{}", ip.to_string().replace(['.', ':'], "-")),
            EndpointKind::Node(_) | EndpointKind::External => OUTSIDE_NETNS.to_owned(),
        };
        directory.insert(*ip, ns);
    }
    directory
}

/// Builds the lab for `directory` (IPv4 addresses; the shop is single-stack).
fn build_lab(directory: &NetnsDirectory, addresses: &BTreeSet<IpAddr>) -> Result<Lab, LabError> {
    let mut lab = Lab::create(NODE_NETNS, NODE_ADDR)?;
    let mut hosts: BTreeMap<&str, Vec<Ipv4Addr>> = BTreeMap::new();
    for ip in addresses {
        if let (IpAddr::V4(v4), Some(ns)) = (ip, directory.netns_of(*ip)) {
            hosts.entry(ns).or_default().push(*v4);
        }
    }
    for (ns, addrs) in hosts {
        lab.add_host(ns, &addrs)?;
    }
    Ok(lab)
}

/// The node process and its lab.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    _lab: Lab,
}

/// Why the eBPF mode could not start (the demo then runs the userspace datapath).
pub fn unavailable_reason() -> Option<String> {
    let root = verdict_probe::lab::running_as_root();
    if !root {
        return Some("not root (network namespaces and eBPF need it)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("the `ip` command (iproute2) is missing".into());
    }
    None
}

/// Builds the lab and starts the node process; returns once it says the kernel datapath is
/// ready, or an error saying why it is not (everything created is removed again).
pub fn start(
    dirs: &DemoDirs,
    directory: &NetnsDirectory,
    addresses: &BTreeSet<IpAddr>,
    speed: f64,
) -> anyhow::Result<NodeProcess> {
    let lab = build_lab(directory, addresses).context("building the network-namespace lab")?;
    let exe = std::env::current_exe().context("locating the verdict binary")?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", NODE_NETNS])
        .arg(exe)
        .arg("demo-node")
        .arg("--dir")
        .arg(&dirs.root)
        .arg("--speed")
        .arg(speed.to_string())
        .env("RUST_LOG", "warn,verdict_probe::kernel=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the node process")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("piped");
    let log_copy = dirs.root.join("node").join("node.stderr");
    std::thread::spawn(move || {
        use std::io::Write;
        let mut copy = std::fs::File::create(log_copy).ok();
        let mut ready = false;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(f) = copy.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            if !ready && line.contains(READY) {
                ready = true;
                let _ = tx.send(Ok(()));
            } else if line.contains("ERROR") || line.starts_with("error") {
                eprintln!("[node] {line}");
                if !ready {
                    let _ = tx.send(Err(line));
                }
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(())) => {
                return Ok(NodeProcess { child, _lab: lab });
            }
            Ok(Err(line)) => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("{}", line.trim_start_matches("error: "));
            }
            Err(_) => {}
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the node process exited before it was ready ({status})");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the node process was not ready within 30 s");
        }
    }
}

impl NodeProcess {
    /// Asks the node process to stop (SIGTERM: it drains its pipeline into the log and removes
    /// its programs) and waits; then the lab goes.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                anyhow::bail!("the node process did not stop within 20 s; killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// `verdict demo-node`: runs inside the node namespace.
pub async fn node_main(root: PathBuf, speed: f64) -> anyhow::Result<()> {
    let stop = verdict_service::shutdown::on_signals()?;
    let dirs = DemoDirs::at(&root);
    let node = Node::start(
        super::node_config(&dirs, DatapathChoice::Ebpf, None),
        Listeners::default(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("the eBPF datapath cannot load: {e}"))?;
    let snapshot = node.snapshots().borrow().clone();
    let (flows, bursts) = super::shop_scenario(&snapshot.engine)?;
    let generator = TrafficGenerator::new(flows, bursts, speed);
    let addresses = generator.addresses();
    let directory = plan(&snapshot.engine, &addresses);
    start_servers(&directory, &generator.listeners())?;

    let player = SocketPlayer::new(directory);
    let outcomes = player.outcomes.clone();
    let traffic_stop = CancellationToken::new();
    let traffic = tokio::spawn({
        let traffic_stop = traffic_stop.clone();
        async move {
            let mut generator = generator;
            let started = Instant::now();
            let mut ticks = tokio::time::interval(TICK);
            let mut attempts = Vec::new();
            loop {
                tokio::select! {
                    _ = traffic_stop.cancelled() => break,
                    _ = ticks.tick() => {
                        generator.advance(started.elapsed(), &mut attempts);
                        for a in attempts.drain(..) {
                            player.play(a).await;
                        }
                    }
                }
            }
        }
    });
    let metrics = Arc::clone(node.metrics());
    let status = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        every.tick().await;
        let started = Instant::now();
        loop {
            every.tick().await;
            println!(
                "[{:>4} s] node: connections allowed {} denied {} (clients answered {}, unanswered {}) · records written {}",
                started.elapsed().as_secs(),
                metrics.allowed_connections.get(),
                metrics.denied_connections.get(),
                outcomes.answered.load(Ordering::Relaxed),
                outcomes.unanswered.load(Ordering::Relaxed),
                metrics.generated_logs_allow.get() + metrics.generated_logs_deny.get(),
            );
        }
    });
    // Until SIGTERM: then traffic stops and the node drains its pipeline into the log.
    let ran = node.run(stop).await;
    traffic_stop.cancel();
    let _ = traffic.await;
    status.abort();
    ran?;
    uninstall_everywhere(Path::new(PIN_DIR)).context("removing the demo's programs and maps")?;
    Ok(())
}
