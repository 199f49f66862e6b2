//! The language's conformance table, for every evaluator of it: 13 LogEntries
//! (`tests/fixtures/entries.jsonl`) and the queries of `tests/fixtures/cases.test`, each with the
//! exact entries it selects or the error it must raise. This crate's JSON evaluator passes it
//! (`tests/query_cases.rs`); the DataFusion translator should run the same cases:
//!
//! ```
//! use verdict_filter::conformance::{self, Expect};
//!
//! let entries = conformance::entries();
//! for case in conformance::cases() {
//!     match (&case.expect, verdict_filter::parse(&case.query)) {
//!         (Expect::Matches(want), Ok(filter)) => {
//!             let got: Vec<usize> =
//!                 (0..entries.len()).filter(|&i| filter.matches(&entries[i])).collect();
//!             assert_eq!(&got, want, "{}", case.query);
//!         }
//!         (Expect::Error(want), Err(e)) => assert!(e.to_string().contains(want.as_str())),
//!         (expect, result) => panic!("{}: {expect:?} vs {result:?}", case.query),
//!     }
//! }
//! ```
//!
//! The fixtures are embedded, so the table costs nothing unless called.

const ENTRIES: &str = include_str!("../tests/fixtures/entries.jsonl");
const CASES: &str = include_str!("../tests/fixtures/cases.test");

/// What a case expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The 0-based indices of the entries selected, ascending.
    Matches(Vec<usize>),
    /// Text the error message (its `Display`) must contain.
    Error(String),
}

/// One query of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// 1-based line of the case in `cases.test`.
    pub line: usize,
    /// What the case shows (may be empty).
    pub label: String,
    pub query: String,
    pub expect: Expect,
}

/// The fixture LogEntries as JSON, in order.
///
/// # Panics
/// Never for the embedded file (its lines are JSON; this crate's tests check it).
pub fn entries() -> Vec<serde_json::Value> {
    ENTRIES
        .lines()
        .map(|line| serde_json::from_str(line).expect("entries.jsonl holds JSON lines"))
        .collect()
}

/// The cases of the table, in file order.
///
/// # Panics
/// Never for the embedded file (this crate's tests parse it).
pub fn cases() -> Vec<Case> {
    parse_cases(CASES).unwrap_or_else(|e| panic!("cases.test: {e}"))
}

/// Reads the block format documented at the top of `cases.test`.
fn parse_cases(text: &str) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (kind, label) = line.split_once(' ').unwrap_or((line, ""));
        if kind != "query" && kind != "error" {
            return Err(format!(
                "line {}: expected 'query' or 'error', found {line:?}",
                n + 1
            ));
        }
        let mut query = Vec::new();
        loop {
            let (m, l) = lines
                .next()
                .ok_or_else(|| format!("line {}: block without '----'", n + 1))?;
            if l == "----" {
                break;
            }
            if l.trim().is_empty() {
                return Err(format!("line {}: blank line in a query", m + 1));
            }
            query.push(l);
        }
        let (m, expected) = lines
            .next()
            .ok_or_else(|| format!("line {}: block without an expectation", n + 1))?;
        let expect = if kind == "error" {
            Expect::Error(expected.to_owned())
        } else if expected.trim() == "none" {
            Expect::Matches(Vec::new())
        } else {
            Expect::Matches(
                expected
                    .split_whitespace()
                    .map(|i| {
                        i.parse()
                            .map_err(|_| format!("line {}: bad index {i:?}", m + 1))
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
        cases.push(Case {
            line: n + 1,
            label: label.to_owned(),
            query: query.join("\n"),
            expect,
        });
    }
    Ok(cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_table_reads() {
        assert_eq!(entries().len(), 13);
        let cases = cases();
        assert!(cases.len() > 200);
        assert!(cases.iter().all(|c| !c.query.is_empty()));
    }

    #[test]
    fn the_format() {
        let cases = parse_cases(
            "# comment\n\nquery a label\nx = 1\ny\n----\n0 2\n\nerror\nz =\n----\nexpected\n",
        )
        .unwrap();
        assert_eq!(
            cases,
            [
                Case {
                    line: 3,
                    label: "a label".into(),
                    query: "x = 1\ny".into(),
                    expect: Expect::Matches(vec![0, 2]),
                },
                Case {
                    line: 9,
                    label: String::new(),
                    query: "z =".into(),
                    expect: Expect::Error("expected".into()),
                },
            ]
        );
        assert!(parse_cases("query\nx\n").is_err());
        assert!(parse_cases("oops\n").is_err());
        assert!(parse_cases("query\nx\n----\n1 a\n").is_err());
    }
}
