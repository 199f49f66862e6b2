//! Errors of parsing and validating a query. Every error found in the query text names its
//! position (1-based line and column, plus the byte offset) so a UI can point at it.

use std::fmt;

/// A place in the query text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// Byte offset from the start of the query.
    pub offset: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters (not bytes).
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text` (clamped to the text, and to a char boundary).
    pub fn locate(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            offset,
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a query was rejected. Nothing is evaluated until a query parses and validates.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Longer than the language's limit (comments count).
    #[error("the query is {length} characters long; the limit is {max} characters")]
    TooLong { length: usize, max: usize },

    /// The text does not follow the grammar.
    #[error("{position}: {message} in {context:?}")]
    Syntax {
        position: Position,
        /// What was wrong or expected.
        message: String,
        /// The clause (or line) around the error, as written.
        context: String,
    },

    /// A path that is neither a LogEntry field nor a field of the policy-action record.
    #[error(
        "{position}: undefined field {field:?}{}{}",
        reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(),
        suggestion.map(|s| format!("; did you mean {s:?}?")).unwrap_or_default()
    )]
    UndefinedField {
        position: Position,
        /// The path as written.
        field: String,
        /// The nearest known path, when one is close.
        suggestion: Option<&'static str>,
        /// Why it is undefined, when there is more to say.
        reason: Option<String>,
    },

    /// A well-formed construct that does not apply here: comparing an object, a regex on a
    /// number, an unquoted regex, `*` after an operator other than `:`, …
    #[error("{position}: {message}")]
    Unsupported { position: Position, message: String },

    /// A regular expression the RE2 syntax (the `regex` crate) rejects.
    #[error("{position}: invalid regular expression {pattern:?}: {source}")]
    InvalidRegex {
        position: Position,
        pattern: String,
        #[source]
        source: regex::Error,
    },

    /// `ip_in_net` with a SUBNET that is not an IP address or CIDR range.
    #[error("{position}: ip_in_net: {subnet:?} is not an IP address or CIDR range: {source}")]
    InvalidSubnet {
        position: Position,
        subnet: String,
        #[source]
        source: ipnet::AddrParseError,
    },

    /// `TIMEZONE("…")` naming a zone that the system time zone database does not have.
    #[error(
        "{position}: unknown time zone {zone:?}: expected an IANA name of the system time zone \
         database, such as \"America/New_York\""
    )]
    UnknownTimeZone {
        position: Position,
        zone: String,
        #[source]
        source: tz::Error,
    },

    /// A function called with the wrong arguments.
    #[error("{position}: {function}: {message}")]
    InvalidArgument {
        position: Position,
        function: &'static str,
        message: String,
    },

    /// A function the language does not have.
    #[error(
        "{position}: unknown function {name:?}; the functions are log_id, source, ip_in_net, \
         sample, SEARCH, cast and REGEXP_EXTRACT"
    )]
    UnknownFunction { position: Position, name: String },
}

impl FilterError {
    /// Where in the query the problem is (`None` only for [`FilterError::TooLong`]).
    pub fn position(&self) -> Option<Position> {
        match self {
            FilterError::TooLong { .. } => None,
            FilterError::Syntax { position, .. }
            | FilterError::UndefinedField { position, .. }
            | FilterError::Unsupported { position, .. }
            | FilterError::InvalidRegex { position, .. }
            | FilterError::InvalidSubnet { position, .. }
            | FilterError::UnknownTimeZone { position, .. }
            | FilterError::InvalidArgument { position, .. }
            | FilterError::UnknownFunction { position, .. } => Some(*position),
        }
    }
}

/// `Result` with [`FilterError`].
pub type Result<T, E = FilterError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "a = \"é\"\nb = c";
        assert_eq!(
            Position::locate(text, 0),
            Position {
                offset: 0,
                line: 1,
                column: 1
            }
        );
        // After the two-byte 'é' the column counts one character.
        let p = Position::locate(text, 7);
        assert_eq!((p.line, p.column), (1, 7));
        let p = Position::locate(text, 13);
        assert_eq!((p.line, p.column, p.offset), (2, 5, 13));
        assert_eq!(p.to_string(), "line 2, column 5");
    }
}
