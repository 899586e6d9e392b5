//! Pulling from an upstream registry, for berth's pull-through cache:
//! manifests and blobs through the token flow, with each token kept and
//! reused until it expires (one login per scope and lifetime, not one per
//! pull, which is what gets a cache throttled by Docker Hub), and every
//! failure sorted into what the cache acts on ([`UpstreamError`]): a
//! missing manifest is an answer, a refused login a configuration error,
//! a 429 a wait (`Retry-After`), a timeout or 5xx an outage to ride out on
//! cached content.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use crate::{ClientConfig, ClientError, Credentials, MANIFEST_ACCEPT, RegistryClient, challenge};

/// Where the credentials for an upstream come from, asked each time a
/// login is needed so that a rotated secret is picked up; `Ok(None)` pulls
/// anonymously.
pub type CredentialSource = Arc<dyn Fn() -> Result<Option<Credentials>, String> + Send + Sync>;

/// How to reach an upstream registry.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// `scheme://host[:port]`, e.g. `https://registry-1.docker.io`.
    pub url: String,
    /// CA files and connect timeout; `timeout` bounds each manifest request
    /// and login, answer included.
    pub client: ClientConfig,
    /// A blob download that receives nothing for this long is given up.
    pub stall_timeout: Duration,
    pub credentials: CredentialSource,
    /// Largest manifest accepted (what berth accepts on push).
    pub max_manifest_bytes: usize,
}

/// Why an upstream request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("{url} answered 404 Not Found")]
    NotFound { url: String },
    /// 401 or 403 with berth's login: the repository does not exist there,
    /// or berth's account may not pull it (Docker Hub answers both alike).
    #[error(
        "{url} refused it to berth's login: the repository does not exist upstream, or berth's \
         account may not pull it"
    )]
    NoAccess { url: String },
    /// The login itself failed: berth's credentials for the upstream are
    /// wrong or unreadable.
    #[error("{url} refused berth's credentials ({detail}); fix the upstream's credentials")]
    Denied { url: String, detail: String },
    #[error("{url} answered 429 Too Many Requests{}", retry_after.map(|d| format!(" (retry after {} s)", d.as_secs())).unwrap_or_default())]
    RateLimited {
        url: String,
        retry_after: Option<Duration>,
    },
    #[error("{url} is unavailable: {detail}")]
    Unavailable { url: String, detail: String },
    #[error("{url}: {detail}")]
    Invalid { url: String, detail: String },
}

impl UpstreamError {
    /// Whether the upstream failed (down, throttling, refusing berth's
    /// login, answering wrongly) rather than answered that it has no such
    /// thing: cached content may then be served instead.
    pub fn is_failure(&self) -> bool {
        !matches!(
            self,
            UpstreamError::NotFound { .. } | UpstreamError::NoAccess { .. }
        )
    }
}

/// What a manifest request answered besides the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// `Docker-Content-Digest`, when sent.
    pub digest: Option<String>,
    pub media_type: Option<String>,
}

/// A blob download under way.
pub struct BlobDownload {
    /// `Content-Length`, when sent.
    pub size: Option<u64>,
    pub body: BoxStream<'static, std::io::Result<Bytes>>,
}

/// A client of one upstream registry; cheap to share.
pub struct Upstream {
    base: String,
    /// Logins go through the probe client's token flow.
    login: RegistryClient,
    /// Manifests and HEADs: bounded as a whole.
    http: reqwest::Client,
    /// Blob downloads: bounded per read, since a large layer takes long.
    blobs: reqwest::Client,
    credentials: CredentialSource,
    /// `Authorization` values by scope, until they expire.
    authorizations: quick_cache::sync::Cache<String, Authorization>,
    max_manifest_bytes: usize,
    /// Bounds reading the credentials (a credential helper is a program).
    login_timeout: Duration,
}

#[derive(Clone)]
struct Authorization {
    header: String,
    /// `None` for Basic credentials, which do not expire.
    until: Option<Instant>,
}

/// Scopes whose authorization is kept: one per repository pulled.
const AUTHORIZATIONS_KEPT: usize = 10_000;
/// The longest a token is kept, whatever the token server says.
const LONGEST_TOKEN: Duration = Duration::from_secs(24 * 3600);

impl Upstream {
    pub fn new(config: UpstreamConfig) -> Result<Self, ClientError> {
        let http = crate::http_builder(&config.client)?
            .timeout(config.client.timeout)
            .build()
            .map_err(ClientError::Http)?;
        let blobs = crate::http_builder(&config.client)?
            .read_timeout(config.stall_timeout)
            .build()
            .map_err(ClientError::Http)?;
        Ok(Upstream {
            base: config.url.trim_end_matches('/').to_owned(),
            login_timeout: config.client.timeout,
            login: RegistryClient::new(config.client)?,
            http,
            blobs,
            credentials: config.credentials,
            authorizations: quick_cache::sync::Cache::new(AUTHORIZATIONS_KEPT),
            max_manifest_bytes: config.max_manifest_bytes,
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// `HEAD` of a manifest: what a tag points at now. Docker Hub does not
    /// count these against its pull limit.
    pub async fn head_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<ManifestHead, UpstreamError> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let response = self.send(Method::HEAD, &path, repository, false).await?;
        Ok(manifest_head(&response))
    }

    /// A manifest's exact bytes.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(ManifestHead, Bytes), UpstreamError> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let mut response = self.send(Method::GET, &path, repository, false).await?;
        let head = manifest_head(&response);
        let url = self.url_of(&path);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport(&url, &e))? {
            body.extend_from_slice(&chunk);
            if body.len() > self.max_manifest_bytes {
                return Err(UpstreamError::Invalid {
                    url,
                    detail: format!(
                        "the manifest is larger than berth's {}-byte limit",
                        self.max_manifest_bytes
                    ),
                });
            }
        }
        Ok((head, Bytes::from(body)))
    }

    /// The size of a blob, if the repository has it.
    pub async fn head_blob(&self, repository: &str, digest: &str) -> Result<u64, UpstreamError> {
        let path = format!("/v2/{repository}/blobs/{digest}");
        let response = self.send(Method::HEAD, &path, repository, false).await?;
        content_length(&response).ok_or_else(|| UpstreamError::Invalid {
            url: self.url_of(&path),
            detail: "the blob's HEAD answer has no Content-Length".into(),
        })
    }

    /// Starts downloading a blob (redirects to a CDN followed, without
    /// berth's credentials).
    pub async fn get_blob(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<BlobDownload, UpstreamError> {
        let path = format!("/v2/{repository}/blobs/{digest}");
        let response = self.send(Method::GET, &path, repository, true).await?;
        let url = self.url_of(&path);
        let size = content_length(&response);
        let body = response
            .bytes_stream()
            .map(move |chunk| {
                chunk.map_err(|e| std::io::Error::other(transport(&url, &e).to_string()))
            })
            .boxed();
        Ok(BlobDownload { size, body })
    }

    fn url_of(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with the authorization cached for its scope, and on
    /// a `401` logs in as the challenge asks and sends it once more.
    async fn send(
        &self,
        method: Method,
        path: &str,
        repository: &str,
        blob: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = self.url_of(path);
        let scope = format!("repository:{repository}:pull");
        let cached = self.cached_authorization(&scope);
        let client = if blob { &self.blobs } else { &self.http };
        let request = |authorization: Option<&str>| {
            let mut request = client.request(method.clone(), &url);
            if !blob {
                request = request.header(ACCEPT, MANIFEST_ACCEPT);
            }
            if let Some(value) = authorization {
                request = request.header(AUTHORIZATION, value);
            }
            request.send()
        };
        let mut response = request(cached.as_deref())
            .await
            .map_err(|e| transport(&url, &e))?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let authorization = self.authorize(&response, &scope, &url).await?;
            response = request(Some(&authorization))
                .await
                .map_err(|e| transport(&url, &e))?;
        }
        check_status(response, &url)
    }

    fn cached_authorization(&self, scope: &str) -> Option<String> {
        let authorization = self.authorizations.get(scope)?;
        if authorization
            .until
            .is_some_and(|until| Instant::now() >= until)
        {
            self.authorizations.remove(scope);
            return None;
        }
        Some(authorization.header)
    }

    /// The upstream's credentials, read off the async workers (a credential
    /// helper is a program, a password file a read) and within the login
    /// timeout. Why they could not be read goes to the log, not to clients.
    async fn read_credentials(&self, url: &str) -> Result<Option<Credentials>, UpstreamError> {
        let source = self.credentials.clone();
        let read = tokio::time::timeout(
            self.login_timeout,
            tokio::task::spawn_blocking(move || source()),
        );
        let failure = match read.await {
            Ok(Ok(Ok(credentials))) => return Ok(credentials),
            Ok(Ok(Err(e))) => e,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.login_timeout),
        };
        tracing::error!(upstream = %self.base, error = %failure, "cannot read the upstream's credentials");
        Err(UpstreamError::Denied {
            url: url.to_owned(),
            detail: "berth could not read them; the cause is in its log".into(),
        })
    }

    /// Logs in as a `401`'s challenge asks and caches the result for `scope`.
    async fn authorize(
        &self,
        unauthorized: &reqwest::Response,
        scope: &str,
        url: &str,
    ) -> Result<String, UpstreamError> {
        let challenges = challenge::response_challenges(unauthorized.headers());
        let credentials = self.read_credentials(url).await?;
        let denied = |detail: String| UpstreamError::Denied {
            url: url.to_owned(),
            detail,
        };
        let authorization = if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let token = self
                .login
                .fetch_token(bearer, Some(scope), credentials.as_ref())
                .await
                .map_err(|probe| login_error(probe, url))?;
            // Renewed a little before it expires, so no request goes out
            // with a token that lapses on the way.
            let lifetime = token.lifetime.min(LONGEST_TOKEN);
            let margin = (lifetime / 10).min(Duration::from_secs(30));
            Authorization {
                header: format!("Bearer {}", token.value),
                until: Instant::now().checked_add(lifetime - margin),
            }
        } else if challenges.iter().any(|c| c.scheme == "basic") {
            let credentials = credentials.ok_or_else(|| {
                denied("it asks for Basic credentials and none are configured".into())
            })?;
            Authorization {
                header: credentials.basic(),
                until: None,
            }
        } else {
            return Err(denied(
                "it answered 401 without a Bearer or Basic challenge".into(),
            ));
        };
        self.authorizations
            .insert(scope.to_owned(), authorization.clone());
        Ok(authorization.header)
    }
}

fn manifest_head(response: &reqwest::Response) -> ManifestHead {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    ManifestHead {
        digest: header("docker-content-digest"),
        media_type: header(CONTENT_TYPE.as_str()),
    }
}

fn content_length(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The answer if it is a success, else the error it means.
fn check_status(
    response: reqwest::Response,
    url: &str,
) -> Result<reqwest::Response, UpstreamError> {
    let status = response.status();
    let url = url.to_owned();
    Err(match status.as_u16() {
        200..=299 => return Ok(response),
        404 => UpstreamError::NotFound { url },
        401 | 403 => UpstreamError::NoAccess { url },
        429 => UpstreamError::RateLimited {
            retry_after: response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, SystemTime::now())),
            url,
        },
        500..=599 => UpstreamError::Unavailable {
            url,
            detail: format!("it answered {status}"),
        },
        _ => UpstreamError::Invalid {
            url,
            detail: format!("unexpected answer {status}"),
        },
    })
}

/// A `Retry-After` value (RFC 9110 §10.2.3): seconds, or an HTTP date.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn transport(url: &str, error: &reqwest::Error) -> UpstreamError {
    let kind = crate::classify::transport_kind(error);
    UpstreamError::Unavailable {
        url: url.to_owned(),
        detail: crate::classify::classify_transport(&kind, url).detail,
    }
}

/// A failed login, from the probe the token flow gives.
fn login_error(probe: crate::Probe, url: &str) -> UpstreamError {
    let url = url.to_owned();
    match probe.status {
        Some(429) => UpstreamError::RateLimited {
            url,
            retry_after: probe
                .rate_limit
                .and_then(|r| r.retry_after)
                .and_then(|v| retry_after(&v, SystemTime::now())),
        },
        None | Some(500..=599) => UpstreamError::Unavailable {
            url,
            detail: probe.detail,
        },
        Some(_) => UpstreamError::Denied {
            url,
            detail: probe.detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = httpdate::parse_http_date("Tue, 01 Dec 2026 05:00:00 GMT").unwrap();
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Tue, 01 Dec 2026 05:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after("Tue, 01 Dec 2026 04:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn a_missing_or_closed_repository_is_an_answer_not_a_failure() {
        let url = String::from("http://u");
        assert!(!UpstreamError::NotFound { url: url.clone() }.is_failure());
        assert!(!UpstreamError::NoAccess { url: url.clone() }.is_failure());
        assert!(
            UpstreamError::RateLimited {
                url: url.clone(),
                retry_after: None
            }
            .is_failure()
        );
        assert!(
            UpstreamError::Denied {
                url: url.clone(),
                detail: String::new()
            }
            .is_failure()
        );
        assert!(
            UpstreamError::Unavailable {
                url,
                detail: String::new()
            }
            .is_failure()
        );
    }
}
