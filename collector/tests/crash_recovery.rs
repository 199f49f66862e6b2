//! kill -9 of the collector binary, repeatedly, during a 1,000,000-record stream from retrying
//! clients: nothing acknowledged is lost and nothing is stored twice. The clients behave like
//! the node shipper: they resend everything after the last acknowledged sequence whenever a
//! stream breaks, so records that became durable without being acknowledged arrive again.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::*;
use tokio::sync::watch;
use verdict_schema::log_entry::insert_id;
use verdict_schema::proto::v1;

const SOURCES: u64 = 4;
const PER_SOURCE: u64 = 250_000;
const BATCH: u64 = 2_500;
const IN_FLIGHT: usize = 4;
/// Acknowledged-record counts at which the collector is killed.
const KILL_AT: [u64; 4] = [120_000, 380_000, 610_000, 870_000];
const BASE: i64 = 1_767_225_600;

struct Proc {
    child: Child,
    grpc: SocketAddr,
}

/// Starts the collector binary and waits for its "listening" line.
fn start(config: &Path, log: &Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_verdict-collector"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .expect("the collector binary starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("verdict-collector listening grpc=") {
                let grpc = rest
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap();
                let _ = tx.send(grpc);
            }
        }
    });
    let grpc = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("the collector did not start; see {}", log.display()));
    Proc { child, grpc }
}

fn line(source: u64, seq: u64) -> String {
    flow_json(&format!("node-{source}"), seq, BASE + (source as i64) * 7)
}

/// One shipper: sends records 1..=PER_SOURCE of its source, resending after the last
/// acknowledged sequence whenever its stream breaks.
async fn ship(source: u64, addr: watch::Receiver<SocketAddr>, acked_total: Arc<AtomicU64>) -> u64 {
    let node = format!("node-{source}");
    let source_id = format!("policy-action-{source}");
    let mut acked = 0u64;
    let mut batch_id = 0u64;
    let mut reconnects = 0u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while acked < PER_SOURCE {
        assert!(
            Instant::now() < deadline,
            "source {source} stalled at {acked}"
        );
        let target = *addr.borrow();
        let channel = match tonic::transport::Endpoint::from_shared(format!("http://{target}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(mut stream) = Stream::open(channel, None).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        reconnects += 1;
        // Pipelined: up to IN_FLIGHT batches unanswered; resume after `acked`.
        let mut next = acked + 1;
        let mut outstanding: std::collections::VecDeque<u64> = Default::default();
        loop {
            while outstanding.len() < IN_FLIGHT && next <= PER_SOURCE {
                let last = (next + BATCH - 1).min(PER_SOURCE);
                batch_id += 1;
                let records = (next..=last)
                    .map(|s| json_record(s, v1::LogId::PolicyAction, &line(source, s)))
                    .collect();
                stream
                    .send(&batch(&node, &source_id, batch_id, records))
                    .await;
                outstanding.push_back(last);
                next = last + 1;
            }
            if outstanding.is_empty() {
                break;
            }
            match stream.next().await {
                Ok(r) => {
                    assert_eq!(r.rejection, None, "{r:?}");
                    let last = outstanding.pop_front().unwrap();
                    // In order; a resent batch that was durable before the kill reports the
                    // source's (higher) watermark.
                    assert!(
                        r.durable_sequence >= last,
                        "{r:?} answers the batch ending at {last}"
                    );
                    assert!(r.durable_sequence <= PER_SOURCE);
                    if r.durable_sequence > acked {
                        acked_total.fetch_add(r.durable_sequence - acked, Ordering::Relaxed);
                        acked = r.durable_sequence;
                    }
                }
                Err(_) => break, // killed: reconnect and resend from `acked`
            }
        }
    }
    reconnects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_during_a_million_record_stream_loses_and_duplicates_nothing() {
    let python_ok = python_has(&["pyarrow"]);
    if !require(python_ok, "python3 with pyarrow") {
        return;
    }
    let (_guard, dir) = tempdir();
    let config = dir.join("collector.toml");
    let log = dir.join("collector.log");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{}"
[grpc]
listen = "127.0.0.1:0"
# The records are stamped 2026-01-01.
max_record_age = "36500days"
[http]
listen = "127.0.0.1:0"
[flush]
max_age = "400ms"
[compaction]
interval = "2s"
min_files = 4
[retention]
flows = "0s"
loss = "0s"
rollups = "0s"
"#,
            dir.join("data").display()
        ),
    )
    .unwrap();

    let mut proc = start(&config, &log);
    let (addr_tx, addr_rx) = watch::channel(proc.grpc);
    let acked = Arc::new(AtomicU64::new(0));
    let shippers: Vec<_> = (0..SOURCES)
        .map(|s| tokio::spawn(ship(s, addr_rx.clone(), Arc::clone(&acked))))
        .collect();

    let started = Instant::now();
    for threshold in KILL_AT {
        while acked.load(Ordering::Relaxed) < threshold {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "no progress; see {}",
                log.display()
            );
            assert!(
                !shippers.iter().any(|s| s.is_finished()),
                "a shipper failed"
            );
            assert!(
                !shippers.iter().any(|s| s.is_finished()),
                "a shipper failed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        proc.child.kill().unwrap(); // SIGKILL
        proc.child.wait().unwrap();
        proc = start(&config, &log);
        addr_tx.send(proc.grpc).unwrap();
    }
    let mut reconnects = 0;
    for s in shippers {
        reconnects += s.await.unwrap();
    }
    assert_eq!(acked.load(Ordering::Relaxed), SOURCES * PER_SOURCE);
    assert!(
        reconnects >= SOURCES * (KILL_AT.len() as u64 + 1),
        "every stream broke at each kill"
    );

    // A clean stop flushes everything to committed Parquet.
    let status = Command::new("kill")
        .args(["-TERM", &proc.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = proc.child.wait().unwrap();
    assert!(exit.success(), "clean shutdown; see {}", log.display());

    // Independent reader: every stored row, by source prefix of its insertId.
    let lake = dir.join("data/lake/policy_action");
    let out = python(
        r#"
import sys, glob, collections, pyarrow.parquet as pq
seen = collections.defaultdict(list)
for path in glob.glob(sys.argv[1] + "/*/*/*.parquet"):
    for i in pq.ParquetFile(path).read(columns=["insert_id"]).column(0).to_pylist():
        seen[i[:16]].append(int(i[16:], 16))
for prefix, seqs in sorted(seen.items()):
    print(prefix, len(seqs), len(set(seqs)), min(seqs), max(seqs))
"#,
        &[lake.to_str().unwrap()],
    );
    let got: BTreeMap<String, Vec<u64>> = out
        .lines()
        .map(|l| {
            let mut it = l.split(' ');
            let prefix = it.next().unwrap().to_owned();
            (prefix, it.map(|n| n.parse().unwrap()).collect())
        })
        .collect();
    let expected: BTreeMap<String, Vec<u64>> = (0..SOURCES)
        .map(|s| {
            let id = insert_id(&format!("node-{s}"), &format!("policy-action-{s}"), 0);
            (
                id[..16].to_owned(),
                vec![PER_SOURCE, PER_SOURCE, 1, PER_SOURCE],
            )
        })
        .collect();
    // rows, distinct rows, lowest and highest sequence per source: 0 lost, 0 duplicated.
    assert_eq!(got, expected);
}
