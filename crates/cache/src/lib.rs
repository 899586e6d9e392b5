//! berth-cache: the pull-through cache.
//!
//! Repositories under an upstream's prefix (path mode), or asked for with
//! containerd's `?ns=<registry>` (mirror mode, see [`route`]), are served
//! from berth's own storage and filled from the upstream on a miss:
//!
//! * **digest-exact**: manifests and whole indexes are stored byte for byte
//!   as the upstream sent them and checked against their digest; nothing
//!   is converted or trimmed. A pull by digest never asks the upstream once
//!   the content is cached.
//! * **streamed, single-flight**: a missing blob is downloaded once however
//!   many clients ask, and every one of them is served as the bytes arrive
//!   ([`fill`]); concurrent requests for one manifest share one request
//!   upstream too.
//! * **tags** are revalidated with a `HEAD` (which Docker Hub does not count
//!   against its pull limit) at most every `revalidate_after`; while the
//!   upstream is down, slow, or answers 429 or 5xx, the cached copy is
//!   served within bounded timeouts, and the log says so. After a failure
//!   the upstream is left alone for a while (longer if its `Retry-After`
//!   says so).
//! * cached repositories are read-only for clients; their size is bounded
//!   by garbage collection's eviction ([`berth_registry::CacheRule`]).
//!
//! The upstream side (tokens kept until they expire, failures sorted) is
//! [`berth_client::upstream`]; storage is the [`Registry`]'s.

mod error;
mod fill;
mod flight;
pub mod hosts_toml;
pub mod route;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use berth_client::upstream::{CredentialSource, UpstreamError};
use berth_client::upstream::{Upstream, UpstreamConfig};
use berth_client::{ClientConfig, ClientError};
use berth_oci::{Digest, Hasher, Reference};
use berth_registry::{Blob, ByteRange, ByteStream, Registry, RegistryError, StoredManifest};
use bytes::Bytes;
pub use error::{CacheError, Result};
use fill::{Fill, FillRequest, Fills};
use flight::Flights;
pub use route::{CacheRoute, RouteRule, UnknownNamespace};

/// One upstream registry.
#[derive(Clone)]
pub struct UpstreamSettings {
    pub rule: RouteRule,
    /// `scheme://host[:port]`.
    pub url: String,
    pub credentials: CredentialSource,
    /// CAs trusted for it besides the system's.
    pub ca_files: Vec<PathBuf>,
}

/// How the cache behaves.
#[derive(Clone)]
pub struct CacheSettings {
    pub upstreams: Vec<UpstreamSettings>,
    /// A cached tag is checked upstream at most this often.
    pub revalidate_after: Duration,
    /// The longest a request to an upstream may take (a blob download: to
    /// start); cached content is served instead when it has some.
    pub timeout: Duration,
    /// A blob download that receives nothing for this long is given up.
    pub stall_timeout: Duration,
    /// After an upstream failed, cached tags are served without asking it
    /// for this long (longer when its `Retry-After` says so).
    pub outage_backoff: Duration,
    /// Where downloads are spooled (local disk), emptied at start.
    pub spool_dir: PathBuf,
}

struct UpstreamState {
    client: Arc<Upstream>,
    /// Until when cached tags are served without asking, and why.
    quiet: Mutex<Option<(Instant, UpstreamError)>>,
}

impl UpstreamState {
    /// Whether the upstream is being left alone after a failure: the
    /// failure, a throttling one with the wait that remains.
    fn quiet(&self) -> Option<UpstreamError> {
        let quiet = self.quiet.lock().expect("not poisoned");
        let (until, error) = quiet.as_ref()?;
        let left = until.checked_duration_since(Instant::now())?;
        Some(match error {
            UpstreamError::RateLimited { url, .. } => UpstreamError::RateLimited {
                url: url.clone(),
                retry_after: Some(left),
            },
            other => other.clone(),
        })
    }

    fn note_failure(&self, error: &UpstreamError, backoff: Duration) {
        let wait = match error {
            UpstreamError::RateLimited {
                retry_after: Some(after),
                ..
            } => backoff.max(*after),
            _ => backoff,
        };
        *self.quiet.lock().expect("not poisoned") = Some((Instant::now() + wait, error.clone()));
    }
}

/// A blob as the cache has it.
pub enum CachedBlob {
    /// Stored: served by the registry.
    Stored(Blob),
    /// Being downloaded: served as it arrives.
    Arriving(ArrivingBlob),
}

pub struct ArrivingBlob {
    fill: Arc<Fill>,
    pub digest: Digest,
    pub size: u64,
}

impl ArrivingBlob {
    /// The bytes `range` (the whole blob when `None`), as they arrive.
    pub fn read(self, range: Option<ByteRange>) -> ByteStream {
        self.fill.read(range.unwrap_or(0..self.size), self.size)
    }
}

/// Tags whose last check this process remembers.
const CHECKS_REMEMBERED: usize = 100_000;

/// The pull-through cache over a registry.
pub struct PullThroughCache {
    registry: Arc<Registry>,
    rules: Vec<RouteRule>,
    upstreams: Vec<Arc<UpstreamState>>,
    fills: Arc<Fills>,
    manifests: Arc<Flights<(String, String), Result<()>>>,
    /// When each cached tag was last found current upstream.
    checked: Arc<quick_cache::sync::Cache<(String, String), Instant>>,
    settings: CacheSettings,
}

/// Why the cache could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CacheSetupError {
    #[error("upstream {prefix}: {source}")]
    Client {
        prefix: String,
        #[source]
        source: ClientError,
    },
    #[error(
        "cannot prepare the cache's spool directory {path}: {source}; give a writable directory"
    )]
    Spool {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PullThroughCache {
    pub fn new(
        registry: Arc<Registry>,
        settings: CacheSettings,
    ) -> std::result::Result<Self, CacheSetupError> {
        let upstreams = settings
            .upstreams
            .iter()
            .map(|u| {
                let client = Upstream::new(UpstreamConfig {
                    url: u.url.clone(),
                    client: ClientConfig {
                        connect_timeout: settings.timeout.min(Duration::from_secs(5)),
                        timeout: settings.timeout,
                        ca_files: u.ca_files.clone(),
                        ..ClientConfig::default()
                    },
                    stall_timeout: settings.stall_timeout,
                    credentials: u.credentials.clone(),
                })
                .map_err(|source| CacheSetupError::Client {
                    prefix: u.rule.prefix.clone(),
                    source,
                })?;
                Ok(Arc::new(UpstreamState {
                    client: Arc::new(client),
                    quiet: Mutex::new(None),
                }))
            })
            .collect::<std::result::Result<_, CacheSetupError>>()?;
        let fills =
            Fills::new(settings.spool_dir.clone()).map_err(|source| CacheSetupError::Spool {
                path: settings.spool_dir.clone(),
                source,
            })?;
        Ok(PullThroughCache {
            registry,
            rules: settings.upstreams.iter().map(|u| u.rule.clone()).collect(),
            upstreams,
            fills,
            manifests: Flights::new(),
            checked: Arc::new(quick_cache::sync::Cache::new(CHECKS_REMEMBERED)),
            settings,
        })
    }

    /// The route of a request for repository `name` with the query's `ns`;
    /// `Ok(None)` for berth's own repositories.
    pub fn route(
        &self,
        name: &str,
        ns: Option<&str>,
    ) -> std::result::Result<Option<CacheRoute>, UnknownNamespace> {
        route::route(&self.rules, name, ns)
    }

    /// The upstream's URL, for messages.
    pub fn upstream_url(&self, route: &CacheRoute) -> &str {
        self.upstreams[route.upstream].client.url()
    }

    /// A manifest's description and, unless `head`, its bytes: from the
    /// cache when it is current (or the upstream cannot say otherwise),
    /// else fetched.
    pub async fn manifest(
        &self,
        route: &CacheRoute,
        reference: &str,
        head: bool,
    ) -> Result<(StoredManifest, Option<Bytes>)> {
        self.refresh(route, reference).await?;
        if head {
            let info = self.registry.manifest_info(&route.local, reference).await?;
            return Ok((info, None));
        }
        let (info, content) = self.registry.manifest(&route.local, reference).await?;
        Ok((info, Some(content)))
    }

    /// Brings the cached manifest `reference` up to date as far as the
    /// upstream allows.
    async fn refresh(&self, route: &CacheRoute, reference: &str) -> Result<()> {
        let Ok(parsed) = Reference::parse(reference) else {
            // No manifest can have it: the registry says so.
            return Ok(());
        };
        let cached = match self.registry.manifest_info(&route.local, reference).await {
            Ok(info) => Some(info.digest),
            Err(RegistryError::ManifestUnknown(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let key = (route.local.clone(), reference.to_owned());
        let upstream = &self.upstreams[route.upstream];
        if cached.is_some() {
            let fresh = self
                .checked
                .get(&key)
                .is_some_and(|at| at.elapsed() < self.settings.revalidate_after);
            // Content under a digest never changes.
            if matches!(parsed, Reference::Digest(_)) || fresh || upstream.quiet().is_some() {
                return Ok(());
            }
        } else if let Some(e @ UpstreamError::RateLimited { .. }) = upstream.quiet() {
            return Err(e.into());
        }
        let fetch = ManifestFetch {
            registry: self.registry.clone(),
            upstream: upstream.clone(),
            checked: self.checked.clone(),
            route: route.clone(),
            reference: parsed,
            cached: cached.clone(),
            backoff: self.settings.outage_backoff,
        };
        let timeout = self.settings.timeout;
        let fetched = self
            .manifests
            .run(key, async move {
                let url = fetch.upstream.client.url().to_owned();
                tokio::time::timeout(timeout, fetch.run())
                    .await
                    .unwrap_or_else(|_| {
                        let e = UpstreamError::Unavailable {
                            url,
                            detail: format!("no answer within {timeout:?}"),
                        };
                        fetch.upstream.note_failure(&e, fetch.backoff);
                        Err(e.into())
                    })
            })
            .await;
        match fetched {
            Err(CacheError::Upstream(e)) if e.is_outage() && cached.is_some() => {
                tracing::warn!(
                    repository = %route.local, reference, error = %e,
                    "the upstream failed; serving the cached copy"
                );
                Ok(())
            }
            other => other,
        }
    }

    /// A blob of a cached repository: stored, or arriving from the upstream.
    pub async fn blob(&self, route: &CacheRoute, digest: &str) -> Result<CachedBlob> {
        let digest = Digest::parse(digest).map_err(RegistryError::from)?;
        let arriving = |(fill, size)| {
            CachedBlob::Arriving(ArrivingBlob {
                fill,
                digest: digest.clone(),
                size,
            })
        };
        // A download under way first: its blob may be recorded already and
        // its bytes not yet in place.
        if let Some(joined) = self.fills.joined(&route.local, &digest).await {
            return joined.map(arriving);
        }
        match self.registry.blob(&route.local, digest.as_str()).await {
            Ok(blob) => return Ok(CachedBlob::Stored(blob)),
            Err(RegistryError::BlobUnknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let upstream = &self.upstreams[route.upstream];
        if self.registry.blob_stored(&digest).await? {
            // Stored for another repository: linked here once the upstream
            // confirms this repository has it.
            let head = upstream.client.head_blob(&route.remote, digest.as_str());
            self.upstream_answer(upstream, head, &digest).await?;
            if let Some(blob) = self
                .registry
                .link_stored_blob(&route.local, &digest)
                .await?
            {
                return Ok(CachedBlob::Stored(blob));
            }
        }
        if let Some(e @ UpstreamError::RateLimited { .. }) = upstream.quiet() {
            return Err(e.into());
        }
        let request = FillRequest {
            upstream: upstream.client.clone(),
            remote: route.remote.clone(),
            local: route.local.clone(),
            digest: digest.clone(),
            timeout: self.settings.timeout,
        };
        match self.fills.fill(&self.registry, request).await {
            Ok(filling) => Ok(arriving(filling)),
            Err(CacheError::Upstream(e)) => Err(self.blob_failure(upstream, e, &digest)),
            Err(e) => Err(e),
        }
    }

    /// A blob's size (`HEAD`): stored, being downloaded, or as the upstream
    /// says.
    pub async fn blob_size(&self, route: &CacheRoute, digest: &str) -> Result<(Digest, u64)> {
        let digest = Digest::parse(digest).map_err(RegistryError::from)?;
        if let Some(joined) = self.fills.joined(&route.local, &digest).await {
            return joined.map(|(_, size)| (digest, size));
        }
        match self.registry.blob(&route.local, digest.as_str()).await {
            Ok(blob) => return Ok((digest, blob.size())),
            Err(RegistryError::BlobUnknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let upstream = &self.upstreams[route.upstream];
        let head = upstream.client.head_blob(&route.remote, digest.as_str());
        let size = self.upstream_answer(upstream, head, &digest).await?;
        Ok((digest, size))
    }

    /// An upstream blob request's answer within the timeout.
    async fn upstream_answer<T>(
        &self,
        upstream: &UpstreamState,
        request: impl Future<Output = std::result::Result<T, UpstreamError>>,
        digest: &Digest,
    ) -> Result<T> {
        let answer = tokio::time::timeout(self.settings.timeout, request)
            .await
            .unwrap_or_else(|_| {
                Err(UpstreamError::Unavailable {
                    url: upstream.client.url().to_owned(),
                    detail: format!("no answer within {:?}", self.settings.timeout),
                })
            });
        answer.map_err(|e| self.blob_failure(upstream, e, digest))
    }

    fn blob_failure(
        &self,
        upstream: &UpstreamState,
        e: UpstreamError,
        digest: &Digest,
    ) -> CacheError {
        if !e.is_outage() {
            return RegistryError::BlobUnknown(digest.clone()).into();
        }
        upstream.note_failure(&e, self.settings.outage_backoff);
        e.into()
    }
}

/// One manifest request to the upstream, run once for all who wait on it.
struct ManifestFetch {
    registry: Arc<Registry>,
    upstream: Arc<UpstreamState>,
    checked: Arc<quick_cache::sync::Cache<(String, String), Instant>>,
    route: CacheRoute,
    reference: Reference,
    /// The cached manifest's digest, if there is one.
    cached: Option<Digest>,
    backoff: Duration,
}

impl ManifestFetch {
    async fn run(&self) -> Result<()> {
        let result = self.fetch().await;
        match (&result, &self.reference) {
            (Err(CacheError::Upstream(e)), _) if e.is_outage() => {
                self.upstream.note_failure(e, self.backoff);
            }
            // The upstream no longer has the tag: neither does the cache.
            (Err(CacheError::Registry(e)), Reference::Tag(tag))
                if matches!(**e, RegistryError::ManifestUnknown(_)) && self.cached.is_some() =>
            {
                if let Err(e) = self
                    .registry
                    .forget_tag(&self.route.local, tag.as_str())
                    .await
                {
                    tracing::warn!(repository = %self.route.local, %tag, error = %e, "could not untag");
                }
            }
            _ => {}
        }
        result
    }

    async fn fetch(&self) -> Result<()> {
        let client = &self.upstream.client;
        let (remote, reference) = (&self.route.remote, self.reference.to_string());
        if let (Reference::Tag(_), Some(cached)) = (&self.reference, &self.cached) {
            let head = client
                .head_manifest(remote, &reference)
                .await
                .map_err(|e| self.not_found(e))?;
            if head.digest.as_deref() == Some(cached.as_str()) {
                self.checked_now();
                return Ok(());
            }
        }
        let (head, content) = client
            .get_manifest(remote, &reference)
            .await
            .map_err(|e| self.not_found(e))?;
        // By tag, the bytes must be what the upstream says the tag names.
        if let Some(announced) = head.digest.as_deref().and_then(|d| Digest::parse(d).ok())
            && matches!(self.reference, Reference::Tag(_))
        {
            let mut hasher = Hasher::new(announced.algorithm());
            hasher.update(&content);
            let actual = hasher.finish();
            if actual != announced {
                return Err(CacheError::Corrupt {
                    url: format!("{}/v2/{remote}/manifests/{reference}", client.url()),
                    expected: announced,
                    actual,
                });
            }
        }
        let stored = self
            .registry
            .put_cached_manifest(
                &self.route.local,
                &reference,
                head.media_type.as_deref(),
                content,
            )
            .await;
        match stored {
            Ok(_) => {
                self.checked_now();
                Ok(())
            }
            Err(RegistryError::DigestMismatch { expected, actual }) => Err(CacheError::Corrupt {
                url: format!("{}/v2/{remote}/manifests/{reference}", client.url()),
                expected,
                actual,
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn checked_now(&self) {
        let key = (self.route.local.clone(), self.reference.to_string());
        self.checked.insert(key, Instant::now());
    }

    /// An upstream error as the client should see it: a manifest the
    /// upstream does not have is unknown here too.
    fn not_found(&self, e: UpstreamError) -> CacheError {
        if e.is_outage() {
            return e.into();
        }
        RegistryError::ManifestUnknown(self.reference.to_string()).into()
    }
}
