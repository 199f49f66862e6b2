//! Harness of the shipper's integration tests: the real collector (in process, on loopback,
//! through the collector's own test harness), shipper configurations, log writers that rotate
//! the way the probe does, and readers of what the collector stored.

#![allow(dead_code)]

#[path = "../../../collector/tests/support/mod.rs"]
pub mod collector;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use verdict_collector::Table;
use verdict_schema::LogEntry;
use verdict_shipper::Config;

#[allow(unused_imports)]
pub use collector::{Served, eventually, flow_json, loss_json, metric, tempdir};

pub const NODE: &str = "node-1";
pub const BASE: i64 = 1_767_225_600;

/// A collector configuration under `dir` (flush often; keep past event times).
pub fn collector_config(dir: &Path) -> verdict_collector::Config {
    collector::config(dir)
}

/// Shows the shipper's warnings in test output (RUST_LOG, default warn).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A shipper configuration for `log_dir`, shipping to `grpc`, with fast test timings.
/// Starts a shipper with `config`, its metrics listener bound as configured.
pub async fn start_shipper(config: Config) -> verdict_shipper::ShipperHandle {
    let listeners = verdict_shipper::Listeners::bind(&config)
        .await
        .expect("metrics address binds");
    verdict_shipper::Shipper::start(config, listeners)
        .await
        .expect("shipper starts")
}

pub fn shipper_config(log_dir: &Path, state_dir: &Path, grpc: std::net::SocketAddr) -> Config {
    init_logs();
    let mut c = Config {
        log_dir: Some(log_dir.to_owned()),
        collector: format!("http://{grpc}"),
        checkpoint_dir: state_dir.join("checkpoints"),
        metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
        poll_interval: Duration::from_millis(20),
        checkpoint_interval: Duration::from_millis(100),
        ..Config::default()
    };
    c.identity.node_name = NODE.into();
    c.identity.cluster_name = "cluster-a".into();
    c.identity.location = "europe-west1-b".into();
    c.identity.project_id = "proj".into();
    c.batch.max_age = Duration::from_millis(50);
    c.batch.max_records = 500;
    c.backoff.initial = Duration::from_millis(20);
    c.backoff.max = Duration::from_millis(300);
    c
}

/// Appends lines to a log and rotates it GKE's way (NAME → NAME.1 → … → NAME.keep) when it
/// passes `max_bytes`, as `verdict-probe`'s writer does.
pub struct RotatingLog {
    pub path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: std::fs::File,
    written: u64,
    pub rotations: usize,
}

impl RotatingLog {
    pub fn new(path: PathBuf, max_bytes: u64, keep: usize) -> Self {
        let file = open_append(&path);
        let written = file.metadata().unwrap().len();
        RotatingLog {
            path,
            max_bytes,
            keep,
            file,
            written,
            rotations: 0,
        }
    }

    pub fn write_line(&mut self, line: &str) {
        if self.written > 0 && self.written + line.len() as u64 + 1 > self.max_bytes {
            self.rotate();
        }
        self.file.write_all(format!("{line}\n").as_bytes()).unwrap();
        self.written += line.len() as u64 + 1;
    }

    fn rotated(&self, k: usize) -> PathBuf {
        let mut n = self.path.file_name().unwrap().to_os_string();
        n.push(format!(".{k}"));
        self.path.with_file_name(n)
    }

    fn shift(&self) {
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for k in (1..self.keep).rev() {
            if self.rotated(k).exists() {
                std::fs::rename(self.rotated(k), self.rotated(k + 1)).unwrap();
            }
        }
    }

    /// logrotate's `copytruncate`: shift the rotated files, copy the log to NAME.1, truncate it.
    pub fn copy_truncate(&mut self) {
        self.shift();
        std::fs::copy(&self.path, self.rotated(1)).unwrap();
        self.file.set_len(0).unwrap();
        self.written = 0;
        self.rotations += 1;
    }

    pub fn rotate(&mut self) {
        self.shift();
        std::fs::rename(&self.path, self.rotated(1)).unwrap();
        self.file = open_append(&self.path);
        self.written = 0;
        self.rotations += 1;
    }
}

pub fn open_append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// The flow record line number `i` of this node (unique by its event time and ports).
pub fn flow(i: u64) -> String {
    flow_json(NODE, i, BASE)
}

/// Records the collector stored, flushed first: each flow entry by its JSON payload.
pub async fn stored_flows(served: &Served) -> Vec<LogEntry> {
    served.collector.flush().await.unwrap();
    let mut out = Vec::new();
    for b in served.collector.read_committed(Table::Flows).await.unwrap() {
        out.extend(verdict_schema::flat_schema::batch_to_log_entries(&b).unwrap());
    }
    out
}

/// How many times each payload (as canonical JSON) was stored.
pub fn payload_counts(entries: &[LogEntry]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in entries {
        *m.entry(serde_json::to_string(&e.json_payload).unwrap())
            .or_insert(0) += 1;
    }
    m
}

/// The canonical JSON of a written line (parsed and serialized like stored payloads).
pub fn canonical(line: &str) -> String {
    let r: verdict_schema::PolicyActionRecord = serde_json::from_str(line).unwrap();
    serde_json::to_string(&r).unwrap()
}

/// Flow records stored so far (the collector's counter; index 0 is the flows table).
pub fn flows_stored(served: &Served) -> u64 {
    served
        .collector
        .metrics()
        .writer
        .records_stored(verdict_collector::Table::Flows)
}

/// A metric of the shipper's exposition at `addr`.
pub async fn shipper_metric(addr: std::net::SocketAddr, series: &str) -> Option<f64> {
    metric(&collector::http_get(addr, "/metrics").await, series)
}
