//! `SEARCH` tokenization and matching (reference §9.2).
//!
//! Text is split into tokens the way BigQuery's `LOG_ANALYZER` does by default: a token is a
//! maximal run of characters that are not delimiters; the delimiters are white space, the
//! characters ``[ ] < > ( ) { } | ! ; , ' " * & ? + / : = @ . - $ % \ _`` and the
//! percent-encodings `%21 %26 %2526 %3B %7C %20 %2B %3D %2520 %5D %5B %3A %0A %2C %28 %29`
//! (any hex case). So `client-allow_7b` is `client`, `allow`, `7b`, and `SEARCH("world")` does
//! not match `worldwide`. Tokens compare ignoring case. A backtick-quoted part of the query is a
//! phrase: its tokens must appear consecutively, in order, in one field.
//!
//! Translators can reuse [`tokens`] (e.g. in a UDF) to agree with this evaluator exactly.

use crate::ast::SearchTerm;
use crate::case_fold::{eq_folded, fold};

const DELIMITERS: &[char] = &[
    '[', ']', '<', '>', '(', ')', '{', '}', '|', '!', ';', ',', '\'', '"', '*', '&', '?', '+', '/',
    ':', '=', '@', '.', '-', '$', '%', '\\', '_',
];

/// Longest first, so `%2526` wins over a shorter prefix.
const ENCODED_DELIMITERS: &[&str] = &[
    "%2526", "%2520", "%21", "%26", "%3b", "%7c", "%20", "%2b", "%3d", "%5d", "%5b", "%3a", "%0a",
    "%2c", "%28", "%29",
];

fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || DELIMITERS.contains(&c)
}

/// The tokens of `text`, in order, as slices of it (not case-folded).
pub fn tokens(text: &str) -> Tokens<'_> {
    Tokens { text, pos: 0 }
}

/// Iterator returned by [`tokens`].
#[derive(Debug, Clone)]
pub struct Tokens<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        // Skip delimiters.
        loop {
            let rest = &self.text[self.pos..];
            let c = rest.chars().next()?;
            if c == '%'
                && let Some(enc) = ENCODED_DELIMITERS.iter().find(|enc| {
                    rest.get(..enc.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(enc))
                })
            {
                self.pos += enc.len();
                continue;
            }
            if !is_delimiter(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        let start = self.pos;
        let rest = &self.text[start..];
        let len = rest.find(is_delimiter).unwrap_or(rest.len());
        self.pos = start + len;
        Some(&self.text[start..start + len])
    }
}

/// Why a SEARCH query was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueryProblem {
    UnterminatedBacktick,
    NoTokens,
}

/// The terms of a SEARCH query: tokens outside backticks, phrases inside them.
pub(crate) fn parse_query(query: &str) -> Result<Vec<SearchTerm>, QueryProblem> {
    if query.matches('`').count() % 2 == 1 {
        return Err(QueryProblem::UnterminatedBacktick);
    }
    let mut terms = Vec::new();
    for (i, part) in query.split('`').enumerate() {
        let folded: Vec<String> = tokens(part).map(fold).collect();
        if i % 2 == 1 && folded.len() > 1 {
            terms.push(SearchTerm::Phrase(folded));
        } else {
            terms.extend(folded.into_iter().map(SearchTerm::Token));
        }
    }
    if terms.is_empty() {
        return Err(QueryProblem::NoTokens);
    }
    Ok(terms)
}

/// Whether `text` contains `term` (whole tokens, ignoring case).
pub(crate) fn text_has_term(text: &str, term: &SearchTerm) -> bool {
    match term {
        SearchTerm::Token(t) => tokens(text).any(|tok| eq_folded(tok, t)),
        SearchTerm::Phrase(phrase) => {
            let mut at = tokens(text);
            loop {
                let mut probe = at.clone();
                if phrase
                    .iter()
                    .all(|t| probe.next().is_some_and(|tok| eq_folded(tok, t)))
                {
                    return true;
                }
                if at.next().is_none() {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_log_analyzer_delimiters() {
        let t: Vec<_> = tokens("client-allow_7b78 10.84.1.7 a%20b/c%2Fd").collect();
        assert_eq!(
            t,
            [
                "client", "allow", "7b78", "10", "84", "1", "7", "a", "b", "c", "2Fd"
            ]
        );
        assert_eq!(tokens("  --  ").count(), 0);
    }

    #[test]
    fn tokens_and_phrases() {
        let terms = parse_query("Hello `big world` x").unwrap();
        assert_eq!(
            terms,
            [
                SearchTerm::Token("hello".into()),
                SearchTerm::Phrase(vec!["big".into(), "world".into()]),
                SearchTerm::Token("x".into()),
            ]
        );
        assert!(text_has_term("the BIG-world", &terms[1]));
        assert!(!text_has_term("world big", &terms[1]));
        assert!(!text_has_term(
            "worldwide",
            &SearchTerm::Token("world".into())
        ));
        assert_eq!(parse_query("`a"), Err(QueryProblem::UnterminatedBacktick));
        assert_eq!(parse_query(" - "), Err(QueryProblem::NoTokens));
    }
}
