use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_oci::{
    Algorithm, Digest, Hasher, Manifest, ManifestKind, Reference, RepositoryName, Tag, media_type,
};
use berth_storage::{
    BlobStore, ByteStream, MetadataStore, NewManifest, ReferrerRecord, StorageError,
};
use bytes::Bytes;
use quick_cache::sync::Cache;
use serde_json::{Map, Value};

use crate::error::{RegistryError, Result};
use crate::locks::KeyedLocks;
use crate::page::{Page, page_size};
use crate::range::{ByteRange, RangeRequest};

/// Knobs of the registry model.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Whether manifests, tags and blobs may be deleted.
    pub delete_enabled: bool,
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// An upload not written to for this long is discarded.
    pub upload_ttl: Duration,
    /// Memory kept for manifest documents recently served.
    pub manifest_cache_bytes: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            delete_enabled: true,
            max_manifest_bytes: 4 * 1024 * 1024,
            upload_ttl: Duration::from_secs(24 * 3600),
            manifest_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Catalog page size when the client gives no `n`.
const DEFAULT_CATALOG_PAGE: usize = 1000;

/// Where an upload stands: what `Location` and `Range` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    pub id: String,
    pub size: u64,
}

/// The outcome of `POST …/blobs/uploads/?mount=&from=`.
#[derive(Debug)]
pub enum Mount {
    Mounted {
        digest: Digest,
        size: u64,
    },
    /// The blob could not be mounted; an ordinary upload was opened instead.
    Session(UploadStatus),
}

/// A blob being served.
pub struct BlobRead {
    pub size: u64,
    /// Present for a 206 answer.
    pub range: Option<ByteRange>,
    pub body: ByteStream,
}

/// A manifest and the headers it is served with.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct PushedManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// A referrers answer: an OCI image index, serialised.
pub struct Referrers {
    pub index: Bytes,
    /// Whether an `artifactType` filter was applied.
    pub filtered: bool,
    /// Where the next page starts (its `last`), when the descriptors do not
    /// all fit in one index.
    pub next: Option<String>,
}

/// Referrers in one page at most; fewer when they do not fit in a manifest.
const REFERRERS_PAGE_ROWS: usize = 1000;
/// Referrers read from the metadata store at a time.
const REFERRERS_BATCH: usize = 32;

/// The registry: OCI Distribution operations over a blob store and a metadata store.
pub struct Registry {
    blobs: Arc<dyn BlobStore>,
    metadata: Arc<dyn MetadataStore>,
    config: RegistryConfig,
    /// Manifest documents by digest. Content under a digest never changes, so
    /// this cache can never serve stale bytes; access is still checked in the
    /// metadata store on every request.
    manifests: Cache<Digest, Bytes, ManifestWeight>,
    digest_locks: KeyedLocks,
    upload_locks: KeyedLocks,
}

#[derive(Clone)]
struct ManifestWeight;

impl quick_cache::Weighter<Digest, Bytes> for ManifestWeight {
    fn weight(&self, _: &Digest, value: &Bytes) -> u64 {
        value.len() as u64 + 1
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn parse_name(name: &str) -> Result<RepositoryName> {
    RepositoryName::parse(name).map_err(RegistryError::NameInvalid)
}

fn parse_reference(reference: &str) -> Result<Reference> {
    Reference::parse(reference).map_err(|e| match e {
        berth_oci::NameError::InvalidDigest(d) => RegistryError::DigestInvalid(d),
        other => RegistryError::TagInvalid(other),
    })
}

impl Registry {
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        metadata: Arc<dyn MetadataStore>,
        config: RegistryConfig,
    ) -> Self {
        // Estimated 4 KiB per manifest for sizing the cache's index.
        let items = (config.manifest_cache_bytes / 4096).max(16) as usize;
        Registry {
            blobs,
            metadata,
            manifests: Cache::with_weighter(items, config.manifest_cache_bytes, ManifestWeight),
            config,
            digest_locks: KeyedLocks::default(),
            upload_locks: KeyedLocks::default(),
        }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Whether the stores answer (readiness).
    pub async fn ping(&self) -> Result<()> {
        Ok(self.metadata.ping().await?)
    }

    fn check_delete(&self) -> Result<()> {
        if self.config.delete_enabled {
            Ok(())
        } else {
            Err(RegistryError::DeleteDisabled)
        }
    }

    // ----- blobs -------------------------------------------------------------

    /// The size of a blob readable in `repository`.
    pub async fn blob_size(&self, repository: &str, digest: &str) -> Result<(Digest, u64)> {
        let repository = parse_name(repository)?;
        let digest = Digest::parse(digest)?;
        match self
            .metadata
            .blob_in_repository(&repository, &digest)
            .await?
        {
            Some(size) => Ok((digest, size)),
            None => Err(RegistryError::BlobUnknown(digest)),
        }
    }

    /// Opens a blob for reading, honouring an HTTP `Range` header.
    pub async fn read_blob(
        &self,
        repository: &str,
        digest: &str,
        range: Option<&str>,
    ) -> Result<(Digest, BlobRead)> {
        let (digest, size) = self.blob_size(repository, digest).await?;
        let range = match RangeRequest::parse(range, size) {
            RangeRequest::Whole => None,
            RangeRequest::Partial(range) => Some(range),
            RangeRequest::Unsatisfiable => return Err(RegistryError::RangeNotSatisfiable { size }),
        };
        let body = self.blobs.read(&digest, range.clone()).await?;
        Ok((digest, BlobRead { size, range, body }))
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

    // ----- uploads -----------------------------------------------------------

    pub async fn start_upload(&self, repository: &str) -> Result<UploadStatus> {
        let repository = parse_name(repository)?;
        self.open_session(&repository).await
    }

    async fn open_session(&self, repository: &RepositoryName) -> Result<UploadStatus> {
        let id = uuid::Uuid::new_v4().to_string();
        // Metadata first: a crash before the file exists leaves a session row
        // that expiry removes, never a file nothing knows about.
        self.metadata.create_upload(&id, repository, now()).await?;
        self.blobs.create_upload(&id).await?;
        Ok(UploadStatus { id, size: 0 })
    }

    /// Mounts `digest` from `from` into `repository`, or opens an upload when it
    /// cannot (unknown source, blob not there), as the spec asks.
    pub async fn mount_blob(
        &self,
        repository: &str,
        digest: &str,
        from: Option<&str>,
    ) -> Result<Mount> {
        let repository = parse_name(repository)?;
        let digest = Digest::parse(digest)?;
        if let Some(from) = from.and_then(|f| RepositoryName::parse(f).ok()) {
            let _guard = self.digest_locks.lock(digest.as_str()).await;
            if let Some(size) = self
                .metadata
                .mount_blob(&from, &repository, &digest)
                .await?
            {
                return Ok(Mount::Mounted { digest, size });
            }
        }
        Ok(Mount::Session(self.open_session(&repository).await?))
    }

    /// A whole blob in one request (`POST …/uploads/?digest=`).
    pub async fn upload_monolithic(
        &self,
        repository: &str,
        digest: &str,
        content_length: Option<u64>,
        body: ByteStream,
    ) -> Result<(Digest, u64)> {
        let name = parse_name(repository)?;
        let digest = Digest::parse(digest)?;
        let session = self.open_session(&name).await?;
        let result = self
            .finish_upload(
                repository,
                &session.id,
                digest.as_str(),
                None,
                content_length,
                Some(body),
            )
            .await;
        if result.is_err() {
            self.discard_upload(&session.id).await;
        }
        result
    }

    async fn session(&self, repository: &RepositoryName, id: &str) -> Result<()> {
        match self.metadata.upload(id).await? {
            Some(record) if record.repository == repository.as_str() => Ok(()),
            _ => Err(RegistryError::UploadUnknown(id.to_owned())),
        }
    }

    pub async fn upload_status(&self, repository: &str, id: &str) -> Result<UploadStatus> {
        let repository = parse_name(repository)?;
        self.session(&repository, id).await?;
        let size = self.blobs.upload_size(id).await?;
        Ok(UploadStatus {
            id: id.to_owned(),
            size,
        })
    }

    /// Appends a chunk. `content_range` is the inclusive `start-end` of the
    /// chunk, absent for a streamed upload.
    pub async fn append_upload(
        &self,
        repository: &str,
        id: &str,
        content_range: Option<&str>,
        content_length: Option<u64>,
        body: ByteStream,
    ) -> Result<UploadStatus> {
        let repository = parse_name(repository)?;
        let _guard = self.upload_locks.lock(id).await;
        self.session(&repository, id).await?;
        let size = self
            .write_chunk(id, content_range, content_length, body)
            .await?;
        Ok(UploadStatus {
            id: id.to_owned(),
            size,
        })
    }

    async fn write_chunk(
        &self,
        id: &str,
        content_range: Option<&str>,
        content_length: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        let current = self.blobs.upload_size(id).await?;
        let offset = match content_range {
            None => current,
            Some(header) => {
                let (start, end) = parse_content_range(header)?;
                if start != current {
                    return Err(RegistryError::UploadOutOfOrder {
                        start,
                        size: current,
                    });
                }
                let length = (end - start).checked_add(1).ok_or_else(|| {
                    RegistryError::UploadInvalid(format!(
                        "Content-Range {header} is larger than any upload"
                    ))
                })?;
                if content_length.is_some_and(|l| l != length) {
                    return Err(RegistryError::SizeInvalid(format!(
                        "Content-Range {header} is {length} bytes but Content-Length is {}",
                        content_length.unwrap_or_default()
                    )));
                }
                start
            }
        };
        // Touched before and after: expiry never takes an upload whose
        // chunk is streaming in.
        self.metadata.touch_upload(id, now()).await?;
        let size = self.blobs.append_upload(id, offset, body).await?;
        self.metadata.touch_upload(id, now()).await?;
        if let Some(expected) = content_length
            && size - offset != expected
        {
            return Err(RegistryError::SizeInvalid(format!(
                "received {} bytes, Content-Length said {expected}",
                size - offset
            )));
        }
        Ok(size)
    }

    /// Closes an upload (`PUT …?digest=`), with an optional last chunk, and
    /// makes the blob readable in the repository.
    pub async fn finish_upload(
        &self,
        repository: &str,
        id: &str,
        digest: &str,
        content_range: Option<&str>,
        content_length: Option<u64>,
        body: Option<ByteStream>,
    ) -> Result<(Digest, u64)> {
        let repository = parse_name(repository)?;
        let digest = Digest::parse(digest)?;
        let _guard = self.upload_locks.lock(id).await;
        self.session(&repository, id).await?;
        if let Some(body) = body {
            self.write_chunk(id, content_range, content_length, body)
                .await?;
        }
        let _blob_guard = self.digest_locks.lock(digest.as_str()).await;
        let committed = self.blobs.commit_upload(id, &digest).await;
        if matches!(committed, Err(StorageError::DigestMismatch { .. })) {
            // The store discarded the bytes; forget the session too.
            self.metadata.delete_upload(id).await?;
        }
        let size = committed?;
        self.metadata.link_blob(&repository, &digest, size).await?;
        self.metadata.delete_upload(id).await?;
        Ok((digest, size))
    }

    pub async fn cancel_upload(&self, repository: &str, id: &str) -> Result<()> {
        let repository = parse_name(repository)?;
        let _guard = self.upload_locks.lock(id).await;
        self.session(&repository, id).await?;
        self.blobs.delete_upload(id).await?;
        self.metadata.delete_upload(id).await?;
        Ok(())
    }

    /// Forgets an upload that failed; what cannot be removed now is left to
    /// expiry.
    async fn discard_upload(&self, id: &str) {
        if let Err(e) = self.blobs.delete_upload(id).await {
            tracing::warn!(upload = id, error = %e, "could not remove upload data");
        }
        if let Err(e) = self.metadata.delete_upload(id).await {
            tracing::warn!(upload = id, error = %e, "could not remove upload record");
        }
    }

    /// Removes uploads not written to within the configured time to live.
    /// Returns how many were removed. An upload in use (its lock held, a
    /// chunk streaming) is left for a later pass; a failure ends the pass, to
    /// be retried by the next one rather than spun on.
    pub async fn expire_uploads(&self) -> Result<usize> {
        let cutoff = now() - self.config.upload_ttl.as_secs() as i64;
        let mut removed = 0;
        let mut after: Option<String> = None;
        loop {
            let stale = self
                .metadata
                .stale_uploads(cutoff, after.as_deref(), 100)
                .await?;
            let Some(last) = stale.last() else {
                self.upload_locks.sweep();
                return Ok(removed);
            };
            after = Some(last.clone());
            for id in &stale {
                let Some(_guard) = self.upload_locks.try_lock(id) else {
                    continue;
                };
                // Still stale under the lock: then it is gone for good.
                if self.metadata.delete_stale_upload(id, cutoff).await? {
                    if let Err(e) = self.blobs.delete_upload(id).await {
                        tracing::warn!(upload = %id, error = %e, "could not remove upload data");
                    }
                    removed += 1;
                }
            }
        }
    }

    // ----- manifests ---------------------------------------------------------

    async fn find_manifest(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        let record = match reference {
            Reference::Tag(tag) => self.metadata.resolve_tag(repository, tag).await?,
            Reference::Digest(digest) => self.metadata.manifest(repository, digest).await?,
        };
        let record = record.ok_or_else(|| RegistryError::ManifestUnknown(reference.to_string()))?;
        Ok(StoredManifest {
            digest: record.digest,
            media_type: record.media_type,
            size: record.size,
        })
    }

    /// What `HEAD …/manifests/<reference>` answers.
    pub async fn manifest_info(&self, repository: &str, reference: &str) -> Result<StoredManifest> {
        let repository = parse_name(repository)?;
        let reference = parse_reference(reference)?;
        self.find_manifest(&repository, &reference).await
    }

    /// A manifest's exact pushed bytes.
    pub async fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(StoredManifest, Bytes)> {
        let info = self.manifest_info(repository, reference).await?;
        let content = self
            .manifests
            .get_or_insert_async(&info.digest, self.blobs.read_all(&info.digest))
            .await?;
        Ok((info, content))
    }

    /// Stores a pushed manifest after checking it, and tags it when pushed by tag.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        content_type: Option<&str>,
        content: Bytes,
    ) -> Result<PushedManifest> {
        let repository = parse_name(repository)?;
        let reference = parse_reference(reference)?;
        if content.len() > self.config.max_manifest_bytes {
            return Err(RegistryError::ManifestTooLarge {
                limit: self.config.max_manifest_bytes,
            });
        }
        let algorithm = match &reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => Algorithm::Sha256,
        };
        let mut hasher = Hasher::new(algorithm);
        hasher.update(&content);
        let digest = hasher.finish();
        if let Reference::Digest(expected) = &reference
            && *expected != digest
        {
            return Err(RegistryError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        let manifest = Manifest::parse(content_type, &content)?;
        let tag: Option<&Tag> = match &reference {
            Reference::Tag(tag) => Some(tag),
            Reference::Digest(_) => None,
        };
        let record = NewManifest {
            digest: digest.clone(),
            media_type: manifest.media_type.clone(),
            size: content.len() as u64,
            artifact_type: manifest.referrer_artifact_type().map(str::to_owned),
            subject: manifest.subject.as_ref().map(|s| s.digest.clone()),
            annotations: manifest
                .annotations
                .as_ref()
                .map(|a| serde_json::to_string(a).expect("string map serialises")),
            blobs: manifest
                .required_blobs()
                .map(|d| d.digest.clone())
                .collect(),
            children: match manifest.kind {
                ManifestKind::Index => manifest
                    .manifests
                    .iter()
                    .map(|d| d.digest.clone())
                    .collect(),
                ManifestKind::Image => Vec::new(),
            },
        };
        let _guard = self.digest_locks.lock(digest.as_str()).await;
        self.blobs.write_all(&digest, content.clone()).await?;
        self.metadata.put_manifest(&repository, record, tag).await?;
        self.manifests.insert(digest.clone(), content);
        Ok(PushedManifest {
            digest,
            subject: manifest.subject.map(|s| s.digest),
        })
    }

    /// Deletes a manifest (by digest) or just a tag (by tag).
    pub async fn delete_manifest(&self, repository: &str, reference: &str) -> Result<()> {
        self.check_delete()?;
        let repository = parse_name(repository)?;
        match parse_reference(reference)? {
            Reference::Tag(tag) => {
                if !self.metadata.delete_tag(&repository, &tag).await? {
                    return Err(RegistryError::ManifestUnknown(tag.to_string()));
                }
            }
            Reference::Digest(digest) => {
                let _guard = self.digest_locks.lock(digest.as_str()).await;
                let deletion = self.metadata.delete_manifest(&repository, &digest).await?;
                if !deletion.found {
                    return Err(RegistryError::ManifestUnknown(digest.to_string()));
                }
                if deletion.orphaned {
                    self.manifests.remove(&digest);
                    self.blobs.delete(&digest).await?;
                }
            }
        }
        Ok(())
    }

    // ----- listings ----------------------------------------------------------

    /// `GET …/tags/list?n=&last=`.
    pub async fn tags(
        &self,
        repository: &str,
        n: Option<&str>,
        last: Option<&str>,
    ) -> Result<Page> {
        let repository = parse_name(repository)?;
        let limit = page_size(n, usize::MAX - 1).map_err(RegistryError::InvalidParameter)?;
        let fetched = self
            .metadata
            .tags(&repository, last, limit.saturating_add(1))
            .await?
            .ok_or_else(|| RegistryError::NameUnknown(repository.to_string()))?;
        Ok(Page::from_fetched(fetched, limit))
    }

    /// `GET /v2/_catalog?n=&last=`, listing only the repositories `visible`
    /// says the caller may see.
    pub async fn catalog(
        &self,
        n: Option<&str>,
        last: Option<&str>,
        visible: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Page> {
        let limit = page_size(n, DEFAULT_CATALOG_PAGE).map_err(RegistryError::InvalidParameter)?;
        let batch = (limit + 1).max(DEFAULT_CATALOG_PAGE);
        let mut shown = Vec::new();
        let mut after = last.map(str::to_owned);
        // Read on until one more than a page is visible, to know of a next.
        while shown.len() <= limit {
            let fetched = self.metadata.repositories(after.as_deref(), batch).await?;
            let exhausted = fetched.len() < batch;
            after = fetched.last().cloned();
            shown.extend(fetched.into_iter().filter(|name| visible(name)));
            if exhausted {
                break;
            }
        }
        Ok(Page::from_fetched(shown, limit))
    }

    /// `GET …/referrers/<digest>?artifactType=&last=`: an image index of the
    /// manifests whose subject is `digest`, empty when there are none. The
    /// spec wants a `Link` to a next page when the descriptors do not fit in
    /// one manifest: a page holds as many as keep the index within the
    /// manifest size limit, and `last` (from that link) continues after them.
    pub async fn referrers(
        &self,
        repository: &str,
        digest: &str,
        artifact_type: Option<&str>,
        last: Option<&str>,
    ) -> Result<Referrers> {
        let repository = parse_name(repository)?;
        let subject = Digest::parse(digest)?;
        let after = last
            .map(|l| {
                Digest::parse(l).map_err(|_| {
                    RegistryError::InvalidParameter(format!(
                        "last={l:?} is not a digest: follow the Link header of the previous page"
                    ))
                })
            })
            .transpose()?;
        // Read in small batches: a referrer's annotations may be megabytes.
        let budget = self.config.max_manifest_bytes;
        let mut after = after;
        let mut size = referrers_index(&[]).len();
        let mut descriptors: Vec<String> = Vec::new();
        let mut next = None;
        'page: loop {
            let batch = self
                .metadata
                .referrers(
                    &repository,
                    &subject,
                    artifact_type,
                    after.as_ref(),
                    REFERRERS_BATCH,
                )
                .await?;
            let exhausted = batch.len() < REFERRERS_BATCH;
            for record in batch {
                let descriptor = referrer_descriptor(&record);
                // A comma, then the descriptor; one descriptor always goes in.
                let first = descriptors.is_empty();
                let grown = size + usize::from(!first) + descriptor.len();
                if descriptors.len() == REFERRERS_PAGE_ROWS || (!first && grown > budget) {
                    next = after.as_ref().map(Digest::to_string);
                    break 'page;
                }
                size = grown;
                descriptors.push(descriptor);
                after = Some(record.digest);
            }
            if exhausted {
                break;
            }
        }
        Ok(Referrers {
            index: Bytes::from(referrers_index(&descriptors)),
            filtered: artifact_type.is_some(),
            next,
        })
    }
}

/// One referrer's descriptor in the referrers index, as JSON.
fn referrer_descriptor(record: &ReferrerRecord) -> String {
    let mut d = Map::new();
    d.insert("mediaType".into(), record.media_type.clone().into());
    d.insert("digest".into(), record.digest.to_string().into());
    d.insert("size".into(), record.size.into());
    if let Some(t) = &record.artifact_type {
        d.insert("artifactType".into(), t.clone().into());
    }
    if let Some(a) = record
        .annotations
        .as_deref()
        .and_then(|a| serde_json::from_str::<Value>(a).ok())
    {
        d.insert("annotations".into(), a);
    }
    Value::Object(d).to_string()
}

/// The referrers image index around already serialised descriptors.
fn referrers_index(descriptors: &[String]) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{}]}}"#,
        media_type::OCI_INDEX,
        descriptors.join(",")
    )
}

/// Parses the spec's chunk `Content-Range: <start>-<end>` (inclusive, no unit).
fn parse_content_range(header: &str) -> Result<(u64, u64)> {
    let invalid = || {
        RegistryError::UploadInvalid(format!(
            "Content-Range {header:?} is not <start>-<end> (inclusive byte offsets, e.g. 0-1023)"
        ))
    };
    let (start, end) = header.trim().split_once('-').ok_or_else(invalid)?;
    let number = |s: &str| -> Result<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        s.parse().map_err(|_| invalid())
    };
    let (start, end) = (number(start)?, number(end)?);
    if end < start {
        return Err(invalid());
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("0-1023").unwrap(), (0, 1023));
        assert_eq!(parse_content_range("5-5").unwrap(), (5, 5));
        for bad in ["bytes 0-1", "0-", "-1", "3-2", "a-b", "0-1/2", ""] {
            assert!(parse_content_range(bad).is_err(), "{bad}");
        }
    }
}
