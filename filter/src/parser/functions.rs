//! Function calls: reading `name(arg, …)` and turning it into a typed [`Call`] (a Boolean
//! function used as a restriction) or [`Operand`] (`cast`, `REGEXP_EXTRACT`), with every
//! argument checked — a subnet parses, a fraction is in range, a SEARCH query tokenizes.

use crate::ast::{
    Call, Cast, CastType, Expr, FieldPath, Operand, PathSegment, RegexpExtract, Span, Value,
};
use crate::catalogue::{FieldKind, FieldType};
use crate::error::{FilterError, Result};
use crate::search::{self, QueryProblem};

use super::Parser;

/// A function call as written, before its arguments are interpreted.
#[derive(Debug)]
pub(super) struct CallSyntax {
    pub(super) name: String,
    pub(super) args: Vec<Arg>,
    pub(super) span: Span,
}

#[derive(Debug)]
pub(super) enum Arg {
    Value(Value),
    Path(Vec<PathSegment>, Span),
    Call(CallSyntax),
}

impl Arg {
    fn span(&self) -> Span {
        match self {
            Arg::Value(v) => v.span,
            Arg::Path(_, span) => *span,
            Arg::Call(c) => c.span,
        }
    }
}

impl Parser<'_> {
    /// `name(` has been read up to the '('.
    pub(super) fn call(&mut self, name: String, start: usize) -> Result<CallSyntax> {
        self.pos += 1;
        let mut args = Vec::new();
        self.skip_trivia();
        if self.peek() == Some(')') {
            self.pos += 1;
        } else {
            loop {
                self.skip_trivia();
                args.push(self.nested(Self::argument)?);
                self.skip_trivia();
                match self.peek() {
                    Some(',') => self.pos += 1,
                    Some(')') => {
                        self.pos += 1;
                        break;
                    }
                    _ => {
                        return Err(self.syntax(
                            self.pos,
                            format!("expected ',' or ')' in the arguments of {name}("),
                        ));
                    }
                }
            }
        }
        Ok(CallSyntax {
            name,
            args,
            span: Span {
                start,
                end: self.pos,
            },
        })
    }

    fn argument(&mut self) -> Result<Arg> {
        let start = self.pos;
        let Some(c) = self.peek() else {
            return Err(self.syntax(start, "expected an argument"));
        };
        if c == '"' {
            let v = self.quoted()?;
            if self.peek() == Some('.') {
                let first = PathSegment {
                    name: v.text,
                    quoted: true,
                };
                let (segments, span) = self.path_rest(first, start)?;
                return Ok(Arg::Path(segments, span));
            }
            return Ok(Arg::Value(v));
        }
        if c == '(' {
            return Err(self.syntax(
                start,
                "a parenthesised expression is not an argument of these functions",
            ));
        }
        if let Some(end) = self.number_end(start, true) {
            self.pos = end;
            return Ok(Arg::Value(Value {
                text: self.text[start..end].to_owned(),
                quoted: false,
                span: Span { start, end },
            }));
        }
        let end = self.word_end(start);
        if end == start {
            return Err(self.syntax(start, format!("expected an argument, found '{c}'")));
        }
        let word = self.text[start..end].to_owned();
        self.pos = end;
        if self.peek() == Some('(') {
            return Ok(Arg::Call(self.call(word, start)?));
        }
        let (segments, span) = self.path_rest(
            PathSegment {
                name: word,
                quoted: false,
            },
            start,
        )?;
        Ok(Arg::Path(segments, span))
    }

    /// A Boolean function used as a restriction.
    pub(super) fn predicate(&self, call: CallSyntax) -> Result<Expr> {
        let span = call.span;
        let name = call.name.to_ascii_lowercase();
        let call = match name.as_str() {
            "log_id" => {
                let [arg] = self.arity::<1>(call, "log_id", "(LOG_ID)")?;
                Call::LogId {
                    log_id: self.value_arg(arg, "log_id")?,
                    span,
                }
            }
            "source" => {
                let [arg] = self.arity::<1>(call, "source", "(RESOURCE_TYPE/RESOURCE_ID)")?;
                Call::Source {
                    resource: self.value_arg(arg, "source")?,
                    span,
                }
            }
            "ip_in_net" => {
                let [field, subnet] = self.arity::<2>(call, "ip_in_net", "(FIELD, SUBNET)")?;
                let field = self.scalar_field_arg(field, "ip_in_net")?;
                let subnet = self.value_arg(subnet, "ip_in_net")?;
                let net =
                    parse_subnet(&subnet.text).map_err(|source| FilterError::InvalidSubnet {
                        position: self.position(subnet.span.start),
                        subnet: subnet.text.clone(),
                        source,
                    })?;
                Call::IpInNet {
                    field,
                    subnet,
                    net,
                    span,
                }
            }
            "sample" => {
                let [field, fraction] = self.arity::<2>(call, "sample", "(FIELD, FRACTION)")?;
                let field = self.scalar_field_arg(field, "sample")?;
                let fraction_text = self.value_arg(fraction, "sample")?;
                let fraction = fraction_text
                    .text
                    .parse::<f64>()
                    .ok()
                    .filter(|f| *f > 0.0 && *f <= 1.0)
                    .ok_or_else(|| {
                        self.invalid_argument(
                            fraction_text.span,
                            "sample",
                            format!(
                                "FRACTION must be a number with 0 < FRACTION <= 1, found {:?}",
                                fraction_text.text
                            ),
                        )
                    })?;
                Call::Sample {
                    field,
                    fraction_text,
                    fraction,
                    span,
                }
            }
            "search" => self.search(call)?,
            "cast" | "regexp_extract" => {
                return Err(FilterError::Unsupported {
                    position: self.position(span.start),
                    message: format!(
                        "{}(…) computes a value; compare it with one, e.g. {} = \"…\"",
                        call.name,
                        span.text(self.text)
                    ),
                });
            }
            _ => return Err(self.unknown_function(&call)),
        };
        Ok(Expr::Call(call))
    }

    fn search(&self, call: CallSyntax) -> Result<Call> {
        let span = call.span;
        let missing = || {
            self.invalid_argument(
                span,
                "SEARCH",
                "you must specify the query, a quoted string: SEARCH(\"text\") or \
                 SEARCH(FIELD, \"text\")",
            )
        };
        let mut args = call.args.into_iter();
        let (field, query) = match (args.next(), args.next(), args.next()) {
            (None, ..) => return Err(missing()),
            (Some(query), None, None) => (None, query),
            (Some(field), Some(query), None) => {
                let Arg::Path(segments, fspan) = field else {
                    return Err(self.invalid_argument(
                        field.span(),
                        "SEARCH",
                        "the first of two arguments must be a field",
                    ));
                };
                let field = self.resolve(segments, fspan)?;
                if field.field.field_type() == Some(FieldType::Integer) {
                    return Err(self.invalid_argument(
                        fspan,
                        "SEARCH",
                        format!(
                            "{} is an integer; SEARCH matches text fields only",
                            field.canonical()
                        ),
                    ));
                }
                (Some(field), query)
            }
            (Some(_), Some(_), Some(extra)) => {
                return Err(self.invalid_argument(
                    extra.span(),
                    "SEARCH",
                    "expected at most 2 arguments ([FIELD,] \"query\")",
                ));
            }
            (Some(_), None, Some(_)) => return Err(missing()),
        };
        let query = match query {
            Arg::Value(v) if v.quoted => v,
            other => {
                return Err(self.invalid_argument(
                    other.span(),
                    "SEARCH",
                    "the query must be a string literal in double quotes",
                ));
            }
        };
        let terms = search::parse_query(&query.text).map_err(|problem| {
            let message = match problem {
                QueryProblem::UnterminatedBacktick => "the query has an unclosed '`'",
                QueryProblem::NoTokens => "the query has no tokens to search for",
            };
            self.invalid_argument(query.span, "SEARCH", message)
        })?;
        Ok(Call::Search {
            field,
            query,
            terms,
            span,
        })
    }

    /// A value-computing function on the left of a comparator (or inside another).
    pub(super) fn operand_call(&self, call: CallSyntax) -> Result<Operand> {
        let span = call.span;
        match call.name.to_ascii_lowercase().as_str() {
            "cast" => {
                let n = call.args.len();
                if !(2..=3).contains(&n) {
                    return Err(self.invalid_argument(
                        span,
                        "cast",
                        format!(
                            "expected 2 or 3 arguments (FIELD, TYPE[, TIMEZONE(\"zone\")]), \
                             found {n}"
                        ),
                    ));
                }
                let mut args = call.args.into_iter();
                let (Some(operand), Some(target)) = (args.next(), args.next()) else {
                    return Err(self.invalid_argument(span, "cast", "expected FIELD and TYPE"));
                };
                let operand = self.operand_arg(operand, "cast")?;
                let target = match &target {
                    Arg::Path(segments, _) if segments.len() == 1 => {
                        CastType::from_name(&segments[0].name)
                    }
                    Arg::Value(v) => CastType::from_name(&v.text),
                    _ => None,
                }
                .ok_or_else(|| {
                    self.invalid_argument(
                        target.span(),
                        "cast",
                        format!(
                            "unknown type {:?}; expected STRING, INT64, FLOAT64, BOOL, \
                             TIMESTAMP or DURATION",
                            target.span().text(self.text)
                        ),
                    )
                })?;
                let timezone = match args.next() {
                    None => None,
                    Some(option) => Some(self.timezone_option(option, target)?),
                };
                Ok(Operand::Cast(Box::new(Cast {
                    operand,
                    target,
                    timezone,
                    span,
                })))
            }
            "regexp_extract" => {
                let [operand, pattern] =
                    self.arity::<2>(call, "REGEXP_EXTRACT", "(FIELD, REGULAR_EXPRESSION)")?;
                let operand = self.operand_arg(operand, "REGEXP_EXTRACT")?;
                let pattern = match pattern {
                    Arg::Value(v) if v.quoted => v,
                    other => {
                        return Err(self.invalid_argument(
                            other.span(),
                            "REGEXP_EXTRACT",
                            "the regular expression must be a string in double quotes",
                        ));
                    }
                };
                Ok(Operand::RegexpExtract(Box::new(RegexpExtract {
                    operand,
                    pattern,
                    span,
                })))
            }
            "log_id" | "source" | "ip_in_net" | "sample" | "search" => {
                Err(FilterError::Unsupported {
                    position: self.position(span.start),
                    message: format!(
                        "{}(…) is a condition, not a value: use it alone, without an operator",
                        call.name
                    ),
                })
            }
            _ => Err(self.unknown_function(&call)),
        }
    }

    fn timezone_option(&self, option: Arg, target: CastType) -> Result<Value> {
        let span = option.span();
        let Arg::Call(call) = option else {
            return Err(self.invalid_argument(
                span,
                "cast",
                "the third argument must be TIMEZONE(\"zone\")",
            ));
        };
        if !call.name.eq_ignore_ascii_case("TIMEZONE") {
            return Err(self.invalid_argument(
                span,
                "cast",
                format!(
                    "the third argument must be TIMEZONE(\"zone\"), found {}(…)",
                    call.name
                ),
            ));
        }
        if !matches!(target, CastType::String | CastType::Timestamp) {
            return Err(self.invalid_argument(
                span,
                "cast",
                "TIMEZONE applies to casts to STRING or TIMESTAMP",
            ));
        }
        let [zone] = self.arity::<1>(call, "TIMEZONE", "(\"zone\")")?;
        let zone = match zone {
            Arg::Value(v) if v.quoted => v,
            other => {
                return Err(self.invalid_argument(
                    other.span(),
                    "TIMEZONE",
                    "the zone must be a quoted IANA name such as \"America/New_York\"",
                ));
            }
        };
        // The name becomes a path under the system zoneinfo directory: keep it inside.
        let safe = !zone.text.is_empty()
            && !zone.text.starts_with(['/', ':'])
            && !zone.text.split('/').any(|part| part == "..")
            && zone
                .text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
        if !safe {
            return Err(self.invalid_argument(
                zone.span,
                "TIMEZONE",
                format!("{:?} is not an IANA time zone name", zone.text),
            ));
        }
        Ok(zone)
    }

    fn arity<const N: usize>(
        &self,
        call: CallSyntax,
        function: &'static str,
        signature: &str,
    ) -> Result<[Arg; N]> {
        let span = call.span;
        let found = call.args.len();
        call.args.try_into().map_err(|_| {
            self.invalid_argument(
                span,
                function,
                format!(
                    "expected {N} argument{} {function}{signature}, found {found}",
                    if N == 1 { "" } else { "s" }
                ),
            )
        })
    }

    fn value_arg(&self, arg: Arg, function: &'static str) -> Result<Value> {
        match arg {
            Arg::Value(v) => Ok(v),
            Arg::Path(mut segments, span) if segments.len() == 1 => {
                let s = segments.pop().unwrap_or_else(|| PathSegment {
                    name: String::new(),
                    quoted: false,
                });
                Ok(Value {
                    text: s.name,
                    quoted: false,
                    span,
                })
            }
            other => Err(self.invalid_argument(
                other.span(),
                function,
                format!(
                    "expected a value; quote text that contains special characters: \"{}\"",
                    other.span().text(self.text)
                ),
            )),
        }
    }

    /// A field argument that must be a scalar (not an object or list).
    fn scalar_field_arg(&self, arg: Arg, function: &'static str) -> Result<FieldPath> {
        match arg {
            Arg::Path(segments, span) => {
                let field = self.resolve(segments, span)?;
                if !matches!(field.field.kind, FieldKind::Leaf(_)) {
                    return Err(self.invalid_argument(
                        span,
                        function,
                        format!(
                            "{} is not a scalar field; name one of its fields",
                            field.canonical()
                        ),
                    ));
                }
                Ok(field)
            }
            other => Err(self.invalid_argument(
                other.span(),
                function,
                "expected a field name as the first argument",
            )),
        }
    }

    fn operand_arg(&self, arg: Arg, function: &'static str) -> Result<Operand> {
        match arg {
            Arg::Call(call) => self.operand_call(call),
            other => self.scalar_field_arg(other, function).map(Operand::Field),
        }
    }

    fn unknown_function(&self, call: &CallSyntax) -> FilterError {
        FilterError::UnknownFunction {
            position: self.position(call.span.start),
            name: call.name.clone(),
        }
    }
}

/// An address (a /32 or /128) or a CIDR range.
fn parse_subnet(text: &str) -> std::result::Result<ipnet::IpNet, ipnet::AddrParseError> {
    text.parse::<ipnet::IpNet>().or_else(|e| {
        text.parse::<std::net::IpAddr>()
            .map(ipnet::IpNet::from)
            .map_err(|_| e)
    })
}
