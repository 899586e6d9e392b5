use async_trait::async_trait;
use berth_oci::{Digest, RepositoryName, Tag};

use crate::StorageResult;

/// A manifest as stored in one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A manifest being pushed, with what it references.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// The artifact type a referrers list shows for it.
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    /// The manifest's `annotations`, as a JSON object.
    pub annotations: Option<String>,
    /// Blobs that must be readable in the repository.
    pub blobs: Vec<Digest>,
    /// Index entries: manifests (or, as BuildKit's cache writes them, blobs)
    /// that must already be in the repository.
    pub children: Vec<Digest>,
}

/// One entry of a referrers list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    /// The referrer's `annotations`, as a JSON object.
    pub annotations: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: String,
    pub repository: String,
    /// The subject that opened it (empty for anonymous); `None` for sessions
    /// recorded before sessions had owners.
    pub owner: Option<String>,
    /// Unix seconds of the last write.
    pub updated_at: i64,
}

/// What unlinking a blob from a repository did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobUnlink {
    pub was_linked: bool,
    /// Nothing uses the blob any more: its bytes may be removed.
    pub orphaned: bool,
}

/// What deleting a manifest from a repository did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestDeletion {
    pub found: bool,
    /// No repository holds the manifest any more: its bytes may be removed.
    pub orphaned: bool,
}

/// Registry metadata. Every method is one atomic step: a crash between two
/// calls leaves the store consistent, at worst with bytes nothing refers to.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Checks the store answers (for readiness probes).
    async fn ping(&self) -> StorageResult<()>;

    /// The size of `digest` if `repository` may read it.
    async fn blob_in_repository(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<Option<u64>>;

    /// Records a verified blob and lets `repository` read it.
    async fn link_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) -> StorageResult<()>;

    /// Lets `to` read `digest` if `from` may; returns its size when it did.
    async fn mount_blob(
        &self,
        from: &RepositoryName,
        to: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<Option<u64>>;

    async fn unlink_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<BlobUnlink>;

    async fn resolve_tag(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
    ) -> StorageResult<Option<ManifestRecord>>;

    async fn manifest(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<Option<ManifestRecord>>;

    /// Records a manifest (and points `tag` at it) if everything it references
    /// is in the repository; otherwise fails with
    /// [`crate::StorageError::MissingReferences`] and records nothing.
    async fn put_manifest(
        &self,
        repository: &RepositoryName,
        manifest: NewManifest,
        tag: Option<&Tag>,
    ) -> StorageResult<()>;

    /// Deletes a manifest and the tags pointing at it.
    async fn delete_manifest(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<ManifestDeletion>;

    /// Deletes a tag, leaving its manifest. Returns whether it existed.
    async fn delete_tag(&self, repository: &RepositoryName, tag: &Tag) -> StorageResult<bool>;

    /// Up to `limit` tags after `after`, in byte order; `None` if the repository
    /// does not exist.
    async fn tags(
        &self,
        repository: &RepositoryName,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Option<Vec<String>>>;

    /// Up to `limit` repository names after `after`, in byte order.
    async fn repositories(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<String>>;

    /// Manifests of `repository` whose subject is `subject` and, when given,
    /// whose artifact type is `artifact_type`: at most `limit`, in digest
    /// order, after the digest `after`.
    async fn referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
        after: Option<&Digest>,
        limit: usize,
    ) -> StorageResult<Vec<ReferrerRecord>>;

    /// Records an upload session of `owner` (a subject name, empty for
    /// anonymous).
    async fn create_upload(
        &self,
        id: &str,
        repository: &RepositoryName,
        owner: &str,
        now: i64,
    ) -> StorageResult<()>;

    async fn upload(&self, id: &str) -> StorageResult<Option<UploadRecord>>;

    async fn touch_upload(&self, id: &str, now: i64) -> StorageResult<()>;

    async fn delete_upload(&self, id: &str) -> StorageResult<()>;

    /// Up to `limit` uploads last written before `before`, in id order after
    /// `after`.
    async fn stale_uploads(
        &self,
        before: i64,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<String>>;

    /// Deletes the upload if it was last written before `before`; returns
    /// whether it did.
    async fn delete_stale_upload(&self, id: &str, before: i64) -> StorageResult<bool>;
}
