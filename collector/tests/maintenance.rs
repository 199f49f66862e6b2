//! Compaction (small files merged, every row kept, rollups re-aggregated) and retention
//! (expired partitions deleted), on the local default storage.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use support::*;
use verdict_collector::{Collector, Table};
use verdict_schema::Timestamp;
use verdict_schema::flat_schema::batch_to_log_entries;
use verdict_schema::proto::v1;

/// 2026-01-01T00:00:00Z.
const BASE: i64 = 1_767_225_600;

async fn flow_ids(c: &Collector) -> Vec<String> {
    let mut v: Vec<String> = c
        .read_committed(Table::Flows)
        .await
        .unwrap()
        .iter()
        .flat_map(|b| batch_to_log_entries(b).unwrap())
        .map(|e| e.insert_id)
        .collect();
    v.sort();
    v
}

async fn rollup_totals(c: &Collector) -> (usize, i64, i64) {
    let batches = c.read_committed(Table::Rollups).await.unwrap();
    let sum = |name: &str| -> i64 {
        batches
            .iter()
            .map(|b| {
                b.column_by_name(name)
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .values()
                    .iter()
                    .sum::<i64>()
            })
            .sum()
    };
    (
        batches.iter().map(|b| b.num_rows()).sum(),
        sum("records"),
        sum("connections"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_small_files_and_keeps_every_row() {
    let (_guard, dir) = tempdir();
    let mut cfg = config(&dir);
    cfg.compaction.min_files = 4;
    let served = Served::start(cfg).await;
    let mut s = served.stream().await;
    for b in 0..6u64 {
        // 200 records, 50 s of event time, all in hour 00.
        let records = (b * 200 + 1..=b * 200 + 200)
            .map(|seq| json_record(seq, v1::LogId::PolicyAction, &flow_json("n1", seq, BASE)))
            .collect();
        assert_eq!(
            s.call(&batch("n1", "src", b + 1, records)).await.stored,
            200
        );
        served.collector.flush().await.unwrap();
    }
    drop(s);
    let c = served.collector.clone();
    assert_eq!(c.committed_files(Table::Flows).len(), 6);
    assert_eq!(c.committed_files(Table::Rollups).len(), 6);
    let ids = flow_ids(&c).await;
    let (rollup_rows, records, connections) = rollup_totals(&c).await;
    assert_eq!(records, 1200);

    // The hour is still open (now = within it) and 6 ≥ min_files: merged.
    let during = Timestamp::from_unix_nanos((BASE + 1800) * 1_000_000_000);
    assert_eq!(c.compact(during).await.unwrap(), 2, "flows and rollups");
    let flows = c.committed_files(Table::Flows);
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].rows, 1200);
    assert_eq!(flow_ids(&c).await, ids, "every row kept, none added");
    let (merged_rows, merged_records, merged_connections) = rollup_totals(&c).await;
    assert_eq!((merged_records, merged_connections), (records, connections));
    assert!(
        merged_rows < rollup_rows,
        "keys split across flushes were merged"
    );
    // Nothing left to do; the inputs are gone from disk.
    assert_eq!(c.compact(during).await.unwrap(), 0);
    let on_disk = std::fs::read_dir(
        dir.join("data/lake")
            .join(flows[0].path.rsplit_once('/').unwrap().0),
    )
    .unwrap()
    .count();
    assert_eq!(on_disk, 1);
    let m = served.metrics().await;
    assert_eq!(metric(&m, "verdict_collector_compactions_total"), Some(2.0));
    assert_eq!(
        metric(&m, "verdict_collector_compacted_files_total"),
        Some(12.0)
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_expired_partitions_per_table() {
    let (_guard, dir) = tempdir();
    let mut cfg = config(&dir);
    cfg.retention.flows = Duration::from_secs(30 * 86_400);
    cfg.retention.rollups = Duration::from_secs(400 * 86_400);
    let served = Served::start(cfg).await;
    let mut s = served.stream().await;
    // Hour 00 of 2026-01-01 and hour 00 of 2026-03-01.
    let march = BASE + 59 * 86_400;
    let records = vec![
        json_record(1, v1::LogId::PolicyAction, &flow_json("n1", 1, BASE)),
        json_record(2, v1::LogId::PolicyAction, &flow_json("n1", 2, march)),
    ];
    assert_eq!(s.call(&batch("n1", "src", 1, records)).await.stored, 2);
    drop(s);
    served.collector.flush().await.unwrap();
    let c = served.collector.clone();
    let hours = |t: Table| -> BTreeMap<String, u64> {
        c.committed_files(t)
            .into_iter()
            .map(|f| (f.hour.partition_path(), f.rows))
            .collect()
    };
    assert_eq!(hours(Table::Flows).len(), 2);

    // 2026-03-15: January is past 30 days, March is not; rollups keep both (400 days).
    let now = Timestamp::from_unix_nanos((BASE + 73 * 86_400) * 1_000_000_000);
    let removed_path = c.committed_files(Table::Flows)[0].path.clone();
    assert_eq!(c.apply_retention(now).await.unwrap(), 1);
    assert_eq!(
        hours(Table::Flows),
        BTreeMap::from([("dt=2026-03-01/hour=00".to_owned(), 1)])
    );
    assert_eq!(hours(Table::Rollups).len(), 2);
    assert!(!dir.join("data/lake").join(removed_path).exists());
    assert_eq!(c.apply_retention(now).await.unwrap(), 0);
    served.stop().await;
}
