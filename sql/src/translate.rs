//! The Logging filter ([`verdict_filter::Filter`]) translated to one DataFusion expression over
//! the flat schema of `policy_action`, so that a scan can push it down: the `timestamp` bounds
//! prune hour partitions and row groups (statistics), equality and regexes run on the columns
//! (dictionary-encoded where the schema says so).
//!
//! Invariant: the expression selects exactly the rows whose LogEntry the JSON evaluator
//! (`Filter::matches`) selects. Two rules make that hold:
//! - The language is two-valued: a comparison on a missing field is *false*, and `NOT` of it
//!   *true* (choice C7), whereas SQL makes both NULL. Every translated comparison on a nullable
//!   column is guarded as `column IS NOT NULL AND …`, so `NOT` sees `false`. Non-nullable
//!   columns (`timestamp`, ports, …) are compared bare.
//! - Only constructs whose SQL meaning is the language's are translated natively: comparisons of
//!   timestamps and integers with constants, string `=`, `!=` (compared case-insensitively in
//!   place by [`crate::case_fold`]) and `:` (case-folded with `lower()`; both the Unicode
//!   lower-casing of the language's choice C9), regexes (DataFusion and the language both use
//!   the `regex` crate, unanchored, case-sensitive), presence of payload columns, and
//!   `AND`/`OR`/`NOT`. Every other node — `SEARCH`, global restrictions, `sample`,
//!   `ip_in_net`, `log_id`, `source`, `cast`, `REGEXP_EXTRACT`, severities, string ordering,
//!   `NULL_VALUE`, paths through `policies` — becomes a call of a UDF that rebuilds each row's
//!   LogEntry and runs the JSON evaluator on that node ([`crate::fallback`]). Such nodes still
//!   combine with translated ones, so `timestamp >= "…" SEARCH("x")` prunes by time.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::common::ScalarValue;
use datafusion::functions::expr_fn::{contains, lower, regexp_like};
use datafusion::logical_expr::{Expr as DfExpr, ScalarUDF, col, lit};
use verdict_filter::Filter;
use verdict_filter::ast::{Comparator, Comparison, Expr, Number, Operand, Value, ValueExpr};
use verdict_filter::case_fold::fold;
use verdict_filter::catalogue::{Absence, Field, FieldType};

use crate::case_fold::equals_ignoring_case;
use crate::error::Result;
use crate::fallback::JsonFallback;

/// How a filter was translated (for tests, EXPLAIN and the API's debug output).
#[derive(Debug, Clone)]
pub struct Translation {
    /// The predicate over `policy_action`; `None` for the empty filter (every row).
    pub predicate: Option<DfExpr>,
    /// Nodes handed to the JSON evaluator, as their query text.
    pub fallback_nodes: Vec<String>,
}

/// Translates `filter` into a predicate over the flat `policy_action` schema.
pub fn translate(filter: &Filter) -> Result<Translation> {
    let schema = verdict_schema::flat_schema::log_entry_schema();
    let mut t = Translator {
        text: filter.text(),
        schema: &schema,
        fallback_nodes: Vec::new(),
    };
    let predicate = filter.expr().map(|e| t.expr(e)).transpose()?;
    Ok(Translation {
        predicate,
        fallback_nodes: t.fallback_nodes,
    })
}

struct Translator<'a> {
    text: &'a str,
    schema: &'a Schema,
    fallback_nodes: Vec<String>,
}

impl Translator<'_> {
    fn expr(&mut self, e: &Expr) -> Result<DfExpr> {
        let native = match e {
            Expr::And(items) => {
                return self.fold(items, DfExpr::and);
            }
            Expr::Or(items) => {
                return self.fold(items, DfExpr::or);
            }
            Expr::Not(inner) => return Ok(!self.expr(inner)?),
            Expr::Compare(c) => self.compare(c),
            Expr::Exists(x) => self.exists(x.field.field),
            Expr::Global(_) | Expr::Call(_) => None,
        };
        match native {
            Some(n) => Ok(n),
            None => self.fallback(e),
        }
    }

    /// Joins the translations of `items` with `join` into a balanced tree: a filter of
    /// thousands of terms becomes an expression only about log2(n) deep, which every
    /// recursive pass of the planner walks without exhausting a stack.
    fn fold(&mut self, items: &[Expr], join: fn(DfExpr, DfExpr) -> DfExpr) -> Result<DfExpr> {
        let mut level: Vec<DfExpr> = items
            .iter()
            .map(|item| self.expr(item))
            .collect::<Result<_>>()?;
        if level.is_empty() {
            return Ok(lit(true));
        }
        while level.len() > 1 {
            let mut next = Vec::with_capacity(level.len().div_ceil(2));
            let mut pairs = level.into_iter();
            while let Some(a) = pairs.next() {
                next.push(match pairs.next() {
                    Some(b) => join(a, b),
                    None => a,
                });
            }
            level = next;
        }
        Ok(level.pop().expect("one left"))
    }

    fn fallback(&mut self, e: &Expr) -> Result<DfExpr> {
        let udf = JsonFallback::new(e, self.text)?;
        self.fallback_nodes.push(udf.node_text().to_owned());
        let args = self.schema.fields().iter().map(|f| col(f.name())).collect();
        Ok(ScalarUDF::new_from_impl(udf).call(args))
    }

    /// A field that maps to one scalar column (not through `policies`).
    fn scalar_column(&self, field: &'static Field) -> Option<(&'static str, bool)> {
        if field.repeated {
            return None;
        }
        let name = field.column?;
        let nullable = self.schema.field_with_name(name).ok()?.is_nullable();
        Some((name, nullable))
    }

    fn exists(&self, field: &'static Field) -> Option<DfExpr> {
        let (name, nullable) = self.scalar_column(field)?;
        field.field_type()?;
        // Stored rows always carry their defaulted envelope fields, but the JSON evaluator's
        // presence rule for them is subtle (C14): leave those to it.
        if field.absence != Absence::Missing {
            return None;
        }
        Some(if nullable {
            col(name).is_not_null()
        } else {
            lit(true)
        })
    }

    fn compare(&self, c: &Comparison) -> Option<DfExpr> {
        let Operand::Field(path) = &c.left else {
            return None;
        };
        let (name, nullable) = self.scalar_column(path.field)?;
        let field_type = path.field.field_type()?;
        self.distribute(&c.right, &|v| {
            let e = compare_value(name, field_type, c.op, v)?;
            // Each translated comparison is NULL only when its column is: `col IS NOT NULL AND
            // e` is then false instead (and, unlike `IS TRUE`, leaves `e` visible to pruning).
            Some(if nullable && !is_constant(&e) {
                col(name).is_not_null().and(e)
            } else {
                e
            })
        })
    }

    /// `f op (a OR NOT b)` is `f op a OR NOT f op b` (reference §3, choice C8).
    fn distribute(
        &self,
        right: &ValueExpr,
        leaf: &dyn Fn(&Value) -> Option<DfExpr>,
    ) -> Option<DfExpr> {
        match right {
            ValueExpr::Value(v) => leaf(v),
            ValueExpr::Not(inner) => Some(!self.distribute(inner, leaf)?),
            ValueExpr::And(items) | ValueExpr::Or(items) => {
                let join: fn(DfExpr, DfExpr) -> DfExpr = if matches!(right, ValueExpr::And(_)) {
                    DfExpr::and
                } else {
                    DfExpr::or
                };
                let mut out: Option<DfExpr> = None;
                for item in items {
                    let e = self.distribute(item, leaf)?;
                    out = Some(match out {
                        None => e,
                        Some(acc) => join(acc, e),
                    });
                }
                out
            }
        }
    }
}

fn is_constant(e: &DfExpr) -> bool {
    matches!(e, DfExpr::Literal(..))
}

/// `column op value` for one constant, or `None` when the JSON evaluator must decide.
fn compare_value(name: &str, field_type: FieldType, op: Comparator, v: &Value) -> Option<DfExpr> {
    if v.is_null() {
        return None;
    }
    let column = col(name);
    match field_type {
        FieldType::Timestamp => {
            if !is_ordering(op) {
                // `:` and regexes look at the RFC 3339 text.
                return None;
            }
            // A constant that is not a timestamp makes the comparison false (C10).
            let Some(t) = v.to_timestamp() else {
                return Some(lit(false));
            };
            Some(binary(column, op, timestamp_literal(t.unix_nanos())))
        }
        FieldType::Integer => {
            let op = if op == Comparator::Has {
                Comparator::Eq
            } else {
                op
            };
            if !is_ordering(op) {
                return None;
            }
            match v.to_number() {
                None => Some(lit(false)),
                Some(Number::Integer(i)) => {
                    let i = i64::try_from(i).ok()?;
                    Some(binary(column, op, lit(i)))
                }
                // NaN, infinities and fractions: leave the numeric rules to the evaluator.
                Some(Number::Float(_)) => None,
            }
        }
        FieldType::String | FieldType::Enum(_) => {
            match op {
                Comparator::Eq => {
                    let eq = equals_ignoring_case(column.clone(), &v.text);
                    Some(match case_variant_ranges(&v.text) {
                        Some(ranges) => {
                            let within = ranges
                                .into_iter()
                                .map(|(low, high)| {
                                    column
                                        .clone()
                                        .gt_eq(lit(low))
                                        .and(high.bound(column.clone()))
                                })
                                .reduce(DfExpr::or)
                                .expect("at least one range");
                            within.and(eq)
                        }
                        None => eq,
                    })
                }
                Comparator::Ne => Some(!equals_ignoring_case(column, &v.text)),
                Comparator::Has => Some(contains(lower(column), lit(fold(&v.text)))),
                Comparator::Matches => Some(regexp_like(column, lit(v.text.clone()), None)),
                Comparator::NotMatches => Some(!regexp_like(column, lit(v.text.clone()), None)),
                // Ordering of text compares case-folded strings by code point; DataFusion's
                // collation is the same for UTF-8, but keep one implementation.
                Comparator::Lt | Comparator::Le | Comparator::Gt | Comparator::Ge => None,
            }
        }
        FieldType::Severity => None,
    }
}

/// The upper end of [`case_variant_range`].
enum UpperBound {
    Inclusive(String),
    Exclusive(String),
}

impl UpperBound {
    fn bound(self, column: DfExpr) -> DfExpr {
        match self {
            UpperBound::Inclusive(s) => column.lt_eq(lit(s)),
            UpperBound::Exclusive(s) => column.lt(lit(s)),
        }
    }
}

/// Byte ranges holding every string whose lower-casing is `value`'s, one per case variant of
/// its first character, so a case-insensitive equality can also prune row groups and pages by
/// min/max as tightly as an exact one (the lake sorts rows by namespace; one range from
/// `PAYMENTS` to `payments` would keep every row group of `default` or `frontend`).
/// Only for ASCII constants: a matching string then has, at each position, the ASCII lower or
/// upper letter — or, for `k`, the KELVIN SIGN U+212A, the one non-ASCII character that
/// lower-cases to ASCII — so after a given first character it lies between the upper-cased rest
/// and the lower-cased rest (or, past a `k`, below that prefix followed by U+212B).
fn case_variant_ranges(value: &str) -> Option<Vec<(String, UpperBound)>> {
    if !value.is_ascii() {
        return None;
    }
    let folded = value.to_ascii_lowercase();
    let Some(first) = folded.chars().next() else {
        return Some(vec![(String::new(), UpperBound::Inclusive(String::new()))]);
    };
    let rest = &folded[1..];
    let firsts: Vec<String> = match first {
        'k' => vec!["K".into(), "\u{212A}".into(), "k".into()],
        c if c.is_ascii_alphabetic() => vec![c.to_ascii_uppercase().into(), c.into()],
        c => vec![c.into()],
    };
    Some(
        firsts
            .into_iter()
            .map(|f| {
                let low = format!("{f}{}", rest.to_ascii_uppercase());
                let high = match rest.find('k') {
                    None => UpperBound::Inclusive(format!("{f}{rest}")),
                    Some(i) => UpperBound::Exclusive(format!("{f}{}\u{212B}", &rest[..i])),
                };
                (low, high)
            })
            .collect(),
    )
}

fn is_ordering(op: Comparator) -> bool {
    matches!(
        op,
        Comparator::Eq
            | Comparator::Ne
            | Comparator::Lt
            | Comparator::Le
            | Comparator::Gt
            | Comparator::Ge
    )
}

fn binary(left: DfExpr, op: Comparator, right: DfExpr) -> DfExpr {
    match op {
        Comparator::Eq | Comparator::Has => left.eq(right),
        Comparator::Ne => left.not_eq(right),
        Comparator::Lt => left.lt(right),
        Comparator::Le => left.lt_eq(right),
        Comparator::Gt => left.gt(right),
        Comparator::Ge => left.gt_eq(right),
        Comparator::Matches | Comparator::NotMatches => unreachable!("regexes are not binary"),
    }
}

/// A `Timestamp(ns, "UTC")` literal, the type of the stored time columns.
pub fn timestamp_literal(nanos: i64) -> DfExpr {
    lit(ScalarValue::TimestampNanosecond(
        Some(nanos),
        Some(Arc::from("UTC")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translated(q: &str) -> Translation {
        translate(&verdict_filter::parse(q).unwrap()).unwrap()
    }

    #[test]
    fn time_ranges_stay_plain_comparisons_for_pruning() {
        let t = translated(
            r#"timestamp >= "2020-06-13T00:00:00Z" timestamp < "2020-06-14" jsonPayload.disposition=deny"#,
        );
        assert!(t.fallback_nodes.is_empty());
        let text = t.predicate.unwrap().to_string();
        assert!(
            text.contains("timestamp >= TimestampNanosecond(1592006400000000000"),
            "{text}"
        );
        assert!(
            text.contains("timestamp < TimestampNanosecond(1592092800000000000"),
            "{text}"
        );
    }

    /// Depth of the AND/OR tree of an expression.
    fn depth(e: &DfExpr) -> usize {
        match e {
            DfExpr::BinaryExpr(b) => 1 + depth(&b.left).max(depth(&b.right)),
            _ => 0,
        }
    }

    #[test]
    fn long_term_lists_become_shallow_trees() {
        // As many terms as a filter's 20,000 characters hold.
        let terms: Vec<String> = (0..700).map(|i| format!("jsonPayload.count={i}")).collect();
        let t = translated(&terms.join(" OR "));
        let predicate = t.predicate.unwrap();
        // 700 leaves (each a small comparison) need 10 levels; a chain would need 700.
        assert!(depth(&predicate) <= 10 + 4, "depth {}", depth(&predicate));
        let t = translated(&terms.join(" AND "));
        assert!(depth(&t.predicate.unwrap()) <= 10 + 4);
    }

    #[test]
    fn nullable_comparisons_are_two_valued() {
        let t = translated(r#"NOT jsonPayload.dest.pod_name = "cart""#);
        let text = t.predicate.unwrap().to_string();
        assert!(
            text.starts_with(
                "NOT dest_pod_name IS NOT NULL AND (dest_pod_name >= Utf8(\"CART\") AND dest_pod_name <= Utf8(\"Cart\") OR"
            ),
            "{text}"
        );
    }

    #[test]
    fn case_variants_lie_in_the_range() {
        for (value, variants) in [
            ("shop", &["shop", "SHOP", "sHoP", "Shop"][..]),
            (
                "kube-system",
                &[
                    "kube-system",
                    "KUBE-SYSTEM",
                    "\u{212A}ube-system",
                    "\u{212A}UBE-SYSTEM",
                    "Kube-System",
                    "kube-system",
                ][..],
            ),
        ] {
            let ranges = case_variant_ranges(value).unwrap();
            let within = |v: &str| {
                ranges.iter().any(|(low, high)| {
                    low.as_str() <= v
                        && match high {
                            UpperBound::Inclusive(h) => v <= h.as_str(),
                            UpperBound::Exclusive(h) => v < h.as_str(),
                        }
                })
            };
            for v in variants {
                assert_eq!(v.to_lowercase(), value);
                assert!(within(v), "{v}");
            }
            // Strings of other first letters are outside: their row groups are pruned.
            for other in ["default", "frontend", "zzz", "KA", "jube-system", "lube"] {
                assert!(!within(other), "{value}: {other}");
            }
        }
        assert!(case_variant_ranges("straße").is_none());
    }

    #[test]
    fn untranslatable_nodes_go_to_the_json_evaluator() {
        let t = translated(r#"timestamp >= "2020-06-13" SEARCH("cart") severity >= WARNING"#);
        assert_eq!(
            t.fallback_nodes,
            ["SEARCH(\"cart\")", "severity >= WARNING"]
        );
    }
}
