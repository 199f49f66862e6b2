//! A synthetic cluster served by the fake Kubernetes API server (no real API server runs on the
//! machines Verdict is built on), and what the node agent needs for it.
//!
//! - `cluster-scale serve [SIZE] --kubeconfig-out FILE`: serves the cluster (or `--manifests DIR`)
//!   until stopped, for trying the agent, the shipper or the CLI against "a cluster".
//! - `cluster-scale measure --probe BIN [SIZE]`: starts `verdict-probe --kubeconfig` (userspace
//!   datapath: the state it holds, not the kernel maps) on it and prints a Markdown table: the
//!   time from the agent's start until its initial list returned, from then to ready (policy
//!   generation 1 on `/metrics`), its resident memory (VmRSS at ready + 2 s, VmHWM peak), and
//!   the time for one pod label change to reach a new generation.
//!
//! SIZE: `--namespaces 1000 --pods 10000 --policies 2000 --nodes 100` (the defaults).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use verdict_cluster::fake_apiserver::FakeApiServer;

#[derive(Debug, Parser)]
#[command(name = "cluster-scale")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Serve {
        #[command(flatten)]
        size: Size,
        /// Serve these manifests instead of a synthetic cluster.
        #[arg(long)]
        manifests: Option<PathBuf>,
        #[arg(long)]
        kubeconfig_out: PathBuf,
    },
    Measure {
        #[command(flatten)]
        size: Size,
        /// The `verdict-probe` binary.
        #[arg(long)]
        probe: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, Args)]
struct Size {
    #[arg(long, default_value_t = 1000)]
    namespaces: usize,
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    #[arg(long, default_value_t = 2000)]
    policies: usize,
    #[arg(long, default_value_t = 100)]
    nodes: usize,
}

const TOKEN: &str = "cluster-scale";

fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", 64 + i / 65_536, (i / 256) % 256, i % 256)
}

/// The synthetic cluster: namespaces labelled by team and environment, pods of a few apps per
/// namespace (ReplicaSet-owned, pod-template-hash labels, container ports) spread over nodes,
/// one Service + EndpointSlice per app, and per namespace a default-deny plus allow policies
/// (same-namespace app peers, other teams' namespaces by label, an ipBlock egress).
fn synthetic(size: Size) -> Vec<Value> {
    let mut objects = Vec::new();
    for n in 0..size.nodes {
        objects.push(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node-{n}"),
            "labels": {"kubernetes.io/hostname": format!("node-{n}")}},
            "spec": {"podCIDR": format!("10.{}.{}.0/24", 64 + n / 256, n % 256)},
            "status": {"addresses": [{"type": "InternalIP", "address": format!("192.168.{}.{}", n / 256, n % 256)}]}}));
    }
    let per_ns = size.pods.div_ceil(size.namespaces.max(1));
    let policies_per_ns = size.policies.div_ceil(size.namespaces.max(1));
    let apps = 4;
    let mut pod = 0;
    for ns in 0..size.namespaces {
        let name = format!("team-{}-ns-{ns}", ns % 50);
        objects.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
            "labels": {"team": format!("team-{}", ns % 50), "env": if ns % 3 == 0 {"staging"} else {"prod"}}}}));
        for k in 0..per_ns {
            if pod == size.pods {
                break;
            }
            let app = format!("app-{}", k % apps);
            let hash = format!("{:x}", 0x5d9f_7c00_u64 + (ns * apps + k % apps) as u64);
            objects.push(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": format!("{app}-{hash}-{k}"), "namespace": name,
                "labels": {"app": app, "tier": if k % apps == 0 {"db"} else {"web"}, "pod-template-hash": hash},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-{hash}"),
                                     "controller": true, "uid": format!("rs-{ns}-{k}")}]},
                "spec": {"nodeName": format!("node-{}", pod % size.nodes.max(1)),
                         "containers": [{"name": "main", "image": "registry.example/app:1.0",
                                         "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                                                   {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]}]},
                "status": {"phase": "Running", "podIP": ip(pod), "podIPs": [{"ip": ip(pod)}]}}));
            pod += 1;
        }
        for a in 0..apps.min(per_ns) {
            let app = format!("app-{a}");
            objects.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": app, "namespace": name},
                "spec": {"clusterIP": format!("10.96.{}.{}", (ns * apps + a) / 256 % 256, (ns * apps + a) % 256),
                         "selector": {"app": app}}}));
            objects.push(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{app}-x"), "namespace": name, "labels": {"kubernetes.io/service-name": app}},
                "addressType": "IPv4", "endpoints": [], "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}));
        }
        for p in 0..policies_per_ns {
            if ns * policies_per_ns + p >= size.policies {
                break;
            }
            let spec = match p {
                0 => json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
                1 => {
                    json!({"podSelector": {"matchLabels": {"tier": "db"}}, "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "web"}}}],
                                 "ports": [{"protocol": "TCP", "port": 5432}]}]})
                }
                _ => json!({"podSelector": {"matchLabels": {"app": format!("app-{}", p % apps)}},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": format!("team-{}", (ns + p) % 50)}},
                                           "podSelector": {"matchLabels": {"tier": "web"}}}],
                                 "ports": [{"protocol": "TCP", "port": "http"}]}],
                    "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}],
                                "ports": [{"protocol": "TCP", "port": 443}]},
                               {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                                "ports": [{"protocol": "UDP", "port": 53}]}]}),
            };
            objects.push(
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": format!("policy-{p}"), "namespace": name}, "spec": spec}),
            );
        }
    }
    objects.push(json!({"apiVersion": "networking.gke.io/v1alpha1", "kind": "NetworkLogging",
        "metadata": {"name": "default"},
        "spec": {"cluster": {"allow": {"log": true, "delegate": false}, "deny": {"log": true, "delegate": false}}}}));
    objects
}

async fn serve(objects: Vec<Value>) -> FakeApiServer {
    let server = FakeApiServer::start(TOKEN).await;
    for o in objects {
        server.apply(o);
    }
    server
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn generation(metrics: &str) -> u64 {
    let url = format!("http://{metrics}/metrics");
    let body = std::process::Command::new("curl")
        .args(["-sf", "--max-time", "2", &url])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    body.lines()
        .find_map(|l| l.strip_prefix("verdict_probe_policy_generation "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn measure(size: Size, probe: &Path) -> anyhow::Result<()> {
    let objects = synthetic(size);
    let count = objects.len();
    let server = serve(objects).await;
    let dir = std::env::temp_dir().join(format!("cluster-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig())?;
    let metrics = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.to_string()
    };
    let started = Instant::now();
    let mut child = std::process::Command::new(probe)
        .args(["--kubeconfig", kubeconfig.to_str().unwrap_or_default()])
        .args(["--datapath", "userspace", "--node-name", "node-0"])
        .args(["--metrics-addr", &metrics])
        .args([
            "--log-path",
            dir.join("policy_action.log").to_str().unwrap_or_default(),
        ])
        .env("RUST_LOG", "warn")
        .spawn()
        .context("starting the probe")?;
    let pid = child.id();
    let ready = loop {
        if let Some(status) = child.try_wait()? {
            bail!("the probe exited: {status}");
        }
        if generation(&metrics) >= 1 {
            break Instant::now();
        }
        if started.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            bail!("not ready after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let listed = server.last_list_at().unwrap_or(ready);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");
    // One pod relabelled: the time until the agent runs the next generation.
    let changed = Instant::now();
    let mut pod = server
        .get("Pod", "team-0-ns-0", "app-0-5d9f7c00-0")
        .context("the first synthetic pod")?;
    pod["metadata"]["labels"]["tier"] = json!("web");
    server.apply(pod);
    while generation(&metrics) < 2 {
        if changed.elapsed() > Duration::from_secs(120) {
            bail!("the change did not arrive in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let update = changed.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "| namespaces | pods | NetworkPolicies | objects | start → list returned | list returned → ready | RSS at ready | peak RSS | one pod change → new generation |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {count} | {:.2} s | {:.2} s | {:.0} MiB | {:.0} MiB | {} ms |",
        size.namespaces,
        size.pods,
        size.policies,
        listed.saturating_duration_since(started).as_secs_f64(),
        ready.saturating_duration_since(listed).as_secs_f64(),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        update.as_millis()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve {
            size,
            manifests: dir,
            kubeconfig_out,
        } => {
            let (server, count) = match dir {
                Some(d) => {
                    let server = serve(Vec::new()).await;
                    let count = server.apply_manifest_dir(&d)?;
                    (server, count)
                }
                None => {
                    let objects = synthetic(size);
                    let count = objects.len();
                    (serve(objects).await, count)
                }
            };
            std::fs::write(&kubeconfig_out, server.kubeconfig())?;
            println!(
                "serving {count} objects at {}; kubeconfig: {}",
                server.url(),
                kubeconfig_out.display()
            );
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
        Command::Measure { size, probe } => measure(size, &probe).await,
    }
}
