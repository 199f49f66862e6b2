//! The SQL views of `sql/views/*.sql` (and SQL errors) pinned by the sqllogictest-style files in
//! `sql/tests/*.slt`, run over the conformance fixture entries: half in Parquet files laid out
//! like the lake, half unflushed, so every view reads both.
//!
//! File format (a subset of sqllogictest):
//!
//! ```text
//! # comment
//! query rowsort            -- or `query nosort`; then the SQL, `----`, one line per row,
//! SELECT …                 --   cells separated by " | ", NULL for null
//! ----
//! a | 1
//!
//! statement error TEXT     -- the SQL must fail with a message containing TEXT
//! DROP TABLE policy_action
//! ```
//!
//! `VERDICT_SLT_COMPLETE=1 cargo test -p verdict-query --test sql_views` rewrites the expected
//! rows from the current results (review the diff before keeping it).

mod fixture_lake;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::util::display::array_value_to_string;
use fixture_lake::{fixture_entries, parquet_lake};
use verdict_query::{QueryEngine, QueryLimits};

#[derive(Debug)]
enum Record {
    Query {
        line: usize,
        sort: bool,
        sql: String,
        expected: Vec<String>,
    },
    Error {
        line: usize,
        sql: String,
        text: String,
    },
}

fn parse(text: &str, file: &Path) -> Vec<Record> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let head = lines[i].trim_end();
        if head.is_empty() || head.starts_with('#') {
            i += 1;
            continue;
        }
        let line = i + 1;
        if let Some(mode) = head.strip_prefix("query") {
            let sort = match mode.trim() {
                "" | "rowsort" => true,
                "nosort" => false,
                other => panic!("{}:{line}: unknown query mode {other:?}", file.display()),
            };
            i += 1;
            let mut sql = Vec::new();
            while i < lines.len() && lines[i].trim_end() != "----" {
                sql.push(lines[i]);
                i += 1;
            }
            assert!(
                i < lines.len(),
                "{}:{line}: query without ----",
                file.display()
            );
            i += 1;
            let mut expected = Vec::new();
            while i < lines.len() && !lines[i].trim().is_empty() {
                expected.push(lines[i].trim_end().to_owned());
                i += 1;
            }
            out.push(Record::Query {
                line,
                sort,
                sql: sql.join("\n"),
                expected,
            });
        } else if let Some(text) = head.strip_prefix("statement error") {
            i += 1;
            let mut sql = Vec::new();
            while i < lines.len() && !lines[i].trim().is_empty() {
                sql.push(lines[i]);
                i += 1;
            }
            out.push(Record::Error {
                line,
                sql: sql.join("\n"),
                text: text.trim().to_owned(),
            });
        } else {
            panic!(
                "{}:{line}: expected query or statement error, found {head:?}",
                file.display()
            );
        }
    }
    out
}

fn render(out: &verdict_query::QueryOutput) -> Vec<String> {
    let mut rows = Vec::new();
    for b in &out.batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(r) {
                        "NULL".to_owned()
                    } else {
                        array_value_to_string(c, r).unwrap()
                    }
                })
                .collect();
            rows.push(cells.join(" | ").trim_end().to_owned());
        }
    }
    rows
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_match_their_slt_files() {
    let entries = fixture_entries();
    let dir = tempfile::tempdir().unwrap();
    let (stored, fresh) = entries.split_at(6);
    let engine = QueryEngine::new(
        Arc::new(parquet_lake(dir.path(), stored, fresh, 2)),
        QueryLimits {
            max_rows: 50,
            ..QueryLimits::default()
        },
        &[],
    )
    .await
    .unwrap();
    let complete = std::env::var("VERDICT_SLT_COMPLETE").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut ran = 0;
    for file in slt_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut completed = text.clone();
        for record in parse(&text, &file) {
            ran += 1;
            match record {
                Record::Query {
                    line,
                    sort,
                    sql,
                    expected,
                } => match engine.sql(&sql).await {
                    Ok(out) => {
                        let mut got = render(&out);
                        if sort {
                            got.sort();
                        }
                        if got != expected {
                            if complete {
                                let old = format!("{sql}\n----\n{}", expected.join("\n"));
                                let new = format!("{sql}\n----\n{}", got.join("\n"));
                                completed = completed.replacen(old.trim_end(), new.trim_end(), 1);
                            }
                            failures.push(format!(
                                "{}:{line}:\n{sql}\n  want:\n    {}\n  got:\n    {}",
                                file.display(),
                                expected.join("\n    "),
                                got.join("\n    ")
                            ));
                        }
                    }
                    Err(e) => {
                        failures.push(format!("{}:{line}: {sql}\n  error: {e}", file.display()))
                    }
                },
                Record::Error { line, sql, text } => match engine.sql(&sql).await {
                    Ok(_) => failures.push(format!(
                        "{}:{line}: {sql}\n  expected an error containing {text:?}",
                        file.display()
                    )),
                    Err(e) if e.to_string().contains(&text) => {}
                    Err(e) => failures.push(format!(
                        "{}:{line}: {sql}\n  expected an error containing {text:?}, got: {e}",
                        file.display()
                    )),
                },
            }
        }
        if complete && completed != text {
            std::fs::write(&file, completed).unwrap();
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(ran >= 10, "only {ran} records");
}
