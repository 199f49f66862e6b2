//! Case-insensitive text comparison, the language's rule for every string comparison except
//! regular expressions (reference §8).
//!
//! The reference normalises both sides with NFKC_CF. We fold with Unicode lower-casing
//! (`str::to_lowercase`, what DataFusion's `lower()` does too), which is identical for ASCII —
//! all of Kubernetes' names, IPs, protocols and log names — and differs only for compatibility
//! characters NFKC would also rewrite (README, choice C9). Query constants are folded once, at
//! compile time; entry text is folded on the fly without allocating when it is ASCII, the case
//! on the hot path.

use std::cmp::Ordering;

/// The folded form of a query constant.
pub fn fold(text: &str) -> String {
    text.to_lowercase()
}

/// `fold(text) == folded` (`folded` a result of [`fold`]), without allocating for ASCII text:
/// ASCII folds byte by byte, so a different length already means no.
pub fn eq_folded(text: &str, folded: &str) -> bool {
    if text.is_ascii() {
        text.len() == folded.len()
            && text
                .bytes()
                .zip(folded.bytes())
                .all(|(a, b)| a.to_ascii_lowercase() == b)
    } else {
        fold(text) == folded
    }
}

/// `fold(text).cmp(folded)`, byte-wise (which is code point order).
pub(crate) fn cmp_folded(text: &str, folded: &str) -> Ordering {
    if text.is_ascii() {
        text.bytes()
            .map(|b| b.to_ascii_lowercase())
            .cmp(folded.bytes())
    } else {
        fold(text).as_str().cmp(folded)
    }
}

/// `fold(text).contains(folded)`.
pub(crate) fn contains_folded(text: &str, folded: &str) -> bool {
    if !text.is_ascii() {
        return fold(text).contains(folded);
    }
    let (hay, needle) = (text.as_bytes(), folded.as_bytes());
    if needle.is_empty() {
        return true;
    }
    if needle.len() > hay.len() {
        return false;
    }
    // Entry strings are short (names, IPs): a plain scan beats building a searcher.
    hay.windows(needle.len()).any(|w| {
        w.iter()
            .zip(needle)
            .all(|(a, b)| a.to_ascii_lowercase() == *b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_and_unicode_fold_alike() {
        assert!(eq_folded("DENY", "deny"));
        assert!(!eq_folded("DENY", "den"));
        assert!(eq_folded("ÉTÉ", "été"));
        // U+212A KELVIN SIGN lower-cases to an ASCII 'k'.
        assert!(eq_folded("k", &fold("\u{212A}")));
        assert_eq!(cmp_folded("B", "a"), Ordering::Greater);
        assert_eq!(cmp_folded("abc", "abd"), Ordering::Less);
        assert!(contains_folded("Client-Allow-7b78", "allow"));
        assert!(contains_folded("x", ""));
        assert!(!contains_folded("al", "allow"));
        assert!(contains_folded("Ünïcödé", "cöd"));
    }
}
