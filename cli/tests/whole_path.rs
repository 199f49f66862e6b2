//! The whole path as a cluster runs it, with every part a real process: pods in network
//! namespaces, `verdict-probe` enforcing with eBPF and writing `policy_action.log`,
//! `verdict-shipper` tailing it, `verdict-collector` storing Parquet, and the `verdict` CLI
//! reading it back (`verdict logs read`, `verdict sql`). Then the same with faults: the shipper
//! and the collector are killed with SIGKILL during traffic and restarted.
//!
//! The check: every record the probe wrote is stored exactly once with its fields intact, and
//! fresh records are queryable within seconds. Needs root (network namespaces, eBPF) and the
//! workspace's binaries (`cargo test --workspace` builds them); fails under CI=true otherwise.

#[path = "../../ebpf-probe/tests/support/netns.rs"]
mod netns;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns::{PodSpec, Topology, can_run, workspace_binary};

const LOG_ALL: &str = "kind: NetworkLogging\napiVersion: networking.gke.io/v1alpha1\nmetadata: {name: default}\nspec: {cluster: {allow: {log: true, delegate: false}, deny: {log: true, delegate: false}}}\n";
const ALLOW_GREEN: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-green, namespace: default}\nspec:\n  podSelector: {matchLabels: {app: test-service}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: client-green}}}]}]\n  policyTypes: [Ingress]\n";

fn pod(name: &'static str, labels: &'static str, last: u8, ports: &'static str) -> PodSpec {
    PodSpec {
        namespace: "default",
        name,
        labels,
        ipv4: format!("10.244.1.{last}"),
        ipv6: format!("fd00:10:244:1::{last:x}"),
        ports,
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A part of the path running as its own process; SIGKILLed when dropped.
struct Part {
    name: &'static str,
    child: Option<Child>,
}

impl Part {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Part {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .env("NO_COLOR", "1")
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Part {
            name,
            child: Some(child),
        }
    }

    /// kill -9: no cleanup, no flush.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = c.try_wait().unwrap() {
                    assert!(status.success(), "{} exited with {status}", self.name);
                    return;
                }
                assert!(Instant::now() < deadline, "{} did not stop", self.name);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Collector {
    config: PathBuf,
    http: u16,
    grpc: u16,
    log: PathBuf,
}

impl Collector {
    fn new(dir: &Path) -> Collector {
        let (grpc, http) = (free_port(), free_port());
        let config = dir.join("collector.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[grpc]\nlisten = \"127.0.0.1:{grpc}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[flush]\nmax_age = \"1s\"\n",
                dir.join("collector-data").display()
            ),
        )
        .unwrap();
        Collector {
            config,
            http,
            grpc,
            log: dir.join("collector.stderr"),
        }
    }

    fn start(&self) -> Part {
        let part = Part::spawn(
            "verdict-collector",
            Command::new(workspace_binary("verdict-collector"))
                .arg("--config")
                .arg(&self.config),
            &self.log,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.http)).is_err() {
            assert!(
                Instant::now() < deadline,
                "collector not listening\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        part
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }
}

fn start_shipper(t: &Topology, collector: &Collector) -> Part {
    let dir = t.dir.path();
    Part::spawn(
        "verdict-shipper",
        Command::new(workspace_binary("verdict-shipper"))
            .arg("--log-dir")
            .arg(t.log_path().parent().unwrap())
            .arg("--checkpoint-dir")
            .arg(dir.join("checkpoints"))
            .args([
                "--collector",
                &format!("http://127.0.0.1:{}", collector.grpc),
                "--node-name",
                netns::NODE_NAME,
                "--cluster",
                "whole-path",
                "--metrics-addr",
                "127.0.0.1:0",
                "--batch-max-age",
                "200ms",
                "--backoff-max",
                "500ms",
            ]),
        &dir.join("shipper.stderr"),
    )
}

/// Runs the CLI; its stdout. Exit status must be 0.
fn verdict(args: &[&str]) -> String {
    let out = Command::new(workspace_binary("verdict"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verdict {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every stored policy-action payload, through `verdict logs read`.
fn stored_payloads(collector: &Collector) -> Vec<serde_json::Value> {
    verdict(&[
        "logs",
        "read",
        r#"logName:"policy-action""#,
        "--collector",
        &collector.url(),
        "--freshness",
        "1d",
        "--limit",
        "1000000",
        "--order",
        "asc",
        "--format",
        "json",
    ])
    .lines()
    .map(|l| {
        let entry: serde_json::Value = serde_json::from_str(l).unwrap();
        entry["jsonPayload"].clone()
    })
    .collect()
}

/// `SELECT count(*)` through `verdict sql`.
fn stored_count(collector: &Collector) -> Option<u64> {
    let out = Command::new(workspace_binary("verdict"))
        .args([
            "sql",
            "SELECT count(*) AS n FROM policy_action",
            "--collector",
            &collector.url(),
            "--format",
            "json",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    // {"columns": [{"name": "n", …}], "rows": [[N]], "rowCount": 1}
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["rows"][0][0].as_u64()
}

/// The probe's records as a multiset of JSON values.
fn written_payloads(t: &Topology) -> Vec<serde_json::Value> {
    std::fs::read_to_string(t.log_path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn multiset(values: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for v in values {
        *m.entry(v.to_string()).or_insert(0) += 1;
    }
    m
}

fn connect_many(t: &Topology, from: &str, count: u16, first_port: u16, allowed: bool) {
    for i in 0..count {
        let ok = t.connect(from, "tcp", "10.244.1.10", 8080, first_port + i);
        assert_eq!(ok, allowed, "{from} port {}", first_port + i);
    }
}

fn wait_stored(collector: &Collector, want: u64, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let got = stored_count(collector);
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {got:?} records queryable after {within:?}, want {want}\ncollector:\n{}",
            std::fs::read_to_string(&collector.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn probe_to_query_with_kill9_of_shipper_and_collector() {
    if !can_run() {
        return;
    }
    let mut t = Topology::new(vec![
        pod(
            "test-service",
            "{app: test-service}",
            10,
            "{containerPort: 8080}",
        ),
        pod("client-green", "{app: client-green}", 11, ""),
        pod("client-red", "{app: client-red}", 12, ""),
    ]);
    t.write_manifests(&format!("{ALLOW_GREEN}---\n{LOG_ALL}"));
    let server = t.pod("default/test-service").1.clone();
    let green = t.pod("default/client-green").1.clone();
    let red = t.pod("default/client-red").1.clone();
    t.serve(&server, &["tcp:8080"]);

    let collector = Collector::new(t.dir.path());
    let mut collector_part = collector.start();
    let probe = t.start_probe(&["--deny-aggregation-window", "1s"]);
    let mut shipper = start_shipper(&t, &collector);

    // Healthy path: records are queryable within seconds of the connections.
    connect_many(&t, &green, 10, 41000, true);
    connect_many(&t, &red, 2, 42000, false);
    let after_deny_window = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < after_deny_window {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ten allows, and the two denies in one aggregated record (count 2) or two.
    let written = written_payloads(&t).len() as u64;
    assert!(written >= 11, "{written} records written");
    wait_stored(
        &collector,
        written,
        Duration::from_secs(10),
        "fresh records",
    );

    // The shipper dies mid-stream; records wait in the node's log; a new shipper resumes from
    // its checkpoint.
    connect_many(&t, &green, 5, 43000, true);
    shipper.kill9();
    connect_many(&t, &green, 10, 44000, true);
    shipper = start_shipper(&t, &collector);

    // The collector dies while the shipper streams; the shipper retries into a new one.
    connect_many(&t, &green, 5, 45000, true);
    collector_part.kill9();
    connect_many(&t, &green, 10, 46000, true);
    connect_many(&t, &red, 1, 47000, false);
    collector_part = collector.start();
    connect_many(&t, &green, 5, 48000, true);

    // Stop the probe (it writes its open deny windows), let everything drain.
    drop(t.stop_probe(probe));
    let written = written_payloads(&t);
    wait_stored(
        &collector,
        written.len() as u64,
        Duration::from_secs(30),
        "after the faults",
    );
    let stored = stored_payloads(&collector);
    let (want, got) = (multiset(&written), multiset(&stored));
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, n)| got.get(*k) != Some(n))
        .map(|(k, n)| format!("{n}× {k} (stored {:?})", got.get(k)))
        .collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "stored ≠ written: {} differ, {} unexpected\n{missing:#?}\n{extra:#?}",
        missing.len(),
        extra.len()
    );
    // Allowed and denied both made it, with the probe's fields intact.
    assert!(written.iter().any(|r| r["disposition"] == "deny"));
    assert!(written.iter().any(|r| r["disposition"] == "allow"));

    shipper.stop();
    collector_part.stop();
}
