//! `verdict logs read|tail` and `verdict sql` as a user runs them: over local files (no
//! server), and against a real collector on loopback whose lake holds the conformance fixture
//! entries (written in the collector's layout: Parquet files and a commit log).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use verdict_collector::config::ParquetConfig;
use verdict_collector::manifest::{Change, CommitKind, CommitLog, FileEntry};
use verdict_collector::storage::Storage;
use verdict_collector::{Collector, Config, Hour, Table};
use verdict_schema::LogEntry;
use verdict_service::shutdown::CancellationToken;

fn verdict(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Filters and the fixture entries they select (see verdict-filter's cases.test header).
const CASES: &[(&str, &[usize])] = &[
    (r#"jsonPayload.disposition = "deny""#, &[1, 4, 6, 8, 11]),
    ("jsonPayload.dest.pod_namespace = shop", &[2, 3, 6, 10]),
    ("NOT jsonPayload.src.pod_name:*", &[3, 6, 8]),
    ("severity >= WARNING", &[6, 8, 10, 11, 12]),
    (r#"log_id("cloudaudit.googleapis.com/activity")"#, &[9]),
    (r#"resource.labels.cluster_name = "edge-cluster""#, &[7]),
    (
        "jsonPayload.connection.protocol = (udp OR icmp)",
        &[1, 8, 12],
    ),
    (r#"SEARCH("coredns") jsonPayload.disposition=allow"#, &[12]),
];

fn fixture_lines() -> Vec<String> {
    verdict_filter::conformance::entries()
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect()
}

/// Writes `lines` to `dir/name`.
fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

#[test]
fn read_over_files_selects_and_wraps() {
    let dir = tempfile::tempdir().unwrap();
    let lines = fixture_lines();
    let entries = write(dir.path(), "entries.jsonl", &lines);
    let entries = entries.to_str().unwrap();
    // LogEntries are used and printed unchanged.
    for (filter, want) in CASES {
        let out = stdout(&verdict(&[
            "logs", "read", filter, "--file", entries, "--format", "json",
        ]));
        let got: Vec<usize> = out
            .lines()
            .map(|l| {
                lines
                    .iter()
                    .position(|x| x == l)
                    .unwrap_or_else(|| panic!("changed line {l}"))
            })
            .collect();
        assert_eq!(&got, want, "{filter}");
    }

    // Bare policy-action records are wrapped as the collector would store them.
    let records: Vec<String> = verdict_filter::conformance::entries()
        .iter()
        .map(|e| serde_json::to_string(&e["jsonPayload"]).unwrap())
        .collect();
    let log = write(dir.path(), "policy_action.log", &records);
    let log = log.to_str().unwrap();
    let args = [
        "logs",
        "read",
        "jsonPayload.disposition=deny",
        "--file",
        log,
        "--file",
        entries,
        "--format",
        "json",
        "--project",
        "p1",
        "--cluster",
        "c1",
    ];
    let out = stdout(&verdict(&args));
    let got: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 10, "{out}");
    for (k, i) in [1, 4, 6, 8, 11].into_iter().enumerate() {
        let e = &got[k];
        let record: serde_json::Value = serde_json::from_str(&records[i]).unwrap();
        assert_eq!(e["jsonPayload"], record);
        assert_eq!(e["logName"], "projects/p1/logs/policy-action");
        assert_eq!(e["resource"]["type"], "k8s_node");
        assert_eq!(
            e["resource"]["labels"],
            serde_json::json!({"project_id": "p1", "location": "local", "cluster_name": "c1",
                               "node_name": record["node_name"]})
        );
        assert_eq!(e["timestamp"], record["timestamp"]);
        assert_eq!(e["receiveTimestamp"], record["timestamp"]);
        assert_eq!(
            e["insertId"],
            verdict_schema::log_entry::insert_id(log, "file", i as u64 + 1)
        );
        // Then the LogEntry file's matches, in file order, unchanged.
        assert_eq!(serde_json::to_string(&got[k + 5]).unwrap(), lines[i]);
    }
    // Stable insertIds: the same run gives the same output.
    assert_eq!(stdout(&verdict(&args)), out);
    // --limit stops early; the table format prints a header and one row per entry.
    let out = stdout(&verdict(&[
        "logs", "read", "", "--file", log, "--limit", "2",
    ]));
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows[0].starts_with("TIMESTAMP") && rows[1].contains("default/client-allow"),
        "{out}"
    );

    // An invalid filter: exit 2, the error and its position on stderr, nothing on stdout.
    let bad = verdict(&["logs", "read", "jsonPayload.disposition=", "--file", log]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(bad.stdout.is_empty());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("line 1, column 25: expected a value after '='"),
        "{err}"
    );
    // A line that is neither: what and where.
    let junk = write(dir.path(), "junk.log", &["{\"x\": 1}".to_owned()]);
    let bad = verdict(&["logs", "read", "", "--file", junk.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("junk.log:1: neither a LogEntry"), "{err}");
}

/// A collector whose lake holds the fixture entries (one committed file per event hour):
/// (collector, HTTP address, gRPC address, stop).
async fn collector_with_fixtures(
    dir: &Path,
) -> (
    Arc<Collector>,
    std::net::SocketAddr,
    std::net::SocketAddr,
    CancellationToken,
) {
    let mut config = Config {
        data_dir: dir.join("data"),
        ..Config::default()
    };
    config.grpc.listen = "127.0.0.1:0".parse().unwrap();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.compaction.enabled = false;
    config.retention.flows = std::time::Duration::ZERO;
    config.retention.loss = std::time::Duration::ZERO;
    config.retention.rollups = std::time::Duration::ZERO;
    // The tail test ships records stamped 2026-01-01: accept them whatever today's date is.
    config.grpc.max_record_age = std::time::Duration::from_secs(100 * 365 * 86_400);
    let storage = Storage::open(&config.storage_url(), &config.storage.options).unwrap();
    let entries: Vec<LogEntry> = verdict_filter::conformance::entries()
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    let mut by_hour: std::collections::BTreeMap<Hour, Vec<LogEntry>> = Default::default();
    for e in entries {
        by_hour
            .entry(Hour::of_nanos(e.timestamp.unix_nanos()))
            .or_default()
            .push(e);
    }
    let mut added = Vec::new();
    for (n, (hour, group)) in by_hour.into_iter().enumerate() {
        let batch = verdict_schema::flat_schema::log_entries_to_batch(&group).unwrap();
        let file = verdict_collector::parquet_file::encode(
            &ParquetConfig::default(),
            Table::Flows,
            &[batch],
        )
        .unwrap();
        let path = Storage::data_file(
            Table::Flows,
            hour,
            &format!("0000000000000-{n:06}.{}.parquet", config.instance_id),
        );
        added.push(FileEntry {
            path: path.clone(),
            table: Table::Flows,
            hour,
            rows: file.rows,
            bytes: file.bytes.len() as u64,
            min_time: file.min_time,
            max_time: file.max_time,
        });
        storage.put(&path, file.bytes).await.unwrap();
    }
    let mut log = CommitLog::open(storage, &config.instance_id).await.unwrap();
    log.commit(Change {
        kind: CommitKind::Flush,
        checkpoint: Some((0, Default::default())),
        added,
        removed: Vec::new(),
    })
    .await
    .unwrap();
    let listeners = verdict_collector::Listeners::bind(&config).await.unwrap();
    let addr = listeners.http.local_addr().unwrap();
    let grpc_addr = listeners.grpc.local_addr().unwrap();
    let (collector, _) = Collector::open(config).await.unwrap();
    let collector = Arc::new(collector);
    let stop = CancellationToken::new();
    let c = Arc::clone(&collector);
    tokio::spawn({
        let stop = stop.clone();
        async move { c.serve(listeners, stop).await }
    });
    (collector, addr, grpc_addr, stop)
}

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        verdict(&args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_and_sql_against_a_collector() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, addr, _, stop) = collector_with_fixtures(dir.path()).await;
    let url = format!("http://{addr}");
    let lines = fixture_lines();
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    // The default freshness (1d) hides the 2020 fixtures; a timestamp restriction lifts it.
    let out = stdout(
        &run(s(&[
            "logs",
            "read",
            "",
            "--collector",
            &url,
            "--format",
            "json",
        ]))
        .await,
    );
    assert_eq!(out, "");
    for (filter, want) in CASES {
        let filter = format!("timestamp >= \"2020-01-01\" ({filter})");
        let out = stdout(
            &run(s(&[
                "logs",
                "read",
                &filter,
                "--collector",
                &url,
                "--format",
                "json",
                "--order",
                "asc",
            ]))
            .await,
        );
        let mut got: Vec<usize> = out
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                lines
                    .iter()
                    .position(|x| serde_json::from_str::<serde_json::Value>(x).unwrap() == v)
                    .unwrap_or_else(|| panic!("not a fixture entry: {l}"))
            })
            .collect();
        got.sort_unstable();
        assert_eq!(&got, want, "{filter}");
    }
    // Newest first, limited, over pages of the API.
    let out = stdout(
        &run(s(&[
            "logs",
            "read",
            "--freshness",
            "3650d",
            "",
            "--collector",
            &url,
            "--format",
            "json",
            "--limit",
            "2",
        ]))
        .await,
    );
    let got: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["timestamp"], "2021-01-01T00:00:00Z");
    assert_eq!(got[1]["timestamp"], "2020-06-16T00:00:00Z");

    let out = stdout(
        &run(s(&[
            "sql",
            "SELECT count(*) AS n, sum(\"count\") AS c FROM policy_action",
            "--collector",
            &url,
        ]))
        .await,
    );
    assert_eq!(out, "n   c\n--  --\n13  33\n(1 rows)\n");
    let out = stdout(
        &run(s(&[
            "sql",
            "SELECT namespace, connections FROM denies_by_namespace ORDER BY 2 DESC LIMIT 1",
            "--collector",
            &url,
            "--format",
            "csv",
        ]))
        .await,
    );
    assert_eq!(out, "namespace,connections\nkube-system,12\n");
    let bad = run(s(&["sql", "DROP TABLE policy_action", "--collector", &url])).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("got DROP TABLE"));
    stop.cancel();
    collector.close().await.unwrap();
}

/// A policy-action record of pod `tail/p{i}` at `2026-01-01T00:00:{i}Z`.
fn tail_record(i: u64, deny: bool) -> String {
    format!(
        r#"{{"connection":{{"src_ip":"10.9.0.1","dest_ip":"10.9.1.1","src_port":{p},"dest_port":80,"protocol":"tcp","direction":"ingress"}},"disposition":"{d}"{pol},"src":{{"pod_name":"p{i}","pod_namespace":"tail","namespace":"tail"}},"dest":{{"pod_name":"web","pod_namespace":"tail","namespace":"tail"}},"count":1,"node_name":"tail-node","timestamp":"2026-01-01T00:00:{s:02}Z"}}"#,
        p = 40000 + i,
        d = if deny { "deny" } else { "allow" },
        pol = if deny {
            ""
        } else {
            r#","policies":[{"name":"allow-web","namespace":"tail"}]"#
        },
        s = i % 60,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_new_matching_entries() {
    use std::io::BufRead;
    use verdict_schema::proto::v1;

    let dir = tempfile::tempdir().unwrap();
    let (collector, addr, grpc, stop) = collector_with_fixtures(dir.path()).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args([
            "logs",
            "tail",
            "jsonPayload.disposition=deny",
            "--collector",
        ])
        .arg(format!("http://{addr}"))
        .args(["--format", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });

    // Ship an allow and a deny every 100 ms until the tail has printed two entries (it
    // subscribes some time after it starts; records before that are not "new" to it).
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = v1::ingest_client::IngestClient::new(channel);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<v1::Batch>(16);
    let outbound = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut responses = client.stream(outbound).await.unwrap().into_inner();
    let mut printed = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seq = 0u64;
    while printed.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tail printed {printed:?}"
        );
        for deny in [false, true] {
            seq += 1;
            let batch = v1::Batch {
                schema_version: v1::SchemaVersion::V1 as i32,
                batch_id: seq,
                node: Some(v1::NodeIdentity {
                    node_name: "tail-node".into(),
                    cluster_name: "c".into(),
                    location: "l".into(),
                    project_id: "p".into(),
                }),
                source: Some(v1::Source {
                    id: "tail".into(),
                    kind: v1::SourceKind::PolicyActionLog as i32,
                    path: "/var/log/network/policy_action.log".into(),
                }),
                records: vec![v1::Record {
                    sequence: seq,
                    log_id: v1::LogId::PolicyAction as i32,
                    payload: Some(v1::record::Payload::JsonLine(
                        tail_record(seq, deny).into_bytes().into(),
                    )),
                }],
            };
            tx.send(batch).await.unwrap();
            let ack = responses.message().await.unwrap().unwrap();
            assert_eq!(ack.durable_sequence, seq);
        }
        if let Ok(Some(line)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), line_rx.recv()).await
        {
            printed.push(line);
        }
    }
    for line in &printed {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(e["jsonPayload"]["disposition"], "deny", "{line}");
        assert_eq!(e["resource"]["labels"]["node_name"], "tail-node");
    }
    child.kill().unwrap();
    let _ = child.wait();
    stop.cancel();
    collector.close().await.unwrap();
}
