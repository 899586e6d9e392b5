//! The registry's successful answers, one type each, with the spec's headers.

use axum::body::Body;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_oci::Digest;
use berth_registry::{ByteRange, ByteStream, StoredManifest, UploadStatus};

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

fn respond(status: StatusCode, headers: Vec<(HeaderName, String)>, body: Body) -> Response {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder.body(body).expect("valid response headers")
}

/// A JSON document (`/v2/`, tag lists, the catalog), with the `Link` to the
/// next page when there is one.
pub struct Json {
    pub body: String,
    pub link: Option<String>,
}

impl IntoResponse for Json {
    fn into_response(self) -> Response {
        let mut headers = vec![(header::CONTENT_TYPE, "application/json".to_owned())];
        headers.extend(self.link.map(|link| (header::LINK, link)));
        respond(StatusCode::OK, headers, Body::from(self.body))
    }
}

/// A manifest: its exact bytes with the media type it was pushed with, or
/// only the headers (`HEAD`).
pub struct ManifestContent {
    pub info: StoredManifest,
    pub body: Option<bytes::Bytes>,
}

impl IntoResponse for ManifestContent {
    fn into_response(self) -> Response {
        let info = self.info;
        let headers = vec![
            (header::CONTENT_TYPE, info.media_type),
            (header::CONTENT_LENGTH, info.size.to_string()),
            (DOCKER_CONTENT_DIGEST, info.digest.to_string()),
            (header::ETAG, format!("\"{}\"", info.digest)),
        ];
        respond(
            StatusCode::OK,
            headers,
            self.body.map_or_else(Body::empty, Body::from),
        )
    }
}

/// A blob, a range of it (206), or only its headers (`HEAD`).
pub struct BlobContent {
    pub digest: Digest,
    pub size: u64,
    pub range: Option<ByteRange>,
    /// `None` for `HEAD`.
    pub body: Option<ByteStream>,
}

impl IntoResponse for BlobContent {
    fn into_response(self) -> Response {
        let digest = self.digest.to_string();
        let mut headers = vec![
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::ACCEPT_RANGES, "bytes".to_owned()),
            (header::ETAG, format!("\"{digest}\"")),
            (DOCKER_CONTENT_DIGEST, digest),
        ];
        let status = match &self.range {
            Some(r) => {
                headers.push((header::CONTENT_LENGTH, (r.end - r.start).to_string()));
                headers.push((
                    header::CONTENT_RANGE,
                    format!("bytes {}-{}/{}", r.start, r.end - 1, self.size),
                ));
                StatusCode::PARTIAL_CONTENT
            }
            None => {
                headers.push((header::CONTENT_LENGTH, self.size.to_string()));
                StatusCode::OK
            }
        };
        let body = self.body.map_or_else(Body::empty, Body::from_stream);
        respond(status, headers, body)
    }
}

/// 307: fetch the blob from the blob store itself (a presigned URL), `Range`
/// and all; 307 keeps the method, as Distribution's redirect option does.
pub struct BlobRedirect<'a> {
    pub digest: &'a Digest,
    pub url: String,
}

impl IntoResponse for BlobRedirect<'_> {
    fn into_response(self) -> Response {
        let headers = vec![
            (header::LOCATION, self.url),
            (header::CONTENT_LENGTH, "0".to_owned()),
            (DOCKER_CONTENT_DIGEST, self.digest.to_string()),
        ];
        respond(StatusCode::TEMPORARY_REDIRECT, headers, Body::empty())
    }
}

/// 201: a blob is in the repository (uploaded or mounted).
pub struct BlobCreated<'a> {
    pub repository: &'a str,
    pub digest: &'a Digest,
}

impl IntoResponse for BlobCreated<'_> {
    fn into_response(self) -> Response {
        let headers = vec![
            (
                header::LOCATION,
                format!("/v2/{}/blobs/{}", self.repository, self.digest),
            ),
            (header::CONTENT_LENGTH, "0".to_owned()),
            (DOCKER_CONTENT_DIGEST, self.digest.to_string()),
        ];
        respond(StatusCode::CREATED, headers, Body::empty())
    }
}

/// 201: a manifest was pushed.
pub struct ManifestCreated<'a> {
    pub repository: &'a str,
    pub digest: &'a Digest,
    pub subject: Option<&'a Digest>,
}

impl IntoResponse for ManifestCreated<'_> {
    fn into_response(self) -> Response {
        let mut headers = vec![
            (
                header::LOCATION,
                format!("/v2/{}/manifests/{}", self.repository, self.digest),
            ),
            (header::CONTENT_LENGTH, "0".to_owned()),
            (DOCKER_CONTENT_DIGEST, self.digest.to_string()),
        ];
        headers.extend(self.subject.map(|s| (OCI_SUBJECT, s.to_string())));
        respond(StatusCode::CREATED, headers, Body::empty())
    }
}

/// `Location`, `Range` and `Docker-Upload-UUID` of an upload. `Range` is the
/// inclusive span received, `0-0` when empty, as Distribution answers.
pub fn upload_headers(upload: &UploadStatus) -> Vec<(HeaderName, String)> {
    vec![
        (
            header::LOCATION,
            format!("/v2/{}/blobs/uploads/{}", upload.repository, upload.id),
        ),
        (
            header::RANGE,
            format!("0-{}", upload.size.saturating_sub(1)),
        ),
        (DOCKER_UPLOAD_UUID, upload.id.clone()),
    ]
}

/// Where an upload stands: 202 after a chunk or when opened, 204 for `GET`.
pub struct UploadProgress {
    pub status: StatusCode,
    pub upload: UploadStatus,
}

impl IntoResponse for UploadProgress {
    fn into_response(self) -> Response {
        let mut headers = upload_headers(&self.upload);
        headers.push((header::CONTENT_LENGTH, "0".to_owned()));
        respond(self.status, headers, Body::empty())
    }
}

/// 202 for a delete, 204 for a cancelled upload: nothing to say.
pub struct Done(pub StatusCode);

impl IntoResponse for Done {
    fn into_response(self) -> Response {
        let headers = vec![(header::CONTENT_LENGTH, "0".to_owned())];
        respond(self.0, headers, Body::empty())
    }
}

/// A referrers list: an OCI image index.
pub struct ReferrersIndex {
    pub index: bytes::Bytes,
    pub filtered: bool,
    pub link: Option<String>,
}

impl IntoResponse for ReferrersIndex {
    fn into_response(self) -> Response {
        let mut headers = vec![(
            header::CONTENT_TYPE,
            berth_oci::media_type::OCI_INDEX.to_owned(),
        )];
        headers.extend(self.link.map(|link| (header::LINK, link)));
        if self.filtered {
            headers.push((OCI_FILTERS_APPLIED, "artifactType".to_owned()));
        }
        respond(StatusCode::OK, headers, Body::from(self.index))
    }
}
