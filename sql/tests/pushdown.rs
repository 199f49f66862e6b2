//! Pushdown, shown with EXPLAIN ANALYZE and the scan counters: a time range skips the files
//! (hour partitions) outside it before they are opened, and prunes the row groups of the files
//! it does open by their statistics — for SQL and for translated Logging filters alike.

mod fixture_lake;

use std::sync::Arc;

use datafusion::arrow::util::pretty::pretty_format_batches;
use fixture_lake::{NANOS_PER_HOUR, fixture_entries, parquet_lake};
use verdict_query::{QueryEngine, QueryLimits, translate};
use verdict_schema::{LogEntry, Timestamp};

/// 10 hours × 240 entries (20 per row group), copies of the fixture entries with fresh times
/// and insert ids.
fn many_entries() -> Vec<LogEntry> {
    let base = fixture_entries();
    let start = 1_767_225_600_000_000_000_i64; // 2026-01-01T00:00:00Z
    let mut out = Vec::new();
    for i in 0..2400_i64 {
        let mut e = base[(i % base.len() as i64) as usize].clone();
        let t = start + i * (NANOS_PER_HOUR / 240);
        e.timestamp = Timestamp::from_unix_nanos(t);
        e.json_payload.timestamp = e.timestamp;
        e.insert_id = format!("id-{i:06}");
        out.push(e);
    }
    out
}

/// `(total, matched)` of a pruning metric in EXPLAIN ANALYZE output, summed over the scans.
fn pruning(plan: &str, metric: &str) -> (u64, u64) {
    let mut total = 0;
    let mut matched = 0;
    for part in plan.split(&format!("{metric}=")).skip(1) {
        let mut words = part.split_whitespace();
        total += words.next().unwrap().parse::<u64>().unwrap();
        assert_eq!(words.next(), Some("total"));
        assert_eq!(words.next(), Some("→"));
        matched += words.next().unwrap().parse::<u64>().unwrap();
    }
    (total, matched)
}

async fn explain_analyze(engine: &QueryEngine, sql: &str) -> String {
    let out = engine.sql(&format!("EXPLAIN ANALYZE {sql}")).await.unwrap();
    pretty_format_batches(&out.batches).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_range_prunes_partitions_and_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let entries = many_entries();
    let lake = parquet_lake(dir.path(), &entries, &[], 20);
    let engine = QueryEngine::new(Arc::new(lake), QueryLimits::default(), &[])
        .await
        .unwrap();
    let counters = engine.scan_counters("policy_action").unwrap();

    // Hour 3, minutes 15–30: one file of ten is opened; of its 12 row groups, those whose
    // [min, max] timestamp misses the range are pruned.
    let sql = "SELECT count(*) AS n FROM policy_action \
               WHERE timestamp >= '2026-01-01T03:15:00Z' AND timestamp < '2026-01-01T03:30:00Z'";
    let plan = explain_analyze(&engine, sql).await;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(counters.files_total.load(Relaxed), 10, "{plan}");
    assert_eq!(counters.files_pruned.load(Relaxed), 9, "{plan}");
    let (total, matched) = pruning(&plan, "row_groups_pruned_statistics");
    assert_eq!(total, 12, "{plan}");
    // 20 entries (5 minutes) per row group: 03:15–03:30 is row groups 3, 4 and 5.
    assert_eq!(matched, 3, "{plan}");
    let n = engine.sql(sql).await.unwrap();
    let n = pretty_format_batches(&n.batches).unwrap().to_string();
    assert!(n.contains("| 60 |"), "{n}");

    // The same through a Logging filter.
    let filter = verdict_filter::parse(
        r#"timestamp >= "2026-01-01T07:00:00Z" timestamp < "2026-01-01T07:05:00Z" jsonPayload.disposition = deny"#,
    )
    .unwrap();
    let predicate = translate(&filter).unwrap().predicate.unwrap();
    let before = counters.files_pruned.load(Relaxed);
    let df = engine
        .context()
        .table("policy_action")
        .await
        .unwrap()
        .filter(predicate)
        .unwrap();
    let plan = df.explain(false, true).unwrap().collect().await.unwrap();
    let plan = pretty_format_batches(&plan).unwrap().to_string();
    assert_eq!(counters.files_pruned.load(Relaxed) - before, 9, "{plan}");
    let (total, matched) = pruning(&plan, "row_groups_pruned_statistics");
    assert_eq!((total, matched), (12, 1), "{plan}");
    let want = entries
        .iter()
        .filter(|e| filter.matches(&serde_json::to_value(e).unwrap()))
        .count();
    let rows: usize = engine
        .context()
        .table("policy_action")
        .await
        .unwrap()
        .filter(translate(&filter).unwrap().predicate.unwrap())
        .unwrap()
        .count()
        .await
        .unwrap();
    assert!(want > 0);
    assert_eq!(rows, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_insensitive_equality_prunes_row_groups_like_an_exact_one() {
    // One hour, 12 row groups of 20 entries, one destination namespace per row group:
    // alpha, default, payments, zeta, … with row group 5 "Payments" (a case variant).
    let dir = tempfile::tempdir().unwrap();
    let namespaces = ["alpha", "default", "payments", "zeta"];
    let entries: Vec<LogEntry> = many_entries()
        .into_iter()
        .take(240)
        .enumerate()
        .map(|(i, mut e)| {
            let group = i / 20;
            let ns = if group == 5 {
                "Payments"
            } else {
                namespaces[group % 4]
            };
            e.json_payload.dest = verdict_schema::Endpoint::Pod(verdict_schema::PodEndpoint {
                pod_name: format!("pod-{i}"),
                pod_namespace: ns.to_owned(),
                namespace: Some(ns.to_owned()),
                workload_name: None,
                workload_kind: None,
            });
            e
        })
        .collect();
    let lake = parquet_lake(dir.path(), &entries, &[], 20);
    let engine = QueryEngine::new(Arc::new(lake), QueryLimits::default(), &[])
        .await
        .unwrap();

    // Exact SQL equality: the three "payments" row groups.
    let plan = explain_analyze(
        &engine,
        "SELECT count(*) FROM policy_action WHERE dest_namespace = 'payments'",
    )
    .await;
    assert_eq!(
        pruning(&plan, "row_groups_pruned_statistics"),
        (12, 3),
        "{plan}"
    );

    // The Logging filter's `=` ignores case: those and "Payments", no other.
    let filter = verdict_filter::parse(r#"jsonPayload.dest.namespace = "PAYMENTS""#).unwrap();
    let translation = translate(&filter).unwrap();
    assert!(translation.fallback_nodes.is_empty());
    let df = engine
        .context()
        .table("policy_action")
        .await
        .unwrap()
        .filter(translation.predicate.unwrap())
        .unwrap();
    let plan = df
        .clone()
        .explain(false, true)
        .unwrap()
        .collect()
        .await
        .unwrap();
    let plan = pretty_format_batches(&plan).unwrap().to_string();
    assert_eq!(
        pruning(&plan, "row_groups_pruned_statistics"),
        (12, 4),
        "{plan}"
    );
    let want = entries
        .iter()
        .filter(|e| filter.matches(&serde_json::to_value(e).unwrap()))
        .count();
    assert_eq!(want, 80);
    assert_eq!(df.count().await.unwrap(), want);
}
