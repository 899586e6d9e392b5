//! Reading and deleting blobs.

use std::path::Path;

use berth_oci::Digest;
use berth_storage::{ByteStream, RoomClaim, StorageError};

use crate::error::{RegistryError, Result};
use crate::registry::{Registry, now, parse_name};

/// A byte range of a blob, end exclusive, within the blob.
pub type ByteRange = std::ops::Range<u64>;

/// A blob that a repository may read: made only by the registry, once it
/// found (or made) the blob readable there, so holding one means the
/// access check was done.
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

    /// Whether the blob store holds `digest`'s bytes. A blob is recorded
    /// before its bytes are in place, so for a moment another berth process
    /// on the same stores may see the record alone.
    pub async fn blob_stored(&self, digest: &Digest) -> Result<bool> {
        Ok(self.blobs.stat(digest).await?.is_some())
    }

    /// Stores a local file whose bytes the caller verified have `digest`
    /// (a pull-through cache's download) as that blob of `repository`:
    /// recorded first, the file made the blob second, as an upload is.
    pub async fn store_verified_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        file: &Path,
    ) -> Result<Blob> {
        let repository = parse_name(repository)?;
        let quota = self.config.rules.quota(repository.as_str());
        self.metadata
            .link_blob(&repository, digest, size, now(), quota)
            .await?;
        if let Err(e) = self.blobs.import(digest, file).await {
            // A record without bytes must not stay.
            if let Err(undo) = self.metadata.unlink_blob(&repository, digest, true).await {
                tracing::error!(%digest, error = %undo, "a blob is recorded without its bytes");
            }
            return Err(e.into());
        }
        Ok(Blob::new(digest.clone(), size))
    }

    /// Claims room for `bytes` more in the blob store beside its reserve,
    /// or fails with [`RegistryError::StorageFull`].
    pub async fn claim_room(&self, bytes: u64) -> Result<RoomClaim> {
        Ok(self.blobs.claim_room(bytes).await?)
    }

    /// Whether a repository under `prefix/` may read `digest`.
    pub async fn blob_linked_under(&self, prefix: &str, digest: &Digest) -> Result<bool> {
        Ok(self.metadata.blob_linked_under(prefix, digest).await?)
    }

    /// Lets `repository` read `digest` if its bytes are stored already (for
    /// another repository): a pull-through cache then need not download
    /// them again once the upstream confirmed the repository has them.
    pub async fn link_stored_blob(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<Blob>> {
        let repository = parse_name(repository)?;
        let Some(size) = self.blobs.stat(digest).await? else {
            return Ok(None);
        };
        let quota = self.config.rules.quota(repository.as_str());
        self.metadata
            .link_blob(&repository, digest, size, now(), quota)
            .await?;
        // A collector moves bytes aside before it asks the metadata a last
        // time: bytes still in place after the link are kept for it; bytes
        // gone may be purged, so the link must not stay.
        if self.blobs.stat(digest).await?.is_none() {
            self.metadata.unlink_blob(&repository, digest, true).await?;
            return Ok(None);
        }
        Ok(Some(Blob::new(digest.clone(), size)))
    }

    /// Streams a blob, or the byte `range` of it (which must lie within it).
    /// Where the client may fetch `blob` from the blob store itself, when
    /// the store is set to hand out such URLs.
    pub async fn blob_download_url(&self, blob: &Blob) -> Result<Option<String>> {
        Ok(self.blobs.download_url(&blob.digest).await?)
    }

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
