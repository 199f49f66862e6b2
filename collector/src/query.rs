//! The collector's side of the query API: its [`Lake`] as a [`verdict_query::Lake`] (committed
//! files plus unflushed rows, one consistent snapshot per scan; new flow rows for live tail) and
//! the [`verdict_query::QueryEngine`] built from `[query]`.

use std::sync::Arc;

use arrow_array::RecordBatch;
use verdict_query::lake::LakeError;
use verdict_query::{LakeFile, LakeSnapshot, LakeTableDef, QueryEngine, QueryLimits};

use crate::config::sections::QueryConfig;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::table::Table;

/// The lake of a running collector, as the query engine sees it.
#[derive(Debug)]
pub struct CollectorLake {
    lake: Arc<Lake>,
}

impl CollectorLake {
    pub fn new(lake: Arc<Lake>) -> CollectorLake {
        CollectorLake { lake }
    }
}

fn time_column(table: Table) -> &'static str {
    match table {
        Table::Rollups => crate::rollup::col::MINUTE,
        Table::Flows | Table::Loss => verdict_schema::flat_schema::col::TIMESTAMP,
    }
}

impl verdict_query::Lake for CollectorLake {
    fn tables(&self) -> Vec<LakeTableDef> {
        Table::ALL
            .into_iter()
            .map(|t| LakeTableDef {
                name: t.dir(),
                schema: t.schema(),
                time_column: time_column(t),
            })
            .collect()
    }

    fn snapshot(&self, name: &str) -> Result<LakeSnapshot, LakeError> {
        let table = Table::ALL
            .into_iter()
            .find(|t| t.dir() == name)
            .ok_or_else(|| format!("no table {name}"))?;
        let snapshot = self.lake.snapshot(table).map_err(Box::new)?;
        let files = snapshot
            .files
            .into_iter()
            .map(|f| {
                // Entries written before time ranges were recorded carry (0, 0): fall back to
                // the partition's hour, which bounds every row of the file.
                let (min_time, max_time) = if f.min_time == 0 && f.max_time == 0 {
                    (f.hour.start_nanos(), f.hour.end_nanos() - 1)
                } else {
                    (f.min_time, f.max_time)
                };
                LakeFile {
                    path: self.lake.storage().path(&f.path),
                    size: f.bytes,
                    min_time,
                    max_time,
                }
            })
            .collect();
        Ok(LakeSnapshot {
            files,
            unflushed: snapshot.unflushed,
        })
    }

    fn object_store(&self) -> Arc<dyn object_store::ObjectStore> {
        self.lake.storage().object_store()
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<RecordBatch>> {
        Some(self.lake.subscribe_applied_flows())
    }
}

/// Builds the query engine of `[query]` over the collector's lake.
pub async fn engine(lake: Arc<Lake>, q: &QueryConfig) -> Result<QueryEngine> {
    let extra = match &q.views_dir {
        Some(dir) => verdict_query::views::read_dir(dir)
            .map_err(|e| Error::setting_caused("query.views_dir", "cannot read the views", e))?,
        None => Vec::new(),
    };
    let bytes = |b: crate::config::values::ByteSize| usize::try_from(b.0).unwrap_or(usize::MAX);
    let limits = QueryLimits {
        max_rows: q.max_rows,
        max_memory_bytes: bytes(q.max_memory),
        timeout: q.timeout,
        max_concurrent: q.max_concurrent,
        max_sql_bytes: bytes(q.max_sql_bytes),
        max_value_bytes: bytes(q.max_value_bytes),
        max_result_bytes: bytes(q.max_result_bytes),
    };
    QueryEngine::new(Arc::new(CollectorLake::new(lake)), limits, &extra)
        .await
        .map_err(|e| Error::setting_caused("query", "cannot start the query engine", e))
}

/// The API settings of `[query]`.
pub fn api_settings(q: &QueryConfig) -> verdict_query::ApiSettings {
    verdict_query::ApiSettings { auth: http_auth(q) }
}

/// Who may use the HTTP port (the query API, `/metrics`, `/sinks`): `query.auth_tokens`, or
/// without tokens clients directly on loopback.
pub fn http_auth(q: &QueryConfig) -> verdict_service::http::HttpAuth {
    verdict_service::http::HttpAuth::new(q.auth_tokens.clone())
}
