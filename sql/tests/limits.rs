//! The time and memory limits of SQL queries end a query with a clear error instead of
//! running or growing without bound.

use std::sync::Arc;
use std::time::Duration;

use verdict_query::lake::LakeTableDef;
use verdict_query::{FixedLake, QueryEngine, QueryError, QueryLimits};

async fn engine(limits: QueryLimits) -> QueryEngine {
    let lake = FixedLake {
        store: Arc::new(object_store::memory::InMemory::new()),
        // An empty policy_action (the views need it).
        tables: vec![LakeTableDef {
            name: "policy_action",
            schema: verdict_schema::flat_schema::log_entry_schema(),
            time_column: "timestamp",
        }],
        snapshots: Default::default(),
    };
    QueryEngine::new(Arc::new(lake), limits, &[]).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_the_timeout_is_stopped() {
    let engine = engine(QueryLimits {
        timeout: Duration::from_millis(300),
        ..QueryLimits::default()
    })
    .await;
    let e = engine
        .sql("SELECT count(*) FROM generate_series(1, 100000000000)")
        .await
        .unwrap_err();
    assert!(matches!(e, QueryError::Timeout { .. }), "{e}");
    assert_eq!(e.status().as_u16(), 504);
    assert!(e.to_string().contains("longer than 0.3s"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_the_memory_limit_fails() {
    let engine = engine(QueryLimits {
        max_memory_bytes: 16 << 20,
        ..QueryLimits::default()
    })
    .await;
    let e = engine
        .sql("SELECT array_agg(value) FROM generate_series(1, 20000000)")
        .await
        .unwrap_err();
    assert!(matches!(e, QueryError::ResourcesExhausted(_)), "{e:?}");
    assert_eq!(e.status().as_u16(), 422);
    assert!(e.to_string().contains("query.max_memory"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_expression_is_answered_or_refused_never_a_crash() {
    let engine = engine(QueryLimits::default()).await;
    // 50,000 terms: longer than query.max_sql_bytes, refused before parsing.
    let terms = vec!["1=1"; 50_000].join(" OR ");
    let e = engine
        .sql(&format!("SELECT 1 WHERE {terms}"))
        .await
        .unwrap_err();
    assert!(matches!(e, QueryError::TooLarge(_)), "{e:?}");
    assert_eq!(e.status().as_u16(), 422);
    assert!(e.to_string().contains("query.max_sql_bytes"), "{e}");
    // 20,000 terms fit: a tree 20,000 deep is planned on the query threads' stacks (the
    // process overflowed its stack and died on this before). It is answered, or refused by a
    // limit (a debug build may pass query.timeout planning it) — never a crash.
    let terms = vec!["1=1"; 20_000].join(" OR ");
    let out = engine.sql(&format!("SELECT 1 AS one WHERE {terms}")).await;
    match out {
        Ok(o) => assert_eq!(o.num_rows(), 1),
        Err(e) => assert!(
            e.status().is_client_error() || matches!(e, QueryError::Timeout { .. }),
            "{e:?}"
        ),
    }
    // And the engine still answers.
    assert_eq!(engine.sql("SELECT 2").await.unwrap().num_rows(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_built_by_functions_are_bounded_before_they_allocate() {
    let engine = engine(QueryLimits::default()).await;
    for sql in [
        "SELECT length(repeat('x', 2000000000))",
        "SELECT range(0, 400000000)",
        "SELECT cardinality(generate_series(1, 400000000))",
        "SELECT lpad('a', 2000000000)",
    ] {
        let e = engine.sql(sql).await.unwrap_err();
        assert!(matches!(e, QueryError::TooLarge(_)), "{sql}: {e:?}");
        assert_eq!(e.status().as_u16(), 422, "{sql}");
        assert!(
            e.to_string().contains("query.max_value_bytes"),
            "{sql}: {e}"
        );
    }
    let ok = engine
        .sql("SELECT length(repeat('x', 1000)) AS n")
        .await
        .unwrap();
    assert_eq!(ok.num_rows(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_bounded_in_bytes_too() {
    let engine = engine(QueryLimits {
        max_result_bytes: 1 << 20,
        ..QueryLimits::default()
    })
    .await;
    // 2,000 rows of 1 KiB: under max_rows, over 1 MiB.
    let e = engine
        .sql("SELECT repeat('x', 1024) AS v FROM generate_series(1, 2000)")
        .await
        .unwrap_err();
    assert!(matches!(e, QueryError::TooLarge(_)), "{e:?}");
    assert!(e.to_string().contains("query.max_result_bytes"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_beyond_the_concurrency_limit_are_refused_not_queued_forever() {
    let engine = engine(QueryLimits {
        max_concurrent: 1,
        timeout: Duration::from_secs(3),
        ..QueryLimits::default()
    })
    .await;
    let busy = engine.clone();
    let long = tokio::spawn(async move {
        busy.sql("SELECT count(*) FROM generate_series(1, 100000000000)")
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = engine.sql("SELECT 1").await.unwrap_err();
    assert!(matches!(e, QueryError::Busy { limit: 1 }), "{e:?}");
    assert_eq!(e.status().as_u16(), 429);
    assert!(matches!(
        long.await.unwrap(),
        Err(QueryError::Timeout { .. })
    ));
    // Once the long query is abandoned and stopped, its slot is free again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match engine.sql("SELECT 1").await {
            Ok(_) => break,
            Err(QueryError::Busy { .. }) if std::time::Instant::now() < deadline => {}
            Err(e) => panic!("{e:?}"),
        }
    }
}
