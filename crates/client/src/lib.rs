//! berth-client: a small registry client that asks one question at a time
//! ("may these credentials read this manifest?") the way containerd asks it,
//! and says precisely why the answer is no.
//!
//! This crate owns the wire side of talking to a registry as a client:
//! `HEAD /v2/<name>/manifests/<reference>` with containerd's `Accept`
//! headers, the Docker/OCI token flow (a `401` with a `Bearer` challenge, a
//! token from the realm — the OAuth2 password grant first, then `GET`, as
//! containerd asks — the retry) and `Basic` challenges, bounded
//! timeouts, a custom CA file, plain-HTTP registries, and the classification
//! of every failure into an [`Outcome`] ([`classify`] holds that logic as
//! plain functions).
//!
//! `berth doctor --probe` and `berth login` use it; [`upstream`] is the
//! pulling side of the same wire (manifests and blobs, tokens cached) for
//! the pull-through cache; [`berth_api`] is the
//! client of berth's own API (the pull credential exchange for `berth
//! credential-provider`, administration for `berth gc` and `berth repo`).

pub mod berth_api;
pub mod challenge;
pub mod classify;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap};
use reqwest::{Method, StatusCode};

pub use classify::{Classified, Outcome, RateLimit};
use classify::{ResponseFacts, Stage};

/// The `Accept` header containerd sends when resolving a reference.
pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, */*";

/// Where Docker Hub's registry API lives; `docker.io` in references is only a name.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

/// Failures setting up a client (requests never fail: they yield a [`Probe`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read CA file {path}: {source}; pass a PEM file with the server's CA")]
    CaFileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "CA file {path} holds no PEM certificate; pass the registry's CA certificate in PEM form"
    )]
    CaFileEmpty { path: PathBuf },
    #[error("cannot set up TLS: {0}; install the ca-certificates package or pass --ca-file")]
    Tls(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// Registry credentials. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How the client connects.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Limit for resolving and connecting (TCP and TLS handshake).
    pub connect_timeout: Duration,
    /// Limit for each whole request, answer included.
    pub timeout: Duration,
    /// Extra trusted CAs (PEM), on top of the system's.
    pub ca_files: Vec<PathBuf>,
    /// `host[:port]` spoken to in plain HTTP, like a node's insecure-registry setting.
    pub insecure_registries: Vec<String>,
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            ca_files: Vec::new(),
            insecure_registries: Vec::new(),
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// The result of one probe: never an error, always an outcome with evidence.
#[derive(Debug, Clone)]
pub struct Probe {
    pub outcome: Outcome,
    /// The URL that decided the outcome (the manifest, or the token realm).
    pub url: String,
    /// The last HTTP status seen, when the exchange got that far.
    pub status: Option<u16>,
    /// One sentence of evidence.
    pub detail: String,
    /// `Docker-Content-Digest` of a found manifest.
    pub digest: Option<String>,
    /// `Content-Type` of a found manifest.
    pub media_type: Option<String>,
    pub rate_limit: Option<RateLimit>,
    /// The challenge scheme the registry used (`bearer`, `basic`), if any.
    pub auth_scheme: Option<String>,
}

/// A registry client; cheap to clone.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    insecure: Vec<String>,
}

/// Resolves names itself so that a DNS failure is recognisable in the
/// error chain instead of being one more opaque connect error.
struct Resolver {
    timeout: Duration,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let timeout = self.timeout;
        Box::pin(async move {
            let lookup = tokio::net::lookup_host((host.as_str(), 0));
            let dns_err = |message: String| -> Box<dyn std::error::Error + Send + Sync> {
                Box::new(classify::DnsError {
                    host: host.clone(),
                    message,
                })
            };
            match tokio::time::timeout(timeout, lookup).await {
                Ok(Ok(addrs)) => {
                    let addrs: Vec<SocketAddr> = addrs.collect();
                    if addrs.is_empty() {
                        return Err(dns_err("no such host".to_owned()));
                    }
                    Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
                }
                Ok(Err(e)) => Err(dns_err(e.to_string())),
                Err(_) => Err(dns_err("i/o timeout".to_owned())),
            }
        })
    }
}

fn read_ca(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ClientError> {
    use rustls::pki_types::pem::PemObject as _;
    let bytes = std::fs::read(path).map_err(|source| ClientError::CaFileRead {
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(ClientError::CaFileEmpty {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// TLS for any server berth talks to (registries, PostgreSQL): the system's
/// roots, checked as the platform checks them, plus the CAs in `ca_files`.
pub fn tls_config(ca_files: &[PathBuf]) -> Result<rustls::ClientConfig, ClientError> {
    let mut extra = Vec::new();
    for path in ca_files {
        extra.extend(read_ca(path)?);
    }
    // ring keeps the build free of aws-lc.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| ClientError::Tls(e.to_string()))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// An HTTP client set up as the node's runtime would be: the system roots
/// plus `config`'s CA files, names resolved so that DNS failures are
/// recognisable, bounded connects, no proxy from the environment (it would
/// change what is being talked to). Callers add their request timeouts.
pub(crate) fn http_builder(config: &ClientConfig) -> Result<reqwest::ClientBuilder, ClientError> {
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(&config.ca_files)?)
        .dns_resolver(Arc::new(Resolver {
            timeout: config.connect_timeout,
        }))
        .connect_timeout(config.connect_timeout)
        .user_agent(config.user_agent.clone())
        .no_proxy())
}

impl RegistryClient {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let http = http_builder(&config)?
            .timeout(config.timeout)
            .build()
            .map_err(ClientError::Http)?;
        Ok(RegistryClient {
            http,
            insecure: config.insecure_registries,
        })
    }

    /// `scheme://host[:port]` for a registry as it appears in image names.
    pub fn base_url(&self, registry: &str) -> String {
        let host = if registry == "docker.io" || registry == "index.docker.io" {
            DOCKER_HUB_HOST
        } else {
            registry
        };
        let scheme = if self.insecure.iter().any(|h| h == registry || h == host) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}")
    }

    /// `HEAD /v2/<repository>/manifests/<reference>` through the token flow.
    /// `reference` is a tag or a digest.
    pub async fn head_manifest(
        &self,
        registry: &str,
        repository: &str,
        reference: &str,
        credentials: Option<&Credentials>,
    ) -> Probe {
        let url = format!(
            "{}/v2/{repository}/manifests/{reference}",
            self.base_url(registry)
        );
        let scope = format!("repository:{repository}:pull");
        self.authorized(Method::HEAD, &url, Some(&scope), credentials)
            .await
    }

    /// `GET /v2/` through the token flow: whether the registry accepts
    /// `credentials` at all (what `docker login` checks). `Pullable` means yes.
    pub async fn check_login(&self, registry: &str, credentials: Option<&Credentials>) -> Probe {
        let url = format!("{}/v2/", self.base_url(registry));
        self.authorized(Method::GET, &url, None, credentials).await
    }

    async fn authorized(
        &self,
        method: Method,
        url: &str,
        scope: Option<&str>,
        credentials: Option<&Credentials>,
    ) -> Probe {
        // Credentials without a password (a config entry whose password
        // lives in a credential store, or `docker login`'s identity-token
        // entry) are none: containerd and CRI-O send credentials only with a
        // secret, and otherwise ask anonymously.
        let credentials = credentials.filter(|c| !c.password.is_empty());
        // Like containerd, the first request goes out without credentials;
        // the challenge says which kind the registry wants.
        let first = match self.send(method.clone(), url, None).await {
            Ok(r) => r,
            Err(p) => return p,
        };
        if first.status() != StatusCode::UNAUTHORIZED {
            return self.finish(method, url, first, None, false).await;
        }
        let challenges = challenge::response_challenges(first.headers());
        // The first challenge the client can answer, in header order, as
        // containerd picks it: Bearer always, Basic only with credentials.
        let usable = challenges
            .iter()
            .find(|c| c.scheme == "bearer" || (c.scheme == "basic" && credentials.is_some()));
        let bearer = usable.filter(|c| c.scheme == "bearer");
        let basic = usable
            .filter(|c| c.scheme == "basic")
            .or_else(|| challenges.iter().find(|c| c.scheme == "basic"));
        let (auth_header, scheme) = if let Some(b) = bearer {
            match self.fetch_token(b, scope, credentials).await {
                Ok(token) => (format!("Bearer {}", token.value), "bearer"),
                Err(p) => return p,
            }
        } else if let (Some(_), Some(c)) = (basic, credentials) {
            (c.basic(), "basic")
        } else {
            let mut p = self.finish(method, url, first, None, false).await;
            if basic.is_some() {
                p.auth_scheme = Some("basic".into());
                p.detail
                    .push_str(" (Basic challenge: no basic auth credentials)");
            } else {
                p.detail.push_str(" (no Bearer or Basic challenge)");
            }
            return p;
        };
        let second = match self.send(method.clone(), url, Some(&auth_header)).await {
            Ok(r) => r,
            Err(p) => return p,
        };
        let mut p = self
            .finish(
                method,
                url,
                second,
                Some(&auth_header),
                credentials.is_some(),
            )
            .await;
        if scheme == "bearer" && scope.is_some() && p.status == Some(401) {
            // The token service gave a token, so the credentials were
            // accepted; the token does not open this repository. Registries
            // (Docker Hub among them) answer so for a repository that does
            // not exist as for one the account may not pull, as containerd's
            // "pull access denied, repository does not exist or may require
            // authorization" says.
            if credentials.is_some() {
                p.outcome = Outcome::Forbidden;
                p.detail = "the registry answered 401 Unauthorized with the token granted for \
                            these credentials: they were accepted, but give no pull access to \
                            this repository — it does not exist, or this account may not pull it"
                    .to_owned();
            } else {
                p.detail
                    .push_str(" (a registry answers so for a repository that does not exist, too)");
            }
        }
        p.auth_scheme = Some(scheme.into());
        p
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        auth: Option<&str>,
    ) -> Result<reqwest::Response, Probe> {
        let mut req = self
            .http
            .request(method, url)
            .header(ACCEPT, MANIFEST_ACCEPT);
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        req.send()
            .await
            .map_err(|e| transport_probe(&e, url_without_query(url)))
    }

    /// Builds the probe for a final answer; for a HEAD that failed, repeats
    /// it as GET to read the error body (HEAD answers have none), as
    /// containerd does for 403, to tell `MANIFEST_UNKNOWN` from `NAME_UNKNOWN`.
    async fn finish(
        &self,
        method: Method,
        url: &str,
        resp: reqwest::Response,
        auth: Option<&str>,
        credentials_sent: bool,
    ) -> Probe {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if resp.status().is_success() {
            return Probe {
                outcome: Outcome::Pullable,
                url: url.to_owned(),
                status: Some(status),
                detail: format!("{} {url} answered {status}", method.as_str()),
                digest: header(&headers, "docker-content-digest"),
                media_type: header(&headers, "content-type"),
                rate_limit: None,
                auth_scheme: None,
            };
        }
        let mut body = None;
        if method == Method::HEAD && matches!(status, 403 | 404) {
            if let Ok(get) = self.send(Method::GET, url, auth).await
                && get.status().as_u16() == status
            {
                body = read_small(get).await;
            }
        } else if method != Method::HEAD {
            body = read_small(resp).await;
        }
        let facts = ResponseFacts {
            status,
            credentials_sent,
            body,
            rate_limit: rate_limit(&headers),
        };
        let mut c = classify::classify_response(&facts, Stage::Registry);
        if c.outcome == Outcome::ManifestUnknown
            && let Some(repo_unknown) = self.repository_unknown(url, auth).await
        {
            c = repo_unknown;
        }
        Probe {
            outcome: c.outcome,
            url: url.to_owned(),
            status: Some(status),
            detail: c.detail,
            digest: None,
            media_type: None,
            rate_limit: Some(facts.rate_limit).filter(|r| !r.is_empty()),
            auth_scheme: None,
        }
    }

    /// Many registries (Distribution, berth) answer `MANIFEST_UNKNOWN` even
    /// for a repository that does not exist; its tag list says which it is.
    async fn repository_unknown(
        &self,
        manifest_url: &str,
        auth: Option<&str>,
    ) -> Option<Classified> {
        let (base, _) = manifest_url.rsplit_once("/manifests/")?;
        let tags_url = format!("{base}/tags/list");
        let resp = self.send(Method::GET, &tags_url, auth).await.ok()?;
        if resp.status() != StatusCode::NOT_FOUND {
            return None;
        }
        let body = read_small(resp).await?;
        let (code, message) = classify::spec_error(&body)?;
        (code == "NAME_UNKNOWN").then(|| Classified {
            outcome: Outcome::RepositoryUnknown,
            detail: format!(
                "the registry answered 404 Not Found for the manifest, and GET {tags_url} \
                 answered 404 ({code}: {message}): the repository does not exist"
            ),
        })
    }

    /// A token from the challenge's realm, asked for as containerd asks:
    /// with credentials, the OAuth2 password grant (`POST`), and when the
    /// token service does not take that (404, 405, 401 or 400: GCR,
    /// Artifactory and ACR answer so), `GET realm?service=…&scope=…` with
    /// Basic credentials; without credentials, that `GET` anonymously.
    /// Returns the token or the probe explaining why there is none.
    pub(crate) async fn fetch_token(
        &self,
        challenge: &challenge::Challenge,
        scope: Option<&str>,
        credentials: Option<&Credentials>,
    ) -> Result<Token, Probe> {
        let Some(realm) = challenge.param("realm") else {
            return Err(simple_probe(
                Outcome::RegistryError,
                "",
                None,
                "the registry sent a Bearer challenge without a realm".into(),
            ));
        };
        let service = challenge.param("service");
        // The challenge's scope (when present) is what the registry wants;
        // ours is added when it differs, as containerd merges them.
        let mut scopes: Vec<&str> = challenge
            .param("scope")
            .map(|s| s.split_whitespace().collect())
            .unwrap_or_default();
        if let Some(s) = scope
            && !scopes.contains(&s)
        {
            scopes.push(s);
        }
        let mut token_url = match reqwest::Url::parse(realm) {
            Ok(u) => u,
            Err(e) => {
                return Err(simple_probe(
                    Outcome::RegistryError,
                    realm,
                    None,
                    format!("the registry's token realm {realm:?} is not a URL ({e})"),
                ));
            }
        };
        // containerd sends a password grant only with a user name (without
        // one, the secret would be a refresh token).
        if let Some(c) = credentials.filter(|c| !c.username.is_empty()) {
            let joined = scopes.join(" ");
            let mut form = vec![
                ("grant_type", "password"),
                ("username", c.username.as_str()),
                ("password", c.password.as_str()),
                ("client_id", CLIENT_ID),
            ];
            if let Some(service) = service {
                form.push(("service", service));
            }
            if !scopes.is_empty() {
                form.push(("scope", &joined));
            }
            let post = self.http.post(token_url.clone()).form(&form).send().await;
            match token_answer(post, realm, true).await {
                Err((Some(400 | 401 | 404 | 405), _)) => {}
                answer => return answer.map_err(|(_, probe)| probe),
            }
        }
        {
            let mut pairs = token_url.query_pairs_mut();
            if let Some(service) = service {
                pairs.append_pair("service", service);
            }
            for s in &scopes {
                pairs.append_pair("scope", s);
            }
        }
        let mut get = self.http.get(token_url);
        if let Some(c) = credentials {
            get = get.header(AUTHORIZATION, c.basic());
        }
        token_answer(get.send().await, realm, credentials.is_some())
            .await
            .map_err(|(_, probe)| probe)
    }
}

/// The `client_id` of OAuth2 token requests.
const CLIENT_ID: &str = "berth";

/// A bearer token and how long it is good for.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub value: String,
    /// `expires_in`; the token spec has clients assume 60 s when absent.
    pub lifetime: Duration,
}

/// The token in a token endpoint's answer, or the probe saying why there is
/// none, with the HTTP status when there was an answer.
async fn token_answer(
    sent: Result<reqwest::Response, reqwest::Error>,
    realm: &str,
    credentials_sent: bool,
) -> Result<Token, (Option<u16>, Probe)> {
    let resp = sent.map_err(|e| (None, transport_probe(&e, realm.to_owned())))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = read_small(resp).await;
    if (200..300).contains(&status) {
        // GET answers `token` (and often `access_token`); OAuth2 answers
        // `access_token`, which containerd takes first when both are there.
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let token = body
            .as_deref()
            .and_then(|b| serde_json::from_str::<Answer>(b).ok())
            .and_then(|t| {
                let lifetime = Duration::from_secs(t.expires_in.unwrap_or(60).max(1));
                let value = t.access_token.or(t.token).filter(|t| !t.is_empty())?;
                Some(Token { value, lifetime })
            });
        return token.ok_or_else(|| {
            (
                Some(status),
                simple_probe(
                    Outcome::RegistryError,
                    realm,
                    Some(status),
                    format!("the token endpoint {realm} answered {status} without a token"),
                ),
            )
        });
    }
    let facts = ResponseFacts {
        status,
        credentials_sent,
        body,
        rate_limit: rate_limit(&headers),
    };
    let c = classify::classify_response(&facts, Stage::Token);
    let mut p = simple_probe(c.outcome, realm, Some(status), c.detail);
    p.rate_limit = Some(facts.rate_limit).filter(|r| !r.is_empty());
    p.auth_scheme = Some("bearer".into());
    Err((Some(status), p))
}

fn url_without_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

fn simple_probe(outcome: Outcome, url: &str, status: Option<u16>, detail: String) -> Probe {
    Probe {
        outcome,
        url: url.to_owned(),
        status,
        detail,
        digest: None,
        media_type: None,
        rate_limit: None,
        auth_scheme: None,
    }
}

fn transport_probe(e: &reqwest::Error, url: String) -> Probe {
    let kind = classify::transport_kind(e);
    let c = classify::classify_transport(&kind, &url);
    simple_probe(c.outcome, &url, None, c.detail)
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn rate_limit(headers: &HeaderMap) -> RateLimit {
    RateLimit {
        retry_after: header(headers, "retry-after"),
        limit: header(headers, "ratelimit-limit"),
        remaining: header(headers, "ratelimit-remaining"),
    }
}

/// An error body, up to 64 KiB: enough for any spec error document.
async fn read_small(mut resp: reqwest::Response) -> Option<String> {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        buf.extend_from_slice(&chunk);
        if buf.len() > 64 * 1024 {
            buf.truncate(64 * 1024);
            break;
        }
    }
    String::from_utf8(buf).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let c = RegistryClient::new(ClientConfig {
            insecure_registries: vec!["127.0.0.1:5000".into()],
            ..ClientConfig::default()
        })
        .unwrap();
        assert_eq!(c.base_url("docker.io"), "https://registry-1.docker.io");
        assert_eq!(c.base_url("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(c.base_url("reg.example.com"), "https://reg.example.com");
    }

    #[test]
    fn credentials_debug_hides_password() {
        let c = Credentials::new("u", "secret");
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(c.basic(), "Basic dTpzZWNyZXQ=");
    }

    #[test]
    fn bad_ca_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a pem").unwrap();
        let err = RegistryClient::new(ClientConfig {
            ca_files: vec![p],
            ..ClientConfig::default()
        })
        .unwrap_err();
        assert!(matches!(err, ClientError::CaFileEmpty { .. }), "{err}");
        let err = RegistryClient::new(ClientConfig {
            ca_files: vec![dir.path().join("missing.pem")],
            ..ClientConfig::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("cannot read CA file"), "{err}");
    }
}
