//! The [`Registry`] and what its operations share; the operations live in
//! one module per resource: [`crate::blobs`], [`crate::uploads`],
//! [`crate::manifests`] and [`crate::listings`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_oci::{Digest, Reference, RepositoryName};
use std::sync::atomic::AtomicU64;

use berth_storage::{BlobStore, MetadataStore, StorageTotals};
use bytes::Bytes;
use quick_cache::sync::Cache;

use crate::error::{RegistryError, Result};
use crate::rules::StorageRules;

/// Knobs of the registry model.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Whether manifests, tags and blobs may be deleted.
    pub delete_enabled: bool,
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// An upload not written to for this long is discarded.
    pub upload_ttl: Duration,
    /// Memory kept for manifest documents recently served.
    pub manifest_cache_bytes: u64,
    /// Garbage collection leaves alone what is younger than this: a blob
    /// uploaded for a manifest not pushed yet, the entries of an index not
    /// pushed yet, an untagged push.
    pub gc_grace: Duration,
    /// Untagged manifests nothing reaches go once this old (a retention
    /// rule may say otherwise): long enough that a deployment pinned to a
    /// digest after its tag moved keeps pulling for a while.
    pub gc_untagged_after: Duration,
    /// Quotas, immutable tags and retention.
    pub rules: StorageRules,
    /// Whether each collection also lists every stored blob to remove bytes
    /// no metadata records (left by a crash between storing and recording):
    /// cheap on a local disk, a full bucket listing on S3, where it is off.
    pub sweep_unrecorded: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            delete_enabled: true,
            max_manifest_bytes: 4 * 1024 * 1024,
            upload_ttl: Duration::from_secs(24 * 3600),
            manifest_cache_bytes: 64 * 1024 * 1024,
            gc_grace: Duration::from_secs(3600),
            gc_untagged_after: Duration::from_secs(7 * 24 * 3600),
            rules: StorageRules::default(),
            sweep_unrecorded: true,
        }
    }
}

/// Manifests whose last recorded pull this process remembers.
const PULLS_REMEMBERED: usize = 100_000;

/// The registry: OCI Distribution operations over a blob store and a metadata store.
pub struct Registry {
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) metadata: Arc<dyn MetadataStore>,
    pub(crate) config: RegistryConfig,
    /// Manifest documents by digest. Content under a digest never changes, so
    /// this cache can never serve stale bytes; access is still checked in the
    /// metadata store on every request.
    pub(crate) manifests: Cache<Digest, Bytes, ManifestWeight>,
    /// When this process last recorded each manifest's pull.
    pub(crate) pulls: Cache<(String, Digest), Instant>,
    /// Names this process among others sharing the store (the collection
    /// lease, claims on uploads).
    pub(crate) instance: String,
    /// What this process's collections did, for metrics.
    pub(crate) gc_stats: GcStats,
}

/// What the collections run by this process did, counted since it started.
#[derive(Debug, Default)]
pub struct GcStats {
    pub runs: AtomicU64,
    pub failures: AtomicU64,
    pub freed_bytes: AtomicU64,
    pub deleted_manifests: AtomicU64,
    pub deleted_blobs: AtomicU64,
    /// When the last run ended, Unix milliseconds (0: none yet).
    pub last_run: AtomicU64,
    /// How long it took, milliseconds.
    pub last_duration: AtomicU64,
}

#[derive(Clone)]
pub(crate) struct ManifestWeight;

impl quick_cache::Weighter<Digest, Bytes> for ManifestWeight {
    fn weight(&self, _: &Digest, value: &Bytes) -> u64 {
        value.len() as u64 + 1
    }
}

/// Unix milliseconds now, as the metadata keeps time.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn parse_name(name: &str) -> Result<RepositoryName> {
    RepositoryName::parse(name).map_err(RegistryError::NameInvalid)
}

impl Registry {
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        metadata: Arc<dyn MetadataStore>,
        config: RegistryConfig,
    ) -> Self {
        // Estimated 4 KiB per manifest for sizing the cache's index.
        let items = (config.manifest_cache_bytes / 4096).max(16) as usize;
        Registry {
            blobs,
            metadata,
            manifests: Cache::with_weighter(items, config.manifest_cache_bytes, ManifestWeight),
            config,
            pulls: Cache::new(PULLS_REMEMBERED),
            instance: uuid::Uuid::new_v4().to_string(),
            gc_stats: GcStats::default(),
        }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// What this process's collections did.
    pub fn gc_stats(&self) -> &GcStats {
        &self.gc_stats
    }

    /// What the store holds, counted.
    pub async fn totals(&self) -> Result<StorageTotals> {
        Ok(self.metadata.totals().await?)
    }

    /// Whether the stores answer (readiness).
    pub async fn ping(&self) -> Result<()> {
        Ok(self.metadata.ping().await?)
    }

    pub(crate) fn check_delete(&self) -> Result<()> {
        if self.config.delete_enabled {
            Ok(())
        } else {
            Err(RegistryError::DeleteDisabled)
        }
    }
}

/// A reference to write under: an invalid one is refused.
pub(crate) fn parse_reference(reference: &str) -> Result<Reference> {
    Reference::parse(reference).map_err(|e| match e {
        berth_oci::NameError::InvalidDigest(d) => RegistryError::DigestInvalid(d),
        other => RegistryError::TagInvalid(other),
    })
}
