//! Test harness shared by the integration tests: a collector served on loopback, a gRPC
//! client, deterministic records, and independent readers (pyarrow, duckdb, moto's S3) run as
//! python3 subprocesses.
//!
//! A test that needs python packages or moto skips with a printed reason on a developer
//! machine, and fails when `CI=true`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use verdict_collector::{Collector, Config, Listeners};
use verdict_schema::proto::v1;
use verdict_service::shutdown::CancellationToken;

/// A fresh configuration for a collector under `dir` (loopback ports are chosen at start).
pub fn config(dir: &Path) -> Config {
    let mut c = Config {
        data_dir: dir.join("data"),
        ..Config::default()
    };
    c.grpc.listen = "127.0.0.1:0".parse().unwrap();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.flush.max_age = Duration::from_millis(200);
    c.compaction.enabled = false;
    // Test records carry fixed (past) event times: accept and keep them whatever today's date
    // is.
    c.grpc.max_record_age = Duration::from_secs(100 * 365 * 86_400);
    c.retention.flows = Duration::ZERO;
    c.retention.loss = Duration::ZERO;
    c.retention.rollups = Duration::ZERO;
    c
}

/// A collector served on loopback.
pub struct Served {
    pub collector: Arc<Collector>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<verdict_collector::Result<()>>>,
}

impl Served {
    pub async fn start(config: Config) -> Served {
        let (collector, _) = Collector::open(config).await.expect("collector opens");
        Self::serve(Arc::new(collector)).await
    }

    pub async fn serve(collector: Arc<Collector>) -> Served {
        let listeners = Listeners {
            grpc: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            http: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let (grpc_addr, http_addr) = (
            listeners.grpc.local_addr().unwrap(),
            listeners.http.local_addr().unwrap(),
        );
        let stop = CancellationToken::new();
        let c = Arc::clone(&collector);
        let server = tokio::spawn({
            let stop = stop.clone();
            async move { c.serve(listeners, stop).await }
        });
        Served {
            collector,
            grpc: grpc_addr,
            http: http_addr,
            stop,
            server: Some(server),
        }
    }

    /// An ingest stream to this collector (plaintext, no token).
    pub async fn stream(&self) -> Stream {
        Stream::open(channel(self.grpc).await, None)
            .await
            .expect("ingest stream opens")
    }

    /// Stops serving and closes the collector (everything buffered is flushed).
    pub async fn stop(mut self) {
        self.stop.cancel();
        self.server
            .take()
            .unwrap()
            .await
            .unwrap()
            .expect("served cleanly");
        self.collector.close().await.expect("closes cleanly");
    }

    /// Stops serving without closing: nothing more is flushed, as if the process had died
    /// (the WAL holds every acknowledged batch).
    pub async fn abandon(mut self) {
        self.stop.cancel();
        self.server
            .take()
            .unwrap()
            .await
            .unwrap()
            .expect("served cleanly");
    }

    pub async fn metrics(&self) -> String {
        http_get(self.http, "/metrics").await
    }
}

/// A minimal HTTP/1.1 GET (the body).
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(out)
}

/// The value of a metric line (`name{labels} value`) in an exposition.
pub fn metric(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

pub fn node(name: &str) -> v1::NodeIdentity {
    v1::NodeIdentity {
        node_name: name.into(),
        cluster_name: "cluster-a".into(),
        location: "europe-west1-b".into(),
        project_id: "proj".into(),
    }
}

/// A deterministic flow record of `node` for sequence `seq`, event time `base_secs + seq/4` s.
pub fn flow_json(node: &str, seq: u64, base_secs: i64) -> String {
    let ns = ["default", "shop", "payments", "kube-system"][(seq % 4) as usize];
    let (disposition, policies) = if seq.is_multiple_of(3) {
        ("deny", String::new())
    } else {
        (
            "allow",
            format!(r#","policies":[{{"name":"allow-{ns}","namespace":"{ns}"}}]"#),
        )
    };
    let secs = base_secs + (seq / 4) as i64;
    let t = chrono::DateTime::from_timestamp(secs, (seq % 1000) as u32 * 1_000_000).unwrap();
    format!(
        r#"{{"connection":{{"src_ip":"10.0.{a}.{b}","dest_ip":"10.1.0.{c}","src_port":{sp},"dest_port":{dp},"protocol":"tcp","direction":"ingress"}},"disposition":"{disposition}"{policies},"src":{{"pod_name":"client-{c}","pod_namespace":"shop","namespace":"shop","workload_name":"client-5d9f","workload_kind":"ReplicaSet"}},"dest":{{"pod_name":"api-{b}","pod_namespace":"{ns}","namespace":"{ns}","workload_name":"api-7c4b","workload_kind":"ReplicaSet"}},"count":{count},"node_name":"{node}","timestamp":"{ts}"}}"#,
        a = seq % 7,
        b = seq % 11,
        c = seq % 13,
        sp = 32768 + (seq * 7919) % 28000,
        dp = [80, 443, 8080, 5432][(seq % 4) as usize],
        count = if seq.is_multiple_of(3) {
            1 + seq % 5
        } else {
            1
        },
        ts = t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    )
}

/// A loss marker of `node` for the interval ending at `end_secs`.
pub fn loss_json(node: &str, end_secs: i64, dropped: u64) -> String {
    let t = |s| {
        chrono::DateTime::from_timestamp(s, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    format!(
        r#"{{"timestamp":"{}","interval_start":"{}","node_name":"{node}","reason":"rate_limit","disposition":"deny","dropped_records":{dropped},"dropped_connections":{}}}"#,
        t(end_secs),
        t(end_secs - 1),
        dropped * 2
    )
}

pub fn json_record(seq: u64, log: v1::LogId, line: &str) -> v1::Record {
    v1::Record {
        sequence: seq,
        log_id: log as i32,
        payload: Some(v1::record::Payload::JsonLine(
            line.as_bytes().to_vec().into(),
        )),
    }
}

pub fn batch(node_name: &str, source: &str, batch_id: u64, records: Vec<v1::Record>) -> v1::Batch {
    v1::Batch {
        schema_version: v1::SchemaVersion::V1 as i32,
        batch_id,
        node: Some(node(node_name)),
        source: Some(v1::Source {
            id: source.into(),
            kind: v1::SourceKind::PolicyActionLog as i32,
            path: "/var/log/network/policy_action.log".into(),
        }),
        records,
    }
}

/// Sends raw bytes as request messages (to send what is not a `Batch`).
#[derive(Debug, Clone, Default)]
pub struct RawCodec;

#[derive(Debug, Clone, Default)]
pub struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = v1::BatchResult;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<v1::BatchResult>;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(BufferSettings::default())
    }
}

/// One open ingest stream.
pub struct Stream {
    tx: mpsc::Sender<Bytes>,
    rx: tonic::Streaming<v1::BatchResult>,
}

/// Connects to `addr` (plaintext), optionally with a bearer token.
pub async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connects")
}

impl Stream {
    pub async fn open(channel: Channel, token: Option<&str>) -> Result<Stream, tonic::Status> {
        let (tx, mut rx) = mpsc::channel::<Bytes>(64);
        let outbound = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut request = tonic::Request::new(outbound);
        if let Some(t) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/verdict.ingest.v1.Ingest/Stream",
        );
        let response = grpc.streaming(request, path, RawCodec).await?;
        Ok(Stream {
            tx,
            rx: response.into_inner(),
        })
    }

    pub async fn send(&self, b: &v1::Batch) {
        use prost::Message as _;
        self.send_raw(Bytes::from(b.encode_to_vec())).await;
    }

    pub async fn send_raw(&self, bytes: Bytes) {
        self.tx.send(bytes).await.expect("stream open");
    }

    pub async fn next(&mut self) -> Result<v1::BatchResult, tonic::Status> {
        match self.rx.message().await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(tonic::Status::cancelled("stream ended")),
            Err(s) => Err(s),
        }
    }

    pub async fn call(&mut self, b: &v1::Batch) -> v1::BatchResult {
        self.send(b).await;
        self.next().await.expect("a result")
    }

    /// Ends the request side and returns what the server still sends (up to the end).
    pub async fn finish(mut self) -> Vec<Result<v1::BatchResult, tonic::Status>> {
        drop(self.tx);
        let mut out = Vec::new();
        loop {
            match self.rx.message().await {
                Ok(Some(r)) => out.push(Ok(r)),
                Ok(None) => return out,
                Err(s) => {
                    out.push(Err(s));
                    return out;
                }
            }
        }
    }
}

/// Polls `cond` until it holds or `deadline` passes (then panics with `what`).
pub async fn eventually<F: FnMut() -> bool>(deadline: Duration, what: &str, mut cond: F) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (returns false, printing why) on a developer machine, or panics in CI.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if in_ci() {
        panic!("{what} is required when CI=true (pip install 'moto[server]' pyarrow duckdb)");
    }
    eprintln!("SKIPPED: {what} is not available (pip install 'moto[server]' pyarrow duckdb)");
    false
}

/// Whether python3 can import every module in `modules`.
pub fn python_has(modules: &[&str]) -> bool {
    Command::new("python3")
        .arg("-c")
        .arg(format!("import {}", modules.join(", ")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a python3 script with `args`; returns stdout (panics with stderr on failure).
pub fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// pyarrow: every row of the Parquet files (or S3 objects) given, as JSON objects with
/// timestamps as integer nanoseconds and dictionaries decoded.
pub const PYARROW_ROWS: &str = r#"
import json, os, sys
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
fs = None
if os.environ.get("S3_ENDPOINT"):
    from pyarrow import fs as pafs
    fs = pafs.S3FileSystem(endpoint_override=os.environ["S3_ENDPOINT"], scheme="http",
                           access_key="test", secret_key="test", region="us-east-1")
for path in sys.argv[1:]:
    f = fs.open_input_file(path) if fs else path
    t = pq.ParquetFile(f).read()
    for i, field in enumerate(t.schema):
        if pa.types.is_timestamp(field.type):
            t = t.set_column(i, field.name, pc.cast(t.column(i), pa.int64()))
    for row in t.to_pylist():
        row["_file"] = path
        print(json.dumps(row, sort_keys=True))
"#;

pub fn pyarrow_rows(paths: &[String], s3_endpoint: Option<&str>) -> Vec<serde_json::Value> {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(PYARROW_ROWS).args(paths);
    if let Some(e) = s3_endpoint {
        cmd.env("S3_ENDPOINT", e);
    }
    let out = cmd.output().expect("python3 runs");
    assert!(
        out.status.success(),
        "pyarrow failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A moto S3 server on a free loopback port, killed on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto (or returns None where it may be skipped).
pub fn start_moto() -> Option<Moto> {
    let available = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !require(available, "moto_server") {
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let end = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "moto_server did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(moto)
}

impl Moto {
    /// Creates `bucket` (object_store does not create buckets).
    pub fn create_bucket(&self, bucket: &str) {
        python(
            "import sys, boto3\nboto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1').create_bucket(Bucket=sys.argv[2])",
            &[&self.endpoint, bucket],
        );
    }
}

/// A temporary directory path that lives as long as the returned guard.
pub fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_owned();
    (d, p)
}

/// Rows of `table` in committed files.
pub async fn committed_rows(
    c: &verdict_collector::Collector,
    table: verdict_collector::Table,
) -> usize {
    c.read_committed(table)
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum()
}
