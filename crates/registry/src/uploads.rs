//! Blob uploads: sessions, chunks, monolithic pushes, mounts, expiry.
//!
//! A session belongs to the repository it was opened in and to the subject
//! that opened it: another subject, even one that may push there, cannot
//! read its state or write to it, however it learned the id.

use berth_oci::{Digest, RepositoryName};
use berth_storage::{ByteStream, StorageError};

use crate::blobs::Blob;
use crate::claims::UploadClaim;
use crate::error::{RegistryError, Result};
use crate::registry::{Registry, now, parse_name};

/// Where an upload stands: what `Location` and `Range` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    pub repository: String,
    pub id: String,
    /// Bytes received so far.
    pub size: u64,
}

/// An upload session as a request names it, and who is asking.
#[derive(Debug, Clone, Copy)]
pub struct UploadRef<'a> {
    pub repository: &'a str,
    pub id: &'a str,
    /// The subject's name; empty for anonymous.
    pub owner: &'a str,
}

/// Where a chunk goes in its upload: the inclusive byte offsets of the
/// spec's `Content-Range: <start>-<end>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    start: u64,
    end: u64,
}

impl ChunkRange {
    /// `None` unless `start <= end` and the length fits in a `u64`.
    pub fn new(start: u64, end: u64) -> Option<Self> {
        (start <= end && end - start < u64::MAX).then_some(ChunkRange { start, end })
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    /// How many bytes the chunk holds.
    pub fn length(&self) -> u64 {
        self.end - self.start + 1
    }
}

/// A chunk of an upload: its body, where it goes when the client said, and
/// how long it is when the client said (`Content-Length`).
pub struct Chunk {
    pub range: Option<ChunkRange>,
    pub length: Option<u64>,
    pub body: ByteStream,
}

/// The outcome of `POST …/blobs/uploads/?mount=&from=`.
#[derive(Debug)]
pub enum Mount {
    Mounted(Blob),
    /// The blob could not be mounted; an ordinary upload was opened instead.
    Session(UploadStatus),
}

impl Registry {
    pub async fn start_upload(&self, repository: &str, owner: &str) -> Result<UploadStatus> {
        let repository = parse_name(repository)?;
        // A repository at its quota can take no new blob.
        self.precheck_quota(&repository, 0).await?;
        self.open_session(&repository, owner).await
    }

    /// Refuses early what would take `repository` past its quota: usage
    /// plus `adding` bytes, or usage alone already at the limit. The check
    /// that counts is the one recording the blob; this one saves storing
    /// bytes that would be refused.
    async fn precheck_quota(&self, repository: &RepositoryName, adding: u64) -> Result<()> {
        let Some(quota) = self.config.rules.quota(repository.as_str()) else {
            return Ok(());
        };
        let usage = self.metadata.usage(&quota).await?;
        if usage.saturating_add(adding) > quota.limit || usage >= quota.limit {
            return Err(RegistryError::QuotaExceeded {
                pattern: quota.repositories.as_str().to_owned(),
                usage,
                limit: quota.limit,
                adding,
            });
        }
        Ok(())
    }

    async fn open_session(&self, repository: &RepositoryName, owner: &str) -> Result<UploadStatus> {
        let id = uuid::Uuid::new_v4().to_string();
        // Metadata first: a crash before the file exists leaves a session row
        // that expiry removes, never a file nothing knows about.
        self.metadata
            .create_upload(&id, repository, owner, now())
            .await?;
        self.blobs.create_upload(&id).await?;
        Ok(UploadStatus {
            repository: repository.to_string(),
            id,
            size: 0,
        })
    }

    /// Mounts `digest` from `from` into `repository`, or opens an upload when it
    /// cannot (unknown source, blob not there), as the spec asks.
    pub async fn mount_blob(
        &self,
        repository: &str,
        digest: &str,
        from: Option<&str>,
        owner: &str,
    ) -> Result<Mount> {
        let repository = parse_name(repository)?;
        let digest = Digest::parse(digest)?;
        if let Some(from) = from.and_then(|f| RepositoryName::parse(f).ok()) {
            let quota = self.config.rules.quota(repository.as_str());
            if let Some(size) = self
                .metadata
                .mount_blob(&from, &repository, &digest, now(), quota)
                .await?
            {
                return Ok(Mount::Mounted(Blob::new(digest, size)));
            }
        }
        self.start_upload(repository.as_str(), owner)
            .await
            .map(Mount::Session)
    }

    /// A whole blob in one request (`POST …/uploads/?digest=`).
    pub async fn upload_monolithic(
        &self,
        repository: &str,
        owner: &str,
        digest: &str,
        length: Option<u64>,
        body: ByteStream,
    ) -> Result<Blob> {
        Digest::parse(digest)?;
        if let Some(length) = length {
            self.precheck_quota(&parse_name(repository)?, length)
                .await?;
        }
        let session = self.start_upload(repository, owner).await?;
        let upload = UploadRef {
            repository,
            id: &session.id,
            owner,
        };
        let chunk = Chunk {
            range: None,
            length,
            body,
        };
        let result = self.finish_upload(upload, digest, Some(chunk)).await;
        if result.is_err() {
            self.discard_upload(&session.id).await;
        }
        result
    }

    /// Checks that `upload` names a session of its repository and owner.
    async fn session(&self, upload: UploadRef<'_>) -> Result<RepositoryName> {
        let repository = parse_name(upload.repository)?;
        match self.metadata.upload(upload.id).await? {
            Some(record)
                if record.repository == repository.as_str()
                    && record.owner.as_deref().is_none_or(|o| o == upload.owner) =>
            {
                Ok(repository)
            }
            _ => Err(RegistryError::UploadUnknown(upload.id.to_owned())),
        }
    }

    pub async fn upload_status(&self, upload: UploadRef<'_>) -> Result<UploadStatus> {
        let repository = self.session(upload).await?;
        let size = self.blobs.upload_size(upload.id).await?;
        Ok(UploadStatus {
            repository: repository.to_string(),
            id: upload.id.to_owned(),
            size,
        })
    }

    /// Claims the upload for this request, whichever process it is on:
    /// [`RegistryError::UploadBusy`] while another request writes to it.
    async fn claim(
        &self,
        upload: UploadRef<'_>,
        repository: &RepositoryName,
    ) -> Result<UploadClaim> {
        if let Some(claim) = UploadClaim::take(&self.metadata, &self.instance, upload.id).await? {
            return Ok(claim);
        }
        // Gone meanwhile (finished, cancelled, expired), or busy.
        self.session(upload).await?;
        let size = self.blobs.upload_size(upload.id).await?;
        Err(RegistryError::UploadBusy {
            upload: UploadStatus {
                repository: repository.to_string(),
                id: upload.id.to_owned(),
                size,
            },
        })
    }

    /// Appends a chunk (`PATCH`).
    pub async fn append_upload(&self, upload: UploadRef<'_>, chunk: Chunk) -> Result<UploadStatus> {
        let repository = self.session(upload).await?;
        let claim = self.claim(upload, &repository).await?;
        let status = UploadStatus {
            repository: repository.to_string(),
            id: upload.id.to_owned(),
            size: 0,
        };
        let written = self.write_chunk(status, chunk).await;
        claim.release().await;
        written
    }

    /// Writes a chunk to an upload this request has claimed.
    async fn write_chunk(&self, mut status: UploadStatus, chunk: Chunk) -> Result<UploadStatus> {
        let id = status.id.clone();
        let current = self.blobs.upload_size(&id).await?;
        status.size = current;
        if let Some(adding) = chunk.range.map(|r| r.length()).or(chunk.length) {
            let repository = parse_name(&status.repository)?;
            self.precheck_quota(&repository, current.saturating_add(adding))
                .await?;
        }
        let offset = match chunk.range {
            Some(range) if range.start != current => {
                return Err(RegistryError::UploadOutOfOrder {
                    start: range.start,
                    upload: status,
                });
            }
            Some(range) => range.start,
            None => current,
        };
        let expected = chunk.range.map(|r| r.length());
        let appended = self
            .blobs
            .append_upload(&id, offset, expected, chunk.body)
            .await;
        status.size = match appended {
            Ok(size) => size,
            Err(StorageError::UploadOffset { size, offset }) => {
                status.size = size;
                return Err(RegistryError::UploadOutOfOrder {
                    start: offset,
                    upload: status,
                });
            }
            Err(StorageError::ChunkLength { expected, received }) => {
                status.size = offset;
                return Err(RegistryError::ChunkLength {
                    expected,
                    received,
                    upload: status,
                });
            }
            Err(StorageError::Full(why)) => {
                // Its bytes are gone already; the session goes with them.
                self.discard_upload(&id).await;
                return Err(RegistryError::StorageFull(why));
            }
            Err(other) => return Err(other.into()),
        };
        Ok(status)
    }

    /// Closes an upload (`PUT …?digest=`), with an optional last chunk, and
    /// makes the blob readable in the repository.
    pub async fn finish_upload(
        &self,
        upload: UploadRef<'_>,
        digest: &str,
        last_chunk: Option<Chunk>,
    ) -> Result<Blob> {
        let digest = Digest::parse(digest)?;
        let repository = self.session(upload).await?;
        let claim = self.claim(upload, &repository).await?;
        let finished = self
            .finish_claimed(upload.id, repository, &digest, last_chunk)
            .await;
        claim.release().await;
        finished
    }

    async fn finish_claimed(
        &self,
        id: &str,
        repository: RepositoryName,
        digest: &Digest,
        last_chunk: Option<Chunk>,
    ) -> Result<Blob> {
        if let Some(chunk) = last_chunk {
            let status = UploadStatus {
                repository: repository.to_string(),
                id: id.to_owned(),
                size: 0,
            };
            self.write_chunk(status, chunk).await?;
        }
        let size = match self.blobs.commit_upload(id, digest).await {
            Ok(size) => size,
            Err(e) => {
                // Wrong bytes (discarded by the store) or no room to make
                // them durable: the session goes with them.
                if matches!(
                    e,
                    StorageError::DigestMismatch { .. } | StorageError::Full(_)
                ) {
                    self.discard_upload(id).await;
                }
                return Err(e.into());
            }
        };
        // Recorded first, made the blob second: whoever removes bytes that
        // nothing records (a collection, a refused push of the same
        // content) never removes bytes this record relies on.
        let quota = self.config.rules.quota(repository.as_str());
        let linked = self
            .metadata
            .link_blob(&repository, digest, size, now(), quota)
            .await;
        if let Err(e) = linked {
            // Refused (over quota) or failed: nothing of this upload stays.
            self.discard_upload(id).await;
            return Err(e.into());
        }
        if let Err(e) = self.blobs.settle_upload(id, digest).await {
            // A record without bytes must not stay; a client retries the push.
            if let Err(undo) = self.metadata.unlink_blob(&repository, digest, true).await {
                tracing::error!(%digest, error = %undo, "a blob is recorded without its bytes");
            }
            self.discard_upload(id).await;
            return Err(e.into());
        }
        self.metadata.delete_upload(id).await?;
        Ok(Blob::new(digest.clone(), size))
    }

    pub async fn cancel_upload(&self, upload: UploadRef<'_>) -> Result<()> {
        let repository = self.session(upload).await?;
        let claim = self.claim(upload, &repository).await?;
        self.blobs.delete_upload(upload.id).await?;
        self.metadata.delete_upload(upload.id).await?;
        claim.release().await;
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
    /// Returns how many were removed. An upload in use (claimed by a request
    /// of any process, a chunk streaming) stays; a failure ends the pass, to
    /// be retried by the next one rather than spun on.
    pub async fn expire_uploads(&self) -> Result<usize> {
        let cutoff = now() - self.config.upload_ttl.as_millis() as i64;
        let mut removed = 0;
        let mut after: Option<String> = None;
        loop {
            let stale = self
                .metadata
                .stale_uploads(cutoff, after.as_deref(), 100)
                .await?;
            let Some(last) = stale.last() else {
                return Ok(removed);
            };
            after = Some(last.clone());
            for id in &stale {
                // Still stale and unclaimed: then it is gone for good.
                if self.metadata.delete_stale_upload(id, cutoff, now()).await? {
                    if let Err(e) = self.blobs.delete_upload(id).await {
                        tracing::warn!(upload = %id, error = %e, "could not remove upload data");
                    }
                    removed += 1;
                }
            }
        }
    }
}
