//! Scalar rendering as kubectl's `-o yaml` does it (sigs.k8s.io/yaml on top
//! of go-yaml v2).
//!
//! go-yaml writes a string plain unless reading it back plain would yield
//! another type (YAML 1.1 booleans such as `y`/`on`, `null`, integers in any
//! Go base, floats, dates); then it double-quotes it. So a Secret named `123`,
//! `on` or `2024-01-02` prints as `name: "123"`. The strings berth renders
//! (Kubernetes names, base64, fixed keys) use only `[A-Za-z0-9._/+=-]`; for
//! those this module is byte-exact. Anything else is double-quoted with JSON
//! escapes, which is valid YAML but may differ from go-yaml's choice.

use std::borrow::Cow;

/// A YAML scalar for `s` in go-yaml's style.
pub(crate) fn scalar(s: &str) -> Cow<'_, str> {
    if plain_safe_chars(s) && resolves_to_string(s) {
        Cow::Borrowed(s)
    } else {
        // JSON's escapes are a subset of YAML's double-quoted escapes.
        let mut out = String::with_capacity(s.len() + 2);
        super::json::write_string_with(&mut out, s, false);
        Cow::Owned(out)
    }
}

fn plain_safe_chars(s: &str) -> bool {
    let Some(first) = s.bytes().next() else {
        return false;
    };
    (first.is_ascii_alphanumeric() || first == b'.' || first == b'/')
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'+' | b'=' | b'-')
        })
}

/// Whether go-yaml's resolver reads the plain scalar `s` as a string.
fn resolves_to_string(s: &str) -> bool {
    const SPECIAL: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "n", "N", "no",
        "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF", "", "~", "null", "Null",
        "NULL", ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf",
        "-.Inf", "-.INF", "<<",
    ];
    if SPECIAL.contains(&s) {
        return false;
    }
    match s.as_bytes()[0] {
        b'.' => !is_dot_float(s),
        b'0'..=b'9' | b'-' | b'+' => {
            let plain: String = s.chars().filter(|c| *c != '_').collect();
            !(is_timestamp(s) || is_go_int(&plain) || is_yaml_float(&plain))
        }
        _ => true,
    }
}

/// `.5`, `.5e3`: what Go's `ParseFloat` accepts after a leading dot.
fn is_dot_float(s: &str) -> bool {
    let rest = &s[1..];
    let mantissa = rest.bytes().take_while(u8::is_ascii_digit).count();
    mantissa > 0 && valid_exponent(&rest[mantissa..])
}

fn valid_exponent(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let Some(exp) = s.strip_prefix(['e', 'E']) else {
        return false;
    };
    let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// go-yaml's float pattern `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`,
/// then `ParseFloat`, which fails (so: not a float) when the value overflows.
fn is_yaml_float(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let int_len = body.bytes().take_while(u8::is_ascii_digit).count();
    let mut rest = &body[int_len..];
    if let Some(after_dot) = rest.strip_prefix('.') {
        let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if int_len == 0 && frac_len == 0 {
            return false;
        }
        rest = &after_dot[frac_len..];
    } else if int_len == 0 {
        return false;
    }
    valid_exponent(rest) && s.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Go's `strconv.ParseInt(s, 0, 64)` or `ParseUint(s, 0, 64)` succeeds.
fn is_go_int(s: &str) -> bool {
    let (signed, body) = match s.strip_prefix(['+', '-']) {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return false;
    }
    match u64::from_str_radix(digits, radix) {
        // ParseInt allows up to 2^63 for negatives, 2^63-1 otherwise;
        // ParseUint (no sign) the whole u64 range.
        Ok(v) if signed => v <= 1 << 63,
        Ok(_) => true,
        Err(_) => false,
    }
}

/// go-yaml tries timestamps first: a date `YYYY-M-D` (one or two digit month
/// and day) that Go's `time.Parse` accepts, i.e. a real calendar date.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let year: u32 = s[..4].parse().expect("four digits");
    let mut rest = &s[5..];
    let number = |rest: &mut &str| -> Option<u32> {
        let len = rest.bytes().take(2).take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        let v = rest[..len].parse().ok();
        *rest = &rest[len..];
        v
    };
    let Some(month) = number(&mut rest) else {
        return false;
    };
    let Some(after) = rest.strip_prefix('-') else {
        return false;
    };
    rest = after;
    let Some(day) = number(&mut rest) else {
        return false;
    };
    if !rest.is_empty() || !(1..=12).contains(&month) {
        return false;
    }
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    (1..=days).contains(&day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_exactly_what_kubectl_quotes() {
        // Observed with kubectl 1.32 `create secret ... -o yaml`.
        for quoted in [
            "true",
            "123",
            "0123",
            "09",
            "0x1f",
            "1e3",
            "1e-3",
            "1.5",
            "2001-12-14",
            "y",
            "n",
            "yes",
            "on",
            "null",
            "0o17",
            "0b101",
            "0.0",
            "00",
            "2001-12-1",
            "2000-02-29",
            ".5",
        ] {
            assert_eq!(scalar(quoted), format!("\"{quoted}\""), "{quoted}");
        }
        for plain in [
            "2001-2-30",
            "1-2",
            "a.b",
            "12.34.56",
            "2001-12-14a",
            "1e",
            "my-secret",
            "1900-02-29",
            ".dockerconfigjson",
            "eyJhdXRocyI6e30=",
            "kubernetes.io/dockerconfigjson",
            "1e999",
            "0xfffffffffffffffffff",
            "2001-13-01",
        ] {
            assert_eq!(scalar(plain), plain, "{plain}");
        }
        assert_eq!(scalar("a: b"), "\"a: b\"");
        assert_eq!(scalar("<\\u003c>\n"), r#""<\\u003c>\n""#);
        assert_eq!(scalar(""), "\"\"");
    }
}
