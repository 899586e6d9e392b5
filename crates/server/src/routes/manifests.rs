//! `/v2/<name>/manifests/<reference>`: `GET`, `HEAD`, `PUT`, `DELETE`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use berth_registry::RegistryError;

use super::{Request, Result, done};
use crate::body::{SmallBodyError, read_small};
use crate::error::EdgeError;
use crate::response::{ManifestContent, ManifestCreated};

/// How long a manifest body may take to arrive: clients send it in one go,
/// and even the largest accepted manifest arrives in seconds on a slow link.
const MANIFEST_BODY_DEADLINE: Duration = Duration::from_secs(30);

pub(super) async fn get(request: &Request<'_>, name: &str, reference: &str, head: bool) -> Result {
    let registry = &request.state.registry;
    let (info, body) = match request.cached() {
        Some((cache, route)) => cache.manifest(route, reference, head).await?,
        None if head => (registry.manifest_info(name, reference).await?, None),
        None => {
            let (info, body) = registry.manifest(name, reference).await?;
            (info, Some(body))
        }
    };
    if !head && request.state.audit_pulls {
        request.audit_pull(name, reference, info.digest.as_str());
    }
    Ok(ManifestContent { info, body }.into_response())
}

pub(super) async fn put(request: &Request<'_>, name: &str, reference: &str, body: Body) -> Result {
    let registry = &request.state.registry;
    let limit = registry.config().max_manifest_bytes;
    if request.content_length().is_some_and(|l| l > limit as u64) {
        return Err(RegistryError::ManifestTooLarge { limit }.into());
    }
    let content = match read_small(body, limit, MANIFEST_BODY_DEADLINE).await {
        Ok(content) => content,
        Err(SmallBodyError::TooLarge { .. }) => {
            return Err(RegistryError::ManifestTooLarge { limit }.into());
        }
        Err(e) => return Err(EdgeError::ManifestUnreadable(e).into()),
    };
    let content_type = request.header(header::CONTENT_TYPE);
    let pushed = registry
        .put_manifest(name, reference, content_type, content)
        .await?;
    request.audit("push", name, &format!("{reference} {}", pushed.digest));
    Ok(ManifestCreated {
        repository: name,
        digest: &pushed.digest,
        subject: pushed.subject.as_ref(),
    }
    .into_response())
}

pub(super) async fn delete(request: &Request<'_>, name: &str, reference: &str) -> Result {
    request
        .state
        .registry
        .delete_manifest(name, reference)
        .await?;
    request.audit("delete", name, reference);
    Ok(done(StatusCode::ACCEPTED))
}
