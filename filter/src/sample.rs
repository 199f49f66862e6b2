//! The hash behind `sample(FIELD, FRACTION)`, written out so that every evaluator (this one, a
//! DataFusion UDF, a script) selects exactly the same entries.
//!
//! `sample_hash(text)`:
//! 1. FNV-1a 64 over the UTF-8 bytes of the field's text (offset basis `0xcbf29ce484222325`,
//!    prime `0x100000001b3`);
//! 2. MurmurHash3's `fmix64` finalizer (FNV alone leaves the high bits poorly mixed for ids that
//!    differ only in their last characters, like consecutive `insertId`s);
//! 3. the top 53 bits as a fraction: `(h >> 11) / 2^53`, in `[0, 1)`.
//!
//! An entry is selected when `sample_hash(text) < FRACTION`, so FRACTION 1 selects every entry
//! that has a value. The text of a number is its decimal form (`8080`), of a boolean
//! `true`/`false`; text is hashed as is, without case folding.

use std::fmt;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Where `text` falls in `[0, 1)`; `sample(FIELD, f)` keeps entries with `sample_hash < f`.
pub fn sample_hash(text: &str) -> f64 {
    let mut h = FnvHasher(FNV_OFFSET);
    h.feed(text.as_bytes());
    h.fraction()
}

/// FNV-1a that can also be fed through `fmt::Write`, to hash a number's decimal text without
/// allocating it.
pub(crate) struct FnvHasher(u64);

impl FnvHasher {
    pub(crate) fn new() -> Self {
        FnvHasher(FNV_OFFSET)
    }

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    pub(crate) fn fraction(&self) -> f64 {
        let mut k = self.0;
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^= k >> 33;
        (k >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl fmt::Write for FnvHasher {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.feed(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    #[test]
    fn pinned_values_never_change() {
        // Other evaluators reproduce these; changing them changes which entries are sampled.
        // Computed independently (README's recipe in Python).
        assert_eq!(sample_hash(""), 0.93676944839044);
        assert_eq!(
            sample_hash("2275c119267fb6500000000000000001"),
            0.913062537579451
        );
        for text in ["", "a", "8c3f0b6a9e2d4c710000000000001000", "héllo"] {
            assert_eq!(sample_hash(text), pinned(text));
        }
    }

    /// The algorithm again, step by step, as the module documents it.
    fn pinned(text: &str) -> f64 {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in text.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51afd7ed558ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ceb9fe1a85ec53);
        h ^= h >> 33;
        (h >> 11) as f64 / 9007199254740992.0
    }

    #[test]
    fn numbers_hash_as_their_decimal_text() {
        let mut h = FnvHasher::new();
        write!(h, "{}", 8080).unwrap();
        assert_eq!(h.fraction(), sample_hash("8080"));
    }

    #[test]
    fn roughly_uniform() {
        let n = 20_000;
        let kept = (0..n)
            .filter(|i| sample_hash(&format!("{i:032x}")) < 0.25)
            .count();
        assert!((4_500..5_500).contains(&kept), "{kept}");
    }
}
