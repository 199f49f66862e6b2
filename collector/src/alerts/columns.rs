//! Reading the flat schema's columns row by row, whatever their encoding (a dictionary in
//! ingest batches, plain strings in some query results).

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampNanosecondType, UInt16Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType};

/// A string column.
#[derive(Debug)]
pub enum StrCol<'a> {
    Plain(&'a arrow_array::StringArray),
    View(&'a arrow_array::StringViewArray),
    Dict {
        keys: &'a arrow_array::PrimitiveArray<Int32Type>,
        values: &'a arrow_array::StringArray,
    },
    /// The column is absent: every value is null.
    Missing,
}

impl<'a> StrCol<'a> {
    pub fn of(batch: &'a RecordBatch, name: &str) -> Result<StrCol<'a>, ArrowError> {
        let Some(a) = batch.column_by_name(name) else {
            return Ok(StrCol::Missing);
        };
        str_col(a, name)
    }

    pub fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            StrCol::Plain(s) => (!s.is_null(i)).then(|| s.value(i)),
            StrCol::View(s) => (!s.is_null(i)).then(|| s.value(i)),
            StrCol::Dict { keys, values } => {
                if keys.is_null(i) {
                    return None;
                }
                let k = keys.value(i) as usize;
                (!values.is_null(k)).then(|| values.value(k))
            }
            StrCol::Missing => None,
        }
    }
}

impl<'a> StrCol<'a> {
    /// Each of the first `n` rows' value id (0: null; equal strings may have different ids
    /// only in a dictionary holding a value twice) and the string of each id.
    pub fn ids(&self, n: usize) -> (Vec<u32>, Vec<Option<&'a str>>) {
        match self {
            StrCol::Dict { keys, values } => {
                let mut strings = Vec::with_capacity(values.len() + 1);
                strings.push(None);
                strings.extend(
                    (0..values.len()).map(|k| (!values.is_null(k)).then(|| values.value(k))),
                );
                let ids = (0..n)
                    .map(|i| {
                        if keys.is_null(i) {
                            0
                        } else {
                            keys.value(i) as u32 + 1
                        }
                    })
                    .collect();
                (ids, strings)
            }
            StrCol::Missing => (vec![0; n], vec![None]),
            _ => {
                let mut seen: std::collections::HashMap<&'a str, u32> =
                    std::collections::HashMap::new();
                let mut strings = vec![None];
                let ids = (0..n)
                    .map(|i| match self.get(i) {
                        None => 0,
                        Some(v) => *seen.entry(v).or_insert_with(|| {
                            strings.push(Some(v));
                            (strings.len() - 1) as u32
                        }),
                    })
                    .collect();
                (ids, strings)
            }
        }
    }
}

fn str_col<'a>(a: &'a ArrayRef, name: &str) -> Result<StrCol<'a>, ArrowError> {
    match a.data_type() {
        DataType::Utf8 => Ok(StrCol::Plain(a.as_string::<i32>())),
        DataType::Utf8View => Ok(StrCol::View(a.as_string_view())),
        DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
            let d = a.as_dictionary::<Int32Type>();
            Ok(StrCol::Dict {
                keys: d.keys(),
                values: d.values().as_string::<i32>(),
            })
        }
        other => Err(ArrowError::SchemaError(format!(
            "column {name}: expected strings, found {other}"
        ))),
    }
}

/// An integer column (any of the widths the schemas use), as i64; null is 0.
#[derive(Debug)]
pub struct IntCol<'a>(&'a ArrayRef);

impl<'a> IntCol<'a> {
    pub fn of(batch: &'a RecordBatch, name: &str) -> Result<IntCol<'a>, ArrowError> {
        let a = batch
            .column_by_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("missing column {name}")))?;
        match a.data_type() {
            DataType::Int64
            | DataType::Int32
            | DataType::UInt16
            | DataType::Timestamp(arrow_schema::TimeUnit::Nanosecond, _) => Ok(IntCol(a)),
            other => Err(ArrowError::SchemaError(format!(
                "column {name}: expected integers, found {other}"
            ))),
        }
    }

    pub fn get(&self, i: usize) -> i64 {
        let a = self.0;
        if a.is_null(i) {
            return 0;
        }
        match a.data_type() {
            DataType::Int64 => a.as_primitive::<Int64Type>().value(i),
            DataType::Int32 => i64::from(a.as_primitive::<Int32Type>().value(i)),
            DataType::UInt16 => i64::from(a.as_primitive::<UInt16Type>().value(i)),
            _ => a.as_primitive::<TimestampNanosecondType>().value(i),
        }
    }
}
