//! The parts of Go's `net/url.Parse` and `net.SplitHostPort` the kubelet's
//! keyring relies on.
//!
//! Keyring keys and `matchImages` patterns are turned into URLs with
//! `url.Parse("https://" + s)`; which strings parse, and what ends up in
//! `Host` and `Path`, decides whether a credential can ever match. So the
//! rules below follow Go's parser (authority splitting, port validation,
//! host character checks, percent-decoding) rather than the WHATWG URL
//! standard that the `url` crate implements.

/// Why Go's `url.Parse` rejects a string. `Display` gives Go's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("net/url: invalid control character in URL")]
    ControlCharacter,
    #[error("missing protocol scheme")]
    MissingScheme,
    #[error("first path segment in URL cannot contain colon")]
    ColonInFirstSegment,
    #[error("net/url: invalid userinfo")]
    InvalidUserinfo,
    #[error("missing ']' in host")]
    MissingBracket,
    #[error("invalid port {0:?} after host")]
    InvalidPort(String),
    #[error("invalid URL escape {0:?}")]
    InvalidEscape(String),
    #[error("invalid character {0:?} in host name")]
    InvalidHostCharacter(String),
}

/// The fields of a parsed Go `url.URL` that matter here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoUrl {
    pub scheme: String,
    /// Host with port, percent-decoded (`reg.example.com:5000`, `[::1]:5000`).
    pub host: String,
    /// Percent-decoded path (`/v1/`, `/team`), empty when absent.
    pub path: String,
    pub has_userinfo: bool,
    pub has_query: bool,
    pub has_fragment: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Host,
    Path,
    Fragment,
}

/// Parses like Go's `url.Parse`.
pub fn parse(raw: &str) -> Result<GoUrl, UrlError> {
    let (raw, fragment) = match raw.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (raw, None),
    };
    let mut url = parse_without_fragment(raw)?;
    if let Some(f) = fragment {
        unescape(f, Mode::Fragment)?;
        url.has_fragment = true;
    }
    Ok(url)
}

fn parse_without_fragment(raw: &str) -> Result<GoUrl, UrlError> {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(UrlError::ControlCharacter);
    }
    let mut url = GoUrl::default();
    let (scheme, mut rest) = split_scheme(raw)?;
    url.scheme = scheme.to_ascii_lowercase();

    if rest.ends_with('?') && rest.matches('?').count() == 1 {
        rest = &rest[..rest.len() - 1];
        url.has_query = true;
    } else if let Some((r, _query)) = rest.split_once('?') {
        rest = r;
        url.has_query = true;
    }

    if !rest.starts_with('/') {
        if !url.scheme.is_empty() {
            // An opaque URL such as `mailto:x`: no host, no path.
            return Ok(url);
        }
        let first_segment = rest.split('/').next().unwrap_or("");
        if first_segment.contains(':') {
            return Err(UrlError::ColonInFirstSegment);
        }
    }

    if (!url.scheme.is_empty() || !rest.starts_with("///")) && rest.starts_with("//") {
        let after = &rest[2..];
        let (authority, path) = match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        let host = match authority.rfind('@') {
            Some(i) => {
                let userinfo = &authority[..i];
                if !valid_userinfo(userinfo) {
                    return Err(UrlError::InvalidUserinfo);
                }
                unescape(userinfo, Mode::Fragment)?;
                url.has_userinfo = true;
                &authority[i + 1..]
            }
            None => authority,
        };
        url.host = parse_host(host)?;
        rest = path;
    }
    url.path = unescape(rest, Mode::Path)?;
    Ok(url)
}

fn split_scheme(raw: &str) -> Result<(&str, &str), UrlError> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err(UrlError::MissingScheme),
            b':' => return Ok((&raw[..i], &raw[i + 1..])),
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

fn valid_userinfo(s: &str) -> bool {
    s.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b':'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
                    | b'@'
            )
    })
}

fn valid_optional_port(port: &str) -> bool {
    match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => digits.bytes().all(|b| b.is_ascii_digit()),
    }
}

fn parse_host(host: &str) -> Result<String, UrlError> {
    if host.starts_with('[') {
        let end = host.rfind(']').ok_or(UrlError::MissingBracket)?;
        let port = &host[end + 1..];
        if !valid_optional_port(port) {
            return Err(UrlError::InvalidPort(port.to_owned()));
        }
    } else if let Some(i) = host.rfind(':') {
        let port = &host[i..];
        if !valid_optional_port(port) {
            return Err(UrlError::InvalidPort(port.to_owned()));
        }
    }
    unescape(host, Mode::Host)
}

/// Characters Go refuses in a host (outside percent escapes).
fn host_char_needs_escape(b: u8) -> bool {
    if b.is_ascii_alphanumeric() {
        return false;
    }
    !matches!(
        b,
        b'!' | b'$'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'*'
            | b'+'
            | b','
            | b';'
            | b'='
            | b':'
            | b'['
            | b']'
            | b'<'
            | b'>'
            | b'"'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
    )
}

fn unhex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unescape(s: &str, mode: Mode) -> Result<String, UrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(unhex);
            let lo = bytes.get(i + 2).copied().and_then(unhex);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                let end = (i + 3).min(bytes.len());
                return Err(UrlError::InvalidEscape(
                    String::from_utf8_lossy(&bytes[i..end]).into_owned(),
                ));
            };
            // Go only lets a host carry escapes of non-ASCII bytes, and %25.
            if mode == Mode::Host && hi < 8 && &s[i..i + 3] != "%25" {
                return Err(UrlError::InvalidEscape(s[i..i + 3].to_owned()));
            }
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        if mode == Mode::Host && b < 0x80 && host_char_needs_escape(b) {
            return Err(UrlError::InvalidHostCharacter((b as char).to_string()));
        }
        out.push(b);
        i += 1;
    }
    // Go strings may hold any bytes; the keyring only compares them, so a
    // lossy conversion of an invalid sequence changes nothing that can match.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Go's `net.SplitHostPort`, reduced to what `credentialprovider.SplitURL`
/// keeps: on any error the whole input is the host and the port is empty.
pub fn split_host_port(hostport: &str) -> (String, String, Option<&'static str>) {
    let fail = |why: &'static str| (hostport.to_owned(), String::new(), Some(why));
    let Some(colon) = hostport.rfind(':') else {
        return fail("missing port in address");
    };
    let (host, j, k);
    if hostport.starts_with('[') {
        let Some(end) = hostport.find(']') else {
            return fail("missing ']' in address");
        };
        if end + 1 == hostport.len() {
            return fail("missing port in address");
        }
        if end + 1 != colon {
            if hostport.as_bytes()[end + 1] == b':' {
                return fail("too many colons in address");
            }
            return fail("missing port in address");
        }
        host = &hostport[1..end];
        j = 1;
        k = end + 1;
    } else {
        host = &hostport[..colon];
        if host.contains(':') {
            return fail("too many colons in address");
        }
        j = 0;
        k = 0;
    }
    if hostport[j..].contains('[') {
        return fail("unexpected '[' in address");
    }
    if hostport[k..].contains(']') {
        return fail("unexpected ']' in address");
    }
    (host.to_owned(), hostport[colon + 1..].to_owned(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(s: &str) -> (String, String) {
        let u = parse(s).unwrap();
        (u.host, u.path)
    }

    #[test]
    fn parses_hosts_and_paths() {
        assert_eq!(
            hp("https://index.docker.io/v1/"),
            ("index.docker.io".into(), "/v1/".into())
        );
        assert_eq!(hp("https://reg:5000"), ("reg:5000".into(), "".into()));
        assert_eq!(
            hp("https://user:pw@reg/x?q=1#f"),
            ("reg".into(), "/x".into())
        );
        assert_eq!(
            hp("https://[::1]:5000/a%20b"),
            ("[::1]:5000".into(), "/a b".into())
        );
        assert_eq!(hp("https://reg:/x"), ("reg:".into(), "/x".into()));
        assert_eq!(hp("https://HTTPS://reg"), ("HTTPS:".into(), "//reg".into()));
        assert_eq!(hp("https:///only/path"), ("".into(), "/only/path".into()));
        assert_eq!(
            hp("https://*.example.com"),
            ("*.example.com".into(), "".into())
        );
        assert_eq!(hp("https://r\u{e9}g.io"), ("r\u{e9}g.io".into(), "".into()));
    }

    #[test]
    fn rejects_what_go_rejects() {
        assert_eq!(
            parse("https://reg:abc"),
            Err(UrlError::InvalidPort(":abc".into()))
        );
        assert_eq!(
            parse("https://a b"),
            Err(UrlError::InvalidHostCharacter(" ".into()))
        );
        assert_eq!(
            parse("https://reg/%zz"),
            Err(UrlError::InvalidEscape("%zz".into()))
        );
        assert_eq!(
            parse("https://reg%2e.io"),
            Err(UrlError::InvalidEscape("%2e".into()))
        );
        assert_eq!(parse("https://[::1"), Err(UrlError::MissingBracket));
        assert_eq!(parse("https://reg\n"), Err(UrlError::ControlCharacter));
        assert_eq!(parse("https://us{er@reg"), Err(UrlError::InvalidUserinfo));
        assert_eq!(
            parse("https://reg#%"),
            Err(UrlError::InvalidEscape("%".into()))
        );
        assert_eq!(parse(":x"), Err(UrlError::MissingScheme));
    }

    #[test]
    fn splits_host_port_like_go() {
        let s = |x| {
            let (h, p, _) = split_host_port(x);
            (h, p)
        };
        assert_eq!(s("reg:5000"), ("reg".into(), "5000".into()));
        assert_eq!(s("reg"), ("reg".into(), "".into()));
        assert_eq!(s("reg:"), ("reg".into(), "".into()));
        assert_eq!(s("[::1]:5000"), ("::1".into(), "5000".into()));
        assert_eq!(s("[::1]"), ("[::1]".into(), "".into()));
        assert_eq!(s("a:b:c"), ("a:b:c".into(), "".into()));
        assert_eq!(
            s("reg[0-9].io:5000"),
            ("reg[0-9].io:5000".into(), "".into())
        );
    }
}
