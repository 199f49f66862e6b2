//! [`Filter`]: a parsed, validated and compiled query.

use std::fmt;
use std::str::FromStr;

use crate::ast::Expr;
use crate::error::{FilterError, Result};
use crate::evaluator::Program;
use crate::parser;

/// The longest query the language accepts, in characters (comments count).
pub const MAX_QUERY_CHARS: usize = 20_000;

/// A query of the Logging query language, ready to evaluate. Cheap to share across threads
/// (`Send + Sync`); evaluation takes `&self`.
#[derive(Debug, Clone)]
pub struct Filter {
    text: String,
    expr: Option<Expr>,
    program: Program,
}

/// Parses, validates and compiles `text`. The empty query (or one of only comments) matches
/// every entry.
pub fn parse(text: &str) -> Result<Filter> {
    Filter::parse(text)
}

impl Filter {
    /// See [`parse`].
    pub fn parse(text: &str) -> Result<Filter> {
        let length = text.chars().count();
        if length > MAX_QUERY_CHARS {
            return Err(FilterError::TooLong {
                length,
                max: MAX_QUERY_CHARS,
            });
        }
        let expr = parser::parse_query(text)?;
        let program = Program::compile(expr.as_ref(), text)?;
        Ok(Filter {
            text: text.to_owned(),
            expr,
            program,
        })
    }

    /// A filter of one node of a parsed query's tree ([`Filter::expr`]) and that query's text
    /// (which its spans index into). Lets a translator to another engine hand the parts it does
    /// not translate to this evaluator, so both agree exactly.
    pub fn from_expr(expr: &Expr, text: &str) -> Result<Filter> {
        let program = Program::compile(Some(expr), text)?;
        Ok(Filter {
            text: text.to_owned(),
            expr: Some(expr.clone()),
            program,
        })
    }

    /// Whether `entry` — a LogEntry as JSON, e.g. `serde_json::to_value(&log_entry)` — is
    /// selected by the query.
    pub fn matches(&self, entry: &serde_json::Value) -> bool {
        self.program.matches(entry)
    }

    /// The syntax tree, for translators; `None` for the empty query.
    pub fn expr(&self) -> Option<&Expr> {
        self.expr.as_ref()
    }

    /// The query text as given (spans in the tree index into it).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the query is empty and so selects everything.
    pub fn is_match_all(&self) -> bool {
        self.expr.is_none()
    }
}

impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Filter> {
        Filter::parse(s)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Filter>();
    }

    #[test]
    fn empty_queries_match_everything() {
        for text in ["", "   ", "-- only a comment\n  -- and another"] {
            let f = parse(text).unwrap();
            assert!(f.is_match_all());
            assert!(f.matches(&serde_json::json!({})));
        }
    }

    #[test]
    fn the_length_limit_counts_characters() {
        let ok = format!("\"{}\"", "é".repeat(MAX_QUERY_CHARS - 2));
        assert!(parse(&ok).is_ok());
        let long = format!("\"{}\"", "é".repeat(MAX_QUERY_CHARS - 1));
        assert!(matches!(
            parse(&long),
            Err(FilterError::TooLong { length: 20_001, .. })
        ));
    }

    fn selects(query: &str, entry: &serde_json::Value) -> bool {
        parse(query)
            .unwrap_or_else(|e| panic!("{query}: {e}"))
            .matches(entry)
    }

    #[test]
    fn absent_envelope_fields_compare_as_their_defaults() {
        let entry = serde_json::json!({"logName": "projects/p/logs/x", "jsonPayload": {}});
        for (query, want) in [
            ("severity = DEFAULT", true),
            ("severity < DEBUG", true),
            ("severity:*", false),
            ("insertId = \"\"", true),
            ("insertId != x", true),
            ("insertId:*", false),
            ("timestamp < \"1970-01-01T00:00:01Z\"", true),
            ("timestamp = \"1970-01-01\"", true),
            ("resource.type = \"\"", true),
            // resource.labels is a map: its keys are missing, not defaulted.
            ("resource.labels.cluster_name = \"\"", false),
            ("resource.labels.cluster_name != x", false),
            ("jsonPayload.disposition != x", false),
            ("NOT jsonPayload.disposition = x", true),
            ("jsonPayload.count = 0", false),
            ("sample(insertId, 1)", true),
            ("sample(jsonPayload.node_name, 1)", false),
            ("ip_in_net(insertId, \"0.0.0.0/0\")", false),
            ("SEARCH(insertId, \"x\")", false),
        ] {
            assert_eq!(selects(query, &entry), want, "{query}");
        }
    }

    #[test]
    fn json_null_is_present_and_equals_null_value_only() {
        let entry = serde_json::json!({"jsonPayload": {"src": {"pod_name": null}, "count": 2}});
        for (query, want) in [
            ("jsonPayload.src.pod_name = NULL_VALUE", true),
            ("jsonPayload.src.pod_name : NULL_VALUE", true),
            ("jsonPayload.src.pod_name != NULL_VALUE", false),
            ("jsonPayload.count != NULL_VALUE", true),
            ("jsonPayload.src.pod_name:*", true),
            ("jsonPayload.src.pod_name = \"\"", false),
            ("jsonPayload.src.pod_name != x", false),
            ("jsonPayload.src.pod_name < NULL_VALUE", false),
            ("NULL_VALUE", true),
            ("jsonPayload.dest.pod_name = NULL_VALUE", false),
        ] {
            assert_eq!(selects(query, &entry), want, "{query}");
        }
    }

    #[test]
    fn bool_duration_and_float_casts_compare_by_their_type() {
        let entry = serde_json::json!({"jsonPayload": {
            "src": {"pod_name": "3.2s", "namespace": "TRUE", "workload_name": "NaN"},
            "count": 3,
        }});
        for (query, want) in [
            ("cast(jsonPayload.src.pod_name, DURATION) > \"1s\"", true),
            (
                "cast(jsonPayload.src.pod_name, DURATION) = \"3200ms\"",
                true,
            ),
            ("cast(jsonPayload.src.pod_name, DURATION) < \"3.1s\"", false),
            ("cast(jsonPayload.src.pod_name, STRING) = \"3.2S\"", true),
            (
                "cast(cast(jsonPayload.src.pod_name, DURATION), STRING) = \"3.2s\"",
                true,
            ),
            ("cast(jsonPayload.src.namespace, BOOL) = true", true),
            ("cast(jsonPayload.src.namespace, BOOL) > false", true),
            ("cast(jsonPayload.src.namespace, BOOL) = False", false),
            ("cast(jsonPayload.count, BOOL) = true", true),
            ("cast(jsonPayload.src.workload_name, FLOAT64) = NaN", false),
            ("cast(jsonPayload.src.workload_name, FLOAT64) != NaN", true),
            ("cast(jsonPayload.src.workload_name, FLOAT64) > 0", false),
            ("cast(jsonPayload.count, FLOAT64) = \"3.0\"", true),
            ("cast(jsonPayload.count, FLOAT64) < Infinity", true),
            ("cast(jsonPayload.count, FLOAT64) > \"-Infinity\"", true),
            ("cast(jsonPayload.count, STRING) = \"3\"", true),
            ("cast(jsonPayload.count, TIMESTAMP) = \"1970-01-01\"", false),
        ] {
            assert_eq!(selects(query, &entry), want, "{query}");
        }
    }
}
