//! RFC 3339 timestamps with nanosecond precision.
//!
//! GKE writes `timestamp` with up to nine fractional digits, and the seed's probe example has ten.
//! We parse any number of fractional digits (digits past the ninth are truncated: nanoseconds are
//! what we keep) and any UTC offset, and print the way Go's `time.RFC3339Nano` does (the format
//! anetd uses): UTC, `Z`, trailing zeros of the fraction trimmed. The calendar arithmetic is done
//! here rather than through a date crate because this sits on the hot path of every reader.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time as nanoseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

/// Why a string is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RFC 3339 timestamp {input:?}: {reason}")]
pub struct TimestampParseError {
    input: String,
    reason: &'static str,
}

const NANOS_PER_SEC: i64 = 1_000_000_000;

impl Timestamp {
    /// From nanoseconds since the Unix epoch.
    pub const fn from_unix_nanos(nanos: i64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// The current time.
    pub fn now() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
    }

    /// Parses RFC 3339 (`2020-06-16T03:10:37.993712906Z`, `...+02:00`, `t`/`z` in lower case,
    /// any number of fractional digits).
    pub fn parse(input: &str) -> Result<Self, TimestampParseError> {
        let err = |reason| TimestampParseError {
            input: input.to_owned(),
            reason,
        };
        let b = input.as_bytes();
        if b.len() < 20 {
            return Err(err("too short; expected YYYY-MM-DDTHH:MM:SS and an offset"));
        }
        let year = digits(&b[0..4]).ok_or_else(|| err("bad year"))?;
        if b[4] != b'-' || b[7] != b'-' {
            return Err(err("expected '-' between date parts"));
        }
        let month = digits(&b[5..7]).ok_or_else(|| err("bad month"))?;
        let day = digits(&b[8..10]).ok_or_else(|| err("bad day"))?;
        if !matches!(b[10], b'T' | b't' | b' ') {
            return Err(err("expected 'T' between date and time"));
        }
        let hour = digits(&b[11..13]).ok_or_else(|| err("bad hour"))?;
        if b[13] != b':' || b[16] != b':' {
            return Err(err("expected ':' between time parts"));
        }
        let minute = digits(&b[14..16]).ok_or_else(|| err("bad minute"))?;
        let second = digits(&b[17..19]).ok_or_else(|| err("bad second"))?;
        if !(1..=12).contains(&month) {
            return Err(err("month out of range"));
        }
        if day < 1 || day > days_in_month(year, month) {
            return Err(err("day out of range"));
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err(err("time of day out of range"));
        }
        let mut i = 19;
        let mut nanos: i64 = 0;
        if b[i] == b'.' {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 9 {
                    nanos = nanos * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            let n = i - start;
            if n == 0 {
                return Err(err("expected digits after '.'"));
            }
            for _ in n..9 {
                nanos *= 10;
            }
        }
        let offset_secs: i64 = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
                let oh = digits(&b[i + 1..i + 3]).ok_or_else(|| err("bad offset hours"))?;
                let om = digits(&b[i + 4..i + 6]).ok_or_else(|| err("bad offset minutes"))?;
                if oh > 23 || om > 59 {
                    return Err(err("offset out of range"));
                }
                let s = (oh * 3600 + om * 60) as i64;
                if *sign == b'-' { -s } else { s }
            }
            _ => return Err(err("expected 'Z' or an offset like +02:00 at the end")),
        };
        let days = days_from_civil(year as i64, month, day);
        let secs = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64 - offset_secs;
        secs.checked_mul(NANOS_PER_SEC)
            .and_then(|s| s.checked_add(nanos))
            .map(Timestamp)
            .ok_or_else(|| err("outside the representable range (years 1678..2261)"))
    }

    /// Whole seconds since the epoch and the nanosecond remainder (always non-negative).
    pub fn split(self) -> (i64, u32) {
        (
            self.0.div_euclid(NANOS_PER_SEC),
            self.0.rem_euclid(NANOS_PER_SEC) as u32,
        )
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (secs, nanos) = self.split();
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )?;
        if nanos != 0 {
            let mut frac = nanos;
            let mut width = 9;
            while frac % 10 == 0 {
                frac /= 10;
                width -= 1;
            }
            write!(f, ".{frac:0width$}")?;
        }
        f.write_str("Z")
    }
}

impl FromStr for Timestamp {
    type Err = TimestampParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nine_digits_and_prints_them_back() {
        let s = "2020-06-16T03:10:37.993712906Z";
        let t = Timestamp::parse(s).unwrap();
        assert_eq!(t.unix_nanos(), 1_592_277_037_993_712_906);
        assert_eq!(t.to_string(), s);
    }

    #[test]
    fn ten_fractional_digits_keep_nanoseconds() {
        let t = Timestamp::parse("2021-04-01T12:42:32.1898720941Z").unwrap();
        assert_eq!(t.split().1, 189_872_094);
        assert_eq!(t.to_string(), "2021-04-01T12:42:32.189872094Z");
    }

    #[test]
    fn trailing_zeros_are_trimmed_like_go() {
        let t = Timestamp::parse("2020-01-01T00:00:00.500000000Z").unwrap();
        assert_eq!(t.to_string(), "2020-01-01T00:00:00.5Z");
        let t = Timestamp::parse("2020-01-01T00:00:00Z").unwrap();
        assert_eq!(t.to_string(), "2020-01-01T00:00:00Z");
    }

    #[test]
    fn offsets_are_applied() {
        let a = Timestamp::parse("2020-06-16T05:10:37+02:00").unwrap();
        let b = Timestamp::parse("2020-06-16T03:10:37Z").unwrap();
        assert_eq!(a, b);
        let c = Timestamp::parse("2020-06-15T23:10:37-04:00").unwrap();
        assert_eq!(c, b);
    }

    #[test]
    fn before_epoch_and_leap_days() {
        for s in [
            "1969-12-31T23:59:59.999999999Z",
            "2000-02-29T12:00:00Z",
            "2100-03-01T00:00:00.000000001Z",
            "1970-01-01T00:00:00Z",
        ] {
            assert_eq!(Timestamp::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for (s, why) in [
            ("2020-02-30T00:00:00Z", "day out of range"),
            ("2020-06-16 03:10:37", "too short"),
            ("2020-06-16T03:10:37.Z", "expected digits"),
            ("2020-06-16T03:10:37.1+0200", "expected 'Z'"),
            ("2020-13-16T03:10:37Z", "month out of range"),
        ] {
            let e = Timestamp::parse(s).unwrap_err().to_string();
            assert!(e.contains(why), "{s}: {e}");
        }
    }
}
