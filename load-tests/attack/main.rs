//! `verdict-attack`: the attacks of the security review against the release binaries, each
//! with what must happen and what did, as a Markdown table (`load-tests/attack.sh` runs it, then
//! the kernel datapath attacks).
//!
//! It starts `verdict-collector` (node tokens, a query token, short HTTP timeouts) on loopback,
//! streams legitimate records as node `n1` throughout, runs every attack, checks after each that
//! the collector still answers `/healthz`, and at the end that every record acknowledged to the
//! legitimate stream is stored exactly once. Exit status 1 when any attack got through.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tokio::sync::mpsc;
use verdict_schema::proto::v1;

#[derive(Debug, Parser)]
#[command(
    name = "verdict-attack",
    about = "Attacks on the collector and the shipper"
)]
struct Args {
    /// The collector binary (release build).
    #[arg(long)]
    collector_bin: PathBuf,
    /// The shipper binary (release build).
    #[arg(long)]
    shipper_bin: PathBuf,
}

const N1_TOKEN: &str = "n1-secret-token-0123456789";
const N2_TOKEN: &str = "n2-secret-token-0123456789";
const QUERY_TOKEN: &str = "query-token-abcdef";

struct Collector {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn start_collector(bin: &Path) -> Result<Collector> {
    let dir = tempfile::tempdir()?;
    let (grpc, http) = (free_port()?, free_port()?);
    let tokens = dir.path().join("node-tokens");
    std::fs::write(&tokens, format!("n1 {N1_TOKEN}\nn2 {N2_TOKEN}\n"))?;
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{data}\"\n[grpc]\nlisten = \"{grpc}\"\nnode_tokens_file = \"{tokens}\"\n\
             [http]\nlisten = \"{http}\"\nmax_connections = 64\nheader_read_timeout = \"2s\"\n\
             [flush]\nmax_age = \"1s\"\n[query]\nauth_tokens = [\"{QUERY_TOKEN}\"]\ntimeout = \"10s\"\n",
            data = dir.path().join("data").display(),
            tokens = tokens.display(),
        ),
    )?;
    let child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let c = Collector {
        child,
        grpc,
        http,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy(c.http) {
        if Instant::now() > deadline {
            bail!("the collector did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(c)
}

/// One HTTP/1.1 request on a fresh connection: (status, body). `headers` are extra lines.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn healthy(addr: SocketAddr) -> bool {
    matches!(http(addr, "GET", "/healthz", &[], ""), Ok((200, _)))
}

fn sql(c: &Collector, query: &str) -> Result<(u16, String)> {
    let body = serde_json::json!({ "query": query }).to_string();
    http(
        c.http,
        "POST",
        "/v1/sql",
        &[
            &format!("Authorization: Bearer {QUERY_TOKEN}"),
            "Content-Type: application/json",
        ],
        &body,
    )
}

fn short(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut t: String = one_line.chars().take(90).collect();
    if one_line.chars().count() > 90 {
        t.push('…');
    }
    t.replace('|', "\\|")
}

fn record(sequence: u64, timestamp: &str) -> v1::Record {
    let line = format!(
        r#"{{"connection":{{"src_ip":"10.0.0.1","dest_ip":"10.0.0.2","src_port":40000,"dest_port":80,"protocol":"tcp","direction":"ingress"}},"disposition":"allow","policies":[{{"name":"p","namespace":"ns"}}],"src":{{"pod_name":"a","pod_namespace":"ns","namespace":"ns","workload_name":"a","workload_kind":"Deployment"}},"dest":{{"pod_name":"b","pod_namespace":"ns","namespace":"ns","workload_name":"b","workload_kind":"Deployment"}},"count":1,"node_name":"n1","timestamp":"{timestamp}"}}"#
    );
    v1::Record {
        sequence,
        log_id: v1::LogId::PolicyAction as i32,
        payload: Some(v1::record::Payload::JsonLine(line.into_bytes().into())),
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn batch(batch_id: u64, node: &str, source: &str, records: Vec<v1::Record>) -> v1::Batch {
    v1::Batch {
        schema_version: v1::SchemaVersion::V1 as i32,
        batch_id,
        node: Some(v1::NodeIdentity {
            node_name: node.into(),
            cluster_name: "c".into(),
            location: "l".into(),
            project_id: "p".into(),
        }),
        source: Some(v1::Source {
            id: source.into(),
            kind: v1::SourceKind::PolicyActionLog as i32,
            path: "/var/log/network/policy_action.log".into(),
        }),
        records,
    }
}

/// An open ingest stream (optionally with a bearer token).
struct Stream {
    tx: mpsc::Sender<v1::Batch>,
    rx: tonic::Streaming<v1::BatchResult>,
}

async fn open(
    addr: SocketAddr,
    token: Option<&str>,
    max_message: usize,
) -> Result<Stream, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = v1::ingest_client::IngestClient::new(channel)
        .max_encoding_message_size(max_message)
        .max_decoding_message_size(max_message);
    let (tx, mut rx) = mpsc::channel(16);
    let mut req = tonic::Request::new(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("ascii"),
        );
    }
    let rx = client.stream(req).await?.into_inner();
    Ok(Stream { tx, rx })
}

impl Stream {
    async fn send(&mut self, b: v1::Batch) -> Result<v1::BatchResult, tonic::Status> {
        self.tx
            .send(b)
            .await
            .map_err(|_| tonic::Status::aborted("stream closed"))?;
        match tokio::time::timeout(Duration::from_secs(30), self.rx.message()).await {
            Ok(Ok(Some(r))) => Ok(r),
            Ok(Ok(None)) => Err(tonic::Status::aborted("stream ended")),
            Ok(Err(s)) => Err(s),
            Err(_) => Err(tonic::Status::deadline_exceeded("no answer in 30 s")),
        }
    }
}

fn outcome(r: &Result<v1::BatchResult, tonic::Status>) -> String {
    match r {
        Ok(r) => match &r.rejection {
            Some(rej) => format!(
                "rejected {:?}: {}",
                v1::RejectionCode::try_from(rej.code).unwrap_or(v1::RejectionCode::Unknown),
                rej.message
            ),
            None => format!("stored {} duplicates {}", r.stored, r.duplicates),
        },
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}

fn rejected_with(r: &Result<v1::BatchResult, tonic::Status>, code: v1::RejectionCode) -> bool {
    matches!(r, Ok(v1::BatchResult { rejection: Some(rej), .. }) if rej.code == code as i32)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The legitimate node's stream.
struct Legit {
    stream: Stream,
    next_batch: u64,
    next_seq: u64,
    acked: u64,
}

impl Legit {
    /// 50 good records; an error when they are not stored.
    async fn send(&mut self) -> Result<()> {
        let records: Vec<v1::Record> = (0..50)
            .map(|i| record(self.next_seq + i * 100, &now_rfc3339()))
            .collect();
        self.next_seq += 5_000;
        match self.raw(records).await {
            Ok(r) if r.rejection.is_none() => {
                self.acked += r.stored;
                Ok(())
            }
            other => bail!("the legitimate stream failed: {}", outcome(&other)),
        }
    }

    /// Any records on the legitimate stream (the next batch id).
    async fn raw(&mut self, records: Vec<v1::Record>) -> Result<v1::BatchResult, tonic::Status> {
        let b = batch(self.next_batch, "n1", "n1-src", records);
        self.next_batch += 1;
        self.stream.send(b).await
    }
}

struct Table {
    rows: Vec<(String, String, String, bool)>,
}

impl Table {
    fn row(&mut self, attack: &str, expected: &str, observed: String, ok: bool, c: &Collector) {
        let up = healthy(c.http);
        let observed = if up {
            observed
        } else {
            format!("{observed}; the collector is DOWN")
        };
        println!(
            "| {attack} | {expected} | {} | {} |",
            short(&observed),
            if ok && up { "ok" } else { "FAILED" }
        );
        self.rows
            .push((attack.into(), expected.into(), observed, ok && up));
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let c = start_collector(&args.collector_bin)?;
    let mut t = Table { rows: Vec::new() };
    println!("| attack | expected | observed | |");
    println!("|---|---|---|---|");

    // The legitimate node: a stream of n1's records, acknowledged before and after each attack.
    let mut n1 = Legit {
        stream: open(c.grpc, Some(N1_TOKEN), 16 << 20)
            .await
            .map_err(|s| anyhow::anyhow!("{s}"))?,
        next_batch: 1,
        next_seq: 100,
        acked: 0,
    };
    n1.send().await?;

    // 1. Ingest without a credential.
    let r = match open(c.grpc, None, 16 << 20).await {
        Ok(mut s) => {
            s.send(batch(1, "n1", "x", vec![record(1, &now_rfc3339())]))
                .await
        }
        Err(e) => Err(e),
    };
    t.row(
        "ingest without a token",
        "UNAUTHENTICATED",
        outcome(&r),
        matches!(&r, Err(s) if s.code() == tonic::Code::Unauthenticated),
        &c,
    );

    // 2. A node sending as another node.
    let mut n2 = open(c.grpc, Some(N2_TOKEN), 16 << 20)
        .await
        .map_err(|s| anyhow::anyhow!("{s}"))?;
    let r = n2
        .send(batch(
            1,
            "n1",
            "n1-src",
            vec![record(u64::MAX, &now_rfc3339())],
        ))
        .await;
    t.row(
        "n2's token, batch for n1 with sequence 2^64-1",
        "PERMISSION_DENIED, n1 unaffected",
        outcome(&r),
        rejected_with(&r, v1::RejectionCode::PermissionDenied),
        &c,
    );
    n1.send().await?;

    // 3. A node's own forged sequence.
    let r = n1.raw(vec![record(u64::MAX, &now_rfc3339())]).await;
    t.row(
        "n1 jumps its source's sequence to 2^64-1",
        "OUT_OF_ORDER, later records stored",
        outcome(&r),
        rejected_with(&r, v1::RejectionCode::OutOfOrder),
        &c,
    );
    n1.send().await?;

    // 4. Timestamps outside the window.
    for (what, ts) in [
        ("year 2100", "2100-01-01T00:00:00Z"),
        ("year 1971", "1971-01-01T00:00:00Z"),
    ] {
        let r = n1.raw(vec![record(n1.next_seq, ts)]).await;
        t.row(
            &format!("record stamped {what}"),
            "INVALID_RECORD naming the window",
            outcome(&r),
            rejected_with(&r, v1::RejectionCode::InvalidRecord),
            &c,
        );
    }
    n1.send().await?;

    // 5. Amplification: one batch over many distinct hours (inside the window).
    let before = rss_kib(c.child.id());
    let base = chrono::Utc::now() - chrono::Duration::days(29);
    let records: Vec<v1::Record> = (0..700u64)
        .map(|h| {
            let ts = (base + chrono::Duration::hours(h as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            record(n1.next_seq + h * 10, &ts)
        })
        .collect();
    let r = n1.raw(records).await;
    n1.next_seq += 10_000;
    if let Ok(ok) = &r {
        n1.acked += ok.stored;
    }
    let grew = rss_kib(c.child.id()).saturating_sub(before);
    t.row(
        "one batch of 700 records over 700 distinct hours",
        "stored, memory grows < 64 MiB",
        format!("{}; RSS +{} MiB", outcome(&r), grew / 1024),
        r.as_ref().is_ok_and(|b| b.rejection.is_none()) && grew < 64 * 1024,
        &c,
    );

    // 6. Oversized messages: above the batch limit, and above the message limit.
    let big_line = "x".repeat(60 * 1024);
    let records: Vec<v1::Record> = (0..170u64)
        .map(|i| v1::Record {
            sequence: n1.next_seq + i,
            log_id: v1::LogId::PolicyAction as i32,
            payload: Some(v1::record::Payload::JsonLine(
                big_line.clone().into_bytes().into(),
            )),
        })
        .collect();
    let r = n1.raw(records).await;
    t.row(
        "10 MiB batch (limit 8 MiB)",
        "TOO_LARGE before decoding, stream stays open",
        outcome(&r),
        rejected_with(&r, v1::RejectionCode::TooLarge),
        &c,
    );
    n1.send().await?;
    let mut huge = open(c.grpc, Some(N1_TOKEN), 64 << 20)
        .await
        .map_err(|s| anyhow::anyhow!("{s}"))?;
    let records: Vec<v1::Record> = (0..400u64)
        .map(|i| v1::Record {
            sequence: 1 + i,
            log_id: v1::LogId::PolicyAction as i32,
            payload: Some(v1::record::Payload::JsonLine(
                big_line.clone().into_bytes().into(),
            )),
        })
        .collect();
    let r = huge.send(batch(1, "n1", "n1-other", records)).await;
    t.row(
        "24 MiB message (limit 16 MiB)",
        "stream refused (RESOURCE_EXHAUSTED/OUT_OF_RANGE)",
        outcome(&r),
        r.is_err(),
        &c,
    );

    // 7. SQL that crashed or escaped the limits.
    let or_terms = (0..50_000).map(|_| "1=1").collect::<Vec<_>>().join(" OR ");
    let r = sql(&c, &format!("SELECT 1 WHERE {or_terms}"));
    t.row(
        "SQL: WHERE 1=1 OR … (50,000 terms)",
        "answered or refused, never a crash",
        format!("{:?}", r.as_ref().map(|(s, b)| (s, short(b)))),
        r.as_ref().is_ok_and(|(s, _)| *s < 500),
        &c,
    );
    for (q, what) in [
        ("SELECT length(repeat('x', 2000000000))", "repeat('x', 2e9)"),
        ("SELECT range(0, 400000000)", "range(0, 4e8)"),
        ("SELECT array_repeat(1, 1000000000)", "array_repeat(1, 1e9)"),
        ("SELECT lpad('', 2000000000, 'x')", "lpad to 2e9"),
    ] {
        let r = sql(&c, q);
        t.row(
            &format!("SQL: {what}"),
            "422 value too large",
            format!("{:?}", r.as_ref().map(|(s, b)| (s, short(b)))),
            r.as_ref().is_ok_and(|(s, _)| *s == 422),
            &c,
        );
    }
    let long_sql = format!("SELECT '{}'", "y".repeat(300 * 1024));
    let r = sql(&c, &long_sql);
    t.row(
        "SQL: 300 KiB of text (limit 256 KiB)",
        "422 naming query.max_sql_bytes, unparsed",
        format!("{:?}", r.as_ref().map(|(s, b)| (s, short(b)))),
        r.as_ref()
            .is_ok_and(|(s, b)| *s == 422 && b.contains("query.max_sql_bytes")),
        &c,
    );

    // 8. A flood of heavy queries while a node streams: the node's acknowledgements keep coming.
    let flood: Vec<_> = (0..24)
        .map(|_| {
            let addr = c.http;
            std::thread::spawn(move || {
                let body = serde_json::json!({"query": "SELECT count(*) FROM range(0, 300000000)"})
                    .to_string();
                http(
                    addr,
                    "POST",
                    "/v1/sql",
                    &[
                        &format!("Authorization: Bearer {QUERY_TOKEN}"),
                        "Content-Type: application/json",
                    ],
                    &body,
                )
                .map(|(s, _)| s)
                .unwrap_or(0)
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let at = Instant::now();
        n1.send().await?;
        worst = worst.max(at.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let statuses: Vec<u16> = flood.into_iter().map(|h| h.join().unwrap_or(0)).collect();
    let busy = statuses.iter().filter(|s| **s == 429).count();
    t.row(
        "24 concurrent 300M-row scans while n1 streams",
        "429 beyond 4 at once; ingest acks < 1 s",
        format!("{busy} answered 429, statuses {statuses:?}; slowest ack {worst:?}"),
        busy > 0 && worst < Duration::from_secs(1),
        &c,
    );

    // 9. The HTTP surface.
    let m = http(c.http, "GET", "/metrics", &[], "")?;
    let s = http(c.http, "GET", "/sinks", &[], "")?;
    t.row(
        "/metrics and /sinks without a token",
        "401",
        format!("/metrics {}, /sinks {}", m.0, s.0),
        m.0 == 401 && s.0 == 401,
        &c,
    );
    let body = serde_json::json!({"query": "SELECT 1"}).to_string();
    let p = http(
        c.http,
        "POST",
        "/v1/sql",
        &[
            "X-Forwarded-For: 203.0.113.7",
            "Content-Type: application/json",
        ],
        &body,
    )?;
    t.row(
        "SQL through a local proxy (X-Forwarded-For), no token",
        "401 (loopback trust is for direct clients only)",
        format!("{}", p.0),
        p.0 == 401,
        &c,
    );
    let started = Instant::now();
    let closed = {
        let mut s = TcpStream::connect(c.http)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")?;
        let mut buf = [0u8; 256];
        // Dribble a header byte a second; the server must give up at its header timeout.
        let mut done = false;
        for _ in 0..15 {
            std::thread::sleep(Duration::from_secs(1));
            if s.write_all(b"X").is_err() {
                done = true;
                break;
            }
            s.set_nonblocking(true)?;
            let r = s.read(&mut buf);
            s.set_nonblocking(false)?;
            if matches!(r, Ok(0)) || matches!(r, Ok(n) if n > 0) {
                done = true;
                break;
            }
        }
        done
    };
    t.row(
        "slowloris: a header byte a second",
        "closed at the 2 s header timeout",
        format!("closed: {closed} after {:?}", started.elapsed()),
        closed && started.elapsed() < Duration::from_secs(8),
        &c,
    );
    let held: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(c.http).ok())
        .collect();
    let up_while_held = healthy(c.http);
    drop(held);
    std::thread::sleep(Duration::from_millis(2_500));
    t.row(
        "200 idle connections (cap 64)",
        "held ones time out; served again after",
        format!("healthz while held: {up_while_held}"),
        true,
        &c,
    );

    // 10. The shipper's token handling.
    let out = Command::new(&args.shipper_bin)
        .args([
            "--collector",
            "http://127.0.0.1:9",
            "--token",
            "visible-in-ps",
            "--log-dir",
            "/nonexistent",
        ])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    t.row(
        "verdict-shipper --token T (visible in ps)",
        "exit 2, pointing to --token-file",
        format!("exit {:?}: {}", out.status.code(), err.trim()),
        out.status.code() == Some(2) && err.contains("token-file"),
        &c,
    );
    let dir = tempfile::tempdir()?;
    let tf = dir.path().join("token");
    std::fs::write(&tf, "t0k3n\n")?;
    let out = Command::new(&args.shipper_bin)
        .args(["--collector", "http://198.51.100.7:9000", "--token-file"])
        .arg(&tf)
        .args(["--log-dir", "/nonexistent"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    t.row(
        "shipper token over plain http to another host",
        "exit 2 (https required)",
        format!("exit {:?}: {}", out.status.code(), err.trim()),
        out.status.code() == Some(2) && err.contains("https"),
        &c,
    );

    // 11. A corrupt checkpoint: the shipper ships from the beginning instead of crash-looping.
    let logs = dir.path().join("logs");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&logs)?;
    std::fs::create_dir_all(&state)?;
    let ts = now_rfc3339();
    let line = String::from_utf8(match record(0, &ts).payload {
        Some(v1::record::Payload::JsonLine(b)) => b.to_vec(),
        _ => unreachable!(),
    })?;
    std::fs::write(
        logs.join("policy_action.log"),
        format!("{line}\n{line}\n{line}\n"),
    )?;
    std::fs::write(
        state.join("policy_action.checkpoint.json"),
        b"\x00\xffnot json",
    )?;
    let ship_token = dir.path().join("n1-token");
    std::fs::write(&ship_token, N1_TOKEN)?;
    let mut shipper = Command::new(&args.shipper_bin)
        .args([
            "--collector",
            &format!("http://{}", c.grpc),
            "--node-name",
            "n1",
            "--project",
            "p",
        ])
        .arg("--token-file")
        .arg(&ship_token)
        .arg("--log-dir")
        .arg(&logs)
        .arg("--checkpoint-dir")
        .arg(&state)
        .args(["--batch-max-age", "50ms", "--poll-interval", "20ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut shipped = false;
    while Instant::now() < deadline {
        if shipper.try_wait()?.is_some() {
            break;
        }
        if state.join("policy_action.checkpoint.json.corrupt").exists()
            && std::fs::read_to_string(state.join("policy_action.checkpoint.json"))
                .is_ok_and(|s| s.contains("offset"))
        {
            shipped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let running = shipper.try_wait()?.is_none();
    let _ = shipper.kill();
    let _ = shipper.wait();
    t.row(
        "shipper with a garbage checkpoint",
        "moved aside, file shipped, no crash loop",
        format!("running: {running}, shipped and checkpointed: {shipped}"),
        running && shipped,
        &c,
    );

    // Nothing acknowledged was lost.
    n1.send().await?;
    let acked = n1.acked + if shipped { 3 } else { 0 };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = sql(
        &c,
        "SELECT count(*) AS n FROM policy_action WHERE node_name = 'n1'",
    )?;
    let stored: u64 = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v["rows"][0]["n"]
                .as_u64()
                .or_else(|| v["rows"][0][0].as_u64())
        })
        .unwrap_or(u64::MAX);
    t.row(
        "every record acknowledged during the attacks",
        &format!("{acked} stored once"),
        format!("HTTP {status}: {stored} stored"),
        stored == acked,
        &c,
    );

    let failed = t.rows.iter().filter(|r| !r.3).count();
    println!();
    println!("{} attacks, {failed} got through", t.rows.len());
    drop(c);
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
