//! Reading and deleting blobs.

use berth_oci::Digest;
use berth_storage::{ByteStream, StorageError};

use crate::error::{RegistryError, Result};
use crate::registry::{Registry, parse_name};

/// A byte range of a blob, end exclusive, within the blob.
pub type ByteRange = std::ops::Range<u64>;

/// A blob that a repository may read. Only [`Registry::blob`] makes one, so
/// holding one means the access check was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    digest: Digest,
    size: u64,
}

impl Blob {
    pub(crate) fn new(digest: Digest, size: u64) -> Self {
        Blob { digest, size }
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Registry {
    /// The blob `digest` if `repository` may read it.
    pub async fn blob(&self, repository: &str, digest: &str) -> Result<Blob> {
        let repository = parse_name(repository)?;
        let digest = Digest::parse(digest)?;
        match self
            .metadata
            .blob_in_repository(&repository, &digest)
            .await?
        {
            Some(size) => Ok(Blob::new(digest, size)),
            None => Err(RegistryError::BlobUnknown(digest)),
        }
    }

    /// Streams a blob, or the byte `range` of it (which must lie within it).
    pub async fn read_blob(&self, blob: &Blob, range: Option<ByteRange>) -> Result<ByteStream> {
        debug_assert!(range.as_ref().is_none_or(|r| r.end <= blob.size));
        Ok(self.blobs.read(&blob.digest, range).await?)
    }

    /// Takes a blob from what `repository` may read; its bytes are
    /// collected later if nothing else needs them. Refused while a manifest
    /// of the repository references the blob, unless `force` (an
    /// administrator removing, say, a layer that leaked a secret: the
    /// manifests that use it can no longer be pulled whole).
    pub async fn delete_blob(&self, repository: &str, digest: &str, force: bool) -> Result<()> {
        self.check_delete()?;
        let repository = parse_name(repository)?;
        let digest = Digest::parse(digest)?;
        match self.metadata.unlink_blob(&repository, &digest, force).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(RegistryError::BlobUnknown(digest)),
            Err(StorageError::BlobInUse { manifest }) => Err(RegistryError::BlobInUse {
                blob: digest,
                manifest,
            }),
            Err(e) => Err(e.into()),
        }
    }
}
