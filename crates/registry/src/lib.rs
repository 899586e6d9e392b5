//! berth-registry: what a registry does, independent of HTTP.
//!
//! [`Registry`] implements the operations of the OCI Distribution Specification
//! v1.1 (blob reads and uploads, cross-repository mounts, manifest pushes with
//! their reference checks, tags, catalog, referrers, deletion) on top of any
//! [`berth_storage::BlobStore`] and [`berth_storage::MetadataStore`], one
//! module per resource, and what keeps storage in bounds: online garbage
//! collection ([`Registry::collect`]), retention, quotas, immutable tags and
//! the size of a pull-through cache ([`StorageRules`]). Its inputs are typed
//! (names, digests, byte ranges, chunk ranges: the HTTP layer parses
//! headers), and its errors ([`RegistryError`]) say what went wrong in
//! registry terms; the HTTP layer maps each to the spec's status code and
//! error code exactly once.

mod blobs;
mod claims;
mod error;
mod gc;
mod listings;
mod manifests;
mod page;
mod registry;
mod repositories;
mod rules;
mod uploads;

pub use berth_storage::{ByteStream, Quota, Received, RepositoryUsage, RoomClaim, StorageTotals};
pub use blobs::{Blob, ByteRange};
pub use error::RegistryError;
pub use gc::{BlobRef, GcOptions, GcPhase, GcProgress, GcReport, ManifestRef, TagRef};
pub use listings::Referrers;
pub use manifests::{PushedManifest, StoredManifest};
pub use page::Page;
pub use registry::{GcStats, Registry, RegistryConfig};
pub use repositories::{QuotaUsage, RepositoryInfo};
pub use rules::{CacheRule, ImmutableRule, RetentionRule, StorageRules};
pub use uploads::{Chunk, ChunkRange, Mount, UploadRef, UploadStatus};
