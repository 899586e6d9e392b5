//! Listings: tags, the catalog, referrers.

use berth_oci::{Digest, media_type};
use berth_storage::ReferrerRecord;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::{RegistryError, Result};
use crate::page::{Page, page_size};
use crate::registry::{Registry, parse_name};

/// Catalog page size when the client gives no `n`.
const DEFAULT_CATALOG_PAGE: usize = 1000;

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

impl Registry {
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
