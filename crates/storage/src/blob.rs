use std::ops::Range;
use std::path::Path;

use async_trait::async_trait;
use berth_oci::Digest;
use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::StorageResult;
use crate::metadata::Timestamp;

/// A stream of bytes in (an upload body) or out (a blob being served).
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// A blob's bytes moved aside by [`BlobStore::stash`]: gone from reads until
/// restored, and not yet gone from the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stashed {
    pub digest: Digest,
    /// When it was stashed.
    pub at: Timestamp,
    /// Where the store keeps it, for [`BlobStore::restore`] and
    /// [`BlobStore::purge`].
    pub key: String,
}

impl Stashed {
    /// `digest`'s bytes stashed at `at`, under a key naming both
    /// (`<algorithm>-<hex>-<millis>-<unique>`), so that what is stashed is
    /// known from a listing alone.
    pub(crate) fn new(digest: &Digest, at: Timestamp, unique: &str) -> Self {
        Stashed {
            digest: digest.clone(),
            at,
            key: format!(
                "{}-{}-{at}-{unique}",
                digest.algorithm().name(),
                digest.encoded()
            ),
        }
    }

    /// The stash `key` names, if it names one.
    pub(crate) fn parse(key: String) -> Option<Self> {
        let mut parts = key.splitn(4, '-');
        let (algorithm, hex, at) = (parts.next()?, parts.next()?, parts.next()?);
        let digest = Digest::parse(&format!("{algorithm}:{hex}")).ok()?;
        let at = at.parse().ok()?;
        Some(Stashed { digest, at, key })
    }
}

/// How an upload's request body ended.
pub(crate) enum Ending {
    Complete,
    /// The body failed (the client vanished, the body timed out).
    Interrupted(std::io::Error),
    /// A chunk sent more bytes than it declared.
    Overflow,
}

/// Now, in Unix milliseconds.
pub(crate) fn now_millis() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Timestamp)
}

/// Room claimed in a blob store by a writer outside it; given back when
/// dropped.
pub struct RoomClaim(#[allow(dead_code)] Option<Box<dyn std::any::Any + Send + Sync>>);

impl RoomClaim {
    /// A claim held by `guard` until it is dropped.
    pub fn held(guard: impl std::any::Any + Send + Sync) -> Self {
        RoomClaim(Some(Box::new(guard)))
    }

    /// Nothing to hold: the store does not count room.
    pub fn none() -> Self {
        RoomClaim(None)
    }
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
/// blob in the metadata *before* its bytes become the blob
/// ([`BlobStore::commit_upload`], then [`BlobStore::settle_upload`]), so
/// whoever removes unrecorded bytes never removes bytes a record relies on.
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

    /// Verifies that upload `id` has digest `expected` and makes its bytes
    /// durable; returns its size. It is not the blob yet: that is
    /// [`BlobStore::settle_upload`], once the metadata records it. On a
    /// mismatch the upload is discarded.
    async fn commit_upload(&self, id: &str, expected: &Digest) -> StorageResult<u64>;

    /// After the metadata recorded the blob of a committed upload: makes the
    /// upload the blob, or drops it if the blob's bytes are stored already
    /// (the same digest, the same bytes).
    async fn settle_upload(&self, id: &str, digest: &Digest) -> StorageResult<()>;

    /// Makes `file`, a local file whose bytes the caller verified have
    /// digest `digest`, that blob's bytes, once the metadata recorded the
    /// blob (as [`BlobStore::settle_upload`] does for an upload): moved
    /// where the store can, so a pull-through cache's download is not
    /// written twice, and durable. The file is gone afterwards.
    async fn import(&self, digest: &Digest, file: &Path) -> StorageResult<()>;

    /// Claims room for `bytes` more beside the store's reserve (for a
    /// download [`BlobStore::import`] will take), or fails with
    /// [`crate::StorageError::Full`]. Other writers see the room taken until
    /// the claim is dropped.
    async fn claim_room(&self, bytes: u64) -> StorageResult<RoomClaim>;

    /// Discards upload `id`; discarding an absent upload is not an error.
    async fn delete_upload(&self, id: &str) -> StorageResult<()>;

    /// Moves blobs' bytes aside; returns those that had bytes. Many at a
    /// time, since a collection removes thousands.
    async fn stash(&self, digests: &[Digest]) -> StorageResult<Vec<Stashed>>;

    /// Puts stashed bytes back (or drops them where the blob was stored
    /// again meanwhile). One another remover settled already is skipped.
    async fn restore(&self, stashed: Vec<Stashed>) -> StorageResult<()>;

    /// Removes stashed bytes for good. One another remover settled already
    /// is skipped.
    async fn purge(&self, stashed: Vec<Stashed>) -> StorageResult<()>;

    /// What is stashed now: by a remover still at work (a moment ago), or left
    /// by one that stopped between its two steps, to be settled by the next.
    async fn stashed(&self) -> StorageResult<Vec<Stashed>>;

    /// Where a client may fetch `digest`'s bytes itself, without berth in
    /// between (a presigned URL), if the store offers that and is set to.
    async fn download_url(&self, digest: &Digest) -> StorageResult<Option<String>>;

    /// Up to `limit` stored blobs after `after`, in digest order.
    async fn list(&self, after: Option<&Digest>, limit: usize) -> StorageResult<Vec<StoredBlob>>;
}
