//! The parsed, validated query: the contract between the parser and every evaluator (the JSON
//! evaluator of this crate, and translators to other engines such as DataFusion).
//!
//! The tree keeps what a translator needs and nothing it must re-derive: field paths as written
//! (segments, quoted-ness) *and* resolved against the [catalogue](crate::catalogue); comparators;
//! values with their unescaped text and whether they were quoted; the Boolean structure
//! (implicit and explicit `AND` both become [`Expr::And`]); global restrictions; and function
//! calls with typed, already-checked arguments (a regex compiles, a subnet parses, a fraction is
//! in range). Every node carries its [`Span`] in the query text.
//!
//! Value lists are kept as written (`f = ("a" OR "b")` is one [`Comparison`] whose right side is
//! a [`ValueExpr::Or`]); evaluators distribute the field and operator over the list (reference
//! §3): `f = (a OR NOT b)` means `f = a OR NOT f = b`.

use std::fmt;

use verdict_schema::Timestamp;

use crate::catalogue::{Field, FieldType};
use crate::conversion;

/// Byte range `start..end` of a construct in the query text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    /// The text of this span in `query`.
    pub fn text<'q>(&self, query: &'q str) -> &'q str {
        query.get(self.start..self.end).unwrap_or("")
    }
}

/// A Boolean expression over entries.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// All operands hold (`a AND b`, or `a b`). At least two operands.
    And(Vec<Expr>),
    /// Any operand holds. At least two operands.
    Or(Vec<Expr>),
    /// `NOT e` or `-e`.
    Not(Box<Expr>),
    /// `FIELD OP VALUE`.
    Compare(Comparison),
    /// `FIELD:*`: the field is explicitly present (for a list: it has an element).
    Exists(Exists),
    /// A bare value: some field of the entry has it (the `:` operator applied to every field).
    Global(Value),
    /// A Boolean function: `log_id`, `source`, `ip_in_net`, `sample`, `SEARCH`.
    Call(Call),
}

/// `left op right`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub left: Operand,
    pub op: Comparator,
    pub right: ValueExpr,
    pub span: Span,
}

/// `field:*`.
#[derive(Debug, Clone, PartialEq)]
pub struct Exists {
    pub field: FieldPath,
    pub span: Span,
}

/// The operators of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparator {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `:` ("has": substring for text, equality otherwise)
    Has,
    /// `=~` (regex search, not anchored, case-sensitive)
    Matches,
    /// `!~` (regex search finds nothing)
    NotMatches,
}

impl Comparator {
    /// The operator as written in the language.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparator::Eq => "=",
            Comparator::Ne => "!=",
            Comparator::Lt => "<",
            Comparator::Le => "<=",
            Comparator::Gt => ">",
            Comparator::Ge => ">=",
            Comparator::Has => ":",
            Comparator::Matches => "=~",
            Comparator::NotMatches => "!~",
        }
    }
}

impl fmt::Display for Comparator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The left side of a comparison: a field, or a function computing a value from one.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Field(FieldPath),
    /// `cast(OPERAND, TYPE[, TIMEZONE("zone")])`.
    Cast(Box<Cast>),
    /// `REGEXP_EXTRACT(OPERAND, "re")`.
    RegexpExtract(Box<RegexpExtract>),
}

impl Operand {
    /// The type of the values this operand produces, which decides how the right side is
    /// converted and compared.
    pub fn value_type(&self) -> ValueType {
        match self {
            Operand::Field(f) => ValueType::of_field(f.field),
            Operand::Cast(c) => c.target.value_type(),
            Operand::RegexpExtract(_) => ValueType::String,
        }
    }

    pub fn span(&self) -> Span {
        match self {
            Operand::Field(f) => f.span,
            Operand::Cast(c) => c.span,
            Operand::RegexpExtract(r) => r.span,
        }
    }
}

/// The type of an operand's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    String,
    Integer,
    Float,
    Bool,
    Timestamp,
    Duration,
    Severity,
}

impl ValueType {
    /// The type of a field's values (objects count as strings; they are never compared).
    pub fn of_field(field: &Field) -> ValueType {
        match field.field_type() {
            Some(FieldType::Integer) => ValueType::Integer,
            Some(FieldType::Timestamp) => ValueType::Timestamp,
            Some(FieldType::Severity) => ValueType::Severity,
            Some(FieldType::String | FieldType::Enum(_)) | None => ValueType::String,
        }
    }

    /// Whether values of this type are text in the LogEntry JSON (what `:` searches as a
    /// substring and a regex matches).
    pub fn is_text(self) -> bool {
        matches!(
            self,
            ValueType::String | ValueType::Timestamp | ValueType::Severity
        )
    }
}

/// A field path as written, resolved against the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPath {
    /// The segments as written (unescaped).
    pub segments: Vec<PathSegment>,
    /// The catalogue entry the path names (its canonical spelling, type and column).
    pub field: &'static Field,
    pub span: Span,
}

impl FieldPath {
    /// The canonical dotted path (`jsonPayload.dest.pod_name`), whatever the letter case used.
    pub fn canonical(&self) -> &'static str {
        self.field.path
    }
}

/// One segment of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSegment {
    /// The name, unescaped.
    pub name: String,
    /// Written as a quoted string (`labels."a.b"`).
    pub quoted: bool,
}

/// The right side of a comparison: one value, or a Boolean combination of values that the
/// field and operator distribute over.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueExpr {
    Value(Value),
    And(Vec<ValueExpr>),
    Or(Vec<ValueExpr>),
    Not(Box<ValueExpr>),
}

/// A literal value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The text: the content of a quoted string with escapes resolved, or an unquoted word or
    /// number as written. Never case-folded.
    pub text: String,
    /// Written in double quotes.
    pub quoted: bool,
    pub span: Span,
}

impl Value {
    /// The unquoted word `NULL_VALUE`, which stands for JSON `null` (a quoted `"NULL_VALUE"` is
    /// just text).
    pub fn is_null(&self) -> bool {
        !self.quoted && self.text == "NULL_VALUE"
    }

    // The conversions below are the ones this crate's evaluator applies to the right side of a
    // comparison, exposed so that other evaluators convert constants identically. `None` means
    // the comparison is false (reference §7).

    /// As a timestamp: RFC 3339 with `Z` or an offset, an RFC 3339 date-time without offset
    /// (UTC), or a date (`2016-11-29`, midnight UTC).
    pub fn to_timestamp(&self) -> Option<Timestamp> {
        conversion::parse_timestamp(&self.text, None)
    }

    /// As a number: an integer when written as one (exact up to 128 bits), else a double
    /// (decimals, exponents, `NaN`, `Infinity`, `-Infinity` in any case).
    pub fn to_number(&self) -> Option<Number> {
        conversion::Number::parse(&self.text).map(|n| match n {
            conversion::Number::Int(i) => Number::Integer(i),
            conversion::Number::Float(f) => Number::Float(f),
        })
    }

    /// As a severity's numeric value: a name in any case (`warning` → 400) or a number.
    pub fn to_severity(&self) -> Option<i64> {
        conversion::parse_severity(&self.text)
    }

    /// As a boolean: `true`/`false` in any case.
    pub fn to_bool(&self) -> Option<bool> {
        conversion::parse_bool(&self.text)
    }

    /// As a duration in nanoseconds: a signed decimal and one unit of `ns`, `us`, `ms`, `s`,
    /// `m`, `h` (`3.2s`).
    pub fn to_duration_nanos(&self) -> Option<i128> {
        conversion::parse_duration(&self.text)
    }
}

/// A numeric constant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Integer(i128),
    Float(f64),
}

/// A Boolean function used as a restriction.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `log_id("id")`: the log id of `logName` (after `/logs/`, percent-decoded) equals `id`.
    LogId { log_id: Value, span: Span },
    /// `source(projects/P)`: the entry was written to exactly that project, folder or
    /// organization (`logName` starts with `projects/P/logs/`).
    Source { resource: Value, span: Span },
    /// `ip_in_net(FIELD, "subnet")`.
    IpInNet {
        field: FieldPath,
        subnet: Value,
        /// The parsed subnet (an address is a /32 or /128).
        net: ipnet::IpNet,
        span: Span,
    },
    /// `sample(FIELD, fraction)`: keeps the entries whose
    /// [`sample_hash`](crate::sample_hash) of FIELD's text is below `fraction`.
    Sample {
        field: FieldPath,
        fraction_text: Value,
        /// In `(0, 1]`.
        fraction: f64,
        span: Span,
    },
    /// `SEARCH([FIELD,] "query")`: token search.
    Search {
        /// `None`: search every text field of the entry.
        field: Option<FieldPath>,
        query: Value,
        /// The query's terms, already tokenized (see [`crate::search`]).
        terms: Vec<SearchTerm>,
        span: Span,
    },
}

impl Call {
    /// The function's name in the language.
    pub fn name(&self) -> &'static str {
        match self {
            Call::LogId { .. } => "log_id",
            Call::Source { .. } => "source",
            Call::IpInNet { .. } => "ip_in_net",
            Call::Sample { .. } => "sample",
            Call::Search { .. } => "SEARCH",
        }
    }

    pub fn span(&self) -> Span {
        match self {
            Call::LogId { span, .. }
            | Call::Source { span, .. }
            | Call::IpInNet { span, .. }
            | Call::Sample { span, .. }
            | Call::Search { span, .. } => *span,
        }
    }
}

/// One term of a `SEARCH` query, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchTerm {
    /// A token that must appear as a whole token.
    Token(String),
    /// A backtick-quoted phrase: these tokens, consecutive and in this order.
    Phrase(Vec<String>),
}

/// `cast(OPERAND, TYPE[, TIMEZONE("zone")])`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cast {
    pub operand: Operand,
    pub target: CastType,
    /// `TIMEZONE("zone")`: how timestamps are written as `STRING`, and how a `STRING` without
    /// an offset is read as a `TIMESTAMP`.
    pub timezone: Option<Value>,
    pub span: Span,
}

/// The target types of `cast`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CastType {
    String,
    Int64,
    Float64,
    Bool,
    Timestamp,
    Duration,
}

impl CastType {
    /// Case-insensitive type name.
    pub fn from_name(name: &str) -> Option<CastType> {
        const NAMES: [(&str, CastType); 6] = [
            ("STRING", CastType::String),
            ("INT64", CastType::Int64),
            ("FLOAT64", CastType::Float64),
            ("BOOL", CastType::Bool),
            ("TIMESTAMP", CastType::Timestamp),
            ("DURATION", CastType::Duration),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, t)| *t)
    }

    pub fn value_type(self) -> ValueType {
        match self {
            CastType::String => ValueType::String,
            CastType::Int64 => ValueType::Integer,
            CastType::Float64 => ValueType::Float,
            CastType::Bool => ValueType::Bool,
            CastType::Timestamp => ValueType::Timestamp,
            CastType::Duration => ValueType::Duration,
        }
    }
}

/// `REGEXP_EXTRACT(OPERAND, "re")`: the text of the regex's single capture group in the first
/// match; no value when nothing matches.
#[derive(Debug, Clone, PartialEq)]
pub struct RegexpExtract {
    pub operand: Operand,
    /// The RE2 pattern (exactly one capturing group).
    pub pattern: Value,
    pub span: Span,
}
