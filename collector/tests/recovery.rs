//! Start-up recovery: acknowledged rows that never reached Parquet come back from the WAL with
//! their watermarks; leftovers of interrupted writes (truncated or staging Parquet files, a torn
//! WAL tail) never break reads and are cleaned up.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::*;
use verdict_collector::{Collector, Table};
use verdict_schema::flat_schema::batch_to_log_entries;
use verdict_schema::proto::v1;

const BASE: i64 = 1_767_225_600;

fn records(node: &str, seqs: std::ops::RangeInclusive<u64>) -> Vec<v1::Record> {
    seqs.map(|s| json_record(s, v1::LogId::PolicyAction, &flow_json(node, s, BASE)))
        .collect()
}

async fn insert_ids(c: &Collector) -> Vec<String> {
    let mut ids: Vec<String> = c
        .read_committed(Table::Flows)
        .await
        .unwrap()
        .iter()
        .flat_map(|b| batch_to_log_entries(b).unwrap())
        .map(|e| e.insert_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_rows_survive_a_crash_before_any_flush() {
    let (_guard, dir) = tempdir();
    let mut cfg = config(&dir);
    cfg.flush.max_age = Duration::from_secs(3600);
    let served = Served::start(cfg.clone()).await;
    let mut s = served.stream().await;
    for b in 0..3u64 {
        let r = s
            .call(&batch(
                "n1",
                "src",
                b + 1,
                records("n1", b * 100 + 1..=b * 100 + 100),
            ))
            .await;
        assert_eq!(r.stored, 100);
    }
    drop(s);
    assert!(served.collector.committed_files(Table::Flows).is_empty());
    served.abandon().await;

    let served = Served::serve(std::sync::Arc::new(
        Collector::open(cfg)
            .await
            .map(|(c, r)| {
                assert_eq!((r.replayed_entries, r.replayed_rows), (3, 300), "{r:?}");
                c
            })
            .unwrap(),
    ))
    .await;
    let unflushed: usize = served
        .collector
        .unflushed_batches(Table::Flows)
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(
        unflushed, 300,
        "replayed rows are readable before any flush"
    );
    // The watermark came back with the rows: a resent batch is a duplicate.
    let mut s = served.stream().await;
    let r = s
        .call(&batch("n1", "src", 1, records("n1", 151..=250)))
        .await;
    assert_eq!((r.stored, r.duplicates, r.durable_sequence), (0, 100, 300));
    let r = s
        .call(&batch("n1", "src", 2, records("n1", 251..=400)))
        .await;
    assert_eq!((r.stored, r.duplicates, r.durable_sequence), (100, 50, 400));
    drop(s);
    let c = served.collector.clone();
    served.stop().await;
    let ids = insert_ids(&c).await;
    assert_eq!(ids.len(), 400);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_written_files_never_break_reads_and_are_cleaned_up() {
    let (_guard, dir) = tempdir();
    let cfg = config(&dir);
    let served = Served::start(cfg.clone()).await;
    let mut s = served.stream().await;
    for b in 0..3u64 {
        let r = s
            .call(&batch(
                "n1",
                "src",
                b + 1,
                records("n1", b * 100 + 1..=b * 100 + 100),
            ))
            .await;
        assert_eq!(r.stored, 100);
        served.collector.flush().await.unwrap();
    }
    drop(s);
    let committed = served.collector.committed_files(Table::Flows);
    let before = insert_ids(&served.collector).await;
    assert_eq!(before.len(), 300);

    // While running: a truncated .parquet appears in a partition (a writer died mid-file).
    let lake = dir.join("data/lake");
    let first = lake.join(&committed[0].path);
    let bytes = std::fs::read(&first).unwrap();
    let partition = first.parent().unwrap().to_owned();
    let half = &bytes[..bytes.len() / 2];
    std::fs::write(
        partition.join("9999999999999-000999.collector-0.parquet"),
        half,
    )
    .unwrap();
    std::fs::write(
        partition.join("9999999999999-000998.collector-0.parquet#17"),
        half,
    )
    .unwrap();
    assert_eq!(
        insert_ids(&served.collector).await,
        before,
        "reads see committed files only"
    );
    served.stop().await;

    // A torn tail on the WAL: an unacknowledged group cut short by a crash.
    let wal = dir.join("data/wal");
    let segment = std::fs::read_dir(&wal)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .unwrap();
    let mut data = std::fs::read(&segment).unwrap();
    data.extend_from_slice(&[0x5a; 100]);
    std::fs::write(&segment, data).unwrap();

    let (c, recovery) = Collector::open(cfg).await.unwrap();
    assert_eq!(recovery.orphans_deleted, 1, "{recovery:?}");
    assert_eq!(recovery.torn_wal_bytes, 100, "{recovery:?}");
    assert_eq!(recovery.replayed_entries, 0);
    let left: Vec<String> = std::fs::read_dir(&partition)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|n| !n.starts_with("9999999999999")),
        "{left:?}"
    );
    assert_eq!(insert_ids(&c).await, before);
    c.close().await.unwrap();

    // And an independent reader over the whole folder sees exactly the committed rows.
    if require(python_has(&["pyarrow"]), "python3 with pyarrow") {
        let files: Vec<String> = committed_paths(&lake.join("policy_action"));
        let rows = pyarrow_rows(&files, None);
        let mut ids: Vec<String> = rows
            .iter()
            .map(|r| r["insert_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        assert_eq!(ids, before);
    }
}

fn committed_paths(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for dt in std::fs::read_dir(dir).unwrap().flatten() {
        for hour in std::fs::read_dir(dt.path()).unwrap().flatten() {
            for f in std::fs::read_dir(hour.path()).unwrap().flatten() {
                out.push(f.path().display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_and_flushes() {
    let (_guard, dir) = tempdir();
    let mut cfg = config(&dir);
    cfg.flush.max_age = Duration::from_secs(3600);
    let served = Served::start(cfg).await;
    let mut s = served.stream().await;
    assert_eq!(
        s.call(&batch("n1", "src", 1, records("n1", 1..=50)))
            .await
            .stored,
        50
    );
    let c = served.collector.clone();
    // The stream is still open: stopping does not wait for the shipper to hang up.
    served.stop().await;
    let end = s.next().await.expect_err("the server ended the stream");
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
    assert_eq!(
        c.committed_files(Table::Flows)
            .iter()
            .map(|f| f.rows)
            .sum::<u64>(),
        50
    );
    assert!(c.unflushed_batches(Table::Flows).is_empty());
}
