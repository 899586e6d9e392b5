//! berth-registry: what a registry does, independent of HTTP.
//!
//! [`Registry`] implements the operations of the OCI Distribution Specification
//! v1.1 (blob reads and uploads, cross-repository mounts, manifest pushes with
//! their reference checks, tags, catalog, referrers, deletion) on top of any
//! [`berth_storage::BlobStore`] and [`berth_storage::MetadataStore`]. Its errors
//! ([`RegistryError`]) say what went wrong in registry terms; the HTTP layer maps
//! each to the spec's status code and error code exactly once.

mod error;
mod locks;
mod page;
mod range;
mod registry;

pub use berth_storage::ByteStream;
pub use error::RegistryError;
pub use page::Page;
pub use range::{ByteRange, RangeRequest};
pub use registry::{
    BlobRead, Mount, PushedManifest, Referrers, Registry, RegistryConfig, StoredManifest,
    UploadStatus,
};
