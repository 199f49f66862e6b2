//! Values and their conversions (reference §7): numbers, timestamps, severities, booleans and
//! durations read from query text or from entry fields, `cast`, and the text form of every
//! value (what `:`, regexes and `cast(…, STRING)` see).
//!
//! A failed conversion is not an error: the comparison it belongs to is false (§7).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;

use verdict_schema::{Severity, Timestamp};

use crate::ast::{CastType, ValueType};

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// A number from a query or a field: integers stay exact, anything else is a double.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Number {
    Int(i128),
    Float(f64),
}

impl Number {
    /// Integers (`-12`, `"9223372036854775807"`), decimals and exponents, `NaN`, `Infinity`
    /// and `-Infinity` in any letter case.
    pub(crate) fn parse(text: &str) -> Option<Number> {
        let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
        if !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Ok(i) = text.parse::<i128>()
        {
            return Some(Number::Int(i));
        }
        // Rust also reads "inf"; harmless leniency.
        text.parse::<f64>().ok().map(Number::Float)
    }

    pub(crate) fn of_json(n: &serde_json::Number) -> Number {
        if let Some(i) = n.as_i64() {
            Number::Int(i128::from(i))
        } else if let Some(u) = n.as_u64() {
            Number::Int(i128::from(u))
        } else {
            Number::Float(n.as_f64().unwrap_or(f64::NAN))
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }

    /// `None` when either side is NaN.
    pub(crate) fn compare(self, other: Number) -> Option<Ordering> {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }
}

/// `true`/`false` in any letter case.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A severity's numeric value from its name (any case) or a number (`severity >= 400`).
pub(crate) fn parse_severity(text: &str) -> Option<i64> {
    if let Some(s) = Severity::from_name(text) {
        return Some(i64::from(s.number()));
    }
    match Number::parse(text)? {
        Number::Int(i) => i64::try_from(i).ok(),
        Number::Float(_) => None,
    }
}

/// A timestamp in the forms the reference accepts: RFC 3339 with `Z` or an offset, or an ISO
/// 8601 date (midnight UTC). An RFC 3339 date-time without offset is read in `zone` (UTC when
/// `None`) — a leniency the reference does not mention.
pub(crate) fn parse_timestamp(text: &str, zone: Option<&tz::TimeZone>) -> Option<Timestamp> {
    if let Ok(t) = Timestamp::parse(text) {
        return Some(t);
    }
    // Complete the offset-less forms in a stack buffer: this runs per entry under `cast`.
    let b = text.as_bytes();
    let mut buf = [0u8; 64];
    let completed: &[u8] = if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        buf[..10].copy_from_slice(b);
        buf[10..20].copy_from_slice(b"T00:00:00Z");
        &buf[..20]
    } else if b.len() >= 19 && b.len() < buf.len() && matches!(b[10], b'T' | b't' | b' ') {
        buf[..b.len()].copy_from_slice(b);
        buf[b.len()] = b'Z';
        &buf[..=b.len()]
    } else {
        return None;
    };
    let naive = Timestamp::parse(std::str::from_utf8(completed).ok()?).ok()?;
    match zone {
        None => Some(naive),
        Some(zone) => local_to_utc(naive, zone),
    }
}

/// The instant whose wall-clock time in `zone` is `naive` (read as if it were UTC). Around a
/// transition the offset after it wins, as most libraries do.
fn local_to_utc(naive: Timestamp, zone: &tz::TimeZone) -> Option<Timestamp> {
    let offset_at = |t: Timestamp| -> Option<i64> {
        let secs = t.split().0;
        Some(i64::from(zone.find_local_time_type(secs).ok()?.ut_offset()))
    };
    let shift = |t: Timestamp, offset: i64| -> Option<Timestamp> {
        t.unix_nanos()
            .checked_sub(offset.checked_mul(NANOS_PER_SEC)?)
            .map(Timestamp::from_unix_nanos)
    };
    let first = offset_at(naive)?;
    let guess = shift(naive, first)?;
    let second = offset_at(guess)?;
    if second == first {
        Some(guess)
    } else {
        shift(naive, second)
    }
}

/// RFC 3339 text of `t` in `zone`: the wall-clock time there and its offset (`Z` when the
/// offset is zero), fraction trimmed like the UTC form.
pub(crate) fn format_timestamp(t: Timestamp, zone: Option<&tz::TimeZone>) -> String {
    let Some(zone) = zone else {
        return t.to_string();
    };
    let offset = zone
        .find_local_time_type(t.split().0)
        .map_or(0, |l| i64::from(l.ut_offset()));
    let Some(local) = t
        .unix_nanos()
        .checked_add(offset * NANOS_PER_SEC)
        .map(Timestamp::from_unix_nanos)
    else {
        return t.to_string();
    };
    let mut text = local.to_string();
    if offset != 0 {
        text.pop(); // the 'Z'
        let sign = if offset < 0 { '-' } else { '+' };
        let abs = offset.abs();
        let _ = write!(text, "{sign}{:02}:{:02}", abs / 3600, (abs / 60) % 60);
    }
    text
}

/// A duration as the reference writes it: a signed decimal and one unit of `ns`, `us` (or
/// `µs`), `ms`, `s`, `m`, `h` (`"3.2s"`). Nanoseconds, truncated.
pub(crate) fn parse_duration(text: &str) -> Option<i128> {
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let split = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, unit) = rest.split_at(split);
    let unit_nanos: i128 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty())
        || whole.len() > 20
        || fraction.len() > 18
        || fraction.contains('.')
    {
        return None;
    }
    let whole: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let scale = 10i128.pow(fraction.len() as u32);
    let fraction: i128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let nanos = whole * unit_nanos + fraction * unit_nanos / scale;
    Some(if negative { -nanos } else { nanos })
}

/// `3.2s`, `-0.000000001s`, `0s`: seconds with the fraction trimmed, as protobuf JSON writes
/// a Duration.
pub(crate) fn format_duration(nanos: i128) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let abs = nanos.unsigned_abs();
    let (secs, frac) = (abs / 1_000_000_000, abs % 1_000_000_000);
    if frac == 0 {
        return format!("{sign}{secs}s");
    }
    let frac = format!("{frac:09}");
    format!("{sign}{secs}.{}s", frac.trim_end_matches('0'))
}

/// Doubles as text: integral values without a fraction, and the language's spellings of the
/// special values.
pub(crate) fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        format!("{f}")
    }
}

/// One value of an operand, borrowed from the entry where possible.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar<'a> {
    /// A JSON string, or text computed by `cast`/`REGEXP_EXTRACT`.
    Text(Cow<'a, str>),
    Number(Number),
    Bool(bool),
    Time(Timestamp),
    Duration(i128),
    /// JSON `null`.
    Null,
    /// An object where a scalar was expected: present, but equal to nothing.
    Object,
}

impl<'a> Scalar<'a> {
    pub(crate) fn of_json(v: &'a serde_json::Value) -> Scalar<'a> {
        match v {
            serde_json::Value::String(s) => Scalar::Text(Cow::Borrowed(s)),
            serde_json::Value::Number(n) => Scalar::Number(Number::of_json(n)),
            serde_json::Value::Bool(b) => Scalar::Bool(*b),
            serde_json::Value::Null => Scalar::Null,
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => Scalar::Object,
        }
    }

    /// The text of the value: what `cast(…, STRING)` returns, and what `:` and regexes see.
    pub(crate) fn text(&self) -> Option<Cow<'_, str>> {
        Some(match self {
            Scalar::Text(s) => Cow::Borrowed(s.as_ref()),
            Scalar::Number(Number::Int(i)) => Cow::Owned(i.to_string()),
            Scalar::Number(Number::Float(f)) => Cow::Owned(format_float(*f)),
            Scalar::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Scalar::Time(t) => Cow::Owned(t.to_string()),
            Scalar::Duration(d) => Cow::Owned(format_duration(*d)),
            Scalar::Null | Scalar::Object => return None,
        })
    }

    pub(crate) fn number(&self) -> Option<Number> {
        match self {
            Scalar::Number(n) => Some(*n),
            Scalar::Text(s) => Number::parse(s),
            _ => None,
        }
    }

    pub(crate) fn timestamp(&self) -> Option<Timestamp> {
        match self {
            Scalar::Time(t) => Some(*t),
            Scalar::Text(s) => parse_timestamp(s, None),
            _ => None,
        }
    }

    pub(crate) fn severity(&self) -> Option<i64> {
        match self {
            Scalar::Text(s) => parse_severity(s),
            Scalar::Number(Number::Int(i)) => i64::try_from(*i).ok(),
            _ => None,
        }
    }

    pub(crate) fn boolean(&self) -> Option<bool> {
        match self {
            Scalar::Bool(b) => Some(*b),
            Scalar::Text(s) => parse_bool(s),
            _ => None,
        }
    }

    pub(crate) fn duration(&self) -> Option<i128> {
        match self {
            Scalar::Duration(d) => Some(*d),
            Scalar::Text(s) => parse_duration(s),
            _ => None,
        }
    }

    /// `cast(self, target[, TIMEZONE(zone)])`; `None` when the value does not convert.
    /// `source` is the static type of the cast's operand: a timestamp field's JSON text is a
    /// timestamp, a severity's text casts to its number.
    pub(crate) fn cast(
        &self,
        target: CastType,
        zone: Option<&tz::TimeZone>,
        source: ValueType,
    ) -> Option<Scalar<'static>> {
        if let Scalar::Text(s) = self {
            match source {
                ValueType::Timestamp => {
                    if let Some(t) = parse_timestamp(s, None) {
                        return Scalar::Time(t).cast(target, zone, ValueType::Timestamp);
                    }
                }
                ValueType::Severity if matches!(target, CastType::Int64 | CastType::Float64) => {
                    let n = parse_severity(s)?;
                    return Scalar::Number(Number::Int(i128::from(n))).cast(
                        target,
                        zone,
                        ValueType::Integer,
                    );
                }
                _ => {}
            }
        }
        Some(match target {
            CastType::String => match self {
                Scalar::Time(t) => Scalar::Text(Cow::Owned(format_timestamp(*t, zone))),
                other => Scalar::Text(Cow::Owned(other.text()?.into_owned())),
            },
            CastType::Int64 => Scalar::Number(Number::Int(match self {
                Scalar::Text(s) => {
                    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
                    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    s.parse::<i64>().ok()?.into()
                }
                Scalar::Number(Number::Int(i)) => i128::from(i64::try_from(*i).ok()?),
                // BigQuery's rule: round half away from zero.
                Scalar::Number(Number::Float(f)) if f.is_finite() => {
                    let r = f.round();
                    if !(-9.2e18..=9.2e18).contains(&r) {
                        return None;
                    }
                    r as i128
                }
                Scalar::Bool(b) => i128::from(*b),
                _ => return None,
            })),
            CastType::Float64 => Scalar::Number(Number::Float(match self {
                Scalar::Text(s) => s.parse::<f64>().ok()?,
                Scalar::Number(n) => n.as_f64(),
                _ => return None,
            })),
            CastType::Bool => Scalar::Bool(match self {
                Scalar::Text(s) => parse_bool(s)?,
                Scalar::Bool(b) => *b,
                Scalar::Number(n) => n.as_f64() != 0.0,
                _ => return None,
            }),
            CastType::Timestamp => Scalar::Time(match self {
                Scalar::Time(t) => *t,
                Scalar::Text(s) => parse_timestamp(s, zone)?,
                _ => return None,
            }),
            CastType::Duration => Scalar::Duration(match self {
                Scalar::Duration(d) => *d,
                Scalar::Text(s) => parse_duration(s)?,
                _ => return None,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stay_exact_when_integral() {
        assert_eq!(
            Number::parse("9223372036854775807"),
            Some(Number::Int(9_223_372_036_854_775_807))
        );
        assert_eq!(Number::parse("-3"), Some(Number::Int(-3)));
        assert_eq!(Number::parse("1e3"), Some(Number::Float(1000.0)));
        assert!(matches!(Number::parse("NaN"), Some(Number::Float(f)) if f.is_nan()));
        assert_eq!(
            Number::parse("-INFINITY"),
            Some(Number::Float(f64::NEG_INFINITY))
        );
        assert_eq!(Number::parse("12abc"), None);
        assert_eq!(
            Number::Int(3).compare(Number::Float(2.5)),
            Some(Ordering::Greater)
        );
        assert_eq!(Number::Float(f64::NAN).compare(Number::Int(1)), None);
    }

    #[test]
    fn timestamps_in_every_documented_form() {
        let z = parse_timestamp("2016-11-29T00:00:00Z", None).unwrap();
        assert_eq!(parse_timestamp("2016-11-29", None), Some(z));
        assert_eq!(parse_timestamp("2016-11-29T00:00:00", None), Some(z));
        assert_eq!(parse_timestamp("2016-11-28T20:00:00-04:00", None), Some(z));
        assert_eq!(parse_timestamp("2016-11-29T00:00", None), None);
        assert_eq!(parse_timestamp("yesterday", None), None);
    }

    #[test]
    fn zones_render_and_read_wall_clock_time() {
        let ny = tz::TimeZone::from_posix_tz("America/New_York").unwrap();
        let t = Timestamp::parse("2020-06-14T02:00:00.5Z").unwrap();
        assert_eq!(
            format_timestamp(t, Some(&ny)),
            "2020-06-13T22:00:00.5-04:00"
        );
        let winter = Timestamp::parse("2020-01-01T05:00:00Z").unwrap();
        assert_eq!(
            format_timestamp(winter, Some(&ny)),
            "2020-01-01T00:00:00-05:00"
        );
        assert_eq!(
            parse_timestamp("2020-01-01T00:00:00", Some(&ny)),
            Some(winter)
        );
        assert_eq!(parse_timestamp("2020-01-01", Some(&ny)), Some(winter));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3.2s"), Some(3_200_000_000));
        assert_eq!(parse_duration("-1.5h"), Some(-5_400_000_000_000));
        assert_eq!(parse_duration("999ms"), Some(999_000_000));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(format_duration(3_200_000_000), "3.2s");
        assert_eq!(format_duration(-1), "-0.000000001s");
    }

    #[test]
    fn casts() {
        let text = Scalar::Text(Cow::Borrowed("42"));
        assert_eq!(
            text.cast(CastType::Int64, None, ValueType::String),
            Some(Scalar::Number(Number::Int(42)))
        );
        assert_eq!(
            Scalar::Text(Cow::Borrowed("4.2")).cast(CastType::Int64, None, ValueType::String),
            None
        );
        assert_eq!(
            Scalar::Number(Number::Float(2.5)).cast(CastType::Int64, None, ValueType::Float),
            Some(Scalar::Number(Number::Int(3)))
        );
        assert_eq!(
            Scalar::Text(Cow::Borrowed("WARNING")).cast(CastType::Int64, None, ValueType::Severity),
            Some(Scalar::Number(Number::Int(400)))
        );
        assert_eq!(
            Scalar::Number(Number::Int(8080)).cast(CastType::String, None, ValueType::Integer),
            Some(Scalar::Text(Cow::Owned("8080".into())))
        );
        assert_eq!(
            Scalar::Text(Cow::Borrowed("TRUE")).cast(CastType::Bool, None, ValueType::String),
            Some(Scalar::Bool(true))
        );
    }
}
