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
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The first segment of its cached repositories' names.
    prefix: String,
    /// Until when it is left alone after a failure.
    quiet: Mutex<Option<Quiet>>,
}

struct Quiet {
    until: Instant,
    /// Set when the upstream throttled berth: what is not cached is then
    /// refused with the time left, without asking.
    throttled_at: Option<String>,
}

impl UpstreamState {
    /// Whether it is being left alone after a failure.
    fn quiet(&self) -> bool {
        let quiet = self.quiet.lock().expect("not poisoned");
        quiet.as_ref().is_some_and(|q| Instant::now() < q.until)
    }

    /// The 429 to answer, with the wait that remains, while it throttles
    /// berth.
    fn throttled(&self) -> Result<()> {
        let quiet = self.quiet.lock().expect("not poisoned");
        let Some(Quiet {
            until,
            throttled_at: Some(url),
        }) = quiet.as_ref()
        else {
            return Ok(());
        };
        match until.checked_duration_since(Instant::now()) {
            Some(left) => Err(UpstreamError::RateLimited {
                url: url.clone(),
                retry_after: Some(left),
            }
            .into()),
            None => Ok(()),
        }
    }

    /// Leaves the upstream alone for `backoff`, or as long as its
    /// `Retry-After` asks, when `error` is its failure.
    fn note(&self, error: &CacheError, backoff: Duration) {
        if !error.is_upstream_failure() {
            return;
        }
        let (wait, throttled_at) = match error {
            CacheError::Upstream(UpstreamError::RateLimited { url, retry_after }) => (
                backoff.max(retry_after.unwrap_or_default()),
                Some(url.clone()),
            ),
            _ => (backoff, None),
        };
        *self.quiet.lock().expect("not poisoned") = Some(Quiet {
            until: Instant::now() + wait,
            throttled_at,
        });
    }
}

/// An upstream request within `timeout`.
pub(crate) async fn within<T>(
    timeout: Duration,
    url: &str,
    request: impl Future<Output = std::result::Result<T, UpstreamError>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, request).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(UpstreamError::Unavailable {
            url: url.to_owned(),
            detail: format!("no answer within {timeout:?}"),
        }
        .into()),
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

/// What the cache did since this process started, for metrics.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Manifest requests answered from the cache without asking upstream.
    pub manifest_hits: AtomicU64,
    /// Manifest requests sent upstream (fetches and tag checks), one for
    /// all the clients waiting on it.
    pub manifest_fetches: AtomicU64,
    /// Blob requests answered from the store.
    pub blob_hits: AtomicU64,
    /// Blob requests served from a download (started or joined).
    pub blob_downloads: AtomicU64,
    /// Requests served the cached copy because the upstream failed.
    pub stale: AtomicU64,
    /// Blob bytes received from upstreams.
    pub upstream_bytes: Arc<AtomicU64>,
}

/// Tags whose last check this process remembers.
const CHECKS_REMEMBERED: usize = 100_000;

/// The pull-through cache over a registry.
pub struct PullThroughCache {
    registry: Arc<Registry>,
    rules: Vec<RouteRule>,
    upstreams: Vec<Arc<UpstreamState>>,
    fills: Arc<Fills>,
    manifests: Arc<Flights<(String, String)>>,
    /// When each cached tag was last found current upstream.
    checked: Arc<quick_cache::sync::Cache<(String, String), Instant>>,
    settings: CacheSettings,
    stats: Arc<CacheStats>,
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
                    max_manifest_bytes: registry.config().max_manifest_bytes,
                })
                .map_err(|source| CacheSetupError::Client {
                    prefix: u.rule.prefix.clone(),
                    source,
                })?;
                Ok(Arc::new(UpstreamState {
                    client: Arc::new(client),
                    prefix: u.rule.prefix.clone(),
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
            stats: Arc::default(),
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

    /// What the cache did since start.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
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
            if matches!(parsed, Reference::Digest(_)) || fresh || upstream.quiet() {
                self.stats.manifest_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        } else {
            upstream.throttled()?;
        }
        let fetch = ManifestFetch {
            registry: self.registry.clone(),
            upstream: upstream.clone(),
            checked: self.checked.clone(),
            route: route.clone(),
            reference: parsed,
            cached: cached.clone(),
            timeout: self.settings.timeout,
            backoff: self.settings.outage_backoff,
            stats: self.stats.clone(),
        };
        match self
            .manifests
            .run(key, async move { fetch.run().await })
            .await
        {
            Err(e) if e.is_upstream_failure() && cached.is_some() => {
                self.stats.stale.fetch_add(1, Ordering::Relaxed);
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
        let upstream = &self.upstreams[route.upstream];
        let arriving = |(fill, size)| {
            self.stats.blob_downloads.fetch_add(1, Ordering::Relaxed);
            CachedBlob::Arriving(ArrivingBlob {
                fill,
                digest: digest.clone(),
                size,
            })
        };
        // A download under way first: its blob may be recorded already and
        // its bytes not yet in place.
        if let Some(joined) = self.fills.joined(&route.local, &digest).await {
            return joined
                .map(arriving)
                .map_err(|e| self.blob_error(upstream, e, &digest));
        }
        match self.registry.blob(&route.local, digest.as_str()).await {
            // Recorded with its bytes in place. A record alone is what another
            // berth process on the same stores leaves while it moves a
            // download into place (or a file lost behind berth's back): a
            // miss here, downloaded again.
            Ok(blob) if self.registry.blob_stored(&digest).await? => {
                self.stats.blob_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(CachedBlob::Stored(blob));
            }
            Ok(_) | Err(RegistryError::BlobUnknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        upstream.throttled()?;
        // Downloaded for another repository of this upstream: linked here
        // once the upstream confirms this repository has it. Bytes any
        // other repository holds are never shared so.
        if self
            .registry
            .blob_linked_under(&upstream.prefix, &digest)
            .await?
        {
            let head = upstream.client.head_blob(&route.remote, digest.as_str());
            within(self.settings.timeout, upstream.client.url(), head)
                .await
                .map_err(|e| self.blob_error(upstream, e, &digest))?;
            if let Some(blob) = self
                .registry
                .link_stored_blob(&route.local, &digest)
                .await?
            {
                return Ok(CachedBlob::Stored(blob));
            }
        }
        let request = FillRequest {
            upstream: upstream.client.clone(),
            remote: route.remote.clone(),
            local: route.local.clone(),
            digest: digest.clone(),
            timeout: self.settings.timeout,
            received: self.stats.upstream_bytes.clone(),
        };
        self.fills
            .fill(&self.registry, request)
            .await
            .map(arriving)
            .map_err(|e| self.blob_error(upstream, e, &digest))
    }

    /// A blob's size (`HEAD`): stored, being downloaded, or as the upstream
    /// says.
    pub async fn blob_size(&self, route: &CacheRoute, digest: &str) -> Result<(Digest, u64)> {
        let digest = Digest::parse(digest).map_err(RegistryError::from)?;
        let upstream = &self.upstreams[route.upstream];
        if let Some(joined) = self.fills.joined(&route.local, &digest).await {
            return joined
                .map(|(_, size)| (digest.clone(), size))
                .map_err(|e| self.blob_error(upstream, e, &digest));
        }
        match self.registry.blob(&route.local, digest.as_str()).await {
            Ok(blob) => return Ok((digest, blob.size())),
            Err(RegistryError::BlobUnknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        upstream.throttled()?;
        let head = upstream.client.head_blob(&route.remote, digest.as_str());
        let size = within(self.settings.timeout, upstream.client.url(), head)
            .await
            .map_err(|e| self.blob_error(upstream, e, &digest))?;
        Ok((digest, size))
    }

    /// A blob request's failure as the client sees it: a blob the upstream
    /// does not have (or will not give) is unknown here too; the upstream's
    /// failure leaves it alone for a while.
    fn blob_error(&self, upstream: &UpstreamState, e: CacheError, digest: &Digest) -> CacheError {
        if let CacheError::Upstream(u) = &e
            && !u.is_failure()
        {
            return RegistryError::BlobUnknown(digest.clone()).into();
        }
        upstream.note(&e, self.settings.outage_backoff);
        e
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
    timeout: Duration,
    backoff: Duration,
    stats: Arc<CacheStats>,
}

impl ManifestFetch {
    async fn run(&self) -> Result<()> {
        self.stats.manifest_fetches.fetch_add(1, Ordering::Relaxed);
        let result = self.fetch().await;
        match (&result, &self.reference) {
            (Err(e), _) if e.is_upstream_failure() => self.upstream.note(e, self.backoff),
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
        let url = format!("{}/v2/{remote}/manifests/{reference}", client.url());
        if let (Reference::Tag(_), Some(cached)) = (&self.reference, &self.cached) {
            let head = within(self.timeout, &url, client.head_manifest(remote, &reference))
                .await
                .map_err(|e| self.not_found(e))?;
            if head.digest.as_deref() == Some(cached.as_str()) {
                self.checked_now();
                return Ok(());
            }
        }
        let (head, content) = within(self.timeout, &url, client.get_manifest(remote, &reference))
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
                    url,
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
                url,
                expected,
                actual,
            }),
            // What the upstream served, not what the client asked, is the
            // problem: the operator learns of it in the log.
            Err(
                e @ (RegistryError::ManifestInvalid(_)
                | RegistryError::ManifestTooLarge { .. }
                | RegistryError::QuotaExceeded { .. }
                | RegistryError::TagImmutable { .. }),
            ) => {
                tracing::warn!(repository = %self.route.local, %url, error = %e, "cannot cache a manifest");
                Err(CacheError::Unstorable {
                    url,
                    reason: e.to_string(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    fn checked_now(&self) {
        let key = (self.route.local.clone(), self.reference.to_string());
        self.checked.insert(key, Instant::now());
    }

    /// An upstream error as the client should see it: a manifest the
    /// upstream does not have (or will not give) is unknown here too.
    fn not_found(&self, e: CacheError) -> CacheError {
        match e {
            CacheError::Upstream(u) if !u.is_failure() => {
                RegistryError::ManifestUnknown(format!("{} ({u})", self.reference)).into()
            }
            other => other,
        }
    }
}
