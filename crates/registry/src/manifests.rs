//! Manifests: pushes with their reference checks, pulls, deletes.

use std::time::{Duration, Instant};

use berth_oci::{
    Algorithm, Digest, Hasher, Manifest, ManifestKind, Reference, RepositoryName, Tag,
};
use berth_storage::NewManifest;
use bytes::Bytes;

use crate::error::{RegistryError, Result};
use crate::registry::{Registry, now, parse_name, parse_reference};

/// How often a manifest's last pull is written, at most: fine enough to
/// order a pull-through cache's least recently pulled images, one small
/// write a minute for the most pulled.
const PULL_RECORD_INTERVAL: Duration = Duration::from_secs(60);

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

/// A reference to look up: one that is neither a tag nor a digest names no
/// manifest, so it is unknown (404), as Distribution answers and the
/// conformance suite expects; only a push to it is refused as invalid.
fn lookup_reference(reference: &str) -> Result<Reference> {
    Reference::parse(reference).map_err(|e| {
        RegistryError::ManifestUnknown(format!("{reference} (no manifest can have it: {e})"))
    })
}

impl Registry {
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
        let reference = lookup_reference(reference)?;
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
        self.note_pull(repository, &info.digest);
        Ok((info, content))
    }

    /// Records that a manifest was pulled, for retention rules, at most once
    /// per [`PULL_RECORD_INTERVAL`] per manifest and process, in the
    /// background: a pull never waits for (or fails on) this write.
    fn note_pull(&self, repository: &str, digest: &Digest) {
        let key = (repository.to_owned(), digest.clone());
        if self
            .pulls
            .get(&key)
            .is_some_and(|at| at.elapsed() < PULL_RECORD_INTERVAL)
        {
            return;
        }
        self.pulls.insert(key, Instant::now());
        let (Ok(repository), metadata) = (parse_name(repository), self.metadata.clone()) else {
            return;
        };
        let digest = digest.clone();
        tokio::spawn(async move {
            if let Err(e) = metadata.record_pull(&repository, &digest, now()).await {
                tracing::debug!(error = %e, "could not record a pull");
            }
        });
    }

    /// Stores a pushed manifest after checking it, and tags it when pushed by tag.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        content_type: Option<&str>,
        content: Bytes,
    ) -> Result<PushedManifest> {
        self.store_manifest(repository, reference, content_type, content, false)
            .await
    }

    /// Stores a manifest a pull-through cache got from its upstream, byte
    /// for byte, under a tag or its digest: checked as a push is, except
    /// that what it references may come later (when first pulled).
    pub async fn put_cached_manifest(
        &self,
        repository: &str,
        reference: &str,
        content_type: Option<&str>,
        content: Bytes,
    ) -> Result<PushedManifest> {
        self.store_manifest(repository, reference, content_type, content, true)
            .await
    }

    /// Makes `tag` name no manifest any more (the upstream of a cached
    /// repository no longer has it); its manifest is collected later.
    pub async fn forget_tag(&self, repository: &str, tag: &str) -> Result<()> {
        let repository = parse_name(repository)?;
        let tag = Tag::parse(tag).map_err(RegistryError::TagInvalid)?;
        let immutable = self.config.rules.immutable(repository.as_str());
        self.metadata
            .delete_tag(&repository, &tag, immutable)
            .await?;
        Ok(())
    }

    async fn store_manifest(
        &self,
        repository: &str,
        reference: &str,
        content_type: Option<&str>,
        content: Bytes,
        references_follow: bool,
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
        // Bytes first, so a recorded manifest always has them; a refused
        // push leaves none behind, unless something else records them.
        self.blobs.write_all(&digest, content.clone()).await?;
        let mut rules = self.config.rules.write_rules(repository.as_str());
        rules.references_follow = references_follow;
        let recorded = self
            .metadata
            .put_manifest(&repository, record, tag, now(), rules)
            .await;
        if let Err(e) = recorded {
            self.discard_unrecorded(&digest).await;
            return Err(e.into());
        }
        // A collector may have taken bytes it saw unrecorded just before
        // they were recorded: store them again if so.
        self.blobs.write_all(&digest, content.clone()).await?;
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
        let immutable = self.config.rules.immutable(repository.as_str());
        // What only this manifest kept alive is collected later.
        let found = match lookup_reference(reference)? {
            Reference::Tag(tag) => {
                self.metadata
                    .delete_tag(&repository, &tag, immutable)
                    .await?
            }
            Reference::Digest(digest) => {
                self.metadata
                    .delete_manifest(&repository, &digest, immutable)
                    .await?
            }
        };
        if !found {
            return Err(RegistryError::ManifestUnknown(reference.to_owned()));
        }
        Ok(())
    }
}
