//! The Cloud Logging query language over Verdict's LogEntries: the filter behind live tail,
//! sinks and queries. [`parse`] reads a query, checks every field against the LogEntry schema
//! and compiles it; [`Filter::matches`] evaluates it over LogEntry JSON; [`Filter::expr`] hands
//! the syntax tree to other evaluators (the DataFusion translator) so that all agree.
//!
//! Modules:
//! - [`ast`]: the syntax tree, the contract for translators.
//! - [`catalogue`]: every field a query may name, its type, absence rule and flat column.
//! - [`conformance`]: the shared table of fixture entries and queries every evaluator must pass.
//! - [`error`]: [`FilterError`] with 1-based line/column positions.
//! - [`search`]: `SEARCH` tokenization, reusable by other evaluators.
//! - `parser`: text → tree; `evaluator`: tree → compiled program → matches;
//!   `conversion`: value conversions and `cast`; `case_fold`: case-insensitive comparison;
//!   `sample`: the [`sample_hash`] behind `sample()`; `filter`: [`Filter`].
//!
//! README.md lists what is supported and every choice made where the reference is ambiguous.
//!
//! ```
//! let filter = verdict_filter::parse(
//!     r#"jsonPayload.disposition = "deny" -- blocked connections
//!        jsonPayload.dest.pod_namespace = ("shop" OR "prod")
//!        ip_in_net(jsonPayload.connection.src_ip, "10.0.0.0/8")"#,
//! )?;
//! let entry = serde_json::json!({"jsonPayload": {
//!     "disposition": "deny",
//!     "connection": {"src_ip": "10.84.1.7"},
//!     "dest": {"pod_namespace": "shop"},
//! }});
//! assert!(filter.matches(&entry));
//!
//! let error = verdict_filter::parse("jsonPayload.dest.pod_nmae = x").unwrap_err();
//! assert_eq!(
//!     error.to_string(),
//!     r#"line 1, column 1: undefined field "jsonPayload.dest.pod_nmae"; did you mean "jsonPayload.dest.pod_name"?"#
//! );
//! # Ok::<(), verdict_filter::FilterError>(())
//! ```

pub mod ast;
pub mod case_fold;
pub mod catalogue;
pub mod conformance;
mod conversion;
pub mod error;
mod evaluator;
mod filter;
mod parser;
mod sample;
pub mod search;

pub use error::{FilterError, Position, Result};
pub use filter::{Filter, MAX_QUERY_CHARS, parse};
pub use sample::sample_hash;
