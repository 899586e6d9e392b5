//! berth-storage: where berth keeps things.
//!
//! Two independent layers, each behind a trait so another backend can replace it
//! without touching the registry logic or the HTTP code:
//!
//! * [`BlobStore`]: content-addressed bytes (layers, configs, manifest documents),
//!   stored once whatever the number of repositories using them, plus the
//!   temporary files of uploads in progress. [`FsBlobStore`] keeps them on local
//!   disk and makes a blob visible only once its digest is verified and its bytes
//!   are durable; [`S3BlobStore`] keeps them in an S3-compatible bucket that
//!   several berth processes share.
//! * [`MetadataStore`]: repositories, tags, manifests, which repository may read
//!   which blob, the subject → referrer index and upload sessions.
//!   [`SqliteMetadataStore`] is the embedded default;
//!   [`PostgresMetadataStore`] lets several berth processes share one
//!   database. Both run the same SQL.

mod blob;
#[cfg(test)]
mod blob_suite;
mod error;
mod fs;
mod lookup_cache;
mod metadata;
mod s3;
mod sql;

pub use blob::{BlobStore, ByteStream, RoomClaim, Stashed, StoredBlob};
pub use error::{DatabaseError, DatabaseErrorKind, Received, StorageError, StorageResult};
pub use fs::FsBlobStore;
pub use metadata::{
    BlobSnapshot, GcSnapshot, ImmutableTags, LinkSnapshot, ManifestRecord, ManifestSnapshot,
    MetadataStore, NewManifest, Quota, ReferrerRecord, RepositorySnapshot, RepositoryUsage,
    StorageTotals, TagSnapshot, Timestamp, UploadRecord, WriteRules,
};
pub use s3::{S3BlobStore, S3Options};
pub use sql::{PostgresMetadataStore, PostgresOptions, SqliteMetadataStore};
