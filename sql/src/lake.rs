//! The lake as DataFusion sees it: [`Lake`] is what a storage owner (the collector) exposes —
//! per table, a consistent snapshot of committed Parquet files and rows not yet flushed — and
//! [`LakeTable`] is the `TableProvider` over it.
//!
//! Every scan takes a fresh snapshot, so queries (and views, whose plans hold the provider)
//! see rows within the collector's apply latency, and only committed files: the commit log, not
//! a directory listing, says what exists. A snapshot holds each row exactly once (in a file or
//! in the unflushed rows), so the union of the two scans never double counts.
//!
//! Pruning, from coarse to fine: files whose `[min_time, max_time]` (from the commit log) miss
//! the query's bounds on the table's time column are not opened (the hive partitions are by
//! that time); then the pushed-down predicate prunes row groups by statistics and bloom
//! filters and pages by the page index, and is applied during the decode (late
//! materialization).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::config::TableParquetOptions;
use datafusion::datasource::TableProvider;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use object_store::ObjectStore;
use object_store::path::Path;

/// The URL the lake's object store is registered under in each session.
pub const LAKE_URL: &str = "verdict-lake://lake/";

/// One committed Parquet file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeFile {
    /// The object's path in [`Lake::object_store`].
    pub path: Path,
    pub size: u64,
    /// Smallest and largest value of the table's time column, nanoseconds since the epoch.
    pub min_time: i64,
    pub max_time: i64,
}

/// What a reader sees of one table at one instant: each row in exactly one of the two.
#[derive(Debug, Clone, Default)]
pub struct LakeSnapshot {
    pub files: Vec<LakeFile>,
    /// Rows durable but not yet in committed files, in the table's schema.
    pub unflushed: Vec<RecordBatch>,
}

/// A table of the lake.
#[derive(Debug, Clone)]
pub struct LakeTableDef {
    /// SQL name: `policy_action`, `policy_action_loss`, `policy_action_1m`.
    pub name: &'static str,
    pub schema: SchemaRef,
    /// The event-time column files are partitioned and bounded by.
    pub time_column: &'static str,
}

/// The error a [`Lake`] reports.
pub type LakeError = Box<dyn std::error::Error + Send + Sync>;

/// Storage the query engine reads; implemented by the collector over its commit log and
/// buffers, and by tests over fixed files.
pub trait Lake: fmt::Debug + Send + Sync + 'static {
    /// The tables, in the order they are registered.
    fn tables(&self) -> Vec<LakeTableDef>;
    /// A consistent snapshot of `table` (a name from [`Lake::tables`]).
    fn snapshot(&self, table: &str) -> Result<LakeSnapshot, LakeError>;
    /// The store holding the files.
    fn object_store(&self) -> Arc<dyn ObjectStore>;
    /// New `policy_action` rows as they become durable, for live tail; `None` if this lake has
    /// no live rows.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<RecordBatch>> {
        None
    }
}

/// Counters of one table's scans (tests and EXPLAIN-free checks of pruning).
#[derive(Debug, Default)]
pub struct ScanCounters {
    pub scans: AtomicU64,
    /// Committed files considered.
    pub files_total: AtomicU64,
    /// Files skipped because their time range misses the query's.
    pub files_pruned: AtomicU64,
}

/// A [`Lake`] table as a DataFusion table.
pub struct LakeTable {
    lake: Arc<dyn Lake>,
    def: LakeTableDef,
    /// The schema queries see: `def.schema` with dictionary strings as string views.
    schema: SchemaRef,
    counters: Arc<ScanCounters>,
}

/// The schema a stored schema is queried in: top-level `Dictionary(_, Utf8)` columns and the
/// strings inside lists and structs (`policies`' names, namespaces and kinds, dictionary pages
/// in Parquet too) become `Utf8View`. The Parquet reader decodes dictionary pages straight into
/// views (no cast, no copy of the strings), every row of one dictionary value carrying the same
/// view, which DataFusion groups and compares column-wise and [`crate::encoded_group`] groups by
/// the view itself.
pub fn query_schema(stored: &Schema) -> SchemaRef {
    let fields: Vec<Field> = stored
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, v) if **v == DataType::Utf8 => {
                f.as_ref().clone().with_data_type(DataType::Utf8View)
            }
            DataType::List(_) | DataType::Struct(_) => f
                .as_ref()
                .clone()
                .with_data_type(nested_views(f.data_type())),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, stored.metadata().clone()))
}

/// `t` with the `Utf8` strings anywhere inside it as `Utf8View`.
fn nested_views(t: &DataType) -> DataType {
    let field = |f: &Field| f.clone().with_data_type(nested_views(f.data_type()));
    match t {
        DataType::Utf8 => DataType::Utf8View,
        DataType::List(item) => DataType::List(Arc::new(field(item))),
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| Arc::new(field(f))).collect())
        }
        other => other.clone(),
    }
}

impl fmt::Debug for LakeTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LakeTable")
            .field("name", &self.def.name)
            .finish_non_exhaustive()
    }
}

impl LakeTable {
    pub fn new(lake: Arc<dyn Lake>, def: LakeTableDef) -> LakeTable {
        LakeTable {
            lake,
            schema: query_schema(&def.schema),
            def,
            counters: Arc::default(),
        }
    }

    pub fn counters(&self) -> Arc<ScanCounters> {
        Arc::clone(&self.counters)
    }
}

#[async_trait]
impl TableProvider for LakeTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Used for pruning only; DataFusion still filters the rows above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let snapshot = self
            .lake
            .snapshot(self.def.name)
            .map_err(DataFusionError::External)?;
        let bounds = TimeBounds::of_filters(self.def.time_column, filters);
        let total = snapshot.files.len();
        let files: Vec<LakeFile> = snapshot
            .files
            .into_iter()
            .filter(|f| bounds.overlaps(f.min_time, f.max_time))
            .collect();
        self.counters.scans.fetch_add(1, Ordering::Relaxed);
        self.counters
            .files_total
            .fetch_add(total as u64, Ordering::Relaxed);
        self.counters
            .files_pruned
            .fetch_add((total - files.len()) as u64, Ordering::Relaxed);
        // A limit only holds without filters (Inexact ones are re-applied above the scan).
        let limit = if filters.is_empty() { limit } else { None };

        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !files.is_empty() {
            let options = TableParquetOptions {
                global: state.config_options().execution.parquet.clone(),
                ..TableParquetOptions::default()
            };
            let mut source =
                ParquetSource::new(Arc::clone(&self.schema)).with_table_parquet_options(options);
            if let Some(predicate) = conjunction(filters.iter().cloned()) {
                let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
                let physical = state.create_physical_expr(predicate, &df_schema)?;
                source = source.with_predicate(physical);
            }
            let partitions = state.config().target_partitions().max(1);
            let config =
                FileScanConfigBuilder::new(ObjectStoreUrl::parse(LAKE_URL)?, Arc::new(source))
                    .with_file_groups(file_groups(files, partitions, &self.schema))
                    .with_projection_indices(projection.cloned())?
                    .with_limit(limit)
                    .build();
            inputs.push(DataSourceExec::from_data_source(config));
        }
        if !snapshot.unflushed.is_empty() || inputs.is_empty() {
            let unflushed = snapshot
                .unflushed
                .iter()
                .map(|b| batch_in_types(b.columns().to_vec(), &self.schema))
                .collect::<Result<Vec<_>, _>>()?;
            let memory = MemorySourceConfig::try_new(
                &[unflushed],
                Arc::clone(&self.schema),
                projection.cloned(),
            )?
            .with_limit(limit);
            inputs.push(DataSourceExec::from_data_source(memory));
        }
        UnionExec::try_new(inputs)
    }
}

/// A batch of `schema` from `columns` holding its fields' values, in order, possibly in other
/// encodings of the same values (a dictionary for a string, a view for a dictionary): those
/// are cast to the field's type.
pub(crate) fn batch_in_types(
    columns: Vec<ArrayRef>,
    schema: &SchemaRef,
) -> Result<RecordBatch, ArrowError> {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                cast(&c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// Spreads files over `n` groups (scanned in parallel), largest first onto the lightest group.
/// Each file is read in `schema` (the files' columns in their query types), which the Parquet
/// reader then decodes into directly.
fn file_groups(mut files: Vec<LakeFile>, n: usize, schema: &SchemaRef) -> Vec<FileGroup> {
    files.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); n.min(files.len())];
    for f in files {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(bytes, _)| *bytes)
            .expect("at least one group");
        lightest.0 += f.size;
        lightest.1.push(
            PartitionedFile::new(f.path.to_string(), f.size).with_arrow_schema(Arc::clone(schema)),
        );
    }
    groups
        .into_iter()
        .map(|(_, files)| FileGroup::new(files))
        .collect()
}

/// Inclusive bounds on the time column implied by the conjunction of a scan's filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    pub min: i64,
    pub max: i64,
}

impl TimeBounds {
    pub const ALL: TimeBounds = TimeBounds {
        min: i64::MIN,
        max: i64::MAX,
    };

    /// Reads `column OP literal` (either side) in each filter and in their top-level `AND`s.
    pub fn of_filters(column: &str, filters: &[Expr]) -> TimeBounds {
        let mut b = TimeBounds::ALL;
        for f in filters {
            b.narrow(column, f);
        }
        b
    }

    fn narrow(&mut self, column: &str, e: &Expr) {
        let Expr::BinaryExpr(be) = e else {
            return;
        };
        if be.op == Operator::And {
            self.narrow(column, &be.left);
            self.narrow(column, &be.right);
            return;
        }
        let (op, value) = match (&*be.left, &*be.right) {
            (Expr::Column(c), r) if c.name == column => (be.op, nanos_of(r)),
            (l, Expr::Column(c)) if c.name == column => match be.op.swap() {
                Some(op) => (op, nanos_of(l)),
                None => return,
            },
            _ => return,
        };
        let Some(v) = value else { return };
        match op {
            Operator::Eq => {
                self.min = self.min.max(v);
                self.max = self.max.min(v);
            }
            Operator::Gt => self.min = self.min.max(v.saturating_add(1)),
            Operator::GtEq => self.min = self.min.max(v),
            Operator::Lt => self.max = self.max.min(v.saturating_sub(1)),
            Operator::LtEq => self.max = self.max.min(v),
            _ => {}
        }
    }

    pub fn overlaps(&self, min: i64, max: i64) -> bool {
        min <= self.max && max >= self.min
    }
}

/// A timestamp literal (or a cast of one) in nanoseconds.
fn nanos_of(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::TimestampNanosecond(Some(n), _) => Some(*n),
            ScalarValue::TimestampMicrosecond(Some(n), _) => n.checked_mul(1_000),
            ScalarValue::TimestampMillisecond(Some(n), _) => n.checked_mul(1_000_000),
            ScalarValue::TimestampSecond(Some(n), _) => n.checked_mul(1_000_000_000),
            _ => None,
        },
        Expr::Cast(c) => nanos_of(&c.expr),
        Expr::TryCast(c) => nanos_of(&c.expr),
        _ => None,
    }
}

/// A [`Lake`] of fixed files and batches (tests, benchmarks, offline use).
#[derive(Debug)]
pub struct FixedLake {
    pub store: Arc<dyn ObjectStore>,
    pub tables: Vec<LakeTableDef>,
    /// Per table name.
    pub snapshots: std::collections::HashMap<String, LakeSnapshot>,
}

impl Lake for FixedLake {
    fn tables(&self) -> Vec<LakeTableDef> {
        self.tables.clone()
    }

    fn snapshot(&self, table: &str) -> Result<LakeSnapshot, LakeError> {
        Ok(self.snapshots.get(table).cloned().unwrap_or_default())
    }

    fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::timestamp_literal;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn bounds_come_from_conjunctions_on_the_time_column() {
        let f = col("timestamp")
            .gt_eq(timestamp_literal(100))
            .and(col("x").eq(lit(1)))
            .and(timestamp_literal(200).gt(col("timestamp")));
        let b = TimeBounds::of_filters("timestamp", &[f]);
        assert_eq!(b, TimeBounds { min: 100, max: 199 });
        assert!(b.overlaps(150, 400) && !b.overlaps(200, 300) && !b.overlaps(0, 99));
        let or = col("timestamp")
            .gt(timestamp_literal(5))
            .or(col("timestamp").lt(timestamp_literal(1)));
        assert_eq!(TimeBounds::of_filters("timestamp", &[or]), TimeBounds::ALL);
    }
}
