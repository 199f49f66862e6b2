//! `equals_ignoring_case(text, constant)`: the Logging language's string `=` (case-insensitive,
//! choice C9: both sides Unicode lower-cased, `str::to_lowercase`) without lower-casing rows.
//!
//! `lower(column) = 'payments'` builds a lower-cased copy of every row it sees; on a page of
//! `entries:list` over one hour of the lake that copy was three quarters of the query's time.
//! This function compares each row in place with the JSON evaluator's own comparison
//! ([`verdict_filter::case_fold::eq_folded`]: ASCII rows byte by byte, others lower-cased), so
//! the two evaluators share it. Null in, null out (like `lower(…) = …`).

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayAccessor, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};
use verdict_filter::case_fold::{eq_folded, fold};

/// The function; see the module documentation.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct EqualsIgnoringCase {
    signature: Signature,
}

impl EqualsIgnoringCase {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(EqualsIgnoringCase {
            signature: Signature::any(2, Volatility::Immutable),
        })
    }
}

/// `equals_ignoring_case(text, constant)` as an expression.
pub fn equals_ignoring_case(text: Expr, constant: &str) -> Expr {
    static UDF: LazyLock<ScalarUDF> = LazyLock::new(EqualsIgnoringCase::udf);
    UDF.call(vec![text, lit(constant)])
}

fn compare<'a, A: ArrayAccessor<Item = &'a str>>(rows: A, folded: &str) -> BooleanArray {
    BooleanArray::from_unary(rows, |s| eq_folded(s, folded))
}

impl ScalarUDFImpl for EqualsIgnoringCase {
    fn name(&self) -> &str {
        "equals_ignoring_case"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [text, constant] = args.args.as_slice() else {
            return exec_err!("equals_ignoring_case takes two arguments");
        };
        let folded = match constant {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(c) | ScalarValue::Utf8View(c) | ScalarValue::LargeUtf8(c),
            ) => match c {
                Some(c) => fold(c),
                None => {
                    return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
                }
            },
            other => {
                return exec_err!(
                    "equals_ignoring_case: the second argument must be a string constant, not {}",
                    other.data_type()
                );
            }
        };
        let rows: ArrayRef = match text {
            ColumnarValue::Array(a) => Arc::clone(a),
            ColumnarValue::Scalar(s) => s.to_array_of_size(1)?,
        };
        let out = match rows.data_type() {
            DataType::Utf8View => compare(rows.as_string_view(), &folded),
            DataType::Utf8 => compare(rows.as_string::<i32>(), &folded),
            DataType::LargeUtf8 => compare(rows.as_string::<i64>(), &folded),
            other => return exec_err!("equals_ignoring_case: {other} is not text"),
        };
        Ok(match text {
            ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(out)),
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{StringArray, StringViewArray};

    #[test]
    fn agrees_with_lower_casing_both_sides() {
        let rows = [
            "payments",
            "PAYMENTS",
            "PayMents",
            "payment",
            "payments ",
            "\u{212A}ube-system",
            "kube-system",
            "KUBE-SYSTEM",
            "\u{212A}ube-\u{212A}",
            "kube-\u{212A}x",
            "İstanbul",
            "i\u{307}stanbul",
            "ISTANBUL",
            "straße",
            "STRASSE",
            "ΣΊΣΥΦΟΣ",
            "σίσυφος",
            "",
            "ç",
            "Ç",
        ];
        let constants = [
            "payments",
            "Payments",
            "kube-system",
            "KUBE-k",
            "istanbul",
            "İstanbul",
            "straße",
            "σίσυφος",
            "ç",
            "",
        ];
        let array = StringArray::from_iter(rows.iter().map(Some).chain([None]));
        let views = StringViewArray::from_iter(rows.iter().map(Some).chain([None]));
        for c in constants {
            let folded = fold(c);
            let expected: Vec<Option<bool>> = rows
                .iter()
                .map(|r| Some(r.to_lowercase() == c.to_lowercase()))
                .chain([None])
                .collect();
            let got: Vec<Option<bool>> = compare(&array, &folded).iter().collect();
            assert_eq!(got, expected, "{c}");
            let got: Vec<Option<bool>> = compare(&views, &folded).iter().collect();
            assert_eq!(got, expected, "{c} (views)");
        }
    }
}
