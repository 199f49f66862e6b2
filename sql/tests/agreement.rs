//! Every query of `verdict_filter::conformance::cases()` through both evaluators: the JSON
//! evaluator over the fixture LogEntries, and the DataFusion translation over the same entries
//! stored (a) as Parquet files laid out like the lake and (b) as unflushed RecordBatches, and
//! (c) split between the two. All must select exactly the expected entries.

mod fixture_lake;

use std::sync::Arc;

use datafusion::logical_expr::col;
use fixture_lake::{fixture_entries, indices_of, memory_lake, parquet_lake};
use verdict_filter::conformance::{Expect, cases, entries};
use verdict_query::{Lake, QueryEngine, QueryLimits, translate};

async fn engine(lake: impl Lake) -> QueryEngine {
    QueryEngine::new(Arc::new(lake), QueryLimits::default(), &[])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_evaluators_agree_on_every_conformance_case() {
    let json_entries = entries();
    let log_entries = fixture_entries();
    let dir = tempfile::tempdir().unwrap();
    let split_dir = tempfile::tempdir().unwrap();
    let (stored, fresh) = log_entries.split_at(7);
    let engines = [
        (
            "parquet",
            engine(parquet_lake(dir.path(), &log_entries, &[], 2)).await,
        ),
        ("memory", engine(memory_lake(&log_entries)).await),
        (
            "parquet+memory",
            engine(parquet_lake(split_dir.path(), stored, fresh, 3)).await,
        ),
    ];
    let mut checked = 0;
    let mut fully_native = 0;
    let mut failures = Vec::new();
    for case in cases() {
        let Expect::Matches(want) = &case.expect else {
            // Parse errors are the shared parser's; nothing reaches an evaluator.
            assert!(
                verdict_filter::parse(&case.query).is_err(),
                "line {}",
                case.line
            );
            continue;
        };
        let filter = verdict_filter::parse(&case.query)
            .unwrap_or_else(|e| panic!("line {}: {}: {e}", case.line, case.query));
        let by_json: Vec<usize> = (0..json_entries.len())
            .filter(|&i| filter.matches(&json_entries[i]))
            .collect();
        assert_eq!(
            &by_json, want,
            "JSON evaluator, line {}: {}",
            case.line, case.query
        );
        let translation = translate(&filter).unwrap();
        if translation.fallback_nodes.is_empty() {
            fully_native += 1;
        }
        for (label, engine) in &engines {
            let mut df = engine.context().table("policy_action").await.unwrap();
            if let Some(p) = translation.predicate.clone() {
                df = df.filter(p).unwrap();
            }
            let batches = df.select(vec![col("insert_id")]).unwrap().collect().await;
            match batches {
                Ok(b) => {
                    let got = indices_of(&b, &log_entries);
                    if &got != want {
                        failures.push(format!(
                            "{label}, line {}: {}\n  want {want:?}\n  got  {got:?}\n  expr {}",
                            case.line,
                            case.query,
                            translation.predicate.as_ref().unwrap()
                        ));
                    }
                }
                Err(e) => failures.push(format!(
                    "{label}, line {}: {}\n  error {e}",
                    case.line, case.query
                )),
            }
        }
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 200, "only {checked} cases ran");
    println!(
        "{checked} cases agree in 3 layouts; {fully_native} translated without the JSON fallback"
    );
}
