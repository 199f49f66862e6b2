//! Functions whose output can be far larger than their input, bounded before they allocate.
//!
//! DataFusion's memory pool accounts for operators (sorts, joins, aggregations), not for the
//! values a scalar function builds: `repeat('x', 2000000000)` or `range(0, 400000000)` would
//! allocate gigabytes in one call — at plan time too, when constant folding evaluates them. Each
//! of the functions below is replaced, under its own name, by a wrapper that first computes how
//! large the output would be from its arguments and refuses the call when one value would pass
//! `max_value_bytes` or the whole call (one batch of rows) `max_call_bytes`; otherwise the
//! built-in runs, so results are unchanged.
//!
//! | function | bound |
//! |---|---|
//! | `repeat(s, n)` | bytes of `s` × `n` |
//! | `lpad`, `rpad(s, n[, fill])` | `n` characters × 4 bytes |
//! | `array_repeat(v, n)`, `array_resize(a, n[, v])` | `n` elements × 8 bytes |
//! | `range`, `generate_series` (start, stop[, step]) | elements × 8 bytes, for integers, dates and timestamps |

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef, TimeUnit};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// A value (or call) that would be larger than the server allows.
#[derive(Debug)]
pub struct ValueTooLarge(pub String);

impl std::fmt::Display for ValueTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValueTooLarge {}

/// How a function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `(string, count)`: bytes × count.
    Repeat,
    /// `(string, length, ...)`: length characters (up to 4 bytes each).
    Pad,
    /// `(x, count, ...)`: count elements.
    Count,
    /// `(start, stop[, step])`: (stop − start) / step elements.
    Series,
}

const FUNCTIONS: [(&str, Growth); 7] = [
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("array_repeat", Growth::Count),
    ("array_resize", Growth::Count),
    ("range", Growth::Series),
    ("generate_series", Growth::Series),
];

/// Bytes one array element or character is counted as.
const ELEMENT_BYTES: u64 = 8;
const CHAR_BYTES: u64 = 4;

/// Replaces each function of the table above registered in `ctx` by its bounded wrapper.
pub fn register(ctx: &SessionContext, max_value_bytes: usize, max_call_bytes: usize) {
    for (name, growth) in FUNCTIONS {
        let Ok(builtin) = ctx.udf(name) else {
            continue; // not compiled in
        };
        ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
            builtin: builtin.as_ref().clone(),
            growth,
            max_value: max_value_bytes as u64,
            max_call: max_call_bytes as u64,
        }));
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    builtin: ScalarUDF,
    growth: Growth,
    max_value: u64,
    max_call: u64,
}

/// Argument `i` as one i64 per row (a scalar repeated), or `None` when it is not numeric.
fn integers(args: &[ColumnarValue], i: usize, rows: usize) -> Result<Option<Int64Array>> {
    let Some(arg) = args.get(i) else {
        return Ok(None);
    };
    let array = arg.to_array(rows.max(1))?;
    if !array.data_type().is_integer() && !array.data_type().is_floating() {
        return Ok(None);
    }
    let ints = cast(&array, &DataType::Int64)?;
    Ok(ints.as_any().downcast_ref::<Int64Array>().cloned())
}

/// Byte length of argument `i` per row (strings), or `None` when it is not a string.
fn byte_lengths(args: &[ColumnarValue], i: usize, rows: usize) -> Result<Option<Int64Array>> {
    let Some(arg) = args.get(i) else {
        return Ok(None);
    };
    let array = arg.to_array(rows.max(1))?;
    if !matches!(
        array.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        return Ok(None);
    }
    let lengths: ArrayRef = datafusion::arrow::compute::kernels::length::length(&array)?;
    let lengths = cast(&lengths, &DataType::Int64)?;
    Ok(lengths.as_any().downcast_ref::<Int64Array>().cloned())
}

/// A series' step in the unit of its bounds (nanoseconds for timestamps, days for dates, the
/// value for integers), approximated for calendar intervals (a month is 28 days: the bound
/// errs on the side of counting more elements).
fn series_step(step: Option<&ColumnarValue>, bounds: &DataType) -> Option<i128> {
    let Some(step) = step else {
        return Some(1);
    };
    let ColumnarValue::Scalar(s) = step else {
        return None;
    };
    const DAY: i128 = 86_400_000_000_000;
    let nanos = match s {
        ScalarValue::IntervalMonthDayNano(Some(v)) => {
            i128::from(v.months) * 28 * DAY + i128::from(v.days) * DAY + i128::from(v.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            i128::from(v.days) * DAY + i128::from(v.milliseconds) * 1_000_000
        }
        ScalarValue::IntervalYearMonth(Some(m)) => i128::from(*m) * 28 * DAY,
        other => {
            return other
                .clone()
                .cast_to(&DataType::Int64)
                .ok()
                .and_then(|v| match v {
                    ScalarValue::Int64(Some(n)) => Some(i128::from(n)),
                    _ => None,
                });
        }
    };
    Some(match bounds {
        DataType::Timestamp(unit, _) => {
            nanos
                / match unit {
                    TimeUnit::Second => 1_000_000_000,
                    TimeUnit::Millisecond => 1_000_000,
                    TimeUnit::Microsecond => 1_000,
                    TimeUnit::Nanosecond => 1,
                }
        }
        DataType::Date32 | DataType::Date64 => nanos / DAY,
        _ => nanos,
    })
}

/// Argument `i` (a series bound) per row as i64 in its own unit (days for dates).
fn series_bounds(args: &[ColumnarValue], i: usize, rows: usize) -> Result<Option<Int64Array>> {
    let Some(arg) = args.get(i) else {
        return Ok(None);
    };
    let array = arg.to_array(rows.max(1))?;
    let target = match array.data_type() {
        t if t.is_integer() => DataType::Int64,
        DataType::Date32 => DataType::Int32,
        DataType::Date64 | DataType::Timestamp(_, _) => DataType::Int64,
        _ => return Ok(None),
    };
    let ints = cast(&array, &target)?;
    let ints = cast(&ints, &DataType::Int64)?;
    Ok(ints.as_any().downcast_ref::<Int64Array>().cloned())
}

impl Bounded {
    fn too_large(&self, what: String) -> DataFusionError {
        DataFusionError::External(Box::new(ValueTooLarge(format!(
            "{}: {what} (the server allows {} bytes per value and {} per call: query.max_value_bytes)",
            self.builtin.name(),
            self.max_value,
            self.max_call
        ))))
    }

    /// Refuses the call when its output would be too large.
    fn check(&self, args: &[ColumnarValue], rows: usize) -> Result<()> {
        let per_row: Vec<u64> = match self.growth {
            Growth::Repeat => {
                let (Some(len), Some(n)) = (byte_lengths(args, 0, rows)?, integers(args, 1, rows)?)
                else {
                    return Ok(());
                };
                len.iter()
                    .zip(n.iter())
                    .map(|(l, n)| {
                        (l.unwrap_or(0).max(0) as u64).saturating_mul(n.unwrap_or(0).max(0) as u64)
                    })
                    .collect()
            }
            Growth::Pad | Growth::Count => {
                let Some(n) = integers(args, 1, rows)? else {
                    return Ok(());
                };
                let unit = if self.growth == Growth::Pad {
                    CHAR_BYTES
                } else {
                    ELEMENT_BYTES
                };
                n.iter()
                    .map(|n| (n.unwrap_or(0).max(0) as u64).saturating_mul(unit))
                    .collect()
            }
            Growth::Series => {
                // One argument: range(stop) from 0.
                let (start, stop) = if args.len() == 1 {
                    (None, series_bounds(args, 0, rows)?)
                } else {
                    (series_bounds(args, 0, rows)?, series_bounds(args, 1, rows)?)
                };
                let Some(stop) = stop else {
                    return Err(self.too_large(
                        "its bounds are not integers, dates or timestamps, so its size cannot be checked".into(),
                    ));
                };
                let bounds_type = args
                    .get(if args.len() == 1 { 0 } else { 1 })
                    .map(ColumnarValue::data_type)
                    .unwrap_or(DataType::Int64);
                // A per-row or unknown step counts as 1: the bound errs towards more elements.
                let step = series_step(args.get(2), &bounds_type)
                    .filter(|s| *s != 0)
                    .map_or(1, i128::abs);
                (0..stop.len())
                    .map(|i| {
                        let hi = if stop.is_null(i) {
                            0
                        } else {
                            i128::from(stop.value(i))
                        };
                        let lo = match &start {
                            Some(s) if !s.is_null(i) => i128::from(s.value(i)),
                            _ => 0,
                        };
                        let elements = (hi - lo).unsigned_abs() / step.max(1) as u128 + 1;
                        u64::try_from(elements)
                            .unwrap_or(u64::MAX)
                            .saturating_mul(ELEMENT_BYTES)
                    })
                    .collect()
            }
        };
        let largest = per_row.iter().copied().max().unwrap_or(0);
        if largest > self.max_value {
            return Err(self.too_large(format!("one value would be {largest} bytes")));
        }
        let total = per_row.iter().fold(0u64, |a, b| a.saturating_add(*b));
        if total > self.max_call {
            return Err(self.too_large(format!(
                "one call over {} rows would make {total} bytes",
                per_row.len()
            )));
        }
        Ok(())
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.builtin.name()
    }

    fn aliases(&self) -> &[String] {
        self.builtin.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.builtin.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.builtin.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.builtin.inner().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        self.builtin.inner().return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args.args, args.number_rows)?;
        self.builtin.inner().invoke_with_args(args)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.builtin.inner().simplify(args, info)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.builtin.inner().coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.builtin.inner().documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ctx() -> SessionContext {
        let ctx = SessionContext::new();
        register(&ctx, 1 << 20, 8 << 20);
        ctx
    }

    async fn run(
        ctx: &SessionContext,
        sql: &str,
    ) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
        ctx.sql(sql).await?.collect().await
    }

    fn refused(e: DataFusionError) -> String {
        let text = e.to_string();
        assert!(
            matches!(e.find_root(), DataFusionError::External(x) if x.is::<ValueTooLarge>()),
            "{text}"
        );
        text
    }

    #[tokio::test]
    async fn amplifying_functions_are_refused_before_they_allocate() {
        let ctx = ctx().await;
        for (sql, says) in [
            (
                "SELECT length(repeat('x', 2000000000))",
                "repeat: one value would be 2000000000 bytes",
            ),
            ("SELECT lpad('a', 2000000000)", "lpad"),
            ("SELECT rpad('a', 2000000000, 'b')", "rpad"),
            ("SELECT range(0, 400000000)", "range"),
            ("SELECT generate_series(1, 400000000, 1)", "generate_series"),
            ("SELECT array_repeat(1, 400000000)", "array_repeat"),
            (
                "SELECT range(TIMESTAMP '1970-01-01', TIMESTAMP '2100-01-01', INTERVAL '1 second')",
                "range",
            ),
        ] {
            let e = run(&ctx, sql).await.unwrap_err();
            let text = refused(e);
            assert!(text.contains(says), "{sql}: {text}");
        }
        // Many rows each a little (per row, so not folded into one constant): the call is bounded.
        let e = run(
            &ctx,
            "SELECT repeat('x', 2000 + value % 2) FROM range(1, 20000)",
        )
        .await
        .unwrap_err();
        assert!(refused(e).contains("one call over"));
    }

    #[tokio::test]
    async fn ordinary_uses_answer_as_the_builtins_do() {
        let ctx = ctx().await;
        let plain = SessionContext::new();
        for sql in [
            "SELECT repeat('ab', 3) AS v",
            "SELECT lpad('7', 3, '0') AS v, rpad('x', 2) AS w",
            "SELECT range(0, 10, 3) AS v",
            "SELECT generate_series(1, 5) AS v",
            "SELECT array_repeat('a', 4) AS v",
            "SELECT range(DATE '2026-01-01', DATE '2026-01-10', INTERVAL '1 day') AS v",
        ] {
            let a = run(&ctx, sql).await.unwrap();
            let b = run(&plain, sql).await.unwrap();
            assert_eq!(a, b, "{sql}");
        }
    }
}
