//! The compiled form of a query and its evaluation over LogEntry JSON.
//!
//! Compiling does once what would otherwise be done per entry: regexes are built, constants
//! are case-folded and converted to the operand's type (a constant that does not convert makes
//! its comparison constantly false, reference §7), value lists are distributed into
//! comparisons, and time zones are loaded. Evaluation then walks the entry's JSON without
//! allocating, except where a value must be rendered as text (`cast` to STRING,
//! `REGEXP_EXTRACT`, non-ASCII text that must be case-folded).
//!
//! Field semantics (reference §5, §6): a path that runs through a list visits every element
//! and a comparison is true if it holds for any of them; a *missing* field makes every
//! comparison false; a *defaulted* field absent from the entry is compared as its default
//! (`""`, `DEFAULT`, the Unix epoch, 0); `:*` is true only for a value explicitly present (a
//! list must have an element).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use regex::Regex;
use serde_json::Value as Json;
use verdict_schema::Timestamp;

use crate::ast::{
    Call, CastType, Comparator, Expr, Operand, SearchTerm, Value, ValueExpr, ValueType,
};
use crate::case_fold::{cmp_folded, contains_folded, eq_folded, fold};
use crate::catalogue::{Absence, Field, FieldType};
use crate::conversion::{
    Number, Scalar, parse_bool, parse_duration, parse_severity, parse_timestamp,
};
use crate::error::{FilterError, Position, Result};
use crate::sample::{FnvHasher, sample_hash};
use crate::search::text_has_term;

/// A query ready to run.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    root: Option<Node>,
}

impl Program {
    pub(crate) fn compile(expr: Option<&Expr>, text: &str) -> Result<Program> {
        let compiler = Compiler { text };
        Ok(Program {
            root: expr.map(|e| compiler.expr(e)).transpose()?,
        })
    }

    pub(crate) fn matches(&self, entry: &Json) -> bool {
        self.root.as_ref().is_none_or(|n| n.eval(entry))
    }
}

#[derive(Debug, Clone)]
enum Node {
    And(Box<[Node]>),
    Or(Box<[Node]>),
    Not(Box<Node>),
    Const(bool),
    Compare {
        source: ValueSource,
        test: Test,
    },
    Exists(&'static Field),
    Global(GlobalTest),
    /// Folded log id.
    LogId(Box<str>),
    /// Folded `projects/P` (or folder, organization).
    Source(Box<str>),
    IpInNet {
        field: &'static Field,
        net: IpNet,
    },
    Sample {
        field: &'static Field,
        fraction: f64,
    },
    Search {
        field: Option<&'static Field>,
        terms: Box<[SearchTerm]>,
    },
}

/// Where a comparison's values come from.
#[derive(Debug, Clone)]
enum ValueSource {
    Field(&'static Field),
    Cast {
        inner: Box<ValueSource>,
        target: CastType,
        zone: Option<Arc<tz::TimeZone>>,
        /// The static type of `inner`.
        source: ValueType,
    },
    Extract {
        inner: Box<ValueSource>,
        re: Regex,
    },
}

/// The comparison of one value with a compiled constant.
#[derive(Debug, Clone)]
enum Test {
    /// `= NULL_VALUE` (`want`) or `!= NULL_VALUE`.
    Null {
        want: bool,
    },
    Text {
        op: Order,
        folded: Box<str>,
    },
    Contains(Box<str>),
    Regex {
        re: Regex,
        negate: bool,
    },
    Number {
        op: Order,
        rhs: Number,
    },
    Time {
        op: Order,
        rhs: Timestamp,
    },
    Severity {
        op: Order,
        rhs: i64,
    },
    Bool {
        op: Order,
        rhs: bool,
    },
    Duration {
        op: Order,
        rhs: i128,
    },
}

#[derive(Debug, Clone, Copy)]
enum Order {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Order {
    /// `None` is "unordered" (NaN): only `!=` holds.
    fn holds(self, ordering: Option<Ordering>) -> bool {
        match self {
            Order::Eq => ordering == Some(Ordering::Equal),
            Order::Ne => ordering != Some(Ordering::Equal),
            Order::Lt => ordering == Some(Ordering::Less),
            Order::Le => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
            Order::Gt => ordering == Some(Ordering::Greater),
            Order::Ge => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
        }
    }
}

/// A bare value: `:` against every leaf of the entry.
#[derive(Debug, Clone)]
struct GlobalTest {
    folded: Box<str>,
    number: Option<Number>,
    boolean: Option<bool>,
    null: bool,
}

struct Compiler<'a> {
    text: &'a str,
}

impl Compiler<'_> {
    fn position(&self, offset: usize) -> Position {
        Position::locate(self.text, offset)
    }

    fn expr(&self, expr: &Expr) -> Result<Node> {
        Ok(match expr {
            Expr::And(items) => {
                Node::And(items.iter().map(|e| self.expr(e)).collect::<Result<_>>()?)
            }
            Expr::Or(items) => Node::Or(items.iter().map(|e| self.expr(e)).collect::<Result<_>>()?),
            Expr::Not(inner) => Node::Not(Box::new(self.expr(inner)?)),
            Expr::Compare(c) => {
                let source = self.source(&c.left)?;
                let value_type = c.left.value_type();
                self.distribute(&source, value_type, c.op, &c.right, &c.left)?
            }
            Expr::Exists(e) => Node::Exists(e.field.field),
            Expr::Global(v) => Node::Global(GlobalTest {
                folded: fold(&v.text).into(),
                number: Number::parse(&v.text),
                boolean: parse_bool(&v.text),
                null: v.is_null(),
            }),
            Expr::Call(call) => match call {
                Call::LogId { log_id, .. } => Node::LogId(fold(&log_id.text).into()),
                Call::Source { resource, .. } => Node::Source(fold(&resource.text).into()),
                Call::IpInNet { field, net, .. } => Node::IpInNet {
                    field: field.field,
                    net: *net,
                },
                Call::Sample {
                    field, fraction, ..
                } => Node::Sample {
                    field: field.field,
                    fraction: *fraction,
                },
                Call::Search { field, terms, .. } => Node::Search {
                    field: field.as_ref().map(|f| f.field),
                    terms: terms.clone().into_boxed_slice(),
                },
            },
        })
    }

    /// `f op (a OR NOT b)` → `f op a OR NOT f op b` (reference §3).
    fn distribute(
        &self,
        source: &ValueSource,
        value_type: ValueType,
        op: Comparator,
        right: &ValueExpr,
        left: &Operand,
    ) -> Result<Node> {
        let each = |items: &[ValueExpr]| -> Result<Box<[Node]>> {
            items
                .iter()
                .map(|v| self.distribute(source, value_type, op, v, left))
                .collect()
        };
        Ok(match right {
            ValueExpr::Value(v) => match self.test(value_type, op, v, left)? {
                Some(test) => Node::Compare {
                    source: source.clone(),
                    test,
                },
                None => Node::Const(false),
            },
            ValueExpr::And(items) => Node::And(each(items)?),
            ValueExpr::Or(items) => Node::Or(each(items)?),
            ValueExpr::Not(inner) => Node::Not(Box::new(
                self.distribute(source, value_type, op, inner, left)?,
            )),
        })
    }

    /// The test for `operand op value`; `None` when the value does not convert to the
    /// operand's type (the comparison is then false, reference §7).
    fn test(
        &self,
        value_type: ValueType,
        op: Comparator,
        value: &Value,
        left: &Operand,
    ) -> Result<Option<Test>> {
        if matches!(op, Comparator::Matches | Comparator::NotMatches) {
            if !value.quoted {
                return Err(FilterError::Unsupported {
                    position: self.position(value.span.start),
                    message: format!(
                        "the regular expression after '{op}' must be a string in double quotes: \
                         \"{}\"",
                        value.text
                    ),
                });
            }
            if !value_type.is_text() {
                let written = left.span().text(self.text);
                return Err(FilterError::Unsupported {
                    position: self.position(left.span().start),
                    message: format!(
                        "regular expressions match text, and {written} is not text; match its \
                         text with cast({written}, STRING) {op} \"…\""
                    ),
                });
            }
            return Ok(Some(Test::Regex {
                re: self.regex(value)?,
                negate: op == Comparator::NotMatches,
            }));
        }
        if value.is_null() {
            return Ok(match op {
                Comparator::Eq | Comparator::Has => Some(Test::Null { want: true }),
                Comparator::Ne => Some(Test::Null { want: false }),
                _ => None,
            });
        }
        let order = match op {
            Comparator::Eq | Comparator::Has => Order::Eq,
            Comparator::Ne => Order::Ne,
            Comparator::Lt => Order::Lt,
            Comparator::Le => Order::Le,
            Comparator::Gt => Order::Gt,
            Comparator::Ge => Order::Ge,
            Comparator::Matches | Comparator::NotMatches => Order::Eq,
        };
        let text = value.text.as_str();
        Ok(match value_type {
            ValueType::String | ValueType::Timestamp | ValueType::Severity
                if op == Comparator::Has =>
            {
                Some(Test::Contains(fold(text).into()))
            }
            ValueType::String => Some(Test::Text {
                op: order,
                folded: fold(text).into(),
            }),
            ValueType::Integer | ValueType::Float => {
                Number::parse(text).map(|rhs| Test::Number { op: order, rhs })
            }
            ValueType::Timestamp => {
                parse_timestamp(text, None).map(|rhs| Test::Time { op: order, rhs })
            }
            ValueType::Severity => {
                parse_severity(text).map(|rhs| Test::Severity { op: order, rhs })
            }
            ValueType::Bool => parse_bool(text).map(|rhs| Test::Bool { op: order, rhs }),
            ValueType::Duration => {
                parse_duration(text).map(|rhs| Test::Duration { op: order, rhs })
            }
        })
    }

    fn regex(&self, value: &Value) -> Result<Regex> {
        Regex::new(&value.text).map_err(|source| FilterError::InvalidRegex {
            position: self.position(value.span.start),
            pattern: value.text.clone(),
            source,
        })
    }

    fn source(&self, operand: &Operand) -> Result<ValueSource> {
        Ok(match operand {
            Operand::Field(f) => ValueSource::Field(f.field),
            Operand::Cast(cast) => ValueSource::Cast {
                inner: Box::new(self.source(&cast.operand)?),
                target: cast.target,
                zone: cast
                    .timezone
                    .as_ref()
                    .map(|zone| self.zone(zone))
                    .transpose()?,
                source: cast.operand.value_type(),
            },
            Operand::RegexpExtract(extract) => {
                if !extract.operand.value_type().is_text() {
                    let written = extract.operand.span().text(self.text);
                    return Err(FilterError::InvalidArgument {
                        position: self.position(extract.operand.span().start),
                        function: "REGEXP_EXTRACT",
                        message: format!(
                            "{written} is not text; extract from CAST({written}, STRING)"
                        ),
                    });
                }
                let re = self.regex(&extract.pattern)?;
                let groups = re.captures_len() - 1;
                if groups != 1 {
                    return Err(FilterError::InvalidArgument {
                        position: self.position(extract.pattern.span.start),
                        function: "REGEXP_EXTRACT",
                        message: format!(
                            "the regular expression must have exactly one capturing group, \
                             found {groups} (use (?:…) for grouping that does not capture)"
                        ),
                    });
                }
                ValueSource::Extract {
                    inner: Box::new(self.source(&extract.operand)?),
                    re,
                }
            }
        })
    }

    fn zone(&self, zone: &Value) -> Result<Arc<tz::TimeZone>> {
        tz::TimeZone::from_posix_tz(&zone.text)
            .map(Arc::new)
            .map_err(|source| FilterError::UnknownTimeZone {
                position: self.position(zone.span.start),
                zone: zone.text.clone(),
                source,
            })
    }
}

// ---- evaluation -------------------------------------------------------------------------

impl Node {
    fn eval(&self, entry: &Json) -> bool {
        match self {
            Node::And(items) => items.iter().all(|n| n.eval(entry)),
            Node::Or(items) => items.iter().any(|n| n.eval(entry)),
            Node::Not(inner) => !inner.eval(entry),
            Node::Const(b) => *b,
            Node::Compare { source, test } => source.visit(entry, &mut |s| test.apply(s)),
            Node::Exists(field) => walk(entry, field.segments, &mut |_| true),
            Node::Global(g) => any_leaf(entry, &mut |leaf| g.matches(leaf)),
            Node::LogId(id) => log_id_matches(log_name(entry), id),
            Node::Source(resource) => log_name(entry)
                .split_once("/logs/")
                .is_some_and(|(parent, _)| eq_folded(parent, resource)),
            Node::IpInNet { field, net } => walk(entry, field.segments, &mut |v| {
                v.as_str().is_some_and(|s| ip_in_net(s, net))
            }),
            Node::Sample { field, fraction } => {
                let mut seen = false;
                let hit = walk(entry, field.segments, &mut |v| {
                    seen = true;
                    sample_fraction(v).is_some_and(|h| h < *fraction)
                });
                hit || (!seen
                    && field.absence == Absence::Defaulted
                    && default_scalar(field)
                        .text()
                        .is_some_and(|t| sample_hash(&t) < *fraction))
            }
            Node::Search { field, terms } => terms.iter().all(|term| {
                let mut in_text =
                    |leaf: &Json| leaf.as_str().is_some_and(|s| text_has_term(s, term));
                match field {
                    None => any_leaf(entry, &mut in_text),
                    Some(field) => walk(entry, field.segments, &mut |v| any_leaf(v, &mut in_text)),
                }
            }),
        }
    }
}

impl ValueSource {
    /// Calls `f` on each value until it returns true; whether it did.
    fn visit(&self, entry: &Json, f: &mut dyn FnMut(&Scalar<'_>) -> bool) -> bool {
        match self {
            ValueSource::Field(field) => {
                let mut seen = false;
                let hit = walk(entry, field.segments, &mut |v| {
                    seen = true;
                    f(&Scalar::of_json(v))
                });
                if hit || seen || field.absence == Absence::Missing {
                    return hit;
                }
                f(&default_scalar(field))
            }
            ValueSource::Cast {
                inner,
                target,
                zone,
                source,
            } => inner.visit(entry, &mut |s| {
                s.cast(*target, zone.as_deref(), *source)
                    .is_some_and(|converted| f(&converted))
            }),
            ValueSource::Extract { inner, re } => inner.visit(entry, &mut |s| {
                let Some(text) = s.text() else {
                    return false;
                };
                match re.captures(&text).and_then(|c| c.get(1)) {
                    Some(m) => f(&Scalar::Text(Cow::Borrowed(m.as_str()))),
                    None => false,
                }
            }),
        }
    }
}

impl Test {
    fn apply(&self, value: &Scalar<'_>) -> bool {
        if let Test::Null { want } = self {
            return matches!(value, Scalar::Null) == *want;
        }
        if matches!(value, Scalar::Null | Scalar::Object) {
            return false;
        }
        match self {
            Test::Null { .. } => false,
            Test::Text { op, folded } => value
                .text()
                .is_some_and(|t| op.holds(Some(cmp_folded(&t, folded)))),
            Test::Contains(folded) => value.text().is_some_and(|t| contains_folded(&t, folded)),
            Test::Regex { re, negate } => value.text().is_some_and(|t| re.is_match(&t) != *negate),
            Test::Number { op, rhs } => value.number().is_some_and(|n| op.holds(n.compare(*rhs))),
            Test::Time { op, rhs } => value
                .timestamp()
                .is_some_and(|t| op.holds(Some(t.cmp(rhs)))),
            Test::Severity { op, rhs } => {
                value.severity().is_some_and(|s| op.holds(Some(s.cmp(rhs))))
            }
            Test::Bool { op, rhs } => value.boolean().is_some_and(|b| op.holds(Some(b.cmp(rhs)))),
            Test::Duration { op, rhs } => {
                value.duration().is_some_and(|d| op.holds(Some(d.cmp(rhs))))
            }
        }
    }
}

impl GlobalTest {
    fn matches(&self, leaf: &Json) -> bool {
        match leaf {
            Json::String(s) => !self.null && contains_folded(s, &self.folded),
            Json::Number(n) => self
                .number
                .is_some_and(|q| Number::of_json(n).compare(q) == Some(Ordering::Equal)),
            Json::Bool(b) => self.boolean == Some(*b),
            Json::Null => self.null,
            Json::Array(_) | Json::Object(_) => false,
        }
    }
}

/// Calls `f` on the value(s) at `segments` under `value` until it returns true, descending into
/// every element of a list met on the way (and of a list at the end). Whether `f` returned true.
fn walk<'e>(value: &'e Json, segments: &[&str], f: &mut dyn FnMut(&'e Json) -> bool) -> bool {
    match value {
        Json::Array(items) => items.iter().any(|item| walk(item, segments, f)),
        _ => match segments.split_first() {
            None => f(value),
            Some((head, rest)) => match value {
                Json::Object(map) => map.get(*head).is_some_and(|child| walk(child, rest, f)),
                _ => false,
            },
        },
    }
}

/// Calls `f` on every scalar under `value` until it returns true.
fn any_leaf<'e>(value: &'e Json, f: &mut dyn FnMut(&'e Json) -> bool) -> bool {
    match value {
        Json::Object(map) => map.values().any(|v| any_leaf(v, f)),
        Json::Array(items) => items.iter().any(|v| any_leaf(v, f)),
        leaf => f(leaf),
    }
}

/// What a defaulted field absent from an entry compares as.
fn default_scalar(field: &Field) -> Scalar<'static> {
    match field.field_type() {
        Some(FieldType::Integer) => Scalar::Number(Number::Int(0)),
        Some(FieldType::Timestamp) => Scalar::Time(Timestamp::default()),
        Some(FieldType::Severity) => Scalar::Text(Cow::Borrowed("DEFAULT")),
        Some(FieldType::String | FieldType::Enum(_)) => Scalar::Text(Cow::Borrowed("")),
        None => Scalar::Object,
    }
}

fn log_name(entry: &Json) -> &str {
    entry.get("logName").and_then(Json::as_str).unwrap_or("")
}

/// `logName`'s log id (after `/logs/`, percent-decoded) equals `folded`, ignoring case.
fn log_id_matches(log_name: &str, folded: &str) -> bool {
    let Some((_, id)) = log_name.split_once("/logs/") else {
        return false;
    };
    if percent_decoded(id).all(|b| b.is_ascii()) {
        // The usual case, compared without building the decoded id.
        return percent_decoded(id)
            .map(|b| b.to_ascii_lowercase())
            .eq(folded.bytes());
    }
    let decoded: Vec<u8> = percent_decoded(id).collect();
    eq_folded(&String::from_utf8_lossy(&decoded), folded)
}

/// The bytes of `text` with `%XX` escapes decoded (a `%` without two hex digits stays).
fn percent_decoded(text: &str) -> impl Iterator<Item = u8> + '_ {
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        let b = *bytes.get(i)?;
        let hex = |d: u8| (d as char).to_digit(16);
        if b == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|d| hex(*d)),
                bytes.get(i + 2).and_then(|d| hex(*d)),
            )
        {
            i += 3;
            return Some((hi * 16 + lo) as u8);
        }
        i += 1;
        Some(b)
    })
}

/// An address inside `net`, or a range entirely inside it. Families never mix.
fn ip_in_net(text: &str, net: &IpNet) -> bool {
    if let Ok(addr) = text.parse::<IpAddr>() {
        net.contains(&addr)
    } else if let Ok(range) = text.parse::<IpNet>() {
        net.contains(&range)
    } else {
        false
    }
}

/// `sample_hash` of a leaf's text (a number's as JSON writes it).
fn sample_fraction(leaf: &Json) -> Option<f64> {
    match leaf {
        Json::String(s) => Some(sample_hash(s)),
        Json::Number(n) => {
            let mut h = FnvHasher::new();
            write!(h, "{n}").ok()?;
            Some(h.fraction())
        }
        Json::Bool(b) => Some(sample_hash(if *b { "true" } else { "false" })),
        Json::Null | Json::Array(_) | Json::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ids_are_percent_decoded() {
        assert!(log_id_matches(
            "projects/p/logs/cloudaudit.googleapis.com%2Factivity",
            "cloudaudit.googleapis.com/activity"
        ));
        assert!(log_id_matches(
            "projects/p/logs/Policy-Action",
            "policy-action"
        ));
        assert!(!log_id_matches("projects/p/logs/policy-action", "policy"));
        assert!(!log_id_matches("policy-action", "policy-action"));
        assert!(log_id_matches(
            "projects/p/logs/%C3%A9t%C3%89",
            "étÉ".to_lowercase().as_str()
        ));
        assert!(log_id_matches("projects/p/logs/a%2", "a%2"));
    }

    #[test]
    fn ip_ranges_and_families() {
        let net: IpNet = "10.84.0.0/16".parse().unwrap();
        assert!(ip_in_net("10.84.1.7", &net));
        assert!(ip_in_net("10.84.1.0/24", &net));
        assert!(!ip_in_net("10.0.0.0/8", &net));
        assert!(!ip_in_net("::ffff:10.84.1.7", &net));
        assert!(!ip_in_net("pod-a", &net));
    }

    #[test]
    fn walk_descends_lists() {
        let v: Json = serde_json::json!({"p": [{"n": "a"}, {"n": "b"}, {"m": 1}], "e": []});
        let mut seen = Vec::new();
        walk(&v, &["p", "n"], &mut |x| {
            seen.push(x.clone());
            false
        });
        assert_eq!(seen, [Json::from("a"), Json::from("b")]);
        assert!(!walk(&v, &["e"], &mut |_| true));
        assert!(walk(&v, &["p"], &mut |_| true));
    }
}
