//! The embedded default end to end: concurrent node streams into a collector storing in a local
//! folder; every acknowledged record is stored exactly once and read back row for row by
//! independent readers (pyarrow for rows, duckdb for hive partitions and rollups).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use verdict_collector::Table;
use verdict_schema::log_entry::insert_id;
use verdict_schema::proto::v1;
use verdict_schema::{PolicyActionRecord, Timestamp};

/// 2026-01-01T00:59:00Z: records cross into the next hour.
const BASE: i64 = 1_767_229_140;
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const FLOWS_PER_SOURCE: u64 = 600;
const STRUCTURED_PER_SOURCE: u64 = 200;
const BATCH: usize = 100;

/// What a sent flow record must look like as a stored row (written out independently of the
/// collector's Arrow code).
fn expected_flow_row(node: &str, source: &str, seq: u64, line: &str) -> BTreeMap<String, Value> {
    let r: Value = serde_json::from_str(line).unwrap();
    let ts = Timestamp::parse(r["timestamp"].as_str().unwrap()).unwrap();
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("timestamp", json!(ts.unix_nanos()));
    put("insert_id", json!(insert_id(node, source, seq)));
    put("log_name", json!("projects/proj/logs/policy-action"));
    put("severity", json!("DEFAULT"));
    put("resource_type", json!("k8s_node"));
    put("project_id", json!("proj"));
    put("location", json!("europe-west1-b"));
    put("cluster_name", json!("cluster-a"));
    put("resource_node_name", json!(node));
    let c = &r["connection"];
    for k in [
        "src_ip",
        "dest_ip",
        "src_port",
        "dest_port",
        "protocol",
        "direction",
    ] {
        put(k, c[k].clone());
    }
    put("disposition", r["disposition"].clone());
    put(
        "policies",
        match r.get("policies") {
            None => Value::Null,
            Some(list) => Value::Array(
                list.as_array()
                    .unwrap()
                    .iter()
                    .map(|p| json!({"name": p["name"], "namespace": p["namespace"], "kind": null}))
                    .collect(),
            ),
        },
    );
    for side in ["src", "dest"] {
        for k in [
            "pod_name",
            "pod_namespace",
            "namespace",
            "workload_name",
            "workload_kind",
            "instance",
        ] {
            put(
                &format!("{side}_{k}"),
                r[side].get(k).cloned().unwrap_or(Value::Null),
            );
        }
    }
    put("count", r["count"].clone());
    put("node_name", r["node_name"].clone());
    put("enforcement", Value::Null);
    m
}

struct Sent {
    /// insert_id → expected row.
    flows: HashMap<String, BTreeMap<String, Value>>,
    loss: HashMap<String, Value>,
    total_connections: i64,
}

async fn send_node(grpc: std::net::SocketAddr, node: &'static str) -> Sent {
    let mut sent = Sent {
        flows: HashMap::new(),
        loss: HashMap::new(),
        total_connections: 0,
    };
    let mut stream = Stream::open(channel(grpc).await, None).await.unwrap();
    let mut batch_id = 0;
    // Source 1: JSON lines, as a tailing shipper sends them (sequence = byte offset after the line).
    let source = format!("{node}-policy-action-gen1");
    let mut offset = 0u64;
    let lines: Vec<(u64, String)> = (0..FLOWS_PER_SOURCE)
        .map(|i| {
            let line = flow_json(node, i, BASE);
            offset += line.len() as u64 + 1;
            (offset, line)
        })
        .collect();
    for chunk in lines.chunks(BATCH) {
        batch_id += 1;
        let records = chunk
            .iter()
            .map(|(seq, l)| json_record(*seq, v1::LogId::PolicyAction, l))
            .collect();
        let r = stream.call(&batch(node, &source, batch_id, records)).await;
        assert_eq!(r.rejection, None, "{r:?}");
        assert_eq!((r.stored, r.duplicates), (chunk.len() as u64, 0));
        assert_eq!(r.durable_sequence, chunk.last().unwrap().0);
        assert_eq!(r.batch_id, batch_id);
        for (seq, l) in chunk {
            let row = expected_flow_row(node, &source, *seq, l);
            sent.total_connections += row["count"].as_i64().unwrap();
            sent.flows
                .insert(row["insert_id"].as_str().unwrap().to_owned(), row);
        }
    }
    // A retry of the last two batches (an unacknowledged tail resent after a reconnect) and a
    // batch overlapping the watermark: duplicates are dropped, the new part stored.
    batch_id += 1;
    let tail: Vec<_> = lines[lines.len() - 2 * BATCH..]
        .iter()
        .map(|(s, l)| json_record(*s, v1::LogId::PolicyAction, l))
        .collect();
    let r = stream.call(&batch(node, &source, batch_id, tail)).await;
    assert_eq!((r.stored, r.duplicates), (0, 2 * BATCH as u64));
    assert_eq!(r.durable_sequence, offset);
    batch_id += 1;
    let extra = flow_json(node, FLOWS_PER_SOURCE, BASE);
    let overlap = vec![
        json_record(
            lines[lines.len() - 1].0,
            v1::LogId::PolicyAction,
            &lines[lines.len() - 1].1,
        ),
        json_record(
            offset + extra.len() as u64 + 1,
            v1::LogId::PolicyAction,
            &extra,
        ),
    ];
    let r = stream.call(&batch(node, &source, batch_id, overlap)).await;
    assert_eq!((r.stored, r.duplicates), (1, 1));
    let row = expected_flow_row(node, &source, offset + extra.len() as u64 + 1, &extra);
    sent.total_connections += row["count"].as_i64().unwrap();
    sent.flows
        .insert(row["insert_id"].as_str().unwrap().to_owned(), row);

    // Source 2: structured FlowRecords (sources that build records themselves).
    let source2 = format!("{node}-structured");
    for chunk in (0..STRUCTURED_PER_SOURCE).collect::<Vec<_>>().chunks(BATCH) {
        batch_id += 1;
        let mut records = Vec::new();
        for &i in chunk {
            let line = flow_json(node, 10_000 + i, BASE);
            let rec: PolicyActionRecord = serde_json::from_str(&line).unwrap();
            records.push(v1::Record {
                sequence: i,
                log_id: v1::LogId::PolicyAction as i32,
                payload: Some(v1::record::Payload::Flow(Box::new(v1::FlowRecord::from(
                    &rec,
                )))),
            });
            let row = expected_flow_row(node, &source2, i, &line);
            sent.total_connections += row["count"].as_i64().unwrap();
            sent.flows
                .insert(row["insert_id"].as_str().unwrap().to_owned(), row);
        }
        let r = stream.call(&batch(node, &source2, batch_id, records)).await;
        assert_eq!((r.stored, r.rejection), (chunk.len() as u64, None));
    }
    // Source 3: loss markers (policy_action_loss.log).
    batch_id += 1;
    let source3 = format!("{node}-loss-gen1");
    let records: Vec<_> = (1..=5u64)
        .map(|i| {
            let line = loss_json(node, BASE + i as i64, i);
            sent.loss.insert(
                insert_id(node, &source3, i * 1000),
                serde_json::from_str(&line).unwrap(),
            );
            json_record(i * 1000, v1::LogId::PolicyActionLoss, &line)
        })
        .collect();
    let r = stream.call(&batch(node, &source3, batch_id, records)).await;
    assert_eq!((r.stored, r.rejection), (5, None));
    assert!(stream.finish().await.is_empty());
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_stored_once_and_reads_back_row_for_row() {
    let (_guard, dir) = tempdir();
    let served = Served::start(config(&dir)).await;
    let started = Timestamp::now();
    let handles: Vec<_> = NODES
        .iter()
        .map(|n| tokio::spawn(send_node(served.grpc, n)))
        .collect();
    let mut flows = HashMap::new();
    let mut loss = HashMap::new();
    let mut connections = 0;
    for h in handles {
        let s = h.await.unwrap();
        flows.extend(s.flows);
        loss.extend(s.loss);
        connections += s.total_connections;
    }
    let acked = Timestamp::now();
    let expected_rows = flows.len();
    assert_eq!(
        expected_rows,
        NODES.len() * (FLOWS_PER_SOURCE + 1 + STRUCTURED_PER_SOURCE) as usize
    );

    // Acknowledged rows are visible at once (committed files + unflushed rows), and reach
    // committed files within flush.max_age.
    let c = served.collector.clone();
    let visible = |c: &verdict_collector::Collector| {
        let s = c.snapshot(Table::Flows).unwrap();
        let files: u64 = s.files.iter().map(|f| f.rows).sum();
        let unflushed: usize = s.unflushed.iter().map(|b| b.num_rows()).sum();
        (files as usize, unflushed)
    };
    let (f, u) = visible(&c);
    assert_eq!(
        f + u,
        expected_rows,
        "every acknowledged row is readable exactly once"
    );
    eventually(
        Duration::from_secs(60),
        "rows to reach committed files",
        || visible(&c) == (expected_rows, 0),
    )
    .await;

    let m = served.metrics().await;
    assert_eq!(
        metric(
            &m,
            "verdict_collector_records_stored_total{table=\"flows\"}"
        ),
        Some(expected_rows as f64)
    );
    assert_eq!(
        metric(&m, "verdict_collector_records_stored_total{table=\"loss\"}"),
        Some(15.0)
    );
    assert_eq!(
        metric(&m, "verdict_collector_records_deduplicated_total"),
        Some((NODES.len() * (2 * BATCH + 1)) as f64)
    );
    assert!(
        metric(
            &m,
            "verdict_collector_files_written_total{table=\"rollups\"}"
        )
        .unwrap()
            >= 2.0
    );
    assert!(
        m.contains("verdict_collector_source_lag_seconds{node=\"node-a\"}"),
        "{m}"
    );
    served.stop().await;

    // Read back with pyarrow, file by file, as a user would.
    if !require(
        python_has(&["pyarrow", "duckdb"]),
        "python3 with pyarrow and duckdb",
    ) {
        return;
    }
    let lake = dir.join("data/lake");
    let files = |table: &str| {
        let mut v: Vec<String> = walk(&lake.join(table))
            .into_iter()
            .filter(|p| p.ends_with(".parquet"))
            .collect();
        v.sort();
        v
    };
    let rows = pyarrow_rows(&files("policy_action"), None);
    assert_eq!(rows.len(), expected_rows, "no row lost or duplicated");
    for row in &rows {
        let id = row["insert_id"].as_str().unwrap();
        let want = flows
            .get(id)
            .unwrap_or_else(|| panic!("unexpected row {row}"));
        for (k, v) in want {
            assert_eq!(&row[k], v, "column {k} of {id}");
        }
        let receive = row["receive_timestamp"].as_i64().unwrap();
        assert!(started.unix_nanos() <= receive && receive <= acked.unix_nanos());
        // The hive partition is the event hour.
        let t = chrono::DateTime::from_timestamp_nanos(row["timestamp"].as_i64().unwrap());
        let part = t.format("dt=%Y-%m-%d/hour=%H/").to_string();
        assert!(
            row["_file"].as_str().unwrap().contains(&part),
            "{part} {row}"
        );
    }
    let distinct: std::collections::HashSet<_> = rows
        .iter()
        .map(|r| r["insert_id"].as_str().unwrap())
        .collect();
    assert_eq!(distinct.len(), expected_rows);

    let loss_rows = pyarrow_rows(&files("policy_action_loss"), None);
    assert_eq!(loss_rows.len(), loss.len());
    for row in &loss_rows {
        let want = &loss[row["insert_id"].as_str().unwrap()];
        assert_eq!(row["log_name"], "projects/proj/logs/policy-action-loss");
        assert_eq!(row["severity"], "WARNING");
        for k in [
            "node_name",
            "reason",
            "disposition",
            "dropped_records",
            "dropped_connections",
        ] {
            assert_eq!(row[k], want[k], "{k}");
        }
        let ts = Timestamp::parse(want["timestamp"].as_str().unwrap()).unwrap();
        assert_eq!(row["timestamp"], json!(ts.unix_nanos()));
    }

    // duckdb over the hive layout: partitions are discovered, and the rollups agree with the
    // raw rows minute by minute and key by key.
    let out = python(
        r#"
import sys, duckdb
db = duckdb.connect()
lake = sys.argv[1]
raw = f"read_parquet('{lake}/policy_action/*/*/*.parquet', hive_partitioning=true)"
rollups = f"read_parquet('{lake}/policy_action_1m/*/*/*.parquet', hive_partitioning=true)"
print(db.execute(f"select count(*), count(distinct dt || hour) from {raw}").fetchone())
keys = "src_namespace, src_workload_name, dest_namespace, dest_workload_name, direction, disposition, protocol, dest_port"
a = f"""select epoch(date_trunc('minute', "timestamp"::timestamptz)) m, src_pod_namespace src_namespace, src_workload_name,
    dest_pod_namespace dest_namespace, dest_workload_name, direction, disposition, protocol, dest_port,
    count(*) r, sum("count") c from {raw} group by all"""
b = f"select epoch(minute::timestamptz) m, {keys}, sum(records) r, sum(connections) c from {rollups} group by all"
print(*db.execute(f"""with a as ({a}), b as ({b}) select
    (select count(*) from (select * from a except all select * from b)) = 0
      and (select count(*) from (select * from b except all select * from a)) = 0,
    (select count(*) from b), (select sum(c) from b)""").fetchone())
"#,
        &[lake.to_str().unwrap()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("({expected_rows}, 2)"),
        "two hourly partitions"
    );
    let agg: Vec<&str> = lines[1].split(' ').collect();
    assert_eq!(agg[0], "True", "rollups match raw rows: {out}");
    assert!(agg[1].parse::<u64>().unwrap() > 10, "{out}");
    assert_eq!(agg[2], connections.to_string());
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}
