//! Sinks against real destinations on loopback: the tansu Kafka broker read back by
//! confluent-kafka, cloudbox's Pub/Sub server read back by Google's Python client, S3 (moto)
//! and local files read back by pyarrow and duckdb; the real `verdict-collector` binary for
//! hot reload. Every test feeds the collector through its gRPC ingest, as a node would.

#[path = "support/sink_servers.rs"]
mod sink_servers;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::{Served, Stream, batch, channel, config, eventually, flow_json, json_record, metric};
use verdict_collector::Collector;
use verdict_collector::sinks::registry::SinkDefinition;
use verdict_schema::log_entry::insert_id;
use verdict_schema::proto::v1;

/// 2026-01-01T00:59:00Z: records straddle an hour boundary (two partitions).
const BASE: i64 = 1_767_229_140;
const NODE: &str = "node-a";
const SOURCE: &str = "node-a-policy-action-gen1";

fn sink_tables(text: &str) -> Vec<SinkDefinition> {
    let t: toml::Table = text.parse().expect("test TOML");
    let raw: Vec<toml::Table> = t["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_table().unwrap().clone())
        .collect();
    verdict_collector::sinks::registry::parse_definitions(&raw)
}

/// What a sink should receive for one record.
#[derive(Debug, Clone)]
struct Expected {
    insert_id: String,
    disposition: String,
    dest_namespace: String,
}

/// Sends flow records `seqs` (sequences 1-based: `seq` is the record index + 1) in batches
/// of `per_batch`, asserting each is stored; returns what sinks should see of each.
async fn send_flows(
    stream: &mut Stream,
    seqs: std::ops::Range<u64>,
    per_batch: usize,
    batch_id: &mut u64,
) -> Vec<Expected> {
    let seqs: Vec<u64> = seqs.collect();
    let mut out = Vec::new();
    for chunk in seqs.chunks(per_batch) {
        *batch_id += 1;
        let mut records = Vec::new();
        for &seq in chunk {
            let line = flow_json(NODE, seq, BASE);
            let v: Value = serde_json::from_str(&line).unwrap();
            out.push(Expected {
                insert_id: insert_id(NODE, SOURCE, seq),
                disposition: v["disposition"].as_str().unwrap().to_owned(),
                dest_namespace: v["dest"]["namespace"].as_str().unwrap().to_owned(),
            });
            records.push(json_record(seq, v1::LogId::PolicyAction, &line));
        }
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            stream.call(&batch(NODE, SOURCE, *batch_id, records)),
        )
        .await
        .expect("ingest answers without waiting for any sink");
        assert_eq!(r.rejection, None, "{r:?}");
        assert_eq!(r.stored, chunk.len() as u64);
    }
    out
}

/// Waits until sink `name` has finished with every durable record.
async fn caught_up(collector: &Collector, name: &str, deadline: Duration) {
    let end = std::time::Instant::now() + deadline;
    loop {
        let s = status_of(collector, name);
        if s.lag_records == Some(0) && s.state == "running" {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for sink {name} to catch up: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status_of(collector: &Collector, name: &str) -> verdict_collector::sinks::SinkStatus {
    collector
        .sinks()
        .status()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no sink {name}"))
}

/// Asserts two sets of insertIds are equal, naming a few differences.
fn assert_same(got: BTreeSet<String>, want: BTreeSet<String>) {
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} records missing (e.g. {missing:?}), {} unexpected (e.g. {extra:?})",
        want.difference(&got).count(),
        got.difference(&want).count()
    );
}

fn ids(expected: &[Expected]) -> BTreeSet<String> {
    expected.iter().map(|e| e.insert_id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_gets_every_record_with_its_key_across_a_broker_freeze() {
    let Some(broker) = sink_servers::start_tansu() else {
        return;
    };
    let (_guard, dir) = support::tempdir();
    let mut c = config(&dir);
    c.grpc.max_record_bytes = verdict_collector::config::ByteSize(4 << 20);
    c.sinks = sink_tables(&format!(
        r#"
[[sinks]]
name = "all-to-kafka"
destination = "kafka://127.0.0.1:{}/verdict-flows"
[sinks.kafka]
create_topic = true
partitions = 3
message_timeout = "2s"
[sinks.delivery]
initial_backoff = "50ms"
max_backoff = "500ms"
"#,
        broker.port
    ));
    let served = Served::start(c).await;
    let mut stream = served.stream().await;
    let mut batch_id = 0;
    let mut expected = send_flows(&mut stream, 1..201, 50, &mut batch_id).await;
    caught_up(&served.collector, "all-to-kafka", Duration::from_secs(60)).await;

    // The broker stops answering; ingest goes on; the sink notices and retries.
    broker.freeze();
    expected.extend(send_flows(&mut stream, 201..501, 50, &mut batch_id).await);
    eventually(
        Duration::from_secs(60),
        "the sink to report the outage",
        || status_of(&served.collector, "all-to-kafka").state == "failing",
    )
    .await;
    assert!(
        status_of(&served.collector, "all-to-kafka")
            .lag_records
            .unwrap()
            > 0
    );
    // Still ingesting during the outage.
    expected.extend(send_flows(&mut stream, 501..601, 50, &mut batch_id).await);
    broker.resume();
    caught_up(&served.collector, "all-to-kafka", Duration::from_secs(120)).await;

    // A record larger than Kafka's message limit is refused for good: dead-lettered with the
    // error, the others delivered.
    batch_id += 1;
    let mut huge: Value = serde_json::from_str(&flow_json(NODE, 601, BASE)).unwrap();
    huge["dest"]["pod_name"] = Value::String("p".repeat(1_200_000));
    let records = vec![
        json_record(601, v1::LogId::PolicyAction, &huge.to_string()),
        json_record(602, v1::LogId::PolicyAction, &flow_json(NODE, 602, BASE)),
    ];
    assert_eq!(
        stream
            .call(&batch(NODE, SOURCE, batch_id, records))
            .await
            .stored,
        2
    );
    let v: Value = serde_json::from_str(&flow_json(NODE, 602, BASE)).unwrap();
    expected.push(Expected {
        insert_id: insert_id(NODE, SOURCE, 602),
        disposition: v["disposition"].as_str().unwrap().into(),
        dest_namespace: v["dest"]["namespace"].as_str().unwrap().into(),
    });
    caught_up(&served.collector, "all-to-kafka", Duration::from_secs(60)).await;
    let dead_letters =
        std::fs::read_to_string(dir.join("data/sinks/dead-letter/all-to-kafka.jsonl")).unwrap();
    let letters: Vec<Value> = dead_letters
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 1, "{dead_letters:.300}");
    assert_eq!(
        letters[0]["entry"]["insertId"],
        insert_id(NODE, SOURCE, 601)
    );
    assert!(
        letters[0]["error"].as_str().unwrap().contains("too large"),
        "{}",
        letters[0]["error"]
    );

    // An independent consumer finds every routed record, keyed by destination namespace.
    let got = sink_servers::kafka_read(
        broker.port,
        "verdict-flows",
        expected.len(),
        Duration::from_secs(60),
    );
    let by_id: BTreeMap<String, &Value> = got
        .iter()
        .map(|m| (m["value"]["insertId"].as_str().unwrap().to_owned(), m))
        .collect();
    assert_same(by_id.keys().cloned().collect(), ids(&expected));
    let mut partition_of_key: BTreeMap<String, i64> = BTreeMap::new();
    for e in &expected {
        let m = by_id[&e.insert_id];
        assert_eq!(m["key"], e.dest_namespace.as_str(), "{m}");
        assert_eq!(m["headers"]["insertId"], e.insert_id.as_str());
        assert_eq!(
            m["value"]["jsonPayload"]["disposition"],
            e.disposition.as_str()
        );
        assert_eq!(m["value"]["logName"], "projects/proj/logs/policy-action");
        assert_eq!(m["value"]["resource"]["labels"]["node_name"], NODE);
        // One key, one partition: a namespace's records stay in order.
        let p = m["partition"].as_i64().unwrap();
        assert_eq!(
            *partition_of_key
                .entry(e.dest_namespace.clone())
                .or_insert(p),
            p
        );
    }
    let m = served.metrics().await;
    let delivered = metric(
        &m,
        "verdict_collector_sink_records_delivered_total{sink=\"all-to-kafka\"}",
    )
    .unwrap();
    assert!(delivered >= expected.len() as f64, "{delivered}");
    assert_eq!(
        metric(
            &m,
            "verdict_collector_sink_records_dead_lettered_total{sink=\"all-to-kafka\"}"
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &m,
            "verdict_collector_sink_retries_total{sink=\"all-to-kafka\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        metric(
            &m,
            "verdict_collector_sink_lag_records{sink=\"all-to-kafka\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "verdict_collector_sink_up{sink=\"all-to-kafka\"}"),
        Some(1.0)
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_gets_exactly_the_selected_records_with_attributes() {
    let Some(server) = sink_servers::start_pubsub() else {
        return;
    };
    let topic = "projects/proj/topics/verdict-denies";
    let sub = "projects/proj/subscriptions/verify";
    sink_servers::pubsub_create(server.port, topic, sub);
    let (_guard, dir) = support::tempdir();
    let mut c = config(&dir);
    c.sinks = sink_tables(&format!(
        r#"
[[sinks]]
name = "denies"
destination = "pubsub://{topic}"
filter = 'jsonPayload.disposition="deny"'
exclusions = [
  {{ name = "kube-system", filter = 'jsonPayload.dest.namespace="kube-system"' }},
  {{ name = "disabled-one", filter = 'jsonPayload.dest.namespace="shop"', disabled = true }},
]
[sinks.pubsub]
endpoint = "http://127.0.0.1:{port}"
credentials = "anonymous"
ordering_key = "jsonPayload.dest.namespace"
"#,
        port = server.port
    ));
    let served = Served::start(c).await;
    let mut stream = served.stream().await;
    let mut batch_id = 0;
    let sent = send_flows(&mut stream, 1..401, 100, &mut batch_id).await;
    caught_up(&served.collector, "denies", Duration::from_secs(60)).await;
    let selected: Vec<Expected> = sent
        .iter()
        .filter(|e| e.disposition == "deny" && e.dest_namespace != "kube-system")
        .cloned()
        .collect();
    assert!(!selected.is_empty() && selected.len() < sent.len());

    let got = sink_servers::pubsub_pull(
        server.port,
        sub,
        selected.len() + 1,
        Duration::from_secs(10),
    );
    let by_id: BTreeMap<String, &Value> = got
        .iter()
        .map(|m| (m["data"]["insertId"].as_str().unwrap().to_owned(), m))
        .collect();
    // Exactly the denies outside kube-system (the disabled exclusion excludes nothing).
    assert_same(by_id.keys().cloned().collect(), ids(&selected));
    for e in &selected {
        let m = by_id[&e.insert_id];
        let attrs = &m["attributes"];
        assert_eq!(attrs["disposition"], "deny");
        assert_eq!(attrs["dest_namespace"], e.dest_namespace.as_str());
        assert_eq!(attrs["src_namespace"], "shop");
        assert_eq!(attrs["insert_id"], e.insert_id.as_str());
        assert_eq!(m["ordering_key"], e.dest_namespace.as_str());
        assert_eq!(m["data"]["jsonPayload"]["disposition"], "deny");
    }
    let m = served.metrics().await;
    assert_eq!(
        metric(
            &m,
            "verdict_collector_sink_records_excluded_total{sink=\"denies\"}"
        ),
        Some((sent.len() - selected.len()) as f64)
    );
    assert_eq!(
        metric(
            &m,
            "verdict_collector_sink_records_read_total{sink=\"denies\"}"
        ),
        Some(sent.len() as f64)
    );
    served.stop().await;
}

/// Lists the objects under `s3://bucket/prefix` (boto3 against moto).
fn s3_list(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    support::python(
        "import sys, boto3\nc = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1')\nfor o in c.list_objects_v2(Bucket=sys.argv[2], Prefix=sys.argv[3]).get('Contents', []): print(o['Key'])",
        &[endpoint, bucket, prefix],
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_export_files_read_back_equal_what_was_routed() {
    if !support::require(
        support::python_has(&["pyarrow", "duckdb", "boto3"]),
        "pyarrow, duckdb and boto3",
    ) {
        return;
    }
    let Some(moto) = support::start_moto() else {
        return;
    };
    moto.create_bucket("exports");
    let (_guard, dir) = support::tempdir();
    let local = dir.join("json-export");
    let mut c = config(&dir);
    c.sinks = sink_tables(&format!(
        r#"
[[sinks]]
name = "to-s3"
destination = "s3://exports/verdict"
format = "parquet"
[sinks.object_storage]
window = "1s"
options = {{ aws_endpoint = "{endpoint}", aws_allow_http = "true", aws_access_key_id = "test", aws_secret_access_key = "test", aws_region = "us-east-1", aws_virtual_hosted_style_request = "false" }}

[[sinks]]
name = "allows-json"
destination = "file://{local}"
filter = 'jsonPayload.disposition="allow"'
format = "json"
[sinks.object_storage]
window = "1s"
"#,
        endpoint = moto.endpoint,
        local = local.display()
    ));
    let served = Served::start(c).await;
    let mut stream = served.stream().await;
    let mut batch_id = 0;
    let sent = send_flows(&mut stream, 1..1001, 250, &mut batch_id).await;
    // A loss marker goes to its own table folder.
    batch_id += 1;
    let loss = support::loss_json(NODE, BASE + 10, 7);
    assert_eq!(
        stream
            .call(&batch(
                NODE,
                SOURCE,
                batch_id,
                vec![json_record(1001, v1::LogId::PolicyActionLoss, &loss)]
            ))
            .await
            .stored,
        1
    );
    caught_up(&served.collector, "to-s3", Duration::from_secs(60)).await;
    caught_up(&served.collector, "allows-json", Duration::from_secs(60)).await;

    // Parquet on S3, read by pyarrow: every record once, in hive partitions by event hour.
    let keys = s3_list(&moto.endpoint, "exports", "verdict/");
    assert!(
        keys.iter().all(|k| k.ends_with(".to-s3.parquet")),
        "{keys:?}"
    );
    let flow_keys: Vec<String> = keys
        .iter()
        .filter(|k| k.starts_with("verdict/policy_action/"))
        .map(|k| format!("exports/{k}"))
        .collect();
    let partitions: BTreeSet<&str> = flow_keys
        .iter()
        .map(|k| k.rsplit_once('/').unwrap().0.rsplit_once("/dt=").unwrap().1)
        .collect();
    assert_eq!(
        partitions,
        BTreeSet::from(["2026-01-01/hour=00", "2026-01-01/hour=01"])
    );
    let rows = support::pyarrow_rows(&flow_keys, Some(&moto.endpoint));
    let got: BTreeMap<String, &Value> = rows
        .iter()
        .map(|r| (r["insert_id"].as_str().unwrap().to_owned(), r))
        .collect();
    assert_eq!(rows.len(), sent.len(), "each record once");
    assert_same(got.keys().cloned().collect(), ids(&sent));
    for e in &sent {
        assert_eq!(got[&e.insert_id]["disposition"], e.disposition.as_str());
        assert_eq!(
            got[&e.insert_id]["dest_namespace"],
            e.dest_namespace.as_str()
        );
    }
    let loss_keys: Vec<String> = keys
        .iter()
        .filter(|k| k.starts_with("verdict/policy_action_loss/"))
        .map(|k| format!("exports/{k}"))
        .collect();
    let loss_rows = support::pyarrow_rows(&loss_keys, Some(&moto.endpoint));
    assert_eq!(loss_rows.len(), 1);
    assert_eq!(loss_rows[0]["insert_id"], insert_id(NODE, SOURCE, 1001));

    // JSON lines on a local folder, read by duckdb: exactly the allows.
    let out = support::python(
        "import sys, json, duckdb\nfor r in duckdb.sql(\"select insertId, jsonPayload.disposition, jsonPayload.dest.namespace from read_json_auto(?, hive_partitioning = true)\", params=[sys.argv[1]]).fetchall(): print(json.dumps(r))",
        &[&format!("{}/policy_action/*/*/*.jsonl", local.display())],
    );
    let json_rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let allows: Vec<Expected> = sent
        .iter()
        .filter(|e| e.disposition == "allow")
        .cloned()
        .collect();
    assert_eq!(json_rows.len(), allows.len());
    let by_id: BTreeMap<String, &Value> = json_rows
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_owned(), r))
        .collect();
    assert_same(by_id.keys().cloned().collect(), ids(&allows));
    for e in &allows {
        assert_eq!(by_id[&e.insert_id][1], "allow");
        assert_eq!(by_id[&e.insert_id][2], e.dest_namespace.as_str());
    }
    assert!(
        !local.join("policy_action_loss").exists(),
        "the loss marker is not an allow"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_destination_slows_neither_ingest_nor_the_other_sinks() {
    let (_guard, dir) = support::tempdir();
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let local = dir.join("export");
    let mut c = config(&dir);
    c.sinks = sink_tables(&format!(
        r#"
[[sinks]]
name = "dead"
destination = "kafka://127.0.0.1:{dead_port}/nowhere"
[sinks.kafka]
message_timeout = "1s"
[sinks.delivery]
initial_backoff = "50ms"
max_backoff = "200ms"

[[sinks]]
name = "alive"
destination = "file://{}"
[sinks.object_storage]
window = "1s"
"#,
        local.display()
    ));
    let served = Served::start(c).await;
    let mut stream = served.stream().await;
    let mut batch_id = 0;
    // Every batch is acknowledged (within send_flows' deadline) while a sink cannot deliver.
    let sent = send_flows(&mut stream, 1..5001, 500, &mut batch_id).await;
    caught_up(&served.collector, "alive", Duration::from_secs(60)).await;
    eventually(
        Duration::from_secs(30),
        "the dead sink to be reported failing",
        || status_of(&served.collector, "dead").state == "failing",
    )
    .await;
    let dead = status_of(&served.collector, "dead");
    assert_eq!(dead.lag_records, Some(sent.len() as i64), "{dead:?}");
    assert!(
        dead.error.as_deref().unwrap_or("").contains("Kafka"),
        "{dead:?}"
    );
    let m = served.metrics().await;
    assert_eq!(
        metric(&m, "verdict_collector_sink_up{sink=\"dead\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &m,
            "verdict_collector_sink_records_delivered_total{sink=\"dead\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &m,
            "verdict_collector_sink_records_delivered_total{sink=\"alive\"}"
        ),
        Some(sent.len() as f64)
    );
    assert_eq!(
        metric(
            &m,
            "verdict_collector_records_stored_total{table=\"flows\"}"
        ),
        Some(sent.len() as f64)
    );

    // The log stays for the dead sink after everything is committed to Parquet.
    served.collector.flush().await.unwrap();
    let segments: Vec<_> = std::fs::read_dir(dir.join("data/wal"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("wal-"))
        .collect();
    let retained = segments
        .iter()
        .map(|e| e.metadata().unwrap().len())
        .sum::<u64>();
    assert!(
        retained > 0,
        "the WAL still holds what the dead sink has not sent"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_resumes_from_its_cursor_after_a_crash() {
    let (_guard, dir) = support::tempdir();
    let local = dir.join("export");
    let mut c = config(&dir);
    c.sinks = sink_tables(&format!(
        "[[sinks]]\nname = \"export\"\ndestination = \"file://{}\"\n[sinks.object_storage]\nwindow = \"1s\"\n",
        local.display()
    ));
    let served = Served::start(c.clone()).await;
    let mut stream = served.stream().await;
    let mut batch_id = 0;
    let mut sent = send_flows(&mut stream, 1..301, 100, &mut batch_id).await;
    caught_up(&served.collector, "export", Duration::from_secs(60)).await;
    // More records, then the process dies before the sink's window closes.
    sent.extend(send_flows(&mut stream, 301..601, 100, &mut batch_id).await);
    drop(stream);
    served.abandon().await;

    let served = Served::start(c).await;
    caught_up(&served.collector, "export", Duration::from_secs(60)).await;
    let mut got = BTreeSet::new();
    for f in walk(&local) {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            got.insert(v["insertId"].as_str().unwrap().to_owned());
        }
    }
    assert_same(got, ids(&sent));
    served.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Reads exported JSON lines under `dir`: insertId → disposition. `None` while an
/// object is being written: the file store writes a temporary file and renames it, so
/// a file listed a moment ago can be gone or still partial when it is read.
fn exported(dir: &std::path::Path) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for f in walk(dir) {
        let text = std::fs::read_to_string(&f).ok()?;
        for l in text.lines() {
            let v: Value = serde_json::from_str(l).ok()?;
            out.insert(
                v["insertId"].as_str()?.to_owned(),
                v["jsonPayload"]["disposition"].as_str()?.to_owned(),
            );
        }
    }
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_adds_and_changes_sinks_on_sighup_without_restarting_ingest() {
    let (_guard, dir) = support::tempdir();
    let (a, b) = (dir.join("a"), dir.join("b"));
    let config_path = dir.join("collector.toml");
    let head = format!(
        "data_dir = \"{}\"\n[grpc]\nlisten = \"127.0.0.1:0\"\nmax_record_age = \"36500days\"\n[http]\nlisten = \"127.0.0.1:0\"\n[flush]\nmax_age = \"200ms\"\n",
        dir.join("data").display()
    );
    let sink = |name: &str, path: &std::path::Path, filter: &str| {
        format!(
            "\n[[sinks]]\nname = \"{name}\"\ndestination = \"file://{}\"\nfilter = '{filter}'\n[sinks.object_storage]\nwindow = \"1s\"\n",
            path.display()
        )
    };
    std::fs::write(
        &config_path,
        format!(
            "{head}{}\n[[sinks]]\nname = \"broken\"\ndestination = \"kafka://nowhere/t\"\n",
            sink("a", &a, "jsonPayload.disposition=\"deny\"")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_verdict-collector"))
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let grab = |key: &str| -> std::net::SocketAddr {
        first
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (grpc, http) = (grab("grpc="), grab("http="));
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            let _ = line_tx.send(l);
        }
    });

    // The bad definition is named and skipped; "a" runs.
    let status = support::http_get(http, "/sinks").await;
    let status: Vec<Value> = serde_json::from_str(&status).unwrap();
    let broken = status
        .iter()
        .find(|s| s["name"] == "broken")
        .expect("listed");
    assert_eq!(broken["state"], "rejected");
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("sinks.broken.destination"),
        "{broken}"
    );
    assert!(
        status
            .iter()
            .any(|s| s["name"] == "a" && s["state"] == "running")
    );

    let mut stream = Stream::open(channel(grpc).await, None).await.unwrap();
    let mut batch_id = 0;
    let first_part = send_flows(&mut stream, 1..201, 100, &mut batch_id).await;
    let wait_exported = |dir: std::path::PathBuf, want: BTreeMap<String, String>| async move {
        eventually(Duration::from_secs(60), "exported files", || {
            exported(&dir).as_ref() == Some(&want)
        })
        .await;
    };
    let denies: BTreeMap<String, String> = first_part
        .iter()
        .filter(|e| e.disposition == "deny")
        .map(|e| (e.insert_id.clone(), e.disposition.clone()))
        .collect();
    wait_exported(a.clone(), denies.clone()).await;

    // Change "a" to allows, add "b" (everything), drop the broken one; SIGHUP.
    std::fs::write(
        &config_path,
        format!(
            "{head}{}{}",
            sink("a", &a, "jsonPayload.disposition=\"allow\""),
            sink("b", &b, "")
        ),
    )
    .unwrap();
    sink_servers::signal(pid, "HUP");
    let reloaded = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let l = line_rx.recv().await.expect("the collector runs");
            if l.contains("sinks reloaded") {
                return l;
            }
        }
    })
    .await
    .expect("a reload report");
    assert!(
        reloaded.contains("started=[\"b\"]") && reloaded.contains("restarted=[\"a\"]"),
        "{reloaded}"
    );

    // The same ingest stream goes on: ingest was never restarted.
    let second_part = send_flows(&mut stream, 201..401, 100, &mut batch_id).await;
    let mut want_a = denies;
    want_a.extend(
        second_part
            .iter()
            .filter(|e| e.disposition == "allow")
            .map(|e| (e.insert_id.clone(), e.disposition.clone())),
    );
    wait_exported(a.clone(), want_a).await;
    // A new sink routes what arrives after it was added.
    let want_b: BTreeMap<String, String> = second_part
        .iter()
        .map(|e| (e.insert_id.clone(), e.disposition.clone()))
        .collect();
    wait_exported(b.clone(), want_b).await;

    drop(stream);
    sink_servers::signal(pid, "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_apply_reports_each_change() {
    let (_guard, dir) = support::tempdir();
    let served = Served::start(config(&dir)).await;
    let c: &Arc<Collector> = &served.collector;
    let f = |name: &str, filter: &str| {
        format!(
            "[[sinks]]\nname = \"{name}\"\ndestination = \"file://{}/{name}\"\nfilter = '{filter}'\n",
            dir.display()
        )
    };
    let r = c
        .reload_sinks(&sink_tables(&(f("x", "") + &f("y", ""))))
        .await;
    assert_eq!((r.started.len(), r.rejected.len()), (2, 0), "{r:?}");
    let r = c
        .reload_sinks(&sink_tables(
            &(f("x", "")
                + &f("y", "severity>=ERROR")
                + "[[sinks]]\nname = \"z\"\ndestination = \"file:///tmp/z\"\nfilter = 'nope=='\n"),
        ))
        .await;
    assert_eq!(r.unchanged, ["x"]);
    assert_eq!(r.restarted, ["y"]);
    assert_eq!(r.rejected.len(), 1);
    assert!(
        r.rejected[0].to_string().contains("sinks.z.filter"),
        "{}",
        r.rejected[0]
    );
    let r = c
        .reload_sinks(&sink_tables(&f("y", "severity>=ERROR")))
        .await;
    assert_eq!(
        (r.stopped.clone(), r.unchanged.clone()),
        (vec!["x".to_owned()], vec!["y".to_owned()])
    );
    served.stop().await;
}

/// Names in a BigQuery schema (dotted paths of every field).
fn bigquery_paths(fields: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    for f in fields.as_array().unwrap() {
        let path = format!("{prefix}{}", f["name"].as_str().unwrap());
        if let Some(sub) = f.get("fields") {
            bigquery_paths(sub, &format!("{path}."), out);
        }
        out.insert(path);
    }
}

/// Dotted paths of every key of a JSON value (list elements merged).
fn json_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let path = format!("{prefix}{k}");
                json_paths(v, &format!("{path}."), out);
                out.insert(path);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| json_paths(i, prefix, out)),
        _ => {}
    }
}

#[test]
fn the_warehouse_ddl_matches_the_exported_schemas() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/warehouse");
    // Athena and Trino list exactly the flat schema's columns, in order (plus dt/hour).
    let ddl = std::fs::read_to_string(root.join("athena_trino.sql")).unwrap();
    let schema: Vec<String> = verdict_schema::flat_schema::log_entry_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    for (start, end) in [
        ("CREATE EXTERNAL TABLE", "PARTITIONED BY"),
        ("CREATE TABLE hive", "WITH ("),
    ] {
        let body = &ddl[ddl.find(start).unwrap()..];
        let body = &body[body.find('(').unwrap() + 1..body.find(end).unwrap()];
        let cols: Vec<String> = body
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|c| c.trim_matches(|c| c == '`' || c == '"').to_owned())
            .filter(|c| !c.is_empty() && c != ")" && c != "dt" && c != "hour")
            .collect();
        assert_eq!(cols, schema, "{start}");
    }
    // BigQuery's JSON schema names every key of exported LogEntry JSON (allow and deny, pod and
    // instance endpoints, audit mode).
    let bq: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("bigquery_log_entry_schema.json")).unwrap(),
    )
    .unwrap();
    let mut declared = BTreeSet::new();
    bigquery_paths(&bq, "", &mut declared);
    let node = verdict_schema::log_entry::NodeIdentity {
        project_id: "p".into(),
        location: "l".into(),
        cluster_name: "c".into(),
        node_name: NODE.into(),
    };
    let mut seen = BTreeSet::new();
    for seq in 0..6 {
        let mut v: Value = serde_json::from_str(&flow_json(NODE, seq, BASE)).unwrap();
        if seq == 4 {
            v["src"] = serde_json::json!({"instance": "10.0.0.9"});
            v["enforcement"] = "audit".into();
            v["policies"] =
                serde_json::json!([{"name": "p", "namespace": "n", "kind": "NetworkPolicy"}]);
        }
        let record: verdict_schema::PolicyActionRecord = serde_json::from_value(v).unwrap();
        let entry = verdict_schema::LogEntry::policy_action(
            record,
            &node,
            verdict_schema::Timestamp::now(),
            insert_id(NODE, SOURCE, seq),
        );
        json_paths(&serde_json::to_value(&entry).unwrap(), "", &mut seen);
    }
    let undeclared: Vec<_> = seen.difference(&declared).collect();
    assert!(
        undeclared.is_empty(),
        "keys missing from the BigQuery schema: {undeclared:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_retention_bound_a_lagging_sink_counts_exactly_what_it_lost() {
    let Some(broker) = sink_servers::start_tansu() else {
        return;
    };
    let (_guard, dir) = support::tempdir();
    let mut c = config(&dir);
    c.wal.segment_bytes = verdict_collector::config::ByteSize(1 << 20);
    c.wal.max_sink_retention_bytes = verdict_collector::config::ByteSize(1 << 20);
    c.sinks = sink_tables(&format!(
        r#"
[[sinks]]
name = "lagging"
destination = "kafka://127.0.0.1:{}/lagging"
[sinks.kafka]
create_topic = true
message_timeout = "1s"
[sinks.delivery]
batch_records = 500
initial_backoff = "50ms"
max_backoff = "200ms"
"#,
        broker.port
    ));
    let served = Served::start(c).await;
    let mut stream = served.stream().await;
    let mut batch_id = 0;
    let mut sent = send_flows(&mut stream, 1..201, 100, &mut batch_id).await;
    caught_up(&served.collector, "lagging", Duration::from_secs(60)).await;

    // The broker freezes; about 4 MiB of log arrive and are committed to Parquet: more than
    // the 1 MiB the sink may hold back.
    broker.freeze();
    sent.extend(send_flows(&mut stream, 201..6201, 500, &mut batch_id).await);
    served.collector.flush().await.unwrap();
    broker.resume();
    caught_up(&served.collector, "lagging", Duration::from_secs(120)).await;

    let m = served.metrics().await;
    let dropped = metric(
        &m,
        "verdict_collector_sink_records_dropped_total{sink=\"lagging\",reason=\"wal_retention\"}",
    )
    .unwrap();
    assert!(
        dropped > 0.0,
        "the bound was exceeded, so records were dropped"
    );
    assert!(
        metric(
            &m,
            "verdict_collector_sink_entries_dropped_total{sink=\"lagging\"}"
        )
        .unwrap()
            > 0.0
    );
    let want = ids(&sent);
    let at_destination = want.len() - dropped as usize;
    let got: BTreeSet<String> = sink_servers::kafka_read(
        broker.port,
        "lagging",
        at_destination,
        Duration::from_secs(60),
    )
    .iter()
    .map(|m| m["value"]["insertId"].as_str().unwrap().to_owned())
    .collect();
    assert!(got.is_subset(&want));
    // Every record is either at the destination or counted as dropped.
    let missing: Vec<u64> = want
        .difference(&got)
        .map(|id| u64::from_str_radix(&id[16..], 16).unwrap())
        .collect();
    let runs = missing.windows(2).filter(|w| w[1] != w[0] + 1).count() + 1;
    assert_eq!(
        missing.len(),
        dropped as usize,
        "missing sequences {:?}..{:?} in {runs} runs; metrics: {}",
        missing.first(),
        missing.last(),
        m.lines()
            .filter(|l| l.contains("sink=\"lagging\""))
            .collect::<Vec<_>>()
            .join("; ")
    );
    served.stop().await;
}
