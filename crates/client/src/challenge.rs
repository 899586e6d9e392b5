//! `WWW-Authenticate` challenges (RFC 7235) as registries send them:
//! `Bearer realm="…",service="…",scope="…"` for the token flow, `Basic
//! realm="…"` for registries that take credentials on every request.

/// One challenge: its scheme and parameters, names lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lowercased (`bearer`, `basic`).
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every challenge of a response, in header order.
pub fn response_challenges(headers: &reqwest::header::HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

/// Every challenge in one header value. Unparsable trailing text is dropped,
/// since a partly readable challenge is still better than none.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let token_len = rest.find([' ', '\t', ',', '=']).unwrap_or(rest.len());
        if token_len == 0 {
            break;
        }
        let token = &rest[..token_len];
        let after = rest[token_len..].trim_start_matches([' ', '\t']);
        if let Some(value_part) = after.strip_prefix('=') {
            // A parameter of the current challenge.
            let (value, remaining) = parse_value(value_part.trim_start_matches([' ', '\t']));
            if let Some(current) = out.last_mut() {
                current.params.push((token.to_ascii_lowercase(), value));
            }
            rest = remaining;
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: Vec::new(),
            });
            rest = after;
        }
    }
    out
}

/// A quoted string (with `\` escapes) or a token; returns the rest after it.
fn parse_value(s: &str) -> (String, &str) {
    if let Some(body) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return (value, &body[i + 1..]),
                c => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = s.find([',', ' ', '\t']).unwrap_or(s.len());
        (s[..end].to_owned(), &s[end..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/nginx:pull"));

        let c = parse_challenges(r#"Basic realm="Registry Realm""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
    }

    #[test]
    fn several_challenges_tokens_and_escapes() {
        let c = parse_challenges(
            r#"Basic realm="a, b", Bearer realm=https://r/t, error="insufficient_scope", x="q\"uote""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("realm"), Some("a, b"));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("https://r/t"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
        assert_eq!(c[1].param("x"), Some("q\"uote"));
        assert!(parse_challenges("").is_empty());
        assert_eq!(parse_challenges("Bearer")[0].params.len(), 0);
    }
}
