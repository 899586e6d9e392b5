//! `/v2/<name>/blobs/uploads/[<id>]`: opening (plain, monolithic, mount),
//! chunks, status, closing, cancelling.

use axum::body::{Body, HttpBody};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use berth_auth::{Action, Required};
use berth_registry::{Chunk, ChunkRange, Mount, UploadRef};

use super::{Request, Result, done};
use crate::body;
use crate::error::EdgeError;
use crate::response::{BlobCreated, UploadProgress};

fn upload<'a>(request: &'a Request<'_>, name: &'a str, id: &'a str) -> UploadRef<'a> {
    UploadRef {
        repository: name,
        id,
        owner: request.subject(),
    }
}

/// `POST …/uploads/`: a session, a whole blob (`?digest=`), or a mount
/// (`?mount=&from=`).
pub(super) async fn start(request: &Request<'_>, name: &str, body: Body) -> Result {
    let registry = &request.state.registry;
    let owner = request.subject();
    if let Some(mount) = request.query.get("mount") {
        // Mounting reads the source: without pull there, open a plain upload.
        let from = request.query.get("from").filter(|from| {
            request.principal.as_ref().is_some_and(|principal| {
                let read = Required::Repository {
                    name: (*from).to_owned(),
                    action: Action::Pull,
                };
                request.state.auth.permits(principal, &read)
            })
        });
        return Ok(match registry.mount_blob(name, mount, from, owner).await? {
            Mount::Mounted(blob) => BlobCreated {
                repository: name,
                digest: blob.digest(),
            }
            .into_response(),
            Mount::Session(upload) => UploadProgress {
                status: StatusCode::ACCEPTED,
                upload,
            }
            .into_response(),
        });
    }
    if let Some(digest) = request.query.get("digest") {
        let length = request.content_length();
        let blob = registry
            .upload_monolithic(name, owner, digest, length, body::stream(body))
            .await?;
        return Ok(BlobCreated {
            repository: name,
            digest: blob.digest(),
        }
        .into_response());
    }
    let upload = registry.start_upload(name, owner).await?;
    Ok(UploadProgress {
        status: StatusCode::ACCEPTED,
        upload,
    }
    .into_response())
}

pub(super) async fn status(request: &Request<'_>, name: &str, id: &str) -> Result {
    let upload = request
        .state
        .registry
        .upload_status(upload(request, name, id))
        .await?;
    Ok(UploadProgress {
        status: StatusCode::NO_CONTENT,
        upload,
    }
    .into_response())
}

/// The chunk a `PATCH` or closing `PUT` carries, with its `Content-Range`
/// checked against its `Content-Length`.
fn chunk(request: &Request<'_>, body: Body) -> Result<Chunk, EdgeError> {
    let range = match request.header(header::CONTENT_RANGE) {
        None => None,
        Some(text) => {
            let range = parse_content_range(text)?;
            if let Some(content_length) = request.content_length()
                && content_length != range.length()
            {
                return Err(EdgeError::ContentLengthDisagrees {
                    range: text.to_owned(),
                    length: range.length(),
                    content_length,
                });
            }
            Some(range)
        }
    };
    Ok(Chunk {
        range,
        length: request.content_length(),
        body: body::stream(body),
    })
}

/// The spec's chunk `Content-Range: <start>-<end>` (inclusive, no unit).
fn parse_content_range(text: &str) -> Result<ChunkRange, EdgeError> {
    let invalid = || EdgeError::ContentRangeInvalid(text.to_owned());
    let (start, end) = text.trim().split_once('-').ok_or_else(invalid)?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
            .ok_or_else(invalid)
    };
    ChunkRange::new(number(start)?, number(end)?).ok_or_else(invalid)
}

pub(super) async fn append(request: &Request<'_>, name: &str, id: &str, body: Body) -> Result {
    let chunk = chunk(request, body)?;
    let upload = request
        .state
        .registry
        .append_upload(upload(request, name, id), chunk)
        .await?;
    Ok(UploadProgress {
        status: StatusCode::ACCEPTED,
        upload,
    }
    .into_response())
}

/// `PUT …/uploads/<id>?digest=`, with an optional last chunk.
pub(super) async fn finish(request: &Request<'_>, name: &str, id: &str, body: Body) -> Result {
    let digest = request
        .query
        .get("digest")
        .ok_or(EdgeError::DigestParameterMissing)?;
    let last_chunk = if body.is_end_stream() {
        None
    } else {
        Some(chunk(request, body)?)
    };
    let blob = request
        .state
        .registry
        .finish_upload(upload(request, name, id), digest, last_chunk)
        .await?;
    Ok(BlobCreated {
        repository: name,
        digest: blob.digest(),
    }
    .into_response())
}

pub(super) async fn cancel(request: &Request<'_>, name: &str, id: &str) -> Result {
    request
        .state
        .registry
        .cancel_upload(upload(request, name, id))
        .await?;
    Ok(done(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        let range = parse_content_range("0-1023").unwrap();
        assert_eq!((range.start(), range.length()), (0, 1024));
        assert_eq!(parse_content_range("5-5").unwrap().length(), 1);
        for bad in [
            "bytes 0-1",
            "0-",
            "-1",
            "3-2",
            "a-b",
            "0-1/2",
            "",
            "0-18446744073709551615",
        ] {
            assert!(parse_content_range(bad).is_err(), "{bad}");
        }
    }
}
