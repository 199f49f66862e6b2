//! The collector's side of the query API: its lake as a [`verdict_query::Lake`] (committed files
//! from the commit log plus unflushed rows, one consistent snapshot per scan; new flow rows for
//! live tail) and the [`verdict_query::QueryEngine`] built from `[query]`.

use std::sync::Arc;

use arrow_array::RecordBatch;
use verdict_query::lake::LakeError;
use verdict_query::{Lake, LakeFile, LakeSnapshot, LakeTableDef, QueryEngine, QueryLimits};

use crate::collector::Inner;
use crate::error::{Error, Result};
use crate::table::Table;

/// The lake of a running collector.
#[derive(Debug)]
pub struct CollectorLake {
    inner: Arc<Inner>,
}

impl CollectorLake {
    pub fn new(inner: Arc<Inner>) -> CollectorLake {
        CollectorLake { inner }
    }
}

fn time_column(table: Table) -> &'static str {
    match table {
        Table::Rollups => crate::rollup::col::MINUTE,
        Table::Flows | Table::Loss => verdict_schema::flat_schema::col::TIMESTAMP,
    }
}

impl Lake for CollectorLake {
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
        let snapshot = crate::collector::snapshot_of(&self.inner, table).map_err(Box::new)?;
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
                    path: self.inner.storage.path(&f.path),
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
        self.inner.storage.object_store()
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<RecordBatch>> {
        Some(self.inner.shared.applied_flows.subscribe())
    }
}

/// Builds the query engine of `[query]` over the collector's lake.
pub async fn engine(inner: &Arc<Inner>) -> Result<QueryEngine> {
    let q = &inner.config.query;
    let extra = match &q.views_dir {
        Some(dir) => verdict_query::views::read_dir(dir)
            .map_err(|e| Error::setting_caused("query.views_dir", "cannot read the views", e))?,
        None => Vec::new(),
    };
    let limits = QueryLimits {
        max_rows: q.max_rows,
        max_memory_bytes: usize::try_from(q.max_memory.0).unwrap_or(usize::MAX),
        timeout: q.timeout,
    };
    QueryEngine::new(
        Arc::new(CollectorLake::new(Arc::clone(inner))),
        limits,
        &extra,
    )
    .await
    .map_err(|e| Error::setting_caused("query", "cannot start the query engine", e))
}

/// The API settings of `[query]`.
pub fn api_settings(inner: &Inner) -> verdict_query::ApiSettings {
    verdict_query::ApiSettings {
        auth_tokens: inner
            .config
            .query
            .auth_tokens
            .iter()
            .map(|t| t.expose().to_owned())
            .collect(),
    }
}
