use async_trait::async_trait;
use berth_oci::{Digest, RepositoryName, RepositoryPattern, Tag, TagPattern};

use crate::StorageResult;

/// Unix milliseconds, as every timestamp in the metadata is kept: fine
/// enough to order tags pushed in one second.
pub type Timestamp = i64;

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
    /// When it was last written.
    pub updated_at: Timestamp,
}

/// A byte limit on the repositories a pattern matches, together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub repositories: RepositoryPattern,
    pub limit: u64,
    /// Repositories a more specific quota covers: they count there, not
    /// here (a `team-a/big` quota carved out of `team-a/**`).
    pub excluded: Vec<RepositoryPattern>,
}

impl Quota {
    /// Whether `repository`'s bytes count against this quota.
    pub fn counts(&self, repository: &str) -> bool {
        self.repositories.matches(repository)
            && !self.excluded.iter().any(|e| e.matches(repository))
    }
}

/// Tags of a repository that may never be moved or deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImmutableTags(pub Vec<TagPattern>);

impl ImmutableTags {
    /// The pattern that makes `tag` immutable, if one does.
    pub fn pattern_for(&self, tag: &str) -> Option<&TagPattern> {
        self.0.iter().find(|p| p.matches(tag))
    }
}

/// The rules a write to one repository must keep.
#[derive(Debug, Clone, Default)]
pub struct WriteRules {
    /// The quota the repository counts against, if any.
    pub quota: Option<Quota>,
    pub immutable: ImmutableTags,
    /// The manifest's blobs and index entries may come later: a
    /// pull-through cache stores a manifest as the upstream serves it, and
    /// what it references when that is first pulled.
    pub references_follow: bool,
}

/// What a repository holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryUsage {
    pub name: String,
    /// The sizes of its blobs and manifests; content shared with another
    /// repository counts in each.
    pub bytes: u64,
    pub manifests: u64,
    pub tags: u64,
}

/// What the store holds, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageTotals {
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    /// Stored blobs and manifest documents, each once.
    pub blobs: u64,
    pub blob_bytes: u64,
}

/// Everything garbage collection decides from, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct GcSnapshot {
    pub repositories: Vec<RepositorySnapshot>,
    /// Every stored blob and manifest document.
    pub blobs: Vec<BlobSnapshot>,
}

#[derive(Debug, Clone, Default)]
pub struct RepositorySnapshot {
    pub name: String,
    pub manifests: Vec<ManifestSnapshot>,
    pub tags: Vec<TagSnapshot>,
    /// The blobs it may read (uploaded or mounted there).
    pub links: Vec<LinkSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSnapshot {
    pub digest: Digest,
    pub size: u64,
    pub subject: Option<Digest>,
    /// Blobs and child manifests it needs.
    pub references: Vec<Digest>,
    /// When it was last pushed or made reachable (tagged, listed by an index).
    pub touched_at: Timestamp,
    pub pulled_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSnapshot {
    pub name: String,
    pub digest: Digest,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSnapshot {
    pub digest: Digest,
    pub size: u64,
    /// When it was linked or last referenced by a pushed manifest.
    pub linked_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobSnapshot {
    pub digest: Digest,
    pub size: u64,
    pub touched_at: Timestamp,
}

/// Registry metadata. Every method is one atomic step: a crash between two
/// calls leaves the store consistent, at worst with bytes nothing refers to.
///
/// Nothing here relies on the caller holding a lock: several processes may
/// share one store. Garbage collection stays correct through timestamps and
/// conditional deletes: every write that makes something needed (a link a
/// manifest references, a manifest a tag or index names) refreshes its
/// timestamp in the same transaction, and a collector deletes only what is
/// still unreferenced and was not refreshed since its cutoff.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Checks the store answers (for readiness probes).
    async fn ping(&self) -> StorageResult<()>;

    // ----- blobs --------------------------------------------------------

    /// The size of `digest` if `repository` may read it.
    async fn blob_in_repository(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<Option<u64>>;

    /// Whether a repository whose name starts with `prefix/` may read
    /// `digest` (a pull-through cache shares what it downloaded for one of
    /// its repositories with another only so).
    async fn blob_linked_under(&self, prefix: &str, digest: &Digest) -> StorageResult<bool>;

    /// Whether anything records `digest` (a blob or a manifest document):
    /// whether the blob store must keep its bytes.
    async fn blob_recorded(&self, digest: &Digest) -> StorageResult<bool>;

    /// Records a verified blob and lets `repository` read it, within
    /// `quota` ([`crate::StorageError::QuotaExceeded`] otherwise).
    async fn link_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        size: u64,
        now: Timestamp,
        quota: Option<Quota>,
    ) -> StorageResult<()>;

    /// Lets `to` read `digest` if `from` may, within `quota`; returns its
    /// size when it did.
    async fn mount_blob(
        &self,
        from: &RepositoryName,
        to: &RepositoryName,
        digest: &Digest,
        now: Timestamp,
        quota: Option<Quota>,
    ) -> StorageResult<Option<u64>>;

    /// Takes `digest` from what `repository` may read; returns whether it
    /// could. Refused with [`crate::StorageError::BlobInUse`] while a
    /// manifest of the repository references it, unless `force`.
    async fn unlink_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        force: bool,
    ) -> StorageResult<bool>;

    // ----- manifests and tags --------------------------------------------

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
    /// is in the repository, `tag` is not an immutable tag being moved, and
    /// the quota holds; otherwise fails and records nothing. Refreshes what
    /// the manifest makes reachable (the links and children it references,
    /// its referrers), so no concurrent collection takes them.
    async fn put_manifest(
        &self,
        repository: &RepositoryName,
        manifest: NewManifest,
        tag: Option<&Tag>,
        now: Timestamp,
        rules: WriteRules,
    ) -> StorageResult<()>;

    /// Deletes a manifest and the tags pointing at it, unless one of those
    /// is immutable. Returns whether it existed.
    async fn delete_manifest(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        immutable: ImmutableTags,
    ) -> StorageResult<bool>;

    /// Deletes a tag, leaving its manifest, unless it is immutable. Returns
    /// whether it existed.
    async fn delete_tag(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
        immutable: ImmutableTags,
    ) -> StorageResult<bool>;

    /// Notes that a manifest was pulled (for retention rules).
    async fn record_pull(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        now: Timestamp,
    ) -> StorageResult<()>;

    /// Deletes a repository with its tags, manifests, links and uploads,
    /// unless it has an immutable tag; returns the ids of the uploads it had
    /// (so their data can go) or `None` if it did not exist.
    async fn delete_repository(
        &self,
        repository: &RepositoryName,
        immutable: ImmutableTags,
    ) -> StorageResult<Option<Vec<String>>>;

    // ----- listings ----------------------------------------------------------

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

    /// Up to `limit` repositories after `after`, in byte order, with what
    /// they hold.
    async fn repository_usage(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<RepositoryUsage>>;

    /// What the store holds, counted (for metrics).
    async fn totals(&self) -> StorageResult<StorageTotals>;

    /// The bytes held by the repositories that count against `quota`.
    async fn usage(&self, quota: &Quota) -> StorageResult<u64>;

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

    // ----- uploads -----------------------------------------------------------

    /// Records an upload session of `owner` (a subject name, empty for
    /// anonymous).
    async fn create_upload(
        &self,
        id: &str,
        repository: &RepositoryName,
        owner: &str,
        now: Timestamp,
    ) -> StorageResult<()>;

    async fn upload(&self, id: &str) -> StorageResult<Option<UploadRecord>>;

    /// Claims upload `id` for `holder` (one request writing to it, on
    /// whichever process) until `until`, and marks it written at `now`:
    /// false if another holder's claim still holds, or there is no such
    /// upload. Claiming again before `until` renews the claim, so a chunk
    /// that streams in for long keeps its upload fresh and its own.
    async fn claim_upload(
        &self,
        id: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StorageResult<bool>;

    /// Ends `holder`'s claim on upload `id`, marking it written at `now`.
    async fn release_upload(&self, id: &str, holder: &str, now: Timestamp) -> StorageResult<()>;

    /// Ends every claim on uploads: for the one process that uses the store
    /// (its embedded database), whose predecessor's claims died with it, so
    /// that a client resumes its upload at once after a restart.
    async fn release_upload_claims(&self) -> StorageResult<()>;

    async fn delete_upload(&self, id: &str) -> StorageResult<()>;

    /// Up to `limit` uploads last written before `before`, in id order after
    /// `after`.
    async fn stale_uploads(
        &self,
        before: Timestamp,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<String>>;

    /// Deletes the upload if it was last written before `before` and no
    /// claim on it holds at `now`; returns whether it did.
    async fn delete_stale_upload(
        &self,
        id: &str,
        before: Timestamp,
        now: Timestamp,
    ) -> StorageResult<bool>;

    // ----- garbage collection -------------------------------------------------

    /// Everything collection decides from, as of one moment.
    async fn gc_snapshot(&self) -> StorageResult<GcSnapshot>;

    /// Deletes each `(tag, digest)` still pointing at that digest, not
    /// updated since `updated_at`, and whose manifest was not pulled since
    /// `pulled_before` (a pull in progress keeps its image); returns the
    /// tags deleted.
    async fn delete_tags_if_unchanged(
        &self,
        repository: &str,
        tags: Vec<TagSnapshot>,
        pulled_before: Timestamp,
    ) -> StorageResult<Vec<String>>;

    /// Deletes each manifest that is still untagged, not touched since
    /// `before` and not pulled since `pulled_before`; returns those deleted.
    async fn delete_manifests_if_untouched(
        &self,
        repository: &str,
        digests: Vec<Digest>,
        before: Timestamp,
        pulled_before: Timestamp,
    ) -> StorageResult<Vec<Digest>>;

    /// Deletes each link that no manifest of the repository references and
    /// that was not touched since `before`; returns those deleted.
    async fn delete_links_if_unreferenced(
        &self,
        repository: &str,
        links: Vec<LinkSnapshot>,
        before: Timestamp,
    ) -> StorageResult<Vec<Digest>>;

    /// Forgets each blob that no repository links, no manifest is, and that
    /// was not touched since `before`; returns those forgotten (their bytes
    /// may then go).
    async fn forget_blobs_if_unused(
        &self,
        digests: Vec<Digest>,
        before: Timestamp,
    ) -> StorageResult<Vec<Digest>>;

    /// Which of `digests` something records ([`Self::blob_recorded`] for many).
    async fn recorded_blobs(&self, digests: Vec<Digest>) -> StorageResult<Vec<Digest>>;

    /// Takes the lease `name` for `holder` until `until` if it is free (or
    /// already `holder`'s) at `now`: so that, of several berth processes on
    /// one store, one collects at a time.
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StorageResult<bool>;

    async fn release_lease(&self, name: &str, holder: &str) -> StorageResult<()>;

    // ----- shared settings ---------------------------------------------------

    /// The value every berth process on this store shares under `name`
    /// (the token signing key, the robot accounts), if one is kept.
    async fn shared_value(&self, name: &str) -> StorageResult<Option<String>>;

    /// The shared value `name`: `initial` if none is kept yet (whichever
    /// process asks first sets it), so that processes agree on it.
    async fn init_shared_value(&self, name: &str, initial: &str) -> StorageResult<String>;

    /// Sets the shared value `name` to `value` if it is still `expected`
    /// (compare and set: of two processes changing it at once, one is told
    /// to read it again); returns whether it did.
    async fn replace_shared_value(
        &self,
        name: &str,
        expected: &str,
        value: &str,
    ) -> StorageResult<bool>;
}
