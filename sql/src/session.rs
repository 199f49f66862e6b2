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

/// Limits on queries. Every size a client controls is bounded before it is allocated: the SQL
/// text, the values scalar functions build ([`crate::bounded`]), the operators' memory (the
/// pool), the rows and bytes of a result; and the time and number of queries at once.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryLimits {
    /// Rows a SQL result may have; more is an error (the client should aggregate or LIMIT).
    pub max_rows: usize,
    /// Memory all running queries may hold (DataFusion's memory pool), bytes.
    pub max_memory_bytes: usize,
    /// Wall time of one query, planning and execution.
    pub timeout: Duration,
    /// Queries running at once; more wait briefly, then are refused (`429`).
    pub max_concurrent: usize,
    /// Bytes of SQL text (a longer statement is refused before it is parsed).
    pub max_sql_bytes: usize,
    /// Bytes one value built by a function may have (`repeat`, `lpad`, `range`, …); a call
    /// over a batch of rows may build sixteen times this.
    pub max_value_bytes: usize,
    /// Bytes (in memory) of a whole result.
    pub max_result_bytes: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_rows: 100_000,
            max_memory_bytes: 1 << 30,
            timeout: Duration::from_secs(30),
            max_concurrent: 4,
            max_sql_bytes: 256 << 10,
            max_value_bytes: 1 << 20,
            max_result_bytes: 64 << 20,
        }
    }
}

/// Query worker threads' stacks: planning recurses over expression trees, and DataFusion's own
/// stack growth (`recursive_protection`) covers most but not all of it. Only the pages used are
/// backed by memory.
const QUERY_STACK_BYTES: usize = 64 << 20;

/// How long a query waits for one of the `max_concurrent` slots before it is refused.
const QUEUE_WAIT: Duration = Duration::from_millis(500);

/// The threads queries run on, apart from the runtime that serves ingest: a heavy or hostile
/// query competes for cores but never occupies the threads that acknowledge batches.
struct QueryRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    permits: Arc<tokio::sync::Semaphore>,
    limits: QueryLimits,
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Dropping a runtime may not block inside another one; running queries are abandoned.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// How the message of a query that panicked starts (a bug, answered 500; the collector stays up).
pub const PANICKED: &str = "the query panicked: ";

impl QueryRuntime {
    fn new(limits: &QueryLimits) -> Result<QueryRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
            .thread_name("verdict-query")
            .thread_stack_size(QUERY_STACK_BYTES)
            .enable_all()
            .build()
            .map_err(|e| QueryError::Internal(format!("cannot start the query threads: {e}")))?;
        Ok(QueryRuntime {
            runtime: Some(runtime),
            permits: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent.max(1))),
            limits: limits.clone(),
        })
    }

    /// Runs `query` on the query threads within the time limit, holding one concurrency slot
    /// until it has really ended (an abandoned query keeps its slot until it stops).
    async fn run<T: Send + 'static>(
        &self,
        query: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let permit =
            match tokio::time::timeout(QUEUE_WAIT, Arc::clone(&self.permits).acquire_owned()).await
            {
                Ok(Ok(p)) => p,
                _ => {
                    return Err(QueryError::Busy {
                        limit: self.limits.max_concurrent,
                    });
                }
            };
        let runtime = self.runtime.as_ref().expect("present until dropped");
        let mut task = runtime.spawn(async move {
            let out = query.await;
            drop(permit);
            out
        });
        match tokio::time::timeout(self.limits.timeout, &mut task).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) if e.is_panic() => {
                let panic = e.into_panic();
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                Err(QueryError::Internal(format!("{PANICKED}{what}")))
            }
            Ok(Err(e)) => Err(QueryError::Internal(e.to_string())),
            Err(_) => {
                task.abort();
                Err(QueryError::Timeout {
                    seconds: self.limits.timeout.as_secs_f64(),
                })
            }
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

/// The query engine of a collector (or of a test or benchmark over fixed files). Cheap to
/// clone; queries run on its own threads ([`QueryRuntime`]).
#[derive(Clone)]
pub struct QueryEngine {
    engine: Arc<Engine>,
    runtime: Arc<QueryRuntime>,
}

/// The session and what it was built from; what a running query holds.
pub(crate) struct Engine {
    ctx: SessionContext,
    lake: Arc<dyn Lake>,
    limits: QueryLimits,
    counters: HashMap<&'static str, Arc<ScanCounters>>,
    views: Vec<String>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("lake", &self.engine.lake)
            .field("limits", &self.engine.limits)
            .field("views", &self.engine.views)
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
        // Functions that can build values far larger than their input are bounded first.
        crate::bounded::register(&ctx, limits.max_value_bytes, limits.max_value_bytes * 16);
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
        let runtime = Arc::new(QueryRuntime::new(&limits)?);
        Ok(QueryEngine {
            engine: Arc::new(Engine {
                ctx,
                lake,
                limits,
                counters,
                views: names,
            }),
            runtime,
        })
    }

    pub fn context(&self) -> &SessionContext {
        &self.engine.ctx
    }

    pub fn lake(&self) -> &Arc<dyn Lake> {
        &self.engine.lake
    }

    pub fn limits(&self) -> &QueryLimits {
        &self.engine.limits
    }

    /// The registered views, in load order.
    pub fn views(&self) -> &[String] {
        &self.engine.views
    }

    /// Scan counters of a lake table (files considered and pruned).
    pub fn scan_counters(&self, table: &str) -> Option<Arc<ScanCounters>> {
        self.engine.counters.get(table).cloned()
    }

    /// Runs one read-only statement: a query (`SELECT`, `WITH`, `VALUES`) or `EXPLAIN [ANALYZE]`
    /// of one, on the query threads, within the limits.
    pub async fn sql(&self, text: &str) -> Result<QueryOutput> {
        let limit = self.engine.limits.max_sql_bytes;
        if text.len() > limit {
            return Err(QueryError::TooLarge(format!(
                "the SQL text is {} bytes; at most {limit} (the server's query.max_sql_bytes)",
                text.len()
            )));
        }
        let engine = Arc::clone(&self.engine);
        let text = text.to_owned();
        self.runtime
            .run(async move { engine.sql(&text).await })
            .await
    }

    /// Runs `query` against the engine on the query threads, within the time limit.
    pub(crate) async fn run<T: Send + 'static, F>(
        &self,
        query: impl FnOnce(Arc<Engine>) -> F,
    ) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        self.runtime.run(query(Arc::clone(&self.engine))).await
    }
}

impl Engine {
    pub(crate) fn context(&self) -> &SessionContext {
        &self.ctx
    }

    async fn sql(&self, text: &str) -> Result<QueryOutput> {
        check_read_only(text)?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self.ctx.sql_with_options(text, options).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let stream = df.execute_stream().await?;
        let batches =
            collect_limited(stream, self.limits.max_rows, self.limits.max_result_bytes).await?;
        Ok(QueryOutput { schema, batches })
    }
}

/// Reads a stream into batches, failing once more than `max_rows` rows or `max_bytes` bytes
/// (in memory) arrive.
pub async fn collect_limited(
    mut stream: SendableRecordBatchStream,
    max_rows: usize,
    max_bytes: usize,
) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    let mut rows = 0usize;
    let mut bytes = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        if rows > max_rows {
            return Err(QueryError::TooManyRows { limit: max_rows });
        }
        bytes = bytes.saturating_add(batch.get_array_memory_size());
        if bytes > max_bytes {
            return Err(QueryError::TooLarge(format!(
                "the result is more than {max_bytes} bytes (the server's query.max_result_bytes); select fewer columns or rows"
            )));
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
