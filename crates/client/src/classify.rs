//! Turning an HTTP answer or a transport failure into one [`Outcome`], with a
//! sentence of evidence. Everything here is a plain function over facts
//! already read from the wire, so it is tested without a network.

use std::error::Error as StdError;
use std::fmt;

use serde::Serialize;

/// What a probe found, named as `berth doctor` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Outcome {
    /// The manifest answered 200: a pull with these credentials works.
    Pullable,
    /// 401 and no credentials were offered.
    AuthRequired,
    /// 401 although credentials were offered: wrong or expired.
    Unauthorized,
    /// 403: the credentials are valid but may not pull this repository.
    Forbidden,
    /// 404 `MANIFEST_UNKNOWN`: the repository exists, the tag or digest does not.
    ManifestUnknown,
    /// 404 `NAME_UNKNOWN`: the repository does not exist.
    RepositoryUnknown,
    /// 429 Too Many Requests.
    RateLimited,
    /// The registry host name does not resolve.
    DnsFailure,
    /// Nothing listens on the registry's port.
    ConnectionRefused,
    /// No answer within the time limit.
    Timeout,
    /// The certificate chain ends in a CA the client does not trust.
    TlsUnknownAuthority,
    /// Any other TLS failure (expired, wrong host name, protocol).
    TlsError,
    /// An HTTPS request was answered in plain HTTP: the registry serves plain
    /// HTTP and the node must be told so.
    HttpResponseToHttps,
    /// A plain-HTTP request was answered in TLS: the registry serves HTTPS
    /// and the node speaks HTTP to it (a `server = "http://…"` in
    /// hosts.toml, or containerd's plain-HTTP default for localhost).
    HttpRequestToHttps,
    /// 5xx, or an answer no registry should give.
    RegistryError,
    /// The connection failed in another way (reset, unreachable network).
    ConnectionFailed,
}

impl Outcome {
    /// The stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            Outcome::Pullable => "Pullable",
            Outcome::AuthRequired => "AuthRequired",
            Outcome::Unauthorized => "Unauthorized",
            Outcome::Forbidden => "Forbidden",
            Outcome::ManifestUnknown => "ManifestUnknown",
            Outcome::RepositoryUnknown => "RepositoryUnknown",
            Outcome::RateLimited => "RateLimited",
            Outcome::DnsFailure => "DnsFailure",
            Outcome::ConnectionRefused => "ConnectionRefused",
            Outcome::Timeout => "Timeout",
            Outcome::TlsUnknownAuthority => "TlsUnknownAuthority",
            Outcome::TlsError => "TlsError",
            Outcome::HttpResponseToHttps => "HttpResponseToHttps",
            Outcome::HttpRequestToHttps => "HttpRequestToHttps",
            Outcome::RegistryError => "RegistryError",
            Outcome::ConnectionFailed => "ConnectionFailed",
        }
    }

    pub fn is_success(self) -> bool {
        self == Outcome::Pullable
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Docker Hub's rate-limit headers and `Retry-After`, as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    pub retry_after: Option<String>,
    /// `ratelimit-limit`, e.g. `100;w=21600`.
    pub limit: Option<String>,
    /// `ratelimit-remaining`, e.g. `0;w=21600`.
    pub remaining: Option<String>,
}

impl RateLimit {
    pub fn is_empty(&self) -> bool {
        self.retry_after.is_none() && self.limit.is_none() && self.remaining.is_none()
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(v) = &self.retry_after {
            parts.push(format!("Retry-After: {v}"));
        }
        if let Some(v) = &self.limit {
            parts.push(format!("ratelimit-limit: {v}"));
        }
        if let Some(v) = &self.remaining {
            parts.push(format!("ratelimit-remaining: {v}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// Which request of the flow answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The manifest (or `/v2/`) request on the registry.
    Registry,
    /// The token request to the challenge's realm.
    Token,
}

/// What was read from one HTTP answer.
#[derive(Debug, Clone, Default)]
pub struct ResponseFacts {
    pub status: u16,
    /// Whether this request (or the token request behind it) carried credentials.
    pub credentials_sent: bool,
    /// The error body, when one was read (HEAD answers have none).
    pub body: Option<String>,
    pub rate_limit: RateLimit,
}

/// An outcome with its evidence sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub outcome: Outcome,
    pub detail: String,
}

/// The first `{"errors":[{"code","message"}]}` entry of a registry error body.
pub fn spec_error(body: &str) -> Option<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let parsed: Body = serde_json::from_str(body).ok()?;
    parsed
        .errors
        .into_iter()
        .next()
        .map(|e| (e.code, e.message))
}

fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// `401 Unauthorized` plus the registry's own words when it sent any.
fn evidence(facts: &ResponseFacts, stage: Stage) -> String {
    let who = match stage {
        Stage::Registry => "the registry",
        Stage::Token => "the token endpoint",
    };
    let mut s = format!(
        "{who} answered {} {}",
        facts.status,
        status_text(facts.status)
    )
    .trim_end()
    .to_owned();
    if let Some((code, message)) = facts.body.as_deref().and_then(spec_error) {
        s.push_str(&format!(" ({code}: {message})"));
    }
    s
}

/// Classifies an HTTP answer that is not a success of the flow.
pub fn classify_response(facts: &ResponseFacts, stage: Stage) -> Classified {
    let ev = evidence(facts, stage);
    let (outcome, detail) = match facts.status {
        200..=299 => (Outcome::Pullable, ev),
        401 if facts.credentials_sent => (
            Outcome::Unauthorized,
            format!("{ev}: the credentials were refused (wrong, expired or revoked)"),
        ),
        401 => (
            Outcome::AuthRequired,
            format!("{ev}: the registry requires credentials and none were offered"),
        ),
        403 => (
            Outcome::Forbidden,
            format!("{ev}: the credentials are valid but may not pull this repository"),
        ),
        404 if stage == Stage::Registry => {
            let code = facts.body.as_deref().and_then(spec_error).map(|(c, _)| c);
            match code.as_deref() {
                Some("NAME_UNKNOWN") => (
                    Outcome::RepositoryUnknown,
                    format!("{ev}: the repository does not exist"),
                ),
                _ => (
                    Outcome::ManifestUnknown,
                    format!("{ev}: the tag or digest does not exist in the repository"),
                ),
            }
        }
        429 => {
            let mut d = format!("{ev}: the registry is rate limiting pulls");
            if !facts.rate_limit.is_empty() {
                d.push_str(&format!(" ({})", facts.rate_limit));
            }
            (Outcome::RateLimited, d)
        }
        _ => (Outcome::RegistryError, ev),
    };
    Classified { outcome, detail }
}

/// What went wrong below HTTP, read from an error's source chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportKind {
    Dns(String),
    Refused,
    Timeout,
    TlsUnknownAuthority(String),
    Tls(String),
    /// TLS was spoken to a plain-HTTP server.
    NotTls,
    /// The answer was not HTTP: over plain HTTP, a TLS server's alert.
    NotHttp,
    Other(String),
}

/// A DNS failure raised by the client's resolver, recognised in error chains.
#[derive(Debug, thiserror::Error)]
#[error("lookup {host}: {message}")]
pub struct DnsError {
    pub host: String,
    pub message: String,
}

/// Walks `err`'s source chain for the innermost recognisable cause.
pub fn transport_kind(err: &(dyn StdError + 'static)) -> TransportKind {
    let mut timeout = false;
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    let mut last = err.to_string();
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<reqwest::Error>()
            && r.is_timeout()
        {
            timeout = true;
        }
        if let Some(d) = e.downcast_ref::<DnsError>() {
            return TransportKind::Dns(d.to_string());
        }
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return rustls_kind(t);
        }
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse)
        {
            return TransportKind::NotHttp;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // rustls errors travel inside io::Error, sometimes nested twice.
            let mut inner = io.get_ref();
            while let Some(i) = inner {
                if let Some(t) = i.downcast_ref::<rustls::Error>() {
                    return rustls_kind(t);
                }
                inner = i.downcast_ref::<std::io::Error>().and_then(|x| x.get_ref());
            }
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return TransportKind::Refused,
                std::io::ErrorKind::TimedOut => timeout = true,
                _ => {}
            }
        }
        last = e.to_string();
        current = e.source();
    }
    if timeout {
        TransportKind::Timeout
    } else {
        TransportKind::Other(last)
    }
}

fn rustls_kind(e: &rustls::Error) -> TransportKind {
    use rustls::{CertificateError, Error, InvalidMessage};
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            TransportKind::TlsUnknownAuthority(e.to_string())
        }
        // A plain-HTTP answer ("HTTP/1.1 400 …") is not a TLS record.
        Error::InvalidMessage(InvalidMessage::InvalidContentType) => TransportKind::NotTls,
        _ => TransportKind::Tls(e.to_string()),
    }
}

/// The outcome and evidence for a transport failure reaching `url`.
pub fn classify_transport(kind: &TransportKind, url: &str) -> Classified {
    let (outcome, detail) = match kind {
        TransportKind::Dns(m) => (
            Outcome::DnsFailure,
            format!("{m}: the host name does not resolve"),
        ),
        TransportKind::Refused => (
            Outcome::ConnectionRefused,
            format!("connecting for {url}: connection refused: nothing listens on that port"),
        ),
        TransportKind::Timeout => (
            Outcome::Timeout,
            format!("{url}: no answer within the time limit"),
        ),
        TransportKind::TlsUnknownAuthority(m) => (
            Outcome::TlsUnknownAuthority,
            format!("{url}: {m}: the certificate is signed by a CA the client does not trust"),
        ),
        TransportKind::Tls(m) => (Outcome::TlsError, format!("{url}: TLS failed: {m}")),
        TransportKind::NotTls => (
            Outcome::HttpResponseToHttps,
            format!("{url}: server gave HTTP response to HTTPS client"),
        ),
        TransportKind::NotHttp if url.starts_with("http://") => (
            Outcome::HttpRequestToHttps,
            format!(
                "{url}: the answer is not HTTP: the registry serves HTTPS, and a plain-HTTP \
                 request gets a TLS alert"
            ),
        ),
        TransportKind::NotHttp => (
            Outcome::ConnectionFailed,
            format!("{url}: the answer is not HTTP"),
        ),
        TransportKind::Other(m) => (Outcome::ConnectionFailed, format!("{url}: {m}")),
    };
    Classified { outcome, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: u16, creds: bool, body: Option<&str>) -> ResponseFacts {
        ResponseFacts {
            status,
            credentials_sent: creds,
            body: body.map(str::to_owned),
            rate_limit: RateLimit::default(),
        }
    }

    #[test]
    fn statuses() {
        let c = |f: &ResponseFacts| classify_response(f, Stage::Registry).outcome;
        assert_eq!(c(&facts(200, false, None)), Outcome::Pullable);
        assert_eq!(c(&facts(401, false, None)), Outcome::AuthRequired);
        assert_eq!(c(&facts(401, true, None)), Outcome::Unauthorized);
        assert_eq!(c(&facts(403, true, None)), Outcome::Forbidden);
        assert_eq!(c(&facts(404, false, None)), Outcome::ManifestUnknown);
        assert_eq!(c(&facts(500, false, None)), Outcome::RegistryError);
        assert_eq!(c(&facts(502, false, None)), Outcome::RegistryError);
        assert_eq!(c(&facts(405, false, None)), Outcome::RegistryError);
        let name = r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#;
        let r = classify_response(&facts(404, false, Some(name)), Stage::Registry);
        assert_eq!(r.outcome, Outcome::RepositoryUnknown);
        assert!(r.detail.contains("NAME_UNKNOWN"), "{}", r.detail);
        let manifest = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        assert_eq!(
            c(&facts(404, false, Some(manifest))),
            Outcome::ManifestUnknown
        );
        // A token endpoint's 404 is a broken registry, not a missing image.
        assert_eq!(
            classify_response(&facts(404, false, None), Stage::Token).outcome,
            Outcome::RegistryError
        );
        let t = classify_response(&facts(401, true, None), Stage::Token);
        assert!(
            t.detail
                .starts_with("the token endpoint answered 401 Unauthorized")
        );
    }

    #[test]
    fn rate_limit_evidence() {
        let mut f = facts(429, false, None);
        f.rate_limit = RateLimit {
            retry_after: Some("60".into()),
            limit: Some("100;w=21600".into()),
            remaining: Some("0;w=21600".into()),
        };
        let r = classify_response(&f, Stage::Registry);
        assert_eq!(r.outcome, Outcome::RateLimited);
        assert!(
            r.detail.contains(
                "Retry-After: 60, ratelimit-limit: 100;w=21600, ratelimit-remaining: 0;w=21600"
            ),
            "{}",
            r.detail
        );
    }

    #[test]
    fn transport_chains() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(transport_kind(&refused), TransportKind::Refused);
        let timed = std::io::Error::new(std::io::ErrorKind::TimedOut, "t");
        assert_eq!(transport_kind(&timed), TransportKind::Timeout);
        let dns = DnsError {
            host: "x.invalid".into(),
            message: "no such host".into(),
        };
        assert!(matches!(transport_kind(&dns), TransportKind::Dns(_)));
        let unknown = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert!(matches!(
            transport_kind(&unknown),
            TransportKind::TlsUnknownAuthority(_)
        ));
        // hyper-rustls wraps the rustls error in two io::Errors.
        let nested = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert!(matches!(
            transport_kind(&nested),
            TransportKind::TlsUnknownAuthority(_)
        ));
        let not_tls = std::io::Error::other(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert_eq!(transport_kind(&not_tls), TransportKind::NotTls);
        let expired = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired,
        ));
        assert!(matches!(transport_kind(&expired), TransportKind::Tls(_)));
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(matches!(transport_kind(&reset), TransportKind::Other(_)));
        assert_eq!(
            classify_transport(&TransportKind::NotTls, "https://r/v2/").detail,
            "https://r/v2/: server gave HTTP response to HTTPS client"
        );
        // Garbage instead of HTTP means TLS only where plain HTTP was spoken.
        assert_eq!(
            classify_transport(&TransportKind::NotHttp, "http://r/v2/").outcome,
            Outcome::HttpRequestToHttps
        );
        assert_eq!(
            classify_transport(&TransportKind::NotHttp, "https://r/v2/").outcome,
            Outcome::ConnectionFailed
        );
    }
}
