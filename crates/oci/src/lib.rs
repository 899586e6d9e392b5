//! berth-oci: the OCI vocabulary with no I/O.
//!
//! This crate owns what the OCI Distribution and Image specifications say about
//! the *shape* of things: content digests, repository names, tags, manifest
//! references, media types, the manifest documents themselves, and the
//! patterns rules use to name repositories and tags. Everything here
//! is a pure function of its input, so the grammar rules are tested once, here,
//! and every other crate (storage, registry, server, client, Kubernetes) shares
//! one definition of what a valid name or digest is.

mod digest;
mod manifest;
pub mod media_type;
mod name;
mod pattern;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use manifest::{Descriptor, Manifest, ManifestError, ManifestKind};
pub use name::{NameError, Reference, RepositoryName, Tag};
pub use pattern::{RepositoryPattern, TagPattern};
