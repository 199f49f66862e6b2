//! Query text → [`Expr`]: a recursive-descent parser over the grammar of reference §2, with
//! field paths resolved against the [catalogue](crate::catalogue) and function arguments
//! checked as they are read.
//!
//! Grammar (AIP-160 plus the Logging additions), lowest precedence first:
//!
//! ```text
//! query       = [ expression ]
//! expression  = sequence { "AND" sequence }
//! sequence    = factor { factor }                 -- juxtaposition is AND
//! factor      = term { "OR" term }                -- so OR binds tighter than AND
//! term        = [ "NOT" | "-" ] simple             -- NOT binds tightest
//! simple      = "(" expression ")" | restriction
//! restriction = comparable [ comparator ( value | ":*" | "(" value-expression ")" ) ]
//! comparable  = path | function-call | value    -- a lone value is a global restriction
//! ```
//!
//! Lexing is context-sensitive, so the parser reads characters directly rather than a token
//! stream: a leading `-` is `NOT` where a term starts but a sign where a value starts, `--`
//! starts a comment where a token could start, and `AND`/`OR`/`NOT` are operators only in
//! upper case (lower-case `and` is a search term, reference §1).
//!
//! Function calls are read here and interpreted in [`functions`].

use crate::ast::{
    Comparator, Comparison, Exists, Expr, FieldPath, Operand, PathSegment, Span, Value, ValueExpr,
};
use crate::catalogue::{self, FieldKind};
use crate::error::{FilterError, Position, Result};

mod functions;

use functions::CallSyntax;

/// Deepest nesting of parentheses, negations and function calls. Bounds recursion (and so the
/// stack) for hostile input: 20,000 characters of `(` would otherwise overflow it.
pub(crate) const MAX_DEPTH: usize = 64;

/// Parses a whole query; `None` for an empty query (only white space and comments), which
/// matches every entry.
pub(crate) fn parse_query(text: &str) -> Result<Option<Expr>> {
    let mut p = Parser {
        text,
        pos: 0,
        depth: 0,
        clause: 0,
    };
    p.skip_trivia();
    if p.at_end() {
        return Ok(None);
    }
    let expr = p.expression()?;
    p.skip_trivia();
    match p.peek() {
        None => Ok(Some(expr)),
        Some(')') => Err(p.syntax(p.pos, "unexpected ')' without a matching '('")),
        Some(c) => Err(p.syntax(p.pos, format!("unexpected '{c}'"))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    And,
    Or,
    Not,
}

/// What stands before a comparator (or alone, as a restriction).
#[derive(Debug)]
enum Comparable {
    /// A quoted string or a decimal number: a global restriction when alone.
    Value(Value),
    /// Unquoted words joined by dots (one word alone is a global restriction).
    Path(Vec<PathSegment>, Span),
    Call(CallSyntax),
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
    /// Start of the restriction being read, for the context shown in syntax errors.
    clause: usize,
}

/// Characters that end an unquoted word; text containing them must be quoted (reference §6).
fn is_special(c: char) -> bool {
    matches!(
        c,
        '"' | '(' | ')' | '=' | '<' | '>' | ':' | '~' | ',' | '.' | '*' | '\\'
    )
}

impl<'a> Parser<'a> {
    // ---- characters -------------------------------------------------------------------

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn char_at(&self, pos: usize) -> Option<char> {
        self.text.get(pos..).and_then(|s| s.chars().next())
    }

    /// White space and `--` comments.
    fn skip_trivia(&mut self) {
        loop {
            let rest = &self.text[self.pos..];
            let trimmed = rest.trim_start();
            self.pos += rest.len() - trimmed.len();
            if trimmed.starts_with("--") {
                self.pos += trimmed.find('\n').unwrap_or(trimmed.len());
            } else {
                return;
            }
        }
    }

    /// End of the unquoted word starting at `start` (== `start` when there is none).
    fn word_end(&self, start: usize) -> usize {
        let rest = &self.text[start..];
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            let operator_bang = c == '!' && matches!(chars.peek(), Some((_, '=' | '~')));
            if c.is_whitespace() || is_special(c) || operator_bang {
                return start + i;
            }
        }
        self.text.len()
    }

    fn keyword_at(&self, pos: usize) -> Option<(Keyword, usize)> {
        let end = self.word_end(pos);
        let keyword = match &self.text[pos..end] {
            "AND" => Keyword::And,
            "OR" => Keyword::Or,
            "NOT" => Keyword::Not,
            _ => return None,
        };
        Some((keyword, end))
    }

    /// End of a number literal (`12`, `-3.5`, `.5`, `1e-3`) at `start`, if one is there and is
    /// followed by something that may follow a value.
    fn number_end(&self, start: usize, signed: bool) -> Option<usize> {
        let b = self.text.as_bytes();
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let mut i = start;
        if signed && matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let int_end = digits(i);
        let mut end = int_end;
        let mut any_digits = int_end > i;
        if b.get(end) == Some(&b'.') {
            let frac_end = digits(end + 1);
            if frac_end > end + 1 {
                end = frac_end;
                any_digits = true;
            }
        }
        if !any_digits {
            return None;
        }
        if matches!(b.get(end), Some(b'e' | b'E')) {
            let mut j = end + 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            let exp_end = digits(j);
            if exp_end > j {
                end = exp_end;
            }
        }
        match self.char_at(end) {
            None => Some(end),
            Some(c) if c.is_whitespace() || c == ')' || c == ',' => Some(end),
            Some(_) => None,
        }
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.depth >= MAX_DEPTH {
            return Err(self.syntax(
                self.pos,
                format!(
                    "the query nests parentheses, negations and function calls more than \
                     {MAX_DEPTH} levels deep"
                ),
            ));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    // ---- errors -----------------------------------------------------------------------

    fn position(&self, offset: usize) -> Position {
        Position::locate(self.text, offset)
    }

    fn syntax(&self, at: usize, message: impl Into<String>) -> FilterError {
        FilterError::Syntax {
            position: self.position(at),
            message: message.into(),
            context: self.context(at),
        }
    }

    /// The clause being read (or the line), up to the end of the line, at most 80 characters.
    fn context(&self, at: usize) -> String {
        let at = at.min(self.text.len());
        let line_start = self.text[..at].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[at..]
            .find('\n')
            .map_or(self.text.len(), |i| at + i);
        let start = if (line_start..=at).contains(&self.clause) {
            self.clause
        } else {
            line_start
        };
        let context = self.text[start..line_end].trim_end();
        if context.chars().count() > 80 {
            let mut short: String = context.chars().take(77).collect();
            short.push('…');
            short
        } else {
            context.to_owned()
        }
    }

    fn invalid_argument(
        &self,
        span: Span,
        function: &'static str,
        message: impl Into<String>,
    ) -> FilterError {
        FilterError::InvalidArgument {
            position: self.position(span.start),
            function,
            message: message.into(),
        }
    }

    // ---- Boolean structure ------------------------------------------------------------

    fn expression(&mut self) -> Result<Expr> {
        let mut items = vec![self.sequence()?];
        loop {
            self.skip_trivia();
            let Some((Keyword::And, end)) = self.keyword_at(self.pos) else {
                break;
            };
            let and = self.pos;
            self.pos = end;
            self.skip_trivia();
            if self.at_end() || self.peek() == Some(')') {
                return Err(self.syntax(and, "expected a restriction after AND"));
            }
            items.push(self.sequence()?);
        }
        Ok(combine(items, Combine::And))
    }

    fn sequence(&mut self) -> Result<Expr> {
        let mut items = vec![self.factor()?];
        loop {
            self.skip_trivia();
            if self.at_end() || self.peek() == Some(')') {
                break;
            }
            if let Some((Keyword::And, _)) = self.keyword_at(self.pos) {
                break;
            }
            items.push(self.factor()?);
        }
        Ok(combine(items, Combine::And))
    }

    fn factor(&mut self) -> Result<Expr> {
        let mut items = vec![self.term()?];
        loop {
            self.skip_trivia();
            let Some((Keyword::Or, end)) = self.keyword_at(self.pos) else {
                break;
            };
            let or = self.pos;
            self.pos = end;
            self.skip_trivia();
            if self.at_end() || self.peek() == Some(')') {
                return Err(self.syntax(or, "expected a restriction after OR"));
            }
            items.push(self.term()?);
        }
        Ok(combine(items, Combine::Or))
    }

    fn term(&mut self) -> Result<Expr> {
        self.skip_trivia();
        let start = self.pos;
        let negation = match self.keyword_at(start) {
            Some((Keyword::Not, end)) => Some(("NOT", end)),
            _ if self.peek() == Some('-') => Some(("'-'", start + 1)),
            _ => None,
        };
        if let Some((name, end)) = negation {
            self.pos = end;
            self.skip_trivia();
            if self.at_end() || self.peek() == Some(')') {
                return Err(self.syntax(start, format!("expected a restriction after {name}")));
            }
            let inner = self.nested(Self::term)?;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.simple()
    }

    fn simple(&mut self) -> Result<Expr> {
        if self.peek() != Some('(') {
            return self.restriction();
        }
        let open = self.pos;
        self.pos += 1;
        self.skip_trivia();
        if self.peek() == Some(')') {
            self.clause = open;
            return Err(self.syntax(open, "empty parentheses; expected a restriction inside"));
        }
        if self.at_end() {
            self.clause = open;
            return Err(self.syntax(self.pos, "expected a restriction after '('"));
        }
        let expr = self.nested(Self::expression)?;
        self.skip_trivia();
        if self.peek() != Some(')') {
            self.clause = open;
            let opened = self.position(open);
            return Err(self.syntax(
                self.pos,
                format!(
                    "expected ')' to close the '(' at line {}, column {}",
                    opened.line, opened.column
                ),
            ));
        }
        self.pos += 1;
        Ok(expr)
    }

    // ---- restrictions -----------------------------------------------------------------

    fn restriction(&mut self) -> Result<Expr> {
        let start = self.pos;
        self.clause = start;
        let comparable = self.comparable()?;
        let before_operator = self.pos;
        self.skip_trivia();
        let Some((op, len)) = self.comparator_at(self.pos) else {
            self.pos = before_operator;
            return self.lone(comparable);
        };
        self.pos += len;
        let left = match comparable {
            Comparable::Value(v) => Operand::Field(self.resolve(
                vec![PathSegment {
                    name: v.text,
                    quoted: v.quoted,
                }],
                v.span,
            )?),
            Comparable::Path(segments, span) => Operand::Field(self.resolve(segments, span)?),
            Comparable::Call(call) => self.operand_call(call)?,
        };

        if op == Comparator::Has {
            let after_colon = self.pos;
            self.skip_trivia();
            if self.peek() == Some('*') {
                self.pos += 1;
                if self.word_end(self.pos) > self.pos {
                    return Err(self.syntax(self.pos, "expected white space or ')' after ':*'"));
                }
                let Operand::Field(field) = left else {
                    return Err(FilterError::Unsupported {
                        position: self.position(start),
                        message: "':*' tests whether a field is present; it does not apply to \
                                  a function's result"
                            .into(),
                    });
                };
                return Ok(Expr::Exists(Exists {
                    field,
                    span: Span {
                        start,
                        end: self.pos,
                    },
                }));
            }
            self.pos = after_colon;
        }

        let after = format!("'{}'", op.as_str());
        let right = self.value_expr(&after)?;
        if let Operand::Field(field) = &left {
            check_comparable_field(self, field)?;
        }
        Ok(Expr::Compare(Comparison {
            left,
            op,
            right,
            span: Span {
                start,
                end: self.pos,
            },
        }))
    }

    /// A comparable with no comparator after it.
    fn lone(&self, comparable: Comparable) -> Result<Expr> {
        match comparable {
            Comparable::Value(v) => Ok(Expr::Global(v)),
            Comparable::Path(mut segments, span) if segments.len() == 1 => {
                let segment = segments.pop().unwrap_or_else(|| PathSegment {
                    name: String::new(),
                    quoted: false,
                });
                Ok(Expr::Global(Value {
                    text: segment.name,
                    quoted: segment.quoted,
                    span,
                }))
            }
            Comparable::Path(_, span) => {
                let written = span.text(self.text);
                Err(self.syntax(
                    self.pos,
                    format!(
                        "expected a comparison operator after {written:?} (to search for the \
                         text, quote it: \"{written}\")"
                    ),
                ))
            }
            Comparable::Call(call) => self.predicate(call),
        }
    }

    fn comparable(&mut self) -> Result<Comparable> {
        let start = self.pos;
        let Some(c) = self.peek() else {
            return Err(self.syntax(start, "expected a restriction"));
        };
        if c == '"' {
            let v = self.quoted()?;
            if self.peek() == Some('.') {
                let first = PathSegment {
                    name: v.text,
                    quoted: true,
                };
                return self
                    .path_rest(first, start)
                    .map(|(s, span)| Comparable::Path(s, span));
            }
            return Ok(Comparable::Value(v));
        }
        if let Some(end) = self.number_end(start, false) {
            // Plain digits stay words (they could be a path segment); decimals are values.
            if self.text[start..end].contains(['.', 'e', 'E']) {
                self.pos = end;
                return Ok(Comparable::Value(Value {
                    text: self.text[start..end].to_owned(),
                    quoted: false,
                    span: Span { start, end },
                }));
            }
        }
        let end = self.word_end(start);
        if end == start {
            let hint = if c == ')' {
                ""
            } else {
                " (quote text that contains special characters)"
            };
            return Err(self.syntax(start, format!("expected a restriction, found '{c}'{hint}")));
        }
        let word = &self.text[start..end];
        if let Some((keyword, _)) = self.keyword_at(start) {
            let name = match keyword {
                Keyword::And => "AND",
                Keyword::Or => "OR",
                Keyword::Not => "NOT",
            };
            return Err(self.syntax(
                start,
                format!("expected a restriction before {name}, found the keyword itself"),
            ));
        }
        if word.starts_with('+') {
            return Err(self.syntax(
                start,
                format!("text that starts with '+' must be quoted: \"{word}\""),
            ));
        }
        self.pos = end;
        if self.peek() == Some('(') {
            return Ok(Comparable::Call(self.call(word.to_owned(), start)?));
        }
        let first = PathSegment {
            name: word.to_owned(),
            quoted: false,
        };
        self.path_rest(first, start)
            .map(|(s, span)| Comparable::Path(s, span))
    }

    /// The `.segment`s after a path's first segment.
    fn path_rest(&mut self, first: PathSegment, start: usize) -> Result<(Vec<PathSegment>, Span)> {
        let mut segments = vec![first];
        while self.peek() == Some('.') {
            self.pos += 1;
            if self.peek() == Some('"') {
                let v = self.quoted()?;
                segments.push(PathSegment {
                    name: v.text,
                    quoted: true,
                });
                continue;
            }
            let end = self.word_end(self.pos);
            if end == self.pos {
                return Err(self.syntax(self.pos, "expected a field name after '.'"));
            }
            segments.push(PathSegment {
                name: self.text[self.pos..end].to_owned(),
                quoted: false,
            });
            self.pos = end;
        }
        Ok((
            segments,
            Span {
                start,
                end: self.pos,
            },
        ))
    }

    fn comparator_at(&self, pos: usize) -> Option<(Comparator, usize)> {
        let rest = &self.text[pos..];
        const OPERATORS: [(&str, Comparator); 9] = [
            ("<=", Comparator::Le),
            (">=", Comparator::Ge),
            ("!=", Comparator::Ne),
            ("=~", Comparator::Matches),
            ("!~", Comparator::NotMatches),
            ("<", Comparator::Lt),
            (">", Comparator::Gt),
            ("=", Comparator::Eq),
            (":", Comparator::Has),
        ];
        OPERATORS
            .iter()
            .find(|(text, _)| rest.starts_with(text))
            .map(|(text, op)| (*op, text.len()))
    }

    fn resolve(&self, segments: Vec<PathSegment>, span: Span) -> Result<FieldPath> {
        let names: Vec<&str> = segments.iter().map(|s| s.name.as_str()).collect();
        match catalogue::lookup(&names) {
            Some(field) => Ok(FieldPath {
                segments,
                field,
                span,
            }),
            None => {
                let why = catalogue::explain_undefined(&names);
                Err(FilterError::UndefinedField {
                    position: self.position(span.start),
                    field: names.join("."),
                    suggestion: why.suggestion,
                    reason: why.reason,
                })
            }
        }
    }

    // ---- values -----------------------------------------------------------------------

    /// The right side of a comparison: a value, or a parenthesised Boolean combination.
    fn value_expr(&mut self, after: &str) -> Result<ValueExpr> {
        self.skip_trivia();
        if self.peek() != Some('(') {
            return Ok(ValueExpr::Value(self.value(after)?));
        }
        self.value_group()
    }

    fn value_group(&mut self) -> Result<ValueExpr> {
        let open = self.pos;
        self.pos += 1;
        self.skip_trivia();
        if self.peek() == Some(')') {
            return Err(self.syntax(open, "empty value list; expected values inside '(' ')'"));
        }
        let list = self.nested(Self::value_list)?;
        self.skip_trivia();
        if self.peek() != Some(')') {
            let opened = self.position(open);
            return Err(self.syntax(
                self.pos,
                format!(
                    "expected ')' to close the value list opened at line {}, column {}",
                    opened.line, opened.column
                ),
            ));
        }
        self.pos += 1;
        Ok(list)
    }

    fn value_list(&mut self) -> Result<ValueExpr> {
        let mut items = vec![self.value_sequence()?];
        loop {
            self.skip_trivia();
            let Some((Keyword::And, end)) = self.keyword_at(self.pos) else {
                break;
            };
            self.pos = end;
            items.push(self.value_sequence_after("AND")?);
        }
        Ok(combine_values(items, Combine::And))
    }

    fn value_sequence_after(&mut self, keyword: &str) -> Result<ValueExpr> {
        self.skip_trivia();
        if self.peek() == Some(')') || self.at_end() {
            return Err(self.syntax(self.pos, format!("expected a value after {keyword}")));
        }
        self.value_sequence()
    }

    fn value_sequence(&mut self) -> Result<ValueExpr> {
        let mut items = vec![self.value_factor()?];
        loop {
            self.skip_trivia();
            if self.at_end() || self.peek() == Some(')') {
                break;
            }
            if let Some((Keyword::And, _)) = self.keyword_at(self.pos) {
                break;
            }
            items.push(self.value_factor()?);
        }
        Ok(combine_values(items, Combine::And))
    }

    fn value_factor(&mut self) -> Result<ValueExpr> {
        let mut items = vec![self.value_term()?];
        loop {
            self.skip_trivia();
            let Some((Keyword::Or, end)) = self.keyword_at(self.pos) else {
                break;
            };
            self.pos = end;
            self.skip_trivia();
            if self.peek() == Some(')') || self.at_end() {
                return Err(self.syntax(self.pos, "expected a value after OR"));
            }
            items.push(self.value_term()?);
        }
        Ok(combine_values(items, Combine::Or))
    }

    fn value_term(&mut self) -> Result<ValueExpr> {
        self.skip_trivia();
        let start = self.pos;
        // Inside a value list a '-' before a number is its sign, not NOT.
        let minus = self.peek() == Some('-') && self.number_end(start, true).is_none();
        let negation = match self.keyword_at(start) {
            Some((Keyword::Not, end)) => Some(end),
            _ if minus => Some(start + 1),
            _ => None,
        };
        if let Some(end) = negation {
            self.pos = end;
            self.skip_trivia();
            if self.peek() == Some(')') || self.at_end() {
                return Err(self.syntax(start, "expected a value after NOT"));
            }
            let inner = self.nested(Self::value_term)?;
            return Ok(ValueExpr::Not(Box::new(inner)));
        }
        if self.peek() == Some('(') {
            return self.value_group();
        }
        Ok(ValueExpr::Value(self.value("'('")?))
    }

    /// One literal value; `after` names what precedes it, for errors.
    fn value(&mut self, after: &str) -> Result<Value> {
        self.skip_trivia();
        let start = self.pos;
        let Some(c) = self.peek() else {
            return Err(self.syntax(start, format!("expected a value after {after}")));
        };
        if c == '"' {
            let v = self.quoted()?;
            self.check_value_end(start)?;
            return Ok(v);
        }
        if c == '*' {
            return Err(self.syntax(
                start,
                "'*' is only a value after ':', as FIELD:* (presence); quote it to compare \
                 with the text \"*\"",
            ));
        }
        if let Some(end) = self.number_end(start, true) {
            self.pos = end;
            return Ok(Value {
                text: self.text[start..end].to_owned(),
                quoted: false,
                span: Span { start, end },
            });
        }
        if matches!(c, '-' | '+' | '.') {
            let run = self.unquoted_run(start);
            return Err(self.syntax(
                start,
                format!("a value that starts with '{c}' must be quoted: \"{run}\""),
            ));
        }
        let end = self.word_end(start);
        if end == start {
            return Err(self.syntax(
                start,
                format!("expected a value after {after}, found '{c}'"),
            ));
        }
        let word = &self.text[start..end];
        if self.keyword_at(start).is_some() {
            return Err(self.syntax(
                start,
                format!(
                    "expected a value after {after}, found the keyword {word} (quote it to \
                     compare with the text \"{word}\")"
                ),
            ));
        }
        self.pos = end;
        self.check_value_end(start)?;
        Ok(Value {
            text: word.to_owned(),
            quoted: false,
            span: Span { start, end },
        })
    }

    /// Rejects a special character glued to a value (`insertId = abc:def`, reference §13).
    fn check_value_end(&self, start: usize) -> Result<()> {
        match self.peek() {
            Some('(') => Err(self.syntax(
                self.pos,
                "a function call cannot be the value of a comparison",
            )),
            Some(c)
                if matches!(
                    c,
                    ':' | '.' | '=' | '<' | '>' | '~' | '*' | '!' | '\\' | '"' | ','
                ) =>
            {
                let run = self.unquoted_run(start);
                Err(self.syntax(
                    self.pos,
                    format!(
                        "unexpected '{c}' after the value; quote values that contain special \
                         characters: \"{}\"",
                        run.replace('"', "\\\"")
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The text from `start` to the next white space or ')', for quoting hints.
    fn unquoted_run(&self, start: usize) -> &'a str {
        let rest = &self.text[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == ')')
            .unwrap_or(rest.len());
        &rest[..end]
    }

    /// A double-quoted string. Escapes: `\"` `\\` `\'` `\n` `\r` `\t`, octal `\NNN`, `\xHH`,
    /// `\uHHHH`, `\UHHHHHHHH`; any other backslash is kept with the character after it, so
    /// regexes keep `\d`, `\b`, `\.` however they are written.
    fn quoted(&mut self) -> Result<Value> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        let mut out: Vec<u8> = Vec::new();
        let mut i = start + 1;
        loop {
            let Some(&b) = bytes.get(i) else {
                return Err(self.syntax(start, "unterminated string: no closing '\"'"));
            };
            match b {
                b'"' => {
                    i += 1;
                    break;
                }
                b'\\' => i = self.escape(i, &mut out)?,
                _ => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        self.pos = i;
        let text = String::from_utf8(out).map_err(|_| {
            self.syntax(
                start,
                "the escape sequences of this string do not form UTF-8 text",
            )
        })?;
        Ok(Value {
            text,
            quoted: true,
            span: Span { start, end: i },
        })
    }

    /// Resolves the escape whose backslash is at `at`; returns the offset after it.
    fn escape(&self, at: usize, out: &mut Vec<u8>) -> Result<usize> {
        let bytes = self.text.as_bytes();
        let Some(&kind) = bytes.get(at + 1) else {
            return Err(self.syntax(at, "unterminated string: no closing '\"'"));
        };
        let simple = match kind {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'\'' => Some(b'\''),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            return Ok(at + 2);
        }
        let digits_of = |from: usize, max: usize, radix: u32| {
            let mut end = from;
            while end < from + max && bytes.get(end).is_some_and(|b| (*b as char).is_digit(radix)) {
                end += 1;
            }
            end
        };
        let value_of = |from: usize, to: usize, radix: u32| {
            u32::from_str_radix(&self.text[from..to], radix).unwrap_or(u32::MAX)
        };
        match kind {
            b'0'..=b'7' => {
                let end = digits_of(at + 1, 3, 8);
                let v = value_of(at + 1, end, 8);
                let byte = u8::try_from(v)
                    .map_err(|_| self.syntax(at, "octal escape out of range (max \\377)"))?;
                out.push(byte);
                Ok(end)
            }
            b'x' => {
                let end = digits_of(at + 2, 2, 16);
                if end == at + 2 {
                    return Err(self.syntax(at, "expected hex digits after \\x"));
                }
                out.push(value_of(at + 2, end, 16) as u8);
                Ok(end)
            }
            b'u' | b'U' => {
                let len = if kind == b'u' { 4 } else { 8 };
                let end = digits_of(at + 2, len, 16);
                let c = (end == at + 2 + len)
                    .then(|| char::from_u32(value_of(at + 2, end, 16)))
                    .flatten()
                    .ok_or_else(|| {
                        self.syntax(
                            at,
                            format!(
                                "expected {len} hex digits of a Unicode scalar value after \\{}",
                                kind as char
                            ),
                        )
                    })?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                Ok(end)
            }
            _ => {
                // Kept as written; the next character is copied by the caller's loop.
                out.push(b'\\');
                Ok(at + 1)
            }
        }
    }
}

/// Comparisons apply to scalar fields; objects and lists only take `:*` and SEARCH.
fn check_comparable_field(p: &Parser<'_>, field: &FieldPath) -> Result<()> {
    if matches!(field.field.kind, FieldKind::Leaf(_)) {
        return Ok(());
    }
    let children: Vec<&str> = catalogue::fields()
        .iter()
        .filter(|f| {
            f.segments.len() == field.field.segments.len() + 1
                && f.path.starts_with(field.field.path)
        })
        .map(|f| f.path)
        .take(3)
        .collect();
    Err(FilterError::Unsupported {
        position: p.position(field.span.start),
        message: format!(
            "{} is {}; compare one of its fields ({}, …) or test its presence with {}:*",
            field.canonical(),
            if field.field.kind == FieldKind::ArrayOfObjects {
                "a list of objects"
            } else {
                "an object"
            },
            children.join(", "),
            field.canonical()
        ),
    })
}

#[derive(Clone, Copy)]
enum Combine {
    And,
    Or,
}

/// One item stays itself; nested operands of the same kind are flattened.
fn combine(mut items: Vec<Expr>, how: Combine) -> Expr {
    if items.len() == 1 {
        return items.pop().unwrap_or(Expr::And(Vec::new()));
    }
    let mut flat = Vec::with_capacity(items.len());
    for item in items {
        match (how, item) {
            (Combine::And, Expr::And(inner)) | (Combine::Or, Expr::Or(inner)) => flat.extend(inner),
            (_, other) => flat.push(other),
        }
    }
    match how {
        Combine::And => Expr::And(flat),
        Combine::Or => Expr::Or(flat),
    }
}

fn combine_values(mut items: Vec<ValueExpr>, how: Combine) -> ValueExpr {
    if items.len() == 1 {
        return items.pop().unwrap_or(ValueExpr::And(Vec::new()));
    }
    let mut flat = Vec::with_capacity(items.len());
    for item in items {
        match (how, item) {
            (Combine::And, ValueExpr::And(inner)) | (Combine::Or, ValueExpr::Or(inner)) => {
                flat.extend(inner)
            }
            (_, other) => flat.push(other),
        }
    }
    match how {
        Combine::And => ValueExpr::And(flat),
        Combine::Or => ValueExpr::Or(flat),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::{Call, CastType, SearchTerm};

    fn parse(text: &str) -> Expr {
        parse_query(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .unwrap_or_else(|| panic!("{text}: empty"))
    }

    fn compare(e: &Expr) -> &Comparison {
        match e {
            Expr::Compare(c) => c,
            other => panic!("not a comparison: {other:?}"),
        }
    }

    fn field_of(c: &Comparison) -> &'static str {
        match &c.left {
            Operand::Field(f) => f.canonical(),
            other => panic!("not a field: {other:?}"),
        }
    }

    #[test]
    fn or_binds_tighter_than_and_and_juxtaposition() {
        let Expr::And(items) = parse("severity=ERROR logName=a OR logName=b AND insertId=c") else {
            panic!()
        };
        assert_eq!(items.len(), 3);
        assert_eq!(field_of(compare(&items[0])), "severity");
        let Expr::Or(alternatives) = &items[1] else {
            panic!("{:?}", items[1])
        };
        assert_eq!(alternatives.len(), 2);
        assert_eq!(field_of(compare(&items[2])), "insertId");
    }

    #[test]
    fn not_and_minus_bind_to_one_term() {
        let Expr::Or(items) = parse("NOT logName=a OR -logName=b") else {
            panic!()
        };
        assert!(items.iter().all(|e| matches!(e, Expr::Not(_))));
    }

    #[test]
    fn comparisons_keep_paths_values_and_spans() {
        let text = r#"JSONPAYLOAD."dest".pod_name = "a\"b""#;
        let c = parse(text);
        let c = compare(&c);
        let Operand::Field(f) = &c.left else { panic!() };
        assert_eq!(f.canonical(), "jsonPayload.dest.pod_name");
        assert_eq!(f.segments[0].name, "JSONPAYLOAD");
        assert!(!f.segments[0].quoted);
        assert_eq!(f.segments[1].name, "dest");
        assert!(f.segments[1].quoted);
        assert_eq!(f.span.text(text), r#"JSONPAYLOAD."dest".pod_name"#);
        assert_eq!(c.op, Comparator::Eq);
        let ValueExpr::Value(v) = &c.right else {
            panic!()
        };
        assert_eq!(v.text, "a\"b");
        assert!(v.quoted);
        assert_eq!(v.span.text(text), r#""a\"b""#);
        assert_eq!(c.span.text(text), text);
    }

    #[test]
    fn value_lists_stay_lists() {
        let e = parse("jsonPayload.disposition = (allow OR NOT deny)");
        let ValueExpr::Or(values) = &compare(&e).right else {
            panic!()
        };
        assert!(matches!(&values[0], ValueExpr::Value(v) if v.text == "allow" && !v.quoted));
        assert!(matches!(&values[1], ValueExpr::Not(_)));
    }

    #[test]
    fn every_operator() {
        for (text, op) in [
            ("logName = a", Comparator::Eq),
            ("logName != a", Comparator::Ne),
            ("logName < a", Comparator::Lt),
            ("logName <= a", Comparator::Le),
            ("logName > a", Comparator::Gt),
            ("logName >= a", Comparator::Ge),
            ("logName : a", Comparator::Has),
            ("logName =~ \"a\"", Comparator::Matches),
            ("logName !~ \"a\"", Comparator::NotMatches),
        ] {
            assert_eq!(compare(&parse(text)).op, op, "{text}");
            assert_eq!(op.as_str(), text.split(' ').nth(1).unwrap());
        }
    }

    #[test]
    fn globals_presence_and_null() {
        assert!(matches!(parse("unicorn"), Expr::Global(v) if v.text == "unicorn" && !v.quoted));
        assert!(matches!(parse("\"a b\""), Expr::Global(v) if v.text == "a b" && v.quoted));
        assert!(matches!(parse("and"), Expr::Global(v) if v.text == "and"));
        assert!(matches!(parse("1.5"), Expr::Global(v) if v.text == "1.5"));
        assert!(matches!(
            parse("jsonPayload.policies:*"),
            Expr::Exists(e) if e.field.canonical() == "jsonPayload.policies"
        ));
        let e = parse("jsonPayload.src.pod_name = NULL_VALUE");
        assert!(matches!(&compare(&e).right, ValueExpr::Value(v) if v.is_null()));
        let e = parse("jsonPayload.src.pod_name = \"NULL_VALUE\"");
        assert!(matches!(&compare(&e).right, ValueExpr::Value(v) if !v.is_null()));
    }

    #[test]
    fn functions_are_typed() {
        let Expr::Call(Call::IpInNet { field, net, .. }) =
            parse(r#"ip_in_net(jsonPayload.connection.src_ip, "10.0.0.0/8")"#)
        else {
            panic!()
        };
        assert_eq!(field.canonical(), "jsonPayload.connection.src_ip");
        assert_eq!(net.to_string(), "10.0.0.0/8");

        let Expr::Call(Call::Sample { fraction, .. }) = parse("sample(insertId, 0.25)") else {
            panic!()
        };
        assert_eq!(fraction, 0.25);

        let Expr::Call(Call::Search { field, terms, .. }) = parse(r#"SEARCH("a-b `c d`")"#) else {
            panic!()
        };
        assert!(field.is_none());
        assert_eq!(terms.len(), 3);
        assert!(matches!(&terms[2], SearchTerm::Phrase(p) if p.len() == 2));

        let e = parse(r#"cast(timestamp, string, TIMEZONE("UTC")) =~ "^2020""#);
        let Operand::Cast(cast) = &compare(&e).left else {
            panic!()
        };
        assert_eq!(cast.target, CastType::String);
        assert_eq!(cast.timezone.as_ref().unwrap().text, "UTC");
        assert_eq!(compare(&e).left.value_type(), crate::ast::ValueType::String);

        let e = parse(r#"REGEXP_EXTRACT(CAST(jsonPayload.count, STRING), "(\d)") = 1"#);
        let Operand::RegexpExtract(x) = &compare(&e).left else {
            panic!()
        };
        assert!(matches!(&x.operand, Operand::Cast(_)));
        assert_eq!(x.pattern.text, r"(\d)");
    }

    #[test]
    fn escapes() {
        let value = |text: &str| match parse(&format!("logName = {text}")) {
            Expr::Compare(Comparison {
                right: ValueExpr::Value(v),
                ..
            }) => v.text,
            other => panic!("{other:?}"),
        };
        assert_eq!(value(r#""a\tb\nc\\d\"e\'f""#), "a\tb\nc\\d\"e'f");
        assert_eq!(value(r#""\303\251\xC3\xA9\u00e9\U000000E9""#), "éééé");
        assert_eq!(value(r#""\d\b\.""#), r"\d\b\.");
        assert!(parse_query(r#"logName = "\xff""#).is_err());
        assert!(parse_query(r#"logName = "\u12""#).is_err());
    }

    #[test]
    fn comments_and_minus() {
        assert!(parse_query("-- nothing\n").unwrap().is_none());
        assert!(matches!(parse("-unicorn"), Expr::Not(_)));
        // A '-' inside a word is part of it.
        assert!(matches!(parse("a-b"), Expr::Global(v) if v.text == "a-b"));
        let e = parse("jsonPayload.connection.src_port > -5");
        assert!(matches!(&compare(&e).right, ValueExpr::Value(v) if v.text == "-5"));
    }
}
