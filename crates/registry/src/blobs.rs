//! Reading and deleting blobs.

use berth_oci::Digest;
use berth_storage::ByteStream;

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

    pub async fn delete_blob(&self, repository: &str, digest: &str) -> Result<()> {
        self.check_delete()?;
        let repository = parse_name(repository)?;
        let digest = Digest::parse(digest)?;
        let _guard = self.digest_locks.lock(digest.as_str()).await;
        let unlink = self.metadata.unlink_blob(&repository, &digest).await?;
        if !unlink.was_linked {
            return Err(RegistryError::BlobUnknown(digest));
        }
        if unlink.orphaned {
            self.blobs.delete(&digest).await?;
        }
        Ok(())
    }
}
