//! Manifests: pushes with their reference checks, pulls, deletes.

use berth_oci::{
    Algorithm, Digest, Hasher, Manifest, ManifestKind, Reference, RepositoryName, Tag,
};
use berth_storage::NewManifest;
use bytes::Bytes;

use crate::error::{RegistryError, Result};
use crate::registry::{Registry, parse_name, parse_reference};

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
        match lookup_reference(reference)? {
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
}
