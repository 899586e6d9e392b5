//! Go's `time.Duration` text form (`6h0m0s`, `1m30.5s`, `500ms`), which the
//! kubelet uses for `cacheDuration` and `defaultCacheDuration`
//! (`metav1.Duration` marshals with `Duration.String` and parses with
//! `time.ParseDuration`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const NANOSECOND: u64 = 1;
const MICROSECOND: u64 = 1_000 * NANOSECOND;
const MILLISECOND: u64 = 1_000 * MICROSECOND;
const SECOND: u64 = 1_000 * MILLISECOND;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

/// A signed duration in nanoseconds with Go's text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(i64);

/// `time.ParseDuration` refused the text; the message names it like Go does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("time: invalid duration {0:?}")]
    Invalid(String),
    #[error("time: missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("time: unknown unit {unit:?} in duration {text:?}")]
    UnknownUnit { unit: String, text: String },
}

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration(0);

    pub const fn from_nanos(nanos: i64) -> Self {
        GoDuration(nanos)
    }

    pub const fn from_secs(secs: i64) -> Self {
        GoDuration(secs * SECOND as i64)
    }

    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// The duration as `std::time::Duration`, or `None` when negative.
    pub fn to_std(self) -> Option<std::time::Duration> {
        u64::try_from(self.0)
            .ok()
            .map(std::time::Duration::from_nanos)
    }

    /// Parses like Go's `time.ParseDuration`: `[-+]` then one or more
    /// `<decimal><unit>` with units `ns`, `us` (`µs`, `μs`), `ms`, `s`, `m`, `h`.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let invalid = || DurationError::Invalid(text.to_owned());
        let mut s = text;
        let mut negative = false;
        if let Some(rest) = s.strip_prefix('-') {
            negative = true;
            s = rest;
        } else if let Some(rest) = s.strip_prefix('+') {
            s = rest;
        }
        if s == "0" {
            return Ok(GoDuration(0));
        }
        if s.is_empty() {
            return Err(invalid());
        }
        let mut total: u64 = 0;
        while !s.is_empty() {
            // The integer part.
            let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
            let (int_digits, rest) = s.split_at(int_len);
            let mut value: u64 = 0;
            for d in int_digits.bytes() {
                value = value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(d - b'0')))
                    .filter(|v| *v <= 1 << 63)
                    .ok_or_else(invalid)?;
            }
            s = rest;
            // The optional fraction; digits past what fits are dropped, like Go.
            let mut fraction: u64 = 0;
            let mut scale: f64 = 1.0;
            let mut has_fraction = false;
            if let Some(rest) = s.strip_prefix('.') {
                has_fraction = true;
                let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
                let mut overflow = false;
                for d in rest[..frac_len].bytes() {
                    if overflow {
                        continue;
                    }
                    match fraction
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(d - b'0')))
                        .filter(|v| *v <= 1 << 63)
                    {
                        Some(v) => {
                            fraction = v;
                            scale *= 10.0;
                        }
                        None => overflow = true,
                    }
                }
                s = &rest[frac_len..];
                if int_len == 0 && frac_len == 0 {
                    return Err(invalid());
                }
            }
            if int_len == 0 && !has_fraction {
                return Err(invalid());
            }
            let unit_len = s
                .char_indices()
                .find(|(_, c)| *c == '.' || c.is_ascii_digit())
                .map_or(s.len(), |(i, _)| i);
            let (unit, rest) = s.split_at(unit_len);
            s = rest;
            let unit_nanos = match unit {
                "" => return Err(DurationError::MissingUnit(text.to_owned())),
                "ns" => NANOSECOND,
                "us" | "\u{b5}s" | "\u{3bc}s" => MICROSECOND,
                "ms" => MILLISECOND,
                "s" => SECOND,
                "m" => MINUTE,
                "h" => HOUR,
                other => {
                    return Err(DurationError::UnknownUnit {
                        unit: other.to_owned(),
                        text: text.to_owned(),
                    });
                }
            };
            if value > (1 << 63) / unit_nanos {
                return Err(invalid());
            }
            value *= unit_nanos;
            if fraction > 0 {
                // Go computes this in float64 as well.
                value += (fraction as f64 * (unit_nanos as f64 / scale)) as u64;
                if value > 1 << 63 {
                    return Err(invalid());
                }
            }
            total = total
                .checked_add(value)
                .filter(|v| *v <= 1 << 63)
                .ok_or_else(invalid)?;
        }
        if negative {
            Ok(GoDuration((total as i64).wrapping_neg()))
        } else if total > i64::MAX as u64 {
            Err(invalid())
        } else {
            Ok(GoDuration(total as i64))
        }
    }
}

impl fmt::Display for GoDuration {
    /// Go's `Duration.String`: `0s`, `1.5µs`, `500ms`, `1m30.5s`, `6h0m0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let negative = self.0 < 0;
        let mut u = self.0.unsigned_abs();
        let sign = if negative { "-" } else { "" };
        if u == 0 {
            return f.write_str("0s");
        }
        if u < SECOND {
            let (unit, div) = if u < MICROSECOND {
                ("ns", NANOSECOND)
            } else if u < MILLISECOND {
                ("µs", MICROSECOND)
            } else {
                ("ms", MILLISECOND)
            };
            return write!(f, "{sign}{}{unit}", fraction(u, div));
        }
        let hours = u / HOUR;
        u -= hours * HOUR;
        let minutes = u / MINUTE;
        u -= minutes * MINUTE;
        let seconds = fraction(u, SECOND);
        if hours > 0 {
            write!(f, "{sign}{hours}h{minutes}m{seconds}s")
        } else if minutes > 0 {
            write!(f, "{sign}{minutes}m{seconds}s")
        } else {
            write!(f, "{sign}{seconds}s")
        }
    }
}

/// `value / div` with the remainder as a decimal fraction without trailing zeros.
fn fraction(value: u64, div: u64) -> String {
    let whole = value / div;
    let rem = value % div;
    if rem == 0 {
        return whole.to_string();
    }
    let digits = div.ilog10() as usize;
    let frac = format!("{rem:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

impl FromStr for GoDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GoDuration::parse(s)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        GoDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (3_300_000_000, "3.3s"),
            (4 * MINUTE as i64 + 5 * SECOND as i64, "4m5s"),
            (4 * MINUTE as i64 + 5_001_000_000, "4m5.001s"),
            (
                5 * HOUR as i64 + 6 * MINUTE as i64 + 7_001_000_000,
                "5h6m7.001s",
            ),
            (8 * MINUTE as i64 + 1, "8m0.000000001s"),
            (6 * HOUR as i64, "6h0m0s"),
            (12 * HOUR as i64, "12h0m0s"),
            (-(SECOND as i64), "-1s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for (nanos, want) in cases {
            assert_eq!(GoDuration(nanos).to_string(), want);
        }
    }

    #[test]
    fn parses_like_go() {
        let ok = [
            ("0", 0),
            ("5s", 5 * SECOND as i64),
            ("30s", 30 * SECOND as i64),
            ("1478s", 1478 * SECOND as i64),
            ("-5s", -5 * SECOND as i64),
            ("+5s", 5 * SECOND as i64),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * SECOND as i64),
            ("5.6s", 5 * SECOND as i64 + 600 * MILLISECOND as i64),
            ("5.s", 5 * SECOND as i64),
            (".5s", 500 * MILLISECOND as i64),
            ("1.004s", SECOND as i64 + 4 * MILLISECOND as i64),
            ("100.00100s", 100 * SECOND as i64 + MILLISECOND as i64),
            ("10ns", 10),
            ("11us", 11 * MICROSECOND as i64),
            ("12µs", 12 * MICROSECOND as i64),
            ("12μs", 12 * MICROSECOND as i64),
            ("13ms", 13 * MILLISECOND as i64),
            ("14s", 14 * SECOND as i64),
            ("15m", 15 * MINUTE as i64),
            ("16h", 16 * HOUR as i64),
            ("3h30m", 3 * HOUR as i64 + 30 * MINUTE as i64),
            (
                "10.5s4m",
                4 * MINUTE as i64 + 10 * SECOND as i64 + 500 * MILLISECOND as i64,
            ),
            (
                "-2m3.4s",
                -(2 * MINUTE as i64 + 3 * SECOND as i64 + 400 * MILLISECOND as i64),
            ),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("39h9m14.425s", 140_954_425 * MILLISECOND as i64),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 20 * MINUTE as i64),
            ("9007199254740993ns", 9_007_199_254_740_993),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036.854775807s", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("0.100000000000000000000h", 6 * MINUTE as i64),
            (
                "0.830103483285477580700h",
                49 * MINUTE as i64 + 48_372_539_827,
            ),
        ];
        for (text, want) in ok {
            assert_eq!(GoDuration::parse(text), Ok(GoDuration(want)), "{text}");
        }
        for bad in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "\u{85}\u{85}",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            "-9223372036854775809ns",
        ] {
            assert!(GoDuration::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            GoDuration::parse("3").unwrap_err().to_string(),
            "time: missing unit in duration \"3\""
        );
        assert_eq!(
            GoDuration::parse("1d").unwrap_err().to_string(),
            "time: unknown unit \"d\" in duration \"1d\""
        );
    }

    #[test]
    fn round_trips_through_serde() {
        let d: GoDuration = serde_json::from_str("\"6h\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"6h0m0s\"");
        assert!(serde_json::from_str::<GoDuration>("21600").is_err());
    }
}
