//! [`QueryEngine`]: one DataFusion session over a [`Lake`], with the lake's tables and the SQL
//! views registered, running read-only SQL and Logging-filter queries within limits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use futures::StreamExt;

use crate::encoded_group::EncodedKeyAggregation;
use crate::error::{QueryError, Result};
use crate::lake::{LAKE_URL, Lake, LakeTable, ScanCounters};
use crate::views;

/// Limits on one query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryLimits {
    /// Rows a SQL result may have; more is an error (the client should aggregate or LIMIT).
    pub max_rows: usize,
    /// Memory all running queries may hold (DataFusion's memory pool), bytes.
    pub max_memory_bytes: usize,
    /// Wall time of one query, planning and execution.
    pub timeout: Duration,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_rows: 100_000,
            max_memory_bytes: 1 << 30,
            timeout: Duration::from_secs(30),
        }
    }
}

/// A finished query: its schema and rows.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryOutput {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// The query engine of a collector (or of a test or benchmark over fixed files).
pub struct QueryEngine {
    ctx: SessionContext,
    lake: Arc<dyn Lake>,
    limits: QueryLimits,
    counters: HashMap<&'static str, Arc<ScanCounters>>,
    views: Vec<String>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("lake", &self.lake)
            .field("limits", &self.limits)
            .field("views", &self.views)
            .finish_non_exhaustive()
    }
}

impl QueryEngine {
    /// Registers the lake's tables and the views (the built-in ones of `sql/views/*.sql`, then any
    /// `extra_views` `(name, SELECT text)`, which may replace a built-in one).
    pub async fn new(
        lake: Arc<dyn Lake>,
        limits: QueryLimits,
        extra_views: &[(String, String)],
    ) -> Result<QueryEngine> {
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(
                std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            );
        {
            let parquet = &mut config.options_mut().execution.parquet;
            // Decode predicate columns first and skip the rest of non-matching rows.
            parquet.pushdown_filters = true;
            parquet.reorder_filters = true;
            // Keep the stored types (dictionaries, Utf8) rather than view types, so scans of
            // files and of unflushed batches have one schema.
            parquet.schema_force_view_types = false;
        }
        // Planning errors (unknown column, type mismatch) then carry the position they refer to.
        config.options_mut().sql_parser.collect_spans = true;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.max_memory_bytes, 1.0)
            .build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(EncodedKeyAggregation))
            .build();
        let ctx = SessionContext::new_with_state(state);
        // Replaces the built-in (same name): hourly and daily rollups over UTC timestamps
        // truncate with arithmetic instead of a time-zone conversion per row.
        ctx.register_udf(crate::date_trunc::UtcDateTrunc::udf());
        // The Logging language's `=` on text, for SQL too.
        ctx.register_udf(crate::case_fold::EqualsIgnoringCase::udf());
        let url = url::Url::parse(LAKE_URL).expect("constant URL");
        ctx.runtime_env()
            .register_object_store(&url, lake.object_store());
        let mut counters = HashMap::new();
        for def in lake.tables() {
            let name = def.name;
            let table = LakeTable::new(Arc::clone(&lake), def);
            counters.insert(name, table.counters());
            ctx.register_table(name, Arc::new(table))?;
        }
        let mut all_views: Vec<(String, String)> = views::BUILT_IN
            .iter()
            .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
            .collect();
        for (name, text) in extra_views {
            all_views.retain(|(n, _)| n != name);
            all_views.push((name.clone(), text.clone()));
        }
        let mut names = Vec::new();
        for (name, text) in &all_views {
            views::check_name(name)?;
            let body = text.trim().trim_end_matches(';');
            ctx.sql(&format!("CREATE OR REPLACE VIEW {name} AS {body}"))
                .await
                .map_err(|e| {
                    QueryError::InvalidRequest(format!("view {name} (sql/views/{name}.sql): {e}"))
                })?;
            names.push(name.clone());
        }
        Ok(QueryEngine {
            ctx,
            lake,
            limits,
            counters,
            views: names,
        })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn lake(&self) -> &Arc<dyn Lake> {
        &self.lake
    }

    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// The registered views, in load order.
    pub fn views(&self) -> &[String] {
        &self.views
    }

    /// Scan counters of a lake table (files considered and pruned).
    pub fn scan_counters(&self, table: &str) -> Option<Arc<ScanCounters>> {
        self.counters.get(table).cloned()
    }

    /// Runs one read-only statement: a query (`SELECT`, `WITH`, `VALUES`) or `EXPLAIN [ANALYZE]`
    /// of one, within the row, memory and time limits.
    pub async fn sql(&self, text: &str) -> Result<QueryOutput> {
        check_read_only(text)?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let run = async {
            let df = self.ctx.sql_with_options(text, options).await?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let stream = df.execute_stream().await?;
            let batches = collect_limited(stream, self.limits.max_rows).await?;
            Ok(QueryOutput { schema, batches })
        };
        self.with_timeout(run).await
    }

    /// Runs `fut` within the query timeout.
    pub async fn with_timeout<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.limits.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(QueryError::Timeout {
                seconds: self.limits.timeout.as_secs_f64(),
            }),
        }
    }
}

/// Reads a stream into batches, failing once more than `max_rows` rows arrive.
pub async fn collect_limited(
    mut stream: SendableRecordBatchStream,
    max_rows: usize,
) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    let mut rows = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        if rows > max_rows {
            return Err(QueryError::TooManyRows { limit: max_rows });
        }
        if batch.num_rows() > 0 {
            batches.push(batch);
        }
    }
    Ok(batches)
}

/// Accepts exactly one statement that only reads.
pub fn check_read_only(text: &str) -> Result<()> {
    let statements =
        DFParser::parse_sql_with_dialect(text, &GenericDialect {}).map_err(|e| match e {
            datafusion::error::DataFusionError::SQL(p, _) => QueryError::SqlSyntax(p.to_string()),
            other => QueryError::SqlSyntax(other.to_string()),
        })?;
    match statements.len() {
        0 => Err(QueryError::InvalidRequest("the SQL text is empty".into())),
        1 => check_statement(&statements[0]),
        n => Err(QueryError::MultipleStatements(n)),
    }
}

fn check_statement(s: &DfStatement) -> Result<()> {
    match s {
        DfStatement::Statement(st) => match st.as_ref() {
            SqlStatement::Query(_) => Ok(()),
            SqlStatement::Explain { statement, .. } => match statement.as_ref() {
                SqlStatement::Query(_) => Ok(()),
                other => Err(not_allowed(&other.to_string())),
            },
            other => Err(not_allowed(&other.to_string())),
        },
        DfStatement::Explain(e) => check_statement(&e.statement),
        other => Err(not_allowed(&other.to_string())),
    }
}

fn not_allowed(statement: &str) -> QueryError {
    let kind: Vec<&str> = statement.split_whitespace().take(2).collect();
    QueryError::StatementNotAllowed {
        kind: kind.join(" ").to_uppercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reading_statements_pass() {
        for ok in [
            "SELECT 1",
            "with a as (select 1) select * from a",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT 1",
            "VALUES (1)",
        ] {
            check_read_only(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, kind) in [
            ("DROP TABLE policy_action", "DROP TABLE"),
            ("INSERT INTO t VALUES (1)", "INSERT INTO"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            (
                "SET datafusion.execution.batch_size = 1",
                "SET DATAFUSION.EXECUTION.BATCH_SIZE",
            ),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY (SELECT"),
            ("EXPLAIN DROP TABLE x", "DROP TABLE"),
        ] {
            match check_read_only(bad) {
                Err(QueryError::StatementNotAllowed { kind: k }) => assert_eq!(k, kind, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            check_read_only("SELECT 1; SELECT 2"),
            Err(QueryError::MultipleStatements(2))
        ));
        let e = check_read_only("SELECT a FROM t WHERE x = = 1").unwrap_err();
        assert!(e.position().is_some(), "{e}");
    }
}
