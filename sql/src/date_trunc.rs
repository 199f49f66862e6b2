//! `date_trunc` with a fast path for UTC timestamps.
//!
//! Every Verdict timestamp is `Timestamp(Nanosecond, "UTC")`. DataFusion's `date_trunc` takes
//! its arithmetic fast path only for timestamps with no time zone; with one (even UTC) it
//! converts every value through chrono, ~150 ns per row — most of the time of an hourly
//! aggregation over the lake. In UTC a second, minute, hour and day all have one length, so
//! truncating is `t - t.rem_euclid(step)` (floor, also before 1970).
//!
//! [`UtcDateTrunc`] replaces the built-in under the same name: for a UTC timestamp array and
//! one of those granularities it computes that; everything else (other zones, weeks, months,
//! times, scalars) goes to the built-in, as do its signature, type rules, simplification and
//! ordering properties. A test checks the two agree.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, PrimitiveArray};
use datafusion::arrow::datatypes::{
    ArrowTimestampType, DataType, FieldRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};

/// `date_trunc` with the UTC fast path; see the module documentation.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct UtcDateTrunc {
    builtin: ScalarUDF,
}

impl UtcDateTrunc {
    /// The function to register in place of DataFusion's `date_trunc`.
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(UtcDateTrunc {
            builtin: datafusion::functions::datetime::date_trunc()
                .as_ref()
                .clone(),
        })
    }
}

/// Nanoseconds of a fixed-length granularity in UTC.
fn step_nanos(granularity: &str) -> Option<i64> {
    const S: i64 = 1_000_000_000;
    match granularity.to_ascii_lowercase().as_str() {
        "second" => Some(S),
        "minute" => Some(60 * S),
        "hour" => Some(3_600 * S),
        "day" => Some(86_400 * S),
        _ => None,
    }
}

fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "utc" | "+00:00" | "Z" | "Etc/UTC")
}

fn truncate<T: ArrowTimestampType>(array: &ArrayRef, step: i64) -> Option<ArrayRef> {
    let a = array.as_any().downcast_ref::<PrimitiveArray<T>>()?;
    let DataType::Timestamp(_, tz) = a.data_type() else {
        return None;
    };
    let tz = tz.clone();
    // Only values near i64::MIN can overflow; the built-in then answers (with its error).
    let out: PrimitiveArray<T> = a
        .try_unary(|t| {
            t.checked_sub(t.rem_euclid(step)).ok_or(
                datafusion::arrow::error::ArrowError::ComputeError(String::new()),
            )
        })
        .ok()?;
    Some(Arc::new(out.with_timezone_opt(tz)))
}

/// The fast path's result, or `None` where the built-in must answer.
fn fast_path(args: &[ColumnarValue]) -> Option<ArrayRef> {
    let [
        ColumnarValue::Scalar(granularity),
        ColumnarValue::Array(array),
    ] = args
    else {
        return None;
    };
    let granularity = match granularity {
        ScalarValue::Utf8(Some(g)) | ScalarValue::Utf8View(Some(g)) => g,
        ScalarValue::LargeUtf8(Some(g)) => g,
        _ => return None,
    };
    let nanos = step_nanos(granularity)?;
    let DataType::Timestamp(unit, Some(tz)) = array.data_type() else {
        return None;
    };
    if !is_utc(tz) {
        return None;
    }
    match unit {
        TimeUnit::Nanosecond => truncate::<TimestampNanosecondType>(array, nanos),
        TimeUnit::Microsecond => truncate::<TimestampMicrosecondType>(array, nanos / 1_000),
        TimeUnit::Millisecond => truncate::<TimestampMillisecondType>(array, nanos / 1_000_000),
        TimeUnit::Second => truncate::<TimestampSecondType>(array, nanos / 1_000_000_000),
    }
}

impl ScalarUDFImpl for UtcDateTrunc {
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
        if let Some(out) = fast_path(&args.args) {
            return Ok(ColumnarValue::Array(out));
        }
        self.builtin.inner().invoke_with_args(args)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.builtin.inner().simplify(args, info)
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.builtin.inner().evaluate_bounds(input)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.builtin.inner().output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.builtin.inner().preserves_lex_ordering(inputs)
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
    use datafusion::arrow::array::TimestampNanosecondArray;
    use datafusion::arrow::datatypes::Field;
    use datafusion::config::ConfigOptions;

    fn call(udf: &ScalarUDF, granularity: &str, array: ArrayRef) -> ArrayRef {
        let args = vec![
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(granularity.into()))),
            ColumnarValue::Array(Arc::clone(&array)),
        ];
        let arg_fields = vec![
            Arc::new(Field::new("g", DataType::Utf8, false)),
            Arc::new(Field::new("t", array.data_type().clone(), true)),
        ];
        let return_field = Arc::new(Field::new("r", array.data_type().clone(), true));
        let out = udf
            .invoke_with_args(ScalarFunctionArgs {
                args,
                arg_fields,
                number_rows: array.len(),
                return_field,
                config_options: Arc::new(ConfigOptions::default()),
            })
            .unwrap();
        match out {
            ColumnarValue::Array(a) => a,
            ColumnarValue::Scalar(s) => s.to_array_of_size(array.len()).unwrap(),
        }
    }

    /// Nanosecond timestamps around the epoch, hour and day boundaries, far past and future,
    /// and nulls.
    fn sample() -> Vec<Option<i64>> {
        let mut v = vec![
            None,
            Some(0),
            Some(-1),
            Some(1),
            Some(i64::MIN / 2),
            Some(i64::MAX / 2),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Within ±100 years of 1970.
            let t = (x % 6_307_200_000_000_000_000) as i64 - 3_153_600_000_000_000_000;
            v.push(Some(t));
            v.push(Some(t - t.rem_euclid(3_600_000_000_000)));
            v.push(Some(t - t.rem_euclid(3_600_000_000_000) - 1));
        }
        v
    }

    #[test]
    fn agrees_with_the_builtin_for_every_granularity_unit_and_zone() {
        let ours = UtcDateTrunc::udf();
        let builtin = datafusion::functions::datetime::date_trunc();
        let granularities = [
            "second",
            "minute",
            "hour",
            "HOUR",
            "day",
            "week",
            "month",
            "quarter",
            "year",
            "millisecond",
            "microsecond",
        ];
        for tz in [
            Some("UTC"),
            Some("+00:00"),
            Some("Europe/Paris"),
            Some("+05:30"),
            None,
        ] {
            let ns: ArrayRef = Arc::new(
                TimestampNanosecondArray::from(sample()).with_timezone_opt(tz.map(Arc::from)),
            );
            let units: Vec<ArrayRef> = vec![
                Arc::clone(&ns),
                datafusion::arrow::compute::cast(
                    &ns,
                    &DataType::Timestamp(TimeUnit::Millisecond, tz.map(Arc::from)),
                )
                .unwrap(),
                datafusion::arrow::compute::cast(
                    &ns,
                    &DataType::Timestamp(TimeUnit::Second, tz.map(Arc::from)),
                )
                .unwrap(),
            ];
            for array in units {
                for g in granularities {
                    let a = call(&ours, g, Arc::clone(&array));
                    let b = call(&builtin, g, Arc::clone(&array));
                    assert_eq!(a.data_type(), b.data_type(), "{g} {tz:?}");
                    assert_eq!(&a, &b, "{g} {tz:?} {}", array.data_type());
                }
            }
        }
    }

    #[test]
    fn the_fast_path_is_taken_for_utc_hours_only_where_it_is_exact() {
        let utc: ArrayRef = Arc::new(
            TimestampNanosecondArray::from(vec![Some(5_400_000_000_000), None])
                .with_timezone("UTC"),
        );
        let scalar = |g: &str| ColumnarValue::Scalar(ScalarValue::Utf8(Some(g.into())));
        let out = fast_path(&[scalar("hour"), ColumnarValue::Array(Arc::clone(&utc))]).unwrap();
        let out = out
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .unwrap();
        assert_eq!(out.value(0), 3_600_000_000_000);
        assert!(out.is_null(1));
        assert!(fast_path(&[scalar("month"), ColumnarValue::Array(Arc::clone(&utc))]).is_none());
        let paris: ArrayRef =
            Arc::new(TimestampNanosecondArray::from(vec![Some(0)]).with_timezone("Europe/Paris"));
        assert!(fast_path(&[scalar("hour"), ColumnarValue::Array(paris)]).is_none());
    }
}
