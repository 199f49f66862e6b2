//! The language's behaviour, pinned by a table: tests/fixtures/cases.test (queries with the
//! exact entries they select, and queries that must fail with a given message) over
//! tests/fixtures/entries.jsonl, read through `verdict_filter::conformance` so that every other
//! evaluator of the language (the DataFusion translator) runs the same cases.

use verdict_filter::conformance::{Expect, cases, entries};
use verdict_filter::{FilterError, MAX_QUERY_CHARS, parse};
use verdict_schema::LogEntry;

#[test]
fn fixture_entries_are_exactly_what_serde_makes_of_log_entries() {
    for (i, entry) in entries().iter().enumerate() {
        let typed: LogEntry = serde_json::from_value(entry.clone())
            .unwrap_or_else(|e| panic!("entry {i} is not a LogEntry: {e}"));
        assert_eq!(
            &serde_json::to_value(&typed).unwrap(),
            entry,
            "entry {i} does not round-trip"
        );
    }
}

#[test]
fn every_case_selects_exactly_its_entries_or_fails_as_expected() {
    let entries = entries();
    let mut failures = Vec::new();
    for case in cases() {
        let where_ = format!(
            "cases.test:{} {}\n    {}",
            case.line, case.label, case.query
        );
        match (&case.expect, parse(&case.query)) {
            (Expect::Matches(want), Ok(filter)) => {
                let got: Vec<usize> = (0..entries.len())
                    .filter(|&i| filter.matches(&entries[i]))
                    .collect();
                if &got != want {
                    failures.push(format!("{where_}\n    want {want:?}\n    got  {got:?}"));
                }
            }
            (Expect::Matches(_), Err(e)) => {
                failures.push(format!("{where_}\n    unexpected error: {e}"));
            }
            (Expect::Error(want), Err(e)) => {
                let message = e.to_string();
                if !message.contains(want.as_str()) {
                    failures.push(format!(
                        "{where_}\n    want an error containing {want:?}\n    got  {message:?}"
                    ));
                }
                if e.position().is_none() {
                    failures.push(format!("{where_}\n    error without a position: {message}"));
                }
            }
            (Expect::Error(want), Ok(_)) => {
                failures.push(format!("{where_}\n    parsed, but want an error {want:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_table_is_substantial() {
    let cases = cases();
    let queries = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Matches(_)))
        .count();
    let errors = cases.len() - queries;
    assert!(queries >= 150, "{queries} query cases");
    assert!(errors >= 50, "{errors} error cases");
    // Every entry is selected by some case and left out by some other.
    let n = entries().len();
    for i in 0..n {
        let selected = cases
            .iter()
            .any(|c| matches!(&c.expect, Expect::Matches(m) if m.contains(&i)));
        let rejected = cases
            .iter()
            .any(|c| matches!(&c.expect, Expect::Matches(m) if !m.contains(&i)));
        assert!(selected && rejected, "entry {i}");
    }
}

#[test]
fn queries_over_the_limit_are_rejected() {
    let query = format!("\"{}\"", "x".repeat(MAX_QUERY_CHARS - 1));
    match parse(&query) {
        Err(FilterError::TooLong { length, max }) => {
            assert_eq!((length, max), (20_001, 20_000));
        }
        other => panic!("{other:?}"),
    }
    // Comments count.
    let query = format!("prometheus --{}", "x".repeat(MAX_QUERY_CHARS));
    assert!(matches!(parse(&query), Err(FilterError::TooLong { .. })));
    // At the limit is fine.
    let query = format!("prometheus --{}", "x".repeat(MAX_QUERY_CHARS - 13));
    assert!(parse(&query).unwrap().matches(&entries()[2]));
}

#[test]
fn hostile_nesting_is_an_error_not_a_stack_overflow() {
    for query in [
        "(".repeat(10_000),
        "NOT ".repeat(4_000) + "x",
        "- ".repeat(9_000) + "x",
        format!("{}x{}", "(".repeat(5_000), ")".repeat(5_000)),
        format!("cast({}", "cast(".repeat(3_000)),
        format!("logName = {}x", "(".repeat(9_000)),
    ] {
        let e = parse(&query).unwrap_err();
        assert!(matches!(e, FilterError::Syntax { .. }), "{e}");
    }
    // Moderate nesting is fine.
    let query = format!("{}prometheus{}", "(".repeat(60), ")".repeat(60));
    assert!(parse(&query).unwrap().matches(&entries()[2]));
}

#[test]
fn entries_made_by_the_schema_crate_are_filtered_alike() {
    use verdict_schema::log_entry::NodeIdentity;
    use verdict_schema::{PolicyActionRecord, Timestamp};

    let record: PolicyActionRecord =
        serde_json::from_value(entries()[1]["jsonPayload"].clone()).unwrap();
    let node = NodeIdentity {
        project_id: "demo-proj".into(),
        location: "us-central1".into(),
        cluster_name: "prod-cluster".into(),
        node_name: "gke-prod-pool-1-b".into(),
    };
    let entry = LogEntry::policy_action(
        record,
        &node,
        Timestamp::parse("2020-06-13T22:00:05Z").unwrap(),
        verdict_schema::log_entry::insert_id("gke-prod-pool-1-b", "src", 7),
    );
    let json = serde_json::to_value(&entry).unwrap();
    let filter = parse(
        r#"log_id("policy-action") jsonPayload.disposition=deny jsonPayload.count=3
           ip_in_net(jsonPayload.dest.instance, "8.8.8.0/24") severity=DEFAULT"#,
    )
    .unwrap();
    assert!(filter.matches(&json));
}
