use std::ops::Range;

use async_trait::async_trait;
use berth_oci::Digest;
use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::StorageResult;

/// A stream of bytes in (an upload body) or out (a blob being served).
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Content-addressed blob storage with resumable uploads.
///
/// Implementations must guarantee that [`BlobStore::read`] never returns bytes of
/// a blob whose digest was not verified, whatever happens during an upload.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The size of a stored blob, if it is stored.
    async fn stat(&self, digest: &Digest) -> StorageResult<Option<u64>>;

    /// Streams a blob, or the byte `range` of it. The range must lie within the blob.
    async fn read(&self, digest: &Digest, range: Option<Range<u64>>) -> StorageResult<ByteStream>;

    /// Reads a small blob (a manifest) whole.
    async fn read_all(&self, digest: &Digest) -> StorageResult<Bytes>;

    /// Stores small content (a manifest) whose digest the caller computed.
    async fn write_all(&self, digest: &Digest, content: Bytes) -> StorageResult<()>;

    /// Removes a blob; removing an absent blob is not an error.
    async fn delete(&self, digest: &Digest) -> StorageResult<()>;

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
    /// client can resume from the size it is told.
    async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        expected: Option<u64>,
        body: ByteStream,
    ) -> StorageResult<u64>;

    /// Verifies that upload `id` has digest `expected`, then makes it the blob
    /// `expected` durably and removes the upload. Returns the blob's size. On a
    /// mismatch the upload is discarded and nothing becomes visible.
    async fn commit_upload(&self, id: &str, expected: &Digest) -> StorageResult<u64>;

    /// Discards upload `id`; discarding an absent upload is not an error.
    async fn delete_upload(&self, id: &str) -> StorageResult<()>;
}
