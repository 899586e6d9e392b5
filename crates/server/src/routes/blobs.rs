//! `/v2/<name>/blobs/<digest>`: `GET` (with `Range`), `HEAD`, `DELETE`.

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use berth_auth::Required;
use berth_cache::CachedBlob;
use berth_registry::ByteRange;

use super::{Request, Result, done};
use crate::error::EdgeError;
use crate::response::{BlobContent, BlobRedirect};

pub(super) async fn get(request: &Request<'_>, name: &str, digest: &str, head: bool) -> Result {
    let registry = &request.state.registry;
    let blob = match request.cached() {
        Some((cache, route)) if head => {
            let (digest, size) = cache.blob_size(route, digest).await?;
            return Ok(BlobContent {
                digest,
                size,
                range: None,
                body: None,
            }
            .into_response());
        }
        Some((cache, route)) => match cache.blob(route, digest).await? {
            CachedBlob::Stored(blob) => blob,
            CachedBlob::Arriving(arriving) => {
                let (digest, size) = (arriving.digest.clone(), arriving.size);
                let range = range(request, size)?;
                let body = arriving.read(range.clone());
                return Ok(BlobContent {
                    digest,
                    size,
                    range,
                    body: Some(body),
                }
                .into_response());
            }
        },
        None => registry.blob(name, digest).await?,
    };
    if !head && let Some(url) = registry.blob_download_url(&blob).await? {
        let digest = blob.digest();
        return Ok(BlobRedirect { digest, url }.into_response());
    }
    let range = if head {
        None
    } else {
        range(request, blob.size())?
    };
    let body = match head {
        true => None,
        false => Some(registry.read_blob(&blob, range.clone()).await?),
    };
    Ok(BlobContent {
        digest: blob.digest().clone(),
        size: blob.size(),
        range,
        body,
    }
    .into_response())
}

/// The range the request's `Range` header asks for, if any.
fn range(request: &Request<'_>, size: u64) -> Result<Option<ByteRange>, EdgeError> {
    match request.header(header::RANGE) {
        Some(value) => requested_range(value, size),
        None => Ok(None),
    }
}

/// The part of a blob of `size` bytes that a `Range` header asks for
/// (RFC 9110 §14), parsed by `http-range-header` (what tower-http's file
/// server uses). One range is served as 206; a header that does not parse,
/// or asks for several ranges, is ignored and the whole blob is served, as
/// RFC 9110 allows; a range wholly past the end is 416.
fn requested_range(value: &str, size: u64) -> Result<Option<ByteRange>, EdgeError> {
    let Ok(parsed) = http_range_header::parse_range_header(value) else {
        return Ok(None);
    };
    match parsed.validate(size).as_deref() {
        Ok([range]) => Ok(Some(*range.start()..range.end() + 1)),
        Ok(_) => Ok(None),
        Err(_) => Err(EdgeError::RangeNotSatisfiable { size }),
    }
}

/// `DELETE`; `?force=true` (administrators only) deletes a blob that
/// manifests of the repository still use.
pub(super) async fn delete(request: &Request<'_>, name: &str, digest: &str) -> Result {
    let force = request.query.get("force") == Some("true");
    if force
        && !request
            .principal
            .as_ref()
            .is_some_and(|p| request.state.auth.permits(p, &Required::Admin))
    {
        return Err(EdgeError::ForceDenied.into());
    }
    request
        .state
        .registry
        .delete_blob(name, digest, force)
        .await?;
    request.audit(if force { "force_delete" } else { "delete" }, name, digest);
    Ok(done(StatusCode::ACCEPTED))
}

#[cfg(test)]
mod tests {
    use super::requested_range;

    #[test]
    fn ranges() {
        let r = |h: &str, size: u64| requested_range(h, size).map_err(|e| e.to_string());
        assert_eq!(r("bytes=0-0", 10), Ok(Some(0..1)));
        assert_eq!(r("bytes=2-5", 10), Ok(Some(2..6)));
        assert_eq!(r("bytes=2-", 10), Ok(Some(2..10)));
        assert_eq!(r("bytes=5-100", 10), Ok(Some(5..10)));
        assert_eq!(r("bytes=-3", 10), Ok(Some(7..10)));
        assert_eq!(r("bytes=-30", 10), Ok(Some(0..10)));
        for unsatisfiable in ["bytes=10-", "bytes=10-20"] {
            assert!(r(unsatisfiable, 10).is_err(), "{unsatisfiable}");
        }
        assert!(r("bytes=0-", 0).is_err());
        // Malformed or several ranges: the whole blob.
        for whole in [
            "bytes=5-2",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=a-b",
            "bytes=+1-2",
        ] {
            assert_eq!(r(whole, 10), Ok(None), "{whole}");
        }
    }
}
