//! Partial aggregation keyed by how the group values are *encoded* in each batch.
//!
//! The lake's low-cardinality strings (namespaces, workloads, dispositions) are dictionary
//! pages in Parquet and reach the query as string views: every row holding the same dictionary
//! value carries the same 16-byte view (same inline bytes, or same buffer and offset). So within
//! one batch, rows with equal views hold equal strings, and grouping a batch can hash and compare
//! those fixed-size words instead of the strings. DataFusion's partial aggregation hashes and
//! compares every row's strings; for `GROUP BY src_namespace, src_workload_name` over 100 M rows
//! that is most of the query's time.
//!
//! [`EncodedKeyAggregateExec`] replaces a partial `AggregateExec` (rule:
//! [`EncodedKeyAggregation`]) when every group expression has such an identity word (string and
//! binary views, dictionary keys, integers, dates, timestamps, booleans) and every aggregate is
//! `count`, an integer/float `sum`, or `min`/`max` of an integer (to 64 bits signed), date or
//! timestamp. Per batch it
//!
//! 1. maps each row's identity words to a batch-local group (a small hash table over words),
//! 2. interns one representative row per local group into DataFusion's own `GroupValues`
//!    (the same hashing of real values the built-in operator uses, but a few hundred rows per
//!    batch instead of thousands), and
//! 3. folds the batch's rows per local group (count, sum, min, max), then those into the
//!    groups' states.
//!
//! Equal words imply equal values, never the converse: values encoded differently (plain pages,
//! a second dictionary) only make more local groups, which step 2 merges. Its output is exactly
//! the partial aggregate's (group columns, then each aggregate's state), so the final aggregate
//! above is unchanged. Like the built-in operator it passes rows through as states when the
//! groups turn out to be nearly as many as the rows (the `skip_partial_aggregation_*`
//! settings), and emits what it holds early when its memory reservation is refused. When the
//! encodings do not repeat (computed strings longer than a view's inline 12 bytes, plain
//! pages: more local groups than half the rows after the first 16,384), it interns every row
//! directly, as the built-in does, rather than pay for local grouping on top.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, Int64Array, PrimitiveArray,
    UInt32Array,
};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{
    ArrowNativeTypeOp, DataType, Date32Type, Date64Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result as DfResult, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::EmitTo;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::apply_expression_roots;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, InputOrderMode,
    PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

/// Group columns this operator handles (each one identity word per row); more take the
/// built-in operator.
const MAX_GROUP_COLUMNS: usize = 4;

/// Rows after which the operator checks that batches do group by their encodings (at most
/// half as many local groups as rows), and otherwise interns rows directly.
const DIRECT_PROBE_ROWS: usize = 16_384;

/// Local groups a batch's table holds without growing.
const TABLE_CAPACITY: usize = 1024;

/// The identity word of a null: never a valid view (length `u32::MAX`, buffer `u32::MAX`)
/// and above any widened integer.
const NULL_WORD: u128 = u128::MAX;

/// The physical optimizer rule putting [`EncodedKeyAggregateExec`] in place of the partial
/// aggregates it can run. Registered last, after DataFusion's own rules chose the plan's shape.
#[derive(Debug, Default)]
pub struct EncodedKeyAggregation;

impl PhysicalOptimizerRule for EncodedKeyAggregation {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(agg) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            Ok(match EncodedKeyAggregateExec::replacing(agg)? {
                Some(exec) => Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "encoded_key_aggregation"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// One aggregate, in the form this operator computes it.
#[derive(Debug, Clone)]
enum Aggregate {
    /// `count(*)` / `count(literal)`: rows.
    CountRows,
    /// `count(expr)`: rows where `expr` is not null.
    CountValues(Arc<dyn PhysicalExpr>),
    /// `sum`, `min` or `max` of `expr`, whose state has the given type; null when no value
    /// was seen. Sums are of `Int64`, `UInt64` or `Float64` (wrapping like DataFusion's);
    /// minima and maxima of integers up to 64 bits signed, dates and timestamps.
    Fold(FoldOp, Arc<dyn PhysicalExpr>, DataType),
}

impl Aggregate {
    fn argument(&self) -> Option<&Arc<dyn PhysicalExpr>> {
        match self {
            Aggregate::CountRows => None,
            Aggregate::CountValues(e) | Aggregate::Fold(_, e, _) => Some(e),
        }
    }
}

/// How a [`Aggregate::Fold`] combines values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FoldOp {
    Sum,
    Min,
    Max,
}

/// A partial aggregation grouping each batch by its values' encodings first; see the module
/// documentation.
#[derive(Debug)]
pub struct EncodedKeyAggregateExec {
    input: Arc<dyn ExecutionPlan>,
    group_exprs: Vec<(Arc<dyn PhysicalExpr>, String)>,
    aggregates: Vec<Aggregate>,
    /// Display names of the aggregates (as the replaced operator shows them).
    aggregate_names: Vec<String>,
    /// The replaced partial aggregate's output schema: group columns, then states.
    schema: SchemaRef,
    /// Schema of the group columns alone (for DataFusion's `GroupValues`).
    group_schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl EncodedKeyAggregateExec {
    /// This operator in place of `agg`, if `agg` is a partial aggregate it computes the same way.
    pub fn replacing(agg: &AggregateExec) -> DfResult<Option<EncodedKeyAggregateExec>> {
        let group_by = agg.group_expr();
        if *agg.mode() != AggregateMode::Partial
            || !group_by.is_single()
            || group_by.expr().is_empty()
            || group_by.expr().len() > MAX_GROUP_COLUMNS
            || agg.limit_options().is_some()
            || *agg.input_order_mode() != InputOrderMode::Linear
            || agg.filter_expr().iter().any(Option::is_some)
        {
            return Ok(None);
        }
        let input_schema = agg.input().schema();
        for (expr, _) in group_by.expr() {
            if !has_identity_word(&expr.data_type(&input_schema)?) {
                return Ok(None);
            }
        }
        let mut aggregates = Vec::new();
        for a in agg.aggr_expr() {
            match aggregate_of(a, &input_schema)? {
                Some(x) => aggregates.push(x),
                None => return Ok(None),
            }
        }
        let schema = agg.schema();
        let group_schema = group_by.group_schema(&input_schema)?;
        // Same output, partitioning and equivalences as the operator replaced.
        let properties = Arc::clone(agg.properties());
        Ok(Some(EncodedKeyAggregateExec {
            input: Arc::clone(agg.input()),
            group_exprs: group_by.expr().to_vec(),
            aggregates,
            aggregate_names: agg
                .aggr_expr()
                .iter()
                .map(|a| a.name().to_owned())
                .collect(),
            schema,
            group_schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

/// `a` as an [`Aggregate`], if it is one this operator computes with the same state.
fn aggregate_of(
    a: &AggregateFunctionExpr,
    input_schema: &SchemaRef,
) -> DfResult<Option<Aggregate>> {
    if a.is_distinct() || !a.order_bys().is_empty() {
        return Ok(None);
    }
    let args = a.expressions();
    let states = a.state_fields()?;
    let ([arg], [state]) = (args.as_slice(), states.as_slice()) else {
        return Ok(None);
    };
    let state_type = state.data_type();
    Ok(match a.fun().name() {
        "count" if *state_type == DataType::Int64 => match arg.downcast_ref::<Literal>() {
            Some(l) if !l.value().is_null() => Some(Aggregate::CountRows),
            Some(_) => None,
            None => Some(Aggregate::CountValues(Arc::clone(arg))),
        },
        "sum"
            if matches!(
                state_type,
                DataType::Int64 | DataType::UInt64 | DataType::Float64
            ) && arg.data_type(input_schema)? == *state_type =>
        {
            Some(Aggregate::Fold(
                FoldOp::Sum,
                Arc::clone(arg),
                state_type.clone(),
            ))
        }
        name @ ("min" | "max")
            if fits_i64(state_type) && arg.data_type(input_schema)? == *state_type =>
        {
            let op = if name == "min" {
                FoldOp::Min
            } else {
                FoldOp::Max
            };
            Some(Aggregate::Fold(op, Arc::clone(arg), state_type.clone()))
        }
        _ => None,
    })
}

/// Whether values of `t` convert to `Int64` and back without loss (and order the same way).
fn fits_i64(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
    )
}

/// Whether arrays of `t` have an identity word per row (equal words, equal values).
fn has_identity_word(t: &DataType) -> bool {
    match t {
        DataType::Utf8View | DataType::BinaryView | DataType::Boolean | DataType::UInt64 => true,
        DataType::Dictionary(key, _) => key.is_dictionary_key_type(),
        // The integer itself (widened) is the word.
        t => fits_i64(t),
    }
}

/// A native value as an identity word (its bits, widened; never [`NULL_WORD`]).
trait Word: Copy {
    fn word(self) -> u128;
}

macro_rules! word_via {
    ($($t:ty => $u:ty),*) => {
        $(impl Word for $t {
            #[inline]
            fn word(self) -> u128 {
                u128::from(self as $u)
            }
        })*
    };
}
word_via!(i8 => u8, i16 => u16, i32 => u32, i64 => u64, u8 => u8, u16 => u16, u32 => u32, u64 => u64);

fn primitive_words<T: ArrowPrimitiveType>(a: &PrimitiveArray<T>, out: &mut Vec<u128>)
where
    T::Native: Word,
{
    out.extend(a.values().iter().map(|v| v.word()));
}

/// Writes `array`'s identity words (one per row) into `out`.
fn identity_words(array: &ArrayRef, out: &mut Vec<u128>) -> DfResult<()> {
    out.clear();
    out.reserve(array.len());
    match array.data_type() {
        DataType::Utf8View => out.extend_from_slice(array.as_string_view().views()),
        DataType::BinaryView => out.extend_from_slice(array.as_binary_view().views()),
        DataType::Boolean => {
            out.extend(array.as_boolean().values().iter().map(u128::from));
        }
        DataType::Dictionary(key, _) => match key.as_ref() {
            DataType::Int8 => primitive_words(array.as_dictionary::<Int8Type>().keys(), out),
            DataType::Int16 => primitive_words(array.as_dictionary::<Int16Type>().keys(), out),
            DataType::Int32 => primitive_words(array.as_dictionary::<Int32Type>().keys(), out),
            DataType::Int64 => primitive_words(array.as_dictionary::<Int64Type>().keys(), out),
            DataType::UInt8 => primitive_words(array.as_dictionary::<UInt8Type>().keys(), out),
            DataType::UInt16 => primitive_words(array.as_dictionary::<UInt16Type>().keys(), out),
            DataType::UInt32 => primitive_words(array.as_dictionary::<UInt32Type>().keys(), out),
            DataType::UInt64 => primitive_words(array.as_dictionary::<UInt64Type>().keys(), out),
            other => return internal_err!("dictionary key type {other}"),
        },
        DataType::Int8 => primitive_words(array.as_primitive::<Int8Type>(), out),
        DataType::Int16 => primitive_words(array.as_primitive::<Int16Type>(), out),
        DataType::Int32 => primitive_words(array.as_primitive::<Int32Type>(), out),
        DataType::Int64 => primitive_words(array.as_primitive::<Int64Type>(), out),
        DataType::UInt8 => primitive_words(array.as_primitive::<UInt8Type>(), out),
        DataType::UInt16 => primitive_words(array.as_primitive::<UInt16Type>(), out),
        DataType::UInt32 => primitive_words(array.as_primitive::<UInt32Type>(), out),
        DataType::UInt64 => primitive_words(array.as_primitive::<UInt64Type>(), out),
        DataType::Date32 => primitive_words(array.as_primitive::<Date32Type>(), out),
        DataType::Date64 => primitive_words(array.as_primitive::<Date64Type>(), out),
        DataType::Timestamp(unit, _) => match unit {
            TimeUnit::Second => primitive_words(array.as_primitive::<TimestampSecondType>(), out),
            TimeUnit::Millisecond => {
                primitive_words(array.as_primitive::<TimestampMillisecondType>(), out)
            }
            TimeUnit::Microsecond => {
                primitive_words(array.as_primitive::<TimestampMicrosecondType>(), out)
            }
            TimeUnit::Nanosecond => {
                primitive_words(array.as_primitive::<TimestampNanosecondType>(), out)
            }
        },
        other => return internal_err!("no identity word for {other}"),
    }
    // Nulls (in a dictionary: null keys and keys of null values) are one group.
    if let Some(nulls) = array.logical_nulls() {
        for i in nulls
            .iter()
            .enumerate()
            .filter(|(_, valid)| !valid)
            .map(|(i, _)| i)
        {
            out[i] = NULL_WORD;
        }
    }
    Ok(())
}

/// Seeds of the word hash, random per operator instance (so crafted values cannot be made to
/// collide in advance).
#[derive(Debug, Clone, Copy)]
struct WordHasher {
    seeds: [u64; 3],
}

impl WordHasher {
    fn random() -> WordHasher {
        let state = hashbrown::DefaultHashBuilder::default();
        WordHasher {
            seeds: [
                state.hash_one(1u8) | 1,
                state.hash_one(2u8) | 1,
                state.hash_one(3u8) | 1,
            ],
        }
    }

    /// The product of `a` and `b` folded to 64 bits: every input bit reaches the middle ones.
    #[inline]
    fn fold(a: u64, b: u64) -> u64 {
        let p = u128::from(a) * u128::from(b);
        (p as u64) ^ ((p >> 64) as u64)
    }

    #[inline]
    fn hash<const W: usize>(&self, word: impl Fn(usize) -> u128) -> u64 {
        let mut h = self.seeds[0];
        for c in 0..W {
            let w = word(c);
            h = Self::fold((w as u64) ^ h, ((w >> 64) as u64) ^ self.seeds[1]);
        }
        Self::fold(h, self.seeds[2])
    }
}

/// A batch's rows grouped by their identity words: the batch-local group of each row and one
/// row of each local group.
#[derive(Debug, Default)]
struct LocalGroups {
    table: HashTable<u32>,
    first_rows: Vec<u32>,
    /// Local group of each row.
    of_row: Vec<u32>,
}

impl LocalGroups {
    fn len(&self) -> usize {
        self.first_rows.len()
    }

    fn group(&mut self, words: &[Vec<u128>], rows: usize, hasher: &WordHasher) {
        // Roomy: a probe then rarely meets another group's tag (and a mispredicted compare).
        if self.table.capacity() < TABLE_CAPACITY {
            self.table = HashTable::with_capacity(TABLE_CAPACITY);
        }
        self.table.clear();
        self.first_rows.clear();
        self.of_row.clear();
        self.of_row.reserve(rows);
        match words.len() {
            1 => self.group_width::<1>(words, rows, hasher),
            2 => self.group_width::<2>(words, rows, hasher),
            3 => self.group_width::<3>(words, rows, hasher),
            _ => self.group_width::<4>(words, rows, hasher),
        }
    }

    fn group_width<const W: usize>(
        &mut self,
        words: &[Vec<u128>],
        rows: usize,
        hasher: &WordHasher,
    ) {
        let columns: [&[u128]; W] = std::array::from_fn(|c| &words[c][..rows]);
        // Each local group's key and hash, for this batch only.
        let mut keys: Vec<([u128; W], u64)> = Vec::new();
        let LocalGroups {
            table,
            first_rows,
            of_row,
        } = self;
        #[allow(
            clippy::needless_range_loop,
            reason = "a row indexes W columns at once"
        )]
        for row in 0..rows {
            // Words are read from the columns where they are compared, not gathered into a
            // key first: a key just stored is slow to load back whole.
            let hash = hasher.hash::<W>(|c| columns[c][row]);
            let local = match table.entry(
                hash,
                |&g| {
                    let key = &keys[g as usize].0;
                    (0..W).all(|c| key[c] == columns[c][row])
                },
                |&g| keys[g as usize].1,
            ) {
                Entry::Occupied(e) => *e.get(),
                Entry::Vacant(e) => {
                    let g = keys.len() as u32;
                    keys.push((std::array::from_fn(|c| columns[c][row]), hash));
                    first_rows.push(row as u32);
                    e.insert(g);
                    g
                }
            };
            of_row.push(local);
        }
    }
}

/// The smaller of two values (total order, as DataFusion's `min`).
fn smaller<N: ArrowNativeTypeOp>(a: N, b: N) -> N {
    if b.is_lt(a) { b } else { a }
}

/// The larger of two values (total order, as DataFusion's `max`).
fn larger<N: ArrowNativeTypeOp>(a: N, b: N) -> N {
    if b.is_gt(a) { b } else { a }
}

/// The states of one aggregate over the groups held.
#[derive(Debug)]
enum States {
    Count(Vec<i64>),
    FoldI64(Fold<Int64Type>),
    FoldU64(Fold<UInt64Type>),
    FoldF64(Fold<Float64Type>),
}

/// Sums, minima or maxima in `T` (the state's type, or `Int64` standing for a narrower integer,
/// a date or a timestamp, converted back on emission), and whether each group saw a value.
#[derive(Debug)]
struct Fold<T: ArrowPrimitiveType> {
    op: FoldOp,
    values: Vec<T::Native>,
    seen: Vec<bool>,
    /// The state's type.
    output: DataType,
}

impl<T: ArrowPrimitiveType> Fold<T>
where
    T::Native: ArrowNativeTypeOp,
{
    fn new(op: FoldOp, output: &DataType) -> Fold<T> {
        Fold {
            op,
            values: Vec::new(),
            seen: Vec::new(),
            output: output.clone(),
        }
    }

    fn start(&self) -> T::Native {
        match self.op {
            FoldOp::Sum => T::Native::ZERO,
            FoldOp::Min => T::Native::MAX_TOTAL_ORDER,
            FoldOp::Max => T::Native::MIN_TOTAL_ORDER,
        }
    }

    fn resize(&mut self, groups: usize) {
        let start = self.start();
        self.values.resize(groups, start);
        self.seen.resize(groups, false);
    }

    /// The argument's values in `T`.
    fn values_of(&self, values: Option<&ArrayRef>) -> DfResult<PrimitiveArray<T>> {
        let Some(v) = values else {
            return internal_err!("{:?} without its argument", self.op);
        };
        let v = if *v.data_type() == T::DATA_TYPE {
            Arc::clone(v)
        } else {
            datafusion::arrow::compute::cast(v, &T::DATA_TYPE)?
        };
        Ok(v.as_primitive::<T>().clone())
    }

    fn update(
        &mut self,
        values: Option<&ArrayRef>,
        local: &LocalGroups,
        global: &[usize],
    ) -> DfResult<()> {
        let values = self.values_of(values)?;
        match self.op {
            FoldOp::Sum => self.fold_locally(&values, local, global, T::Native::add_wrapping),
            FoldOp::Min => self.fold_locally(&values, local, global, smaller),
            FoldOp::Max => self.fold_locally(&values, local, global, larger),
        }
        Ok(())
    }

    fn fold_locally(
        &mut self,
        values: &PrimitiveArray<T>,
        local: &LocalGroups,
        global: &[usize],
        combine: impl Fn(T::Native, T::Native) -> T::Native + Copy,
    ) {
        let v = values.values();
        let start = self.start();
        let (per_local, seen_local) = match values.logical_nulls() {
            Some(nulls) => {
                let add = |acc: T::Native, row: usize| {
                    if nulls.is_valid(row) {
                        combine(acc, v[row])
                    } else {
                        acc
                    }
                };
                let seen =
                    per_local_group(local, false, |s, row| s | nulls.is_valid(row), |a, b| a | b);
                (per_local_group(local, start, add, combine), Some(seen))
            }
            // Every local group has a row, so a value.
            None => (
                per_local_group(local, start, |acc, row| combine(acc, v[row]), combine),
                None,
            ),
        };
        for (l, x) in per_local.into_iter().enumerate() {
            if seen_local.as_ref().is_none_or(|s| s[l]) {
                let g = global[l];
                self.values[g] = combine(self.values[g], x);
                self.seen[g] = true;
            }
        }
    }

    /// Adds each row into its group directly (`group_of_row`).
    fn update_rows(&mut self, values: Option<&ArrayRef>, group_of_row: &[usize]) -> DfResult<()> {
        let values = self.values_of(values)?;
        match self.op {
            FoldOp::Sum => self.fold_rows(&values, group_of_row, T::Native::add_wrapping),
            FoldOp::Min => self.fold_rows(&values, group_of_row, smaller),
            FoldOp::Max => self.fold_rows(&values, group_of_row, larger),
        }
        Ok(())
    }

    fn fold_rows(
        &mut self,
        values: &PrimitiveArray<T>,
        group_of_row: &[usize],
        combine: impl Fn(T::Native, T::Native) -> T::Native,
    ) {
        let v = values.values();
        let nulls = values.logical_nulls();
        for (row, &g) in group_of_row.iter().enumerate() {
            if nulls.as_ref().is_none_or(|n| n.is_valid(row)) {
                self.values[g] = combine(self.values[g], v[row]);
                self.seen[g] = true;
            }
        }
    }

    fn take(&mut self) -> DfResult<ArrayRef> {
        let nulls = NullBuffer::new(BooleanBuffer::from(std::mem::take(&mut self.seen)));
        let array: ArrayRef = Arc::new(PrimitiveArray::<T>::new(
            std::mem::take(&mut self.values).into(),
            Some(nulls).filter(|n| n.null_count() > 0),
        ));
        Ok(if self.output == T::DATA_TYPE {
            array
        } else {
            datafusion::arrow::compute::cast(&array, &self.output)?
        })
    }

    fn bytes(&self) -> usize {
        self.values.capacity() * std::mem::size_of::<T::Native>() + self.seen.capacity()
    }
}

impl States {
    fn new(a: &Aggregate) -> States {
        match a {
            Aggregate::CountRows | Aggregate::CountValues(_) => States::Count(Vec::new()),
            Aggregate::Fold(op, _, t @ DataType::UInt64) => States::FoldU64(Fold::new(*op, t)),
            Aggregate::Fold(op, _, t @ DataType::Float64) => States::FoldF64(Fold::new(*op, t)),
            Aggregate::Fold(op, _, t) => States::FoldI64(Fold::new(*op, t)),
        }
    }

    fn resize(&mut self, groups: usize) {
        match self {
            States::Count(c) => c.resize(groups, 0),
            States::FoldI64(f) => f.resize(groups),
            States::FoldU64(f) => f.resize(groups),
            States::FoldF64(f) => f.resize(groups),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            States::Count(c) => c.capacity() * 8,
            States::FoldI64(f) => f.bytes(),
            States::FoldU64(f) => f.bytes(),
            States::FoldF64(f) => f.bytes(),
        }
    }

    /// Adds the rows of a batch: `values` (the aggregate's argument, `None` for rows) per
    /// local group of `local`, then into the groups `global[local group]`.
    fn update(
        &mut self,
        values: Option<&ArrayRef>,
        local: &LocalGroups,
        global: &[usize],
    ) -> DfResult<()> {
        match self {
            States::Count(counts) => {
                let per_local = match values.and_then(|v| v.logical_nulls()) {
                    Some(nulls) => per_local_group(
                        local,
                        0i64,
                        |n, row| n + i64::from(nulls.is_valid(row)),
                        |a, b| a + b,
                    ),
                    None => per_local_group(local, 0i64, |n, _| n + 1, |a, b| a + b),
                };
                for (l, n) in per_local.into_iter().enumerate() {
                    counts[global[l]] += n;
                }
                Ok(())
            }
            States::FoldI64(f) => f.update(values, local, global),
            States::FoldU64(f) => f.update(values, local, global),
            States::FoldF64(f) => f.update(values, local, global),
        }
    }

    /// Adds the rows of a batch each into its group (`group_of_row`), with no local grouping.
    fn update_rows(&mut self, values: Option<&ArrayRef>, group_of_row: &[usize]) -> DfResult<()> {
        match self {
            States::Count(counts) => {
                match values.and_then(|v| v.logical_nulls()) {
                    Some(nulls) => {
                        for (&g, valid) in group_of_row.iter().zip(nulls.iter()) {
                            counts[g] += i64::from(valid);
                        }
                    }
                    None => {
                        for &g in group_of_row {
                            counts[g] += 1;
                        }
                    }
                }
                Ok(())
            }
            States::FoldI64(f) => f.update_rows(values, group_of_row),
            States::FoldU64(f) => f.update_rows(values, group_of_row),
            States::FoldF64(f) => f.update_rows(values, group_of_row),
        }
    }

    /// The state array of the groups held, which are then forgotten.
    fn take(&mut self) -> DfResult<ArrayRef> {
        match self {
            States::Count(c) => Ok(Arc::new(Int64Array::from(std::mem::take(c)))),
            States::FoldI64(f) => f.take(),
            States::FoldU64(f) => f.take(),
            States::FoldF64(f) => f.take(),
        }
    }
}

/// Copies of the per-group accumulators rows are spread over, by row number.
const LANES: usize = 4;

/// Folds each row of a batch into its local group's accumulator with `add(accumulator, row)`,
/// starting from `zero`, `merge` combining two accumulators. Consecutive rows go to different
/// copies of the accumulators (merged at the end), so an update never waits for the previous
/// row's store to the same group.
fn per_local_group<N: Copy>(
    local: &LocalGroups,
    zero: N,
    add: impl Fn(N, usize) -> N,
    merge: impl Fn(N, N) -> N,
) -> Vec<N> {
    let groups = local.len();
    let mut lanes = vec![zero; LANES * groups];
    for (row, &g) in local.of_row.iter().enumerate() {
        let i = (row % LANES) * groups + g as usize;
        lanes[i] = add(lanes[i], row);
    }
    let (first, rest) = lanes.split_at_mut(groups);
    for lane in rest.chunks_exact(groups) {
        for (a, &b) in first.iter_mut().zip(lane) {
            *a = merge(*a, b);
        }
    }
    lanes.truncate(groups);
    lanes
}

/// One partition's aggregation state.
struct Aggregator {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Vec<Aggregate>,
    schema: SchemaRef,
    groups: Box<dyn GroupValues>,
    states: Vec<States>,
    hasher: WordHasher,
    words: Vec<Vec<u128>>,
    local: LocalGroups,
    global_of_local: Vec<usize>,
    /// Rows aggregated before deciding whether aggregating pays.
    probe_rows: usize,
    probe_ratio: f64,
    rows_seen: usize,
    /// Groups nearly as many as rows: batches pass through as states.
    pass_through: bool,
    /// Local groups found so far (for choosing `direct`).
    local_groups_seen: usize,
    /// Local groups nearly as many as rows: rows are interned directly.
    direct: bool,
    batch_size: usize,
    reservation: MemoryReservation,
    local_groups_metric: Count,
    skipped_rows_metric: Count,
    direct_metric: Count,
}

impl Aggregator {
    /// Takes a batch; returns batches to send on (states emitted early or passed through).
    fn push(&mut self, batch: &RecordBatch) -> DfResult<Vec<RecordBatch>> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(Vec::new());
        }
        let group_arrays = self
            .group_exprs
            .iter()
            .map(|e| e.evaluate(batch)?.into_array(rows))
            .collect::<DfResult<Vec<_>>>()?;
        let values = self
            .aggregates
            .iter()
            .map(|a| {
                a.argument()
                    .map(|e| e.evaluate(batch)?.into_array(rows))
                    .transpose()
            })
            .collect::<DfResult<Vec<_>>>()?;
        if self.pass_through {
            self.skipped_rows_metric.add(rows);
            return Ok(vec![self.rows_as_states(group_arrays, &values, rows)?]);
        }

        if self.direct {
            // The built-in operator's way: every row interned.
            self.groups
                .intern(&group_arrays, &mut self.global_of_local)?;
            let held = self.groups.len();
            for (states, values) in self.states.iter_mut().zip(&values) {
                states.resize(held);
                states.update_rows(values.as_ref(), &self.global_of_local)?;
            }
        } else {
            for (array, words) in group_arrays.iter().zip(&mut self.words) {
                identity_words(array, words)?;
            }
            self.local.group(&self.words, rows, &self.hasher);
            self.local_groups_metric.add(self.local.len());
            self.local_groups_seen += self.local.len();
            let firsts = UInt32Array::from(self.local.first_rows.clone());
            let representatives = group_arrays
                .iter()
                .map(|a| take(a, &firsts, None))
                .collect::<Result<Vec<_>, _>>()?;
            self.groups
                .intern(&representatives, &mut self.global_of_local)?;
            let held = self.groups.len();
            for (states, values) in self.states.iter_mut().zip(&values) {
                states.resize(held);
                states.update(values.as_ref(), &self.local, &self.global_of_local)?;
            }
        }
        let rows_before = self.rows_seen;
        self.rows_seen += rows;
        if rows_before < DIRECT_PROBE_ROWS
            && self.rows_seen >= DIRECT_PROBE_ROWS
            && self.local_groups_seen * 2 > self.rows_seen
        {
            // The values' encodings do not repeat (computed strings, plain pages): local
            // grouping would only add its cost to interning nearly every row anyway.
            self.direct = true;
            self.direct_metric.add(1);
        }

        let mut out = Vec::new();
        if self.rows_seen >= self.probe_rows
            && self.probe_rows > 0
            && self.groups.len() as f64 >= self.probe_ratio * self.rows_seen as f64
        {
            // Nearly a group per row: aggregating here only costs; pass the rest through.
            self.pass_through = true;
            out.extend(self.emit()?);
        }
        if self.reservation.try_resize(self.held_bytes()).is_err() {
            // Partial states may be sent at any time; the final aggregate merges them.
            out.extend(self.emit()?);
            self.groups.clear_shrink(rows);
            self.reservation.try_resize(self.held_bytes())?;
        }
        Ok(out)
    }

    fn held_bytes(&self) -> usize {
        self.groups.size()
            + self.states.iter().map(States::bytes).sum::<usize>()
            + self.global_of_local.capacity() * 8
    }

    /// The groups held, with their states, as batches of at most `batch_size` rows; then holds
    /// none.
    fn emit(&mut self) -> DfResult<Vec<RecordBatch>> {
        if self.groups.is_empty() {
            return Ok(Vec::new());
        }
        let mut columns = self.groups.emit(EmitTo::All)?;
        for states in &mut self.states {
            columns.push(states.take()?);
        }
        let all = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        let step = self.batch_size.max(1);
        Ok((0..all.num_rows())
            .step_by(step)
            .map(|start| all.slice(start, step.min(all.num_rows() - start)))
            .collect())
    }

    /// A batch's rows each as its own group's state (pass-through).
    fn rows_as_states(
        &self,
        mut columns: Vec<ArrayRef>,
        values: &[Option<ArrayRef>],
        rows: usize,
    ) -> DfResult<RecordBatch> {
        for (a, v) in self.aggregates.iter().zip(values) {
            columns.push(match (a, v) {
                (Aggregate::CountRows, _) => Arc::new(Int64Array::from(vec![1i64; rows])),
                (Aggregate::CountValues(_), Some(v)) => {
                    let valid = match v.logical_nulls() {
                        Some(n) => BooleanArray::new(n.inner().clone(), None),
                        None => BooleanArray::from(vec![true; rows]),
                    };
                    datafusion::arrow::compute::cast(&valid, &DataType::Int64)?
                }
                // A sum, minimum or maximum of one value is the value (state type = input's).
                (Aggregate::Fold(..), Some(v)) => Arc::clone(v),
                _ => return internal_err!("aggregate without its argument"),
            });
        }
        // The group columns as evaluated are of the group schema's types.
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

impl DisplayAs for EncodedKeyAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<String> = self
            .group_exprs
            .iter()
            .map(|(e, name)| format!("{e} as {name}"))
            .collect();
        write!(
            f,
            "EncodedKeyAggregateExec: mode=Partial, gby=[{}], aggr=[{}]",
            groups.join(", "),
            self.aggregate_names.join(", ")
        )
    }
}

impl ExecutionPlan for EncodedKeyAggregateExec {
    fn name(&self) -> &'static str {
        "EncodedKeyAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        let mut roots: Vec<&Arc<dyn PhysicalExpr>> =
            self.group_exprs.iter().map(|(e, _)| e).collect();
        roots.extend(self.aggregates.iter().filter_map(Aggregate::argument));
        apply_expression_roots(roots, f)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("EncodedKeyAggregateExec has one input");
        }
        let input = children.swap_remove(0);
        if input.schema() != self.input.schema()
            || input.output_partitioning() != self.input.output_partitioning()
        {
            return internal_err!("EncodedKeyAggregateExec's input changed shape");
        }
        Ok(Arc::new(EncodedKeyAggregateExec {
            input,
            group_exprs: self.group_exprs.clone(),
            aggregates: self.aggregates.clone(),
            aggregate_names: self.aggregate_names.clone(),
            schema: Arc::clone(&self.schema),
            group_schema: Arc::clone(&self.group_schema),
            properties: Arc::clone(&self.properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let options = context.session_config().options();
        let execution = &options.execution;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let aggregator = Aggregator {
            group_exprs: self
                .group_exprs
                .iter()
                .map(|(e, _)| Arc::clone(e))
                .collect(),
            aggregates: self.aggregates.clone(),
            schema: Arc::clone(&self.schema),
            groups: new_group_values(Arc::clone(&self.group_schema), &GroupOrdering::None)?,
            states: self.aggregates.iter().map(States::new).collect(),
            hasher: WordHasher::random(),
            words: vec![Vec::new(); self.group_exprs.len()],
            local: LocalGroups::default(),
            global_of_local: Vec::new(),
            probe_rows: execution.skip_partial_aggregation_probe_rows_threshold,
            probe_ratio: execution.skip_partial_aggregation_probe_ratio_threshold,
            rows_seen: 0,
            pass_through: false,
            local_groups_seen: 0,
            direct: false,
            batch_size: execution.batch_size.into(),
            reservation: MemoryConsumer::new(format!("EncodedKeyAggregateExec[{partition}]"))
                .register(context.memory_pool()),
            local_groups_metric: MetricBuilder::new(&self.metrics)
                .counter("batch_local_groups", partition),
            skipped_rows_metric: MetricBuilder::new(&self.metrics)
                .counter("skipped_aggregation_rows", partition),
            direct_metric: MetricBuilder::new(&self.metrics)
                .counter("direct_partitions", partition),
        };
        let input = self.input.execute(partition, context)?;
        // Batches flow through as they are emitted; the held groups follow the last input.
        let stream = futures::stream::try_unfold(
            (input, Some(aggregator), baseline),
            |(mut input, aggregator, baseline)| async move {
                let Some(mut aggregator) = aggregator else {
                    return Ok::<_, DataFusionError>(None);
                };
                loop {
                    match input.next().await {
                        Some(batch) => {
                            let batch = batch?;
                            let out = {
                                let _timer = baseline.elapsed_compute().timer();
                                aggregator.push(&batch)?
                            };
                            if !out.is_empty() {
                                baseline.record_output(out.iter().map(|b| b.num_rows()).sum());
                                let stream = futures::stream::iter(out.into_iter().map(Ok));
                                return Ok(Some((stream, (input, Some(aggregator), baseline))));
                            }
                        }
                        None => {
                            let out = {
                                let _timer = baseline.elapsed_compute().timer();
                                aggregator.emit()?
                            };
                            baseline.record_output(out.iter().map(|b| b.num_rows()).sum());
                            baseline.done();
                            let stream = futures::stream::iter(out.into_iter().map(Ok));
                            return Ok(Some((stream, (input, None, baseline))));
                        }
                    }
                }
            },
        )
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        DictionaryArray, Float64Array, Int32Array, StringViewArray, TimestampNanosecondArray,
        UInt64Array,
    };
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::common::ScalarValue;
    use datafusion::datasource::MemTable;
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// A deterministic pseudo-random sequence (no dependency, same data every run).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    const WORDS: [&str; 6] = [
        "a",
        "payments",
        "twelve-bytes",
        "thirteen-byte",
        "a-much-longer-namespace-name",
        "",
    ];

    fn schema() -> SchemaRef {
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        Arc::new(Schema::new(vec![
            Field::new("ns", DataType::Utf8View, true),
            Field::new("plain", DataType::Utf8View, true),
            Field::new("dict", dict, true),
            Field::new("n", DataType::Int64, true),
            Field::new("u", DataType::UInt64, false),
            Field::new("f", DataType::Float64, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new("b", DataType::Boolean, true),
            Field::new("small", DataType::Int32, true),
        ]))
    }

    /// A batch whose strings come in the three encodings the lake produces: views of a
    /// dictionary (equal values, equal views), views written value by value (equal long
    /// values, different views), and dictionaries (with a repeated value and null values).
    fn batch(rng: &mut Lcg, rows: usize) -> RecordBatch {
        let dictionary = StringViewArray::from_iter_values(WORDS);
        let keys = UInt32Array::from_iter((0..rows).map(|_| {
            let k = rng.next(WORDS.len() as u64 + 1) as u32;
            (k < WORDS.len() as u32).then_some(k)
        }));
        let ns = take(&dictionary, &keys, None).unwrap();
        let plain = StringViewArray::from_iter((0..rows).map(|_| {
            WORDS
                .get(rng.next(4) as usize * 2)
                .filter(|w| !w.is_empty())
        }));
        let values = datafusion::arrow::array::StringArray::from(vec![
            Some("x"),
            Some("long-dictionary-value"),
            Some("x"),
            None,
        ]);
        let dict_keys = Int32Array::from_iter((0..rows).map(|_| {
            let k = rng.next(5) as i32;
            (k < 4).then_some(k)
        }));
        let dict = DictionaryArray::try_new(dict_keys, Arc::new(values)).unwrap();
        let n = datafusion::arrow::array::Int64Array::from_iter((0..rows).map(|_| {
            let v = rng.next(1000) as i64 - 300;
            (v % 7 != 0).then_some(v)
        }));
        let u = UInt64Array::from_iter_values((0..rows).map(|_| rng.next(1 << 40)));
        // Halves: sums are exact in any order.
        let f = Float64Array::from_iter(
            (0..rows).map(|_| Some(rng.next(64) as f64 / 2.0).filter(|v| *v != 3.0)),
        );
        let ts = TimestampNanosecondArray::from_iter_values(
            (0..rows).map(|_| 1_793_491_200_000_000_000 + rng.next(600) as i64 * 1_000_000_000),
        )
        .with_timezone("UTC");
        let b = BooleanArray::from_iter((0..rows).map(|_| match rng.next(3) {
            0 => None,
            1 => Some(true),
            _ => Some(false),
        }));
        let small = Int32Array::from_iter((0..rows).map(|_| {
            let v = rng.next(9) as i32 - 4;
            (v != 0).then_some(v)
        }));
        RecordBatch::try_new(
            schema(),
            vec![
                ns,
                Arc::new(plain),
                Arc::new(dict),
                Arc::new(n),
                Arc::new(u),
                Arc::new(f),
                Arc::new(ts),
                Arc::new(b),
                Arc::new(small),
            ],
        )
        .unwrap()
    }

    /// Two partitions of several batches each.
    fn table(rows_per_batch: usize) -> Arc<MemTable> {
        let mut rng = Lcg(7);
        let partitions = (0..2)
            .map(|_| (0..4).map(|_| batch(&mut rng, rows_per_batch)).collect())
            .collect();
        Arc::new(MemTable::try_new(schema(), partitions).unwrap())
    }

    fn context(with_rule: bool, config: SessionConfig) -> SessionContext {
        context_of(with_rule, config, 3000)
    }

    /// A session over [`table`] with `rows_per_batch`, with or without the rule.
    fn context_of(with_rule: bool, config: SessionConfig, rows_per_batch: usize) -> SessionContext {
        let mut builder = SessionStateBuilder::new()
            .with_config(config.with_target_partitions(2))
            .with_default_features();
        if with_rule {
            builder = builder.with_physical_optimizer_rule(Arc::new(EncodedKeyAggregation));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        ctx.register_table("t", table(rows_per_batch)).unwrap();
        ctx
    }

    /// Runs `sql`; returns its rows as sorted strings and the plan it ran.
    async fn run(ctx: &SessionContext, sql: &str) -> (Vec<String>, Arc<dyn ExecutionPlan>) {
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let batches = collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
        let mut rows = Vec::new();
        for b in &batches {
            for r in 0..b.num_rows() {
                let cells: Vec<String> = b
                    .columns()
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, r).unwrap().to_string())
                    .collect();
                rows.push(cells.join("|"));
            }
        }
        rows.sort();
        (rows, plan)
    }

    /// The operator in `plan`, if the rule put one there.
    fn encoded(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
        let mut found = None;
        plan.apply(|node| {
            if node.downcast_ref::<EncodedKeyAggregateExec>().is_some() {
                found = Some(Arc::clone(node));
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        found
    }

    fn metric(plan: &Arc<dyn ExecutionPlan>, name: &str) -> usize {
        encoded(plan)
            .and_then(|e| e.metrics())
            .and_then(|m| m.sum_by_name(name))
            .map_or(0, |v| v.as_usize())
    }

    const AGREEING: [&str; 9] = [
        "SELECT ns, plain, count(*), count(n), sum(n), sum(u), sum(f), count(f) FROM t GROUP BY ns, plain",
        "SELECT ns, count(*) AS c FROM t GROUP BY ns",
        "SELECT dict, b, count(*), sum(n) FROM t GROUP BY dict, b",
        "SELECT date_trunc('minute', ts) AS m, ns, count(*), sum(u) FROM t GROUP BY 1, 2",
        "SELECT small, ns, dict, plain, count(small), sum(small) FROM t GROUP BY 1, 2, 3, 4",
        "SELECT plain, sum(n) AS s FROM t WHERE n > 100 GROUP BY plain HAVING sum(n) > 0",
        "SELECT ns, sum(n) FROM (SELECT ns, n FROM t UNION ALL SELECT plain, n + 1 FROM t) GROUP BY ns",
        "SELECT ns, dict, min(ts), max(ts), min(small), max(small), min(n), max(n), min(b_int) \
         FROM (SELECT *, CAST(b AS INT) AS b_int FROM t) GROUP BY ns, dict",
        // Planned as a grouping by (ns, n) below a count.
        "SELECT ns, count(DISTINCT n) FROM t GROUP BY ns",
    ];

    #[tokio::test]
    async fn same_answers_as_datafusions_own_partial_aggregation() {
        let ours = context(true, SessionConfig::new());
        let theirs = context(false, SessionConfig::new());
        for sql in AGREEING {
            let (expected, plan) = run(&theirs, sql).await;
            assert!(encoded(&plan).is_none(), "{sql}");
            let (got, plan) = run(&ours, sql).await;
            assert!(encoded(&plan).is_some(), "the rule did not apply to {sql}");
            assert!(expected.len() > 3, "{sql}: {expected:?}");
            assert_eq!(got, expected, "{sql}");
        }
    }

    #[tokio::test]
    async fn rows_are_grouped_by_their_encodings_first() {
        // `ns` is a view of a 6-value dictionary (+ null): at most 7 local groups per batch,
        // so 8 batches give at most 56, against 24,000 rows.
        let ctx = context(true, SessionConfig::new());
        let (rows, plan) = run(&ctx, "SELECT ns, count(*) FROM t GROUP BY ns").await;
        assert_eq!(rows.len(), 7);
        let local = metric(&plan, "batch_local_groups");
        assert!((8..=56).contains(&local), "{local} local groups");
        // Long values written one by one have a view each: a local group per row.
        let (rows, plan) = run(&ctx, "SELECT plain, count(*) FROM t GROUP BY plain").await;
        assert_eq!(rows.len(), 4);
        assert!(metric(&plan, "batch_local_groups") > 5_000);
    }

    #[tokio::test]
    async fn unsupported_aggregates_keep_the_built_in_operator() {
        let ctx = context(true, SessionConfig::new());
        for sql in [
            "SELECT ns, min(plain) FROM t GROUP BY ns",
            "SELECT ns, max(f) FROM t GROUP BY ns",
            "SELECT ns, max(u) FROM t GROUP BY ns",
            "SELECT ns, sum(n) FILTER (WHERE n > 0) FROM t GROUP BY ns",
            "SELECT f, count(*) FROM t GROUP BY f",
            "SELECT count(*), sum(n) FROM t",
            "SELECT ns, plain, dict, small, b, count(*) FROM t GROUP BY 1, 2, 3, 4, 5",
        ] {
            let (rows, plan) = run(&ctx, sql).await;
            assert!(!rows.is_empty(), "{sql}");
            assert!(encoded(&plan).is_none(), "{sql}");
        }
    }

    #[tokio::test]
    async fn many_groups_pass_rows_through_as_states() {
        // Small batches: several reach the operator after it decided, filtered or not.
        let mut config = SessionConfig::new().with_batch_size(1024);
        let execution = &mut config.options_mut().execution;
        execution.skip_partial_aggregation_probe_rows_threshold = 1000;
        execution.skip_partial_aggregation_probe_ratio_threshold = 0.001;
        let ours = context(true, config);
        let theirs = context(false, SessionConfig::new());
        for sql in AGREEING {
            let (expected, _) = run(&theirs, sql).await;
            let (got, plan) = run(&ours, sql).await;
            assert_eq!(got.len(), expected.len(), "{sql}");
            for (g, e) in got.iter().zip(&expected) {
                assert_eq!(g, e, "{sql}");
            }
            assert!(metric(&plan, "skipped_aggregation_rows") > 0, "{sql}");
        }
    }

    #[tokio::test]
    async fn rows_whose_encodings_do_not_repeat_are_interned_directly() {
        // Computed strings longer than a view's 12 inline bytes: a view per row, so a local
        // group per row; after the probe the operator interns rows as the built-in does.
        let sql = "SELECT plain || '-' || ns || '-made-long' AS k, count(*), sum(n), min(ts), \
                   max(small) FROM t GROUP BY 1";
        let ours = context_of(true, SessionConfig::new(), 12_000);
        let theirs = context_of(false, SessionConfig::new(), 12_000);
        let (expected, _) = run(&theirs, sql).await;
        let (got, plan) = run(&ours, sql).await;
        assert!(expected.len() > 10);
        assert_eq!(got, expected);
        assert_eq!(
            metric(&plan, "direct_partitions"),
            2,
            "both partitions went direct"
        );
        // Dictionary views keep grouping locally.
        let (_, plan) = run(&ours, "SELECT ns, count(*) FROM t GROUP BY ns").await;
        assert_eq!(metric(&plan, "direct_partitions"), 0);
    }

    #[tokio::test]
    async fn a_refused_reservation_emits_the_groups_held_early() {
        // 24,000 rows of mostly distinct keys; a pool too small to hold them all.
        let ctx = context(true, SessionConfig::new());
        let sql =
            "SELECT CAST(u AS BIGINT) % 20000 AS k, count(*) AS c, sum(n) AS s FROM t GROUP BY 1";
        let (expected, plan) = run(&context(false, SessionConfig::new()), sql).await;
        let (_, ours) = run(&ctx, sql).await;
        let exec = encoded(&ours).unwrap_or_else(|| {
            panic!(
                "{}",
                datafusion::physical_plan::displayable(ours.as_ref()).indent(true)
            )
        });
        drop(plan);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(400 << 10)))
            .build_arc()
            .unwrap();
        let task = Arc::new(
            TaskContext::default()
                .with_session_config(SessionConfig::new().with_target_partitions(2))
                .with_runtime(runtime),
        );
        // Merge what both partitions emit, as the final aggregate would.
        let mut merged: std::collections::BTreeMap<String, (i64, Option<i64>)> =
            std::collections::BTreeMap::new();
        let mut emitted = 0;
        for partition in 0..2 {
            let stream = exec.execute(partition, Arc::clone(&task)).unwrap();
            let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
            for b in &batches {
                emitted += b.num_rows();
                for r in 0..b.num_rows() {
                    let key = ScalarValue::try_from_array(b.column(0), r)
                        .unwrap()
                        .to_string();
                    let c = b.column(1).as_primitive::<Int64Type>().value(r);
                    let s = b.column(2).as_primitive::<Int64Type>();
                    let s = s.is_valid(r).then(|| s.value(r));
                    let e = merged.entry(key).or_insert((0, None));
                    e.0 += c;
                    e.1 = match (e.1, s) {
                        (Some(a), Some(b)) => Some(a + b),
                        (a, b) => a.or(b),
                    };
                }
            }
        }
        let mut merged: Vec<String> = merged
            .into_iter()
            .map(|(k, (c, s))| {
                let s = s.map_or_else(|| "NULL".to_owned(), |s| s.to_string());
                format!("{k}|{c}|{s}")
            })
            .collect();
        merged.sort();
        assert_eq!(merged, expected);
        assert!(
            emitted > merged.len() + 1000,
            "{emitted} rows emitted for {} groups: no early emission",
            merged.len()
        );
    }
}
