//! Storage on a real S3-compatible server on loopback (moto): rows stored through object_store
//! with path-style requests are read back by pyarrow's own S3 client, a restarted collector
//! finds its commit log in the bucket, compaction works there, and a bucket that does not
//! exist is reported at start by its setting.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use support::*;
use verdict_collector::{Collector, Config, Table};
use verdict_schema::log_entry::insert_id;
use verdict_schema::proto::v1;
use verdict_schema::{PolicyActionRecord, Timestamp};

fn s3_config(dir: &std::path::Path, endpoint: &str, bucket: &str) -> Config {
    let mut c = config(dir);
    c.storage.url = Some(format!("s3://{bucket}/verdict/lake"));
    for (k, v) in [
        ("aws_endpoint", endpoint),
        ("aws_allow_http", "true"),
        ("aws_virtual_hosted_style_request", "false"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
    ] {
        c.storage.options.0.insert(k.into(), v.into());
    }
    c
}

const BASE: i64 = 1_767_225_600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_round_trip_through_s3() {
    if !require(
        python_has(&["pyarrow", "boto3"]),
        "python3 with pyarrow and boto3",
    ) {
        return;
    }
    let Some(moto) = start_moto() else { return };
    moto.create_bucket("lake");
    let (_guard, dir) = tempdir();
    let cfg = s3_config(&dir, &moto.endpoint, "lake");

    let served = Served::start(cfg.clone()).await;
    let mut expected: HashMap<String, PolicyActionRecord> = HashMap::new();
    for node in ["n1", "n2"] {
        let mut s = served.stream().await;
        for b in 0..5u64 {
            let records: Vec<_> = (b * 100 + 1..=b * 100 + 100)
                .map(|seq| {
                    let line = flow_json(node, seq, BASE);
                    expected.insert(
                        insert_id(node, "src", seq),
                        serde_json::from_str(&line).unwrap(),
                    );
                    json_record(seq, v1::LogId::PolicyAction, &line)
                })
                .collect();
            let r = s.call(&batch(node, "src", b + 1, records)).await;
            assert_eq!((r.stored, r.rejection), (100, None));
            // One flush per batch: several small files per partition, for compaction below.
            served.collector.flush().await.unwrap();
        }
    }
    let c = served.collector.clone();
    eventually(Duration::from_secs(30), "everything committed", || {
        c.snapshot(Table::Flows).unwrap().unflushed.is_empty()
    })
    .await;
    let files_before = c.committed_files(Table::Flows);
    assert!(files_before.len() >= 10, "{}", files_before.len());

    // Compaction in the bucket: fewer files, the same rows.
    let now = Timestamp::parse("2026-02-01T00:00:00Z").unwrap();
    assert!(c.compact(now).await.unwrap() >= 1);
    let files_after = c.committed_files(Table::Flows);
    assert!(files_after.len() < files_before.len());
    served.stop().await;

    // A restart reads the commit log back from the bucket.
    let (reopened, recovery) = Collector::open(cfg.clone()).await.unwrap();
    assert_eq!(reopened.committed_files(Table::Flows), files_after);
    assert_eq!(recovery.replayed_entries, 0, "everything was committed");
    let rows = committed_rows(&reopened, Table::Flows).await;
    assert_eq!(rows, expected.len());
    reopened.close().await.unwrap();

    // pyarrow reads the objects with its own S3 client.
    let keys: Vec<String> = files_after
        .iter()
        .map(|f| format!("lake/verdict/lake/{}", f.path))
        .collect();
    let rows = pyarrow_rows(&keys, Some(moto.endpoint.trim_start_matches("http://")));
    assert_eq!(rows.len(), expected.len());
    let mut seen = HashSet::new();
    for row in rows {
        let id = row["insert_id"].as_str().unwrap().to_owned();
        let want = &expected[&id];
        assert_eq!(row["timestamp"], want.timestamp.unix_nanos());
        assert_eq!(row["src_ip"], want.connection.src_ip.to_string());
        assert_eq!(row["dest_port"], want.connection.dest_port);
        assert_eq!(row["disposition"], want.disposition.as_str());
        assert_eq!(row["dest_pod_name"], want.dest.pod().unwrap().pod_name);
        assert_eq!(row["count"], want.count);
        assert!(seen.insert(id), "no duplicates");
    }
    drop(moto);
}

#[tokio::test]
async fn a_missing_bucket_is_named_at_start() {
    let Some(moto) = start_moto() else { return };
    let (_guard, dir) = tempdir();
    let e = Collector::open(s3_config(&dir, &moto.endpoint, "no-such-bucket"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("storage.url: cannot write under s3://no-such-bucket/verdict/lake"),
        "{e}"
    );
}
