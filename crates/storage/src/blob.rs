use std::ops::Range;

use async_trait::async_trait;
use berth_oci::Digest;
use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::StorageResult;
use crate::metadata::Timestamp;

/// A stream of bytes in (an upload body) or out (a blob being served).
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// What committing an upload did with its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// They are now the blob.
    Published { size: u64 },
    /// The blob was stored already; the upload's verified bytes are kept
    /// until [`BlobStore::settle_upload`], in case the stored copy is being
    /// collected right now.
    AlreadyStored { size: u64 },
}

impl Committed {
    pub fn size(self) -> u64 {
        match self {
            Committed::Published { size } | Committed::AlreadyStored { size } => size,
        }
    }
}

/// A blob's bytes moved aside by [`BlobStore::stash`]: gone from reads until
/// restored, and not yet gone from the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stashed {
    pub digest: Digest,
    /// Where the store keeps it, for [`BlobStore::restore`] and
    /// [`BlobStore::purge`].
    pub key: String,
}

/// A stored blob, as listed for finding bytes no metadata records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub digest: Digest,
    pub size: u64,
    /// When its bytes were last written.
    pub modified: Timestamp,
}

/// Content-addressed blob storage with resumable uploads.
///
/// Implementations must guarantee that [`BlobStore::read`] never returns bytes of
/// a blob whose digest was not verified, whatever happens during an upload.
///
/// Removing bytes is a collector's two-step protocol, safe against a
/// concurrent upload of the same content in this or another process: the
/// collector forgets the blob in the metadata, [`stash`](BlobStore::stash)es
/// its bytes, asks the metadata again, and then
/// [`restore`](BlobStore::restore)s them if an upload recorded the blob
/// meanwhile, or [`purge`](BlobStore::purge)s them. An upload records the
/// blob in the metadata before it relies on stored bytes
/// ([`Committed::AlreadyStored`], [`BlobStore::settle_upload`]).
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The size of a stored blob, if it is stored.
    async fn stat(&self, digest: &Digest) -> StorageResult<Option<u64>>;

    /// Streams a blob, or the byte `range` of it. The range must lie within the blob.
    async fn read(&self, digest: &Digest, range: Option<Range<u64>>) -> StorageResult<ByteStream>;

    /// Reads a small blob (a manifest) whole.
    async fn read_all(&self, digest: &Digest) -> StorageResult<Bytes>;

    /// Stores small content (a manifest) whose digest the caller computed,
    /// unless it is stored already.
    async fn write_all(&self, digest: &Digest, content: Bytes) -> StorageResult<()>;

    /// Starts an empty upload named `id`.
    async fn create_upload(&self, id: &str) -> StorageResult<()>;

    /// How many bytes upload `id` holds.
    async fn upload_size(&self, id: &str) -> StorageResult<u64>;

    /// Appends `body` to upload `id`, which must hold exactly `offset` bytes.
    /// Returns the new size.
    ///
    /// With `expected`, the body is a chunk of that many bytes, kept whole or
    /// not at all: if it holds another number of bytes or fails midway, the
    /// upload is left at `offset` ([`crate::StorageError::ChunkLength`],
    /// [`crate::StorageError::BodyInterrupted`]). Without, it is a stream: if
    /// it fails midway, the bytes received so far stay in the upload, so the
    /// client can resume from the size it is told. When the disk is full (or
    /// would leave less than the store's reserve), it fails with
    /// [`crate::StorageError::Full`] and what was written is dropped.
    async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        expected: Option<u64>,
        body: ByteStream,
    ) -> StorageResult<u64>;

    /// Verifies that upload `id` has digest `expected` and makes it the blob
    /// `expected` durably, or keeps it aside when the blob is stored already.
    /// On a mismatch the upload is discarded and nothing becomes visible.
    async fn commit_upload(&self, id: &str, expected: &Digest) -> StorageResult<Committed>;

    /// After the metadata recorded a blob whose upload was
    /// [`Committed::AlreadyStored`]: drops the upload if the blob is still
    /// stored, or makes the upload the blob if a collector took it meanwhile.
    async fn settle_upload(&self, id: &str, digest: &Digest) -> StorageResult<()>;

    /// Discards upload `id`; discarding an absent upload is not an error.
    async fn delete_upload(&self, id: &str) -> StorageResult<()>;

    /// Moves blobs' bytes aside; returns those that had bytes. Many at a
    /// time, since a collection removes thousands.
    async fn stash(&self, digests: &[Digest]) -> StorageResult<Vec<Stashed>>;

    /// Puts stashed bytes back (or drops them where the blob was stored
    /// again meanwhile).
    async fn restore(&self, stashed: Vec<Stashed>) -> StorageResult<()>;

    /// Removes stashed bytes for good.
    async fn purge(&self, stashed: Vec<Stashed>) -> StorageResult<()>;

    /// What is stashed now: left by a collector that stopped between its two
    /// steps, to be settled by the next one.
    async fn stashed(&self) -> StorageResult<Vec<Stashed>>;

    /// Up to `limit` stored blobs after `after`, in digest order.
    async fn list(&self, after: Option<&Digest>, limit: usize) -> StorageResult<Vec<StoredBlob>>;
}
