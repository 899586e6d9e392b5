//! JSON text exactly as Go's `encoding/json` writes it.
//!
//! kubectl and the docker CLI are Go programs; a byte-identical payload needs
//! Go's string escaping, which differs from serde_json's: `<`, `>` and `&` are
//! escaped as `\u003c`, `\u003e`, `\u0026` (HTML-safe by default), U+2028 and
//! U+2029 are escaped, and since Go 1.22 `\b` and `\f` use their short forms.

use std::fmt::Write as _;

/// Appends `s` as a quoted JSON string, escaped like Go's `json.Marshal`.
pub(crate) fn write_string(out: &mut String, s: &str) {
    write_string_with(out, s, true);
}

/// Like [`write_string`]; `html` selects Go's HTML-safe escaping of `<`, `>`,
/// `&`, which other consumers (YAML double-quoted scalars) do not need.
pub(crate) fn write_string_with(out: &mut String, s: &str, html: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' if !html => out.push(c),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `s` as a quoted JSON string, escaped like Go's `json.Marshal`.
pub(crate) fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    write_string(&mut out, s);
    out
}

/// Re-indents already valid JSON text the way Go's `json.Indent` does
/// (`prefix` empty): one member per line, `indent` per level, `": "` after
/// keys, empty objects and arrays kept as `{}` / `[]`. String contents are
/// copied byte for byte, so member order and escapes survive untouched.
pub(crate) fn reindent(json: &str, indent: &str, level: usize) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    let mut depth = level;
    let mut in_string = false;
    let mut escaped = false;
    // Set after an opening bracket until we know whether the container is empty.
    let mut pending_open = false;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(indent);
        }
    };
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if c.is_ascii_whitespace() {
            continue;
        }
        if pending_open {
            pending_open = false;
            if c == '}' || c == ']' {
                out.push(c);
                depth -= 1;
                continue;
            }
            newline(&mut out, depth);
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                depth += 1;
                pending_open = true;
            }
            '}' | ']' => {
                depth -= 1;
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c => out.push(c),
        }
    }
    out
}

/// Removes insignificant whitespace from valid JSON text, keeping strings intact.
pub(crate) fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !c.is_ascii_whitespace() {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go() {
        assert_eq!(string("a<b>&c"), r#""a\u003cb\u003e\u0026c""#);
        assert_eq!(string("q\"\\/"), r#""q\"\\/""#);
        assert_eq!(
            string("\t\n\r\u{8}\u{c}\u{1}\u{1f}"),
            r#""\t\n\r\b\f\u0001\u001f""#
        );
        assert_eq!(
            string("\u{2028}\u{2029}é\u{7f}"),
            "\"\\u2028\\u2029é\u{7f}\""
        );
    }

    #[test]
    fn reindents_and_compacts() {
        let raw = r#"{"a": {"b":[1, 2], "e": {}, "f": []}, "s": "x, {y}: \" z"}"#;
        let pretty = reindent(raw, "\t", 0);
        assert_eq!(
            pretty,
            "{\n\t\"a\": {\n\t\t\"b\": [\n\t\t\t1,\n\t\t\t2\n\t\t],\n\t\t\"e\": {},\n\t\t\"f\": []\n\t},\n\t\"s\": \"x, {y}: \\\" z\"\n}"
        );
        assert_eq!(
            compact(&pretty),
            r#"{"a":{"b":[1,2],"e":{},"f":[]},"s":"x, {y}: \" z"}"#
        );
    }
}
