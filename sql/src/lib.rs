//! Queries over Verdict's Parquet lake: the Logging query language translated to DataFusion,
//! a SQL session over committed files plus rows not yet flushed, the SQL views of `sql/views/`, and
//! the HTTP query API the collector serves.
//!
//! Modules:
//! - [`translate`]: a [`verdict_filter::Filter`] → one DataFusion predicate (pushdown-friendly);
//!   [`fallback`]: the UDF that runs the JSON evaluator on nodes with no native translation.
//!   [`case_fold`]: the case-insensitive `=` without lower-casing every row.
//! - [`lake`]: the [`Lake`] trait (what storage exposes: consistent snapshots) and
//!   [`LakeTable`], the `TableProvider` that prunes files by time and pushes predicates down.
//! - [`date_trunc`]: `date_trunc` with an arithmetic fast path for UTC timestamps.
//! - [`encoded_group`]: partial aggregation grouping each batch by its values' encodings
//!   (string views of dictionary pages, dictionary keys) before their values.
//! - [`session`]: [`QueryEngine`], the DataFusion session with tables, views and limits, run on
//!   threads of its own.
//! - [`bounded`]: functions that could build huge values (`repeat`, `range`, …), bounded
//!   before they allocate.
//! - [`entries`]: `entries:list` (filter queries returning LogEntries, keyset pages).
//! - [`views`]: the views of `sql/views/*.sql`, built in.
//! - [`api`]: the axum routes (`/v2/entries:list`, `/v1/sql`, `/v1/tail`) and authentication.
//! - [`error`]: [`QueryError`] and its HTTP mapping.

pub mod api;
pub mod bounded;
pub mod case_fold;
pub mod date_trunc;
pub mod encoded_group;
pub mod entries;
pub mod error;
pub mod fallback;
pub mod lake;
pub mod session;
pub mod translate;
pub mod views;

pub use api::{ApiSettings, router};
/// The DataFusion this crate builds on (for callers that read its results).
pub use datafusion;
pub use entries::{ListEntriesRequest, ListEntriesResponse};
pub use error::{QueryError, Result};
pub use lake::{FixedLake, Lake, LakeFile, LakeSnapshot, LakeTable, LakeTableDef};
pub use session::{PANICKED, QueryEngine, QueryLimits, QueryOutput};
pub use translate::{Translation, translate};
