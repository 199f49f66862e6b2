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
