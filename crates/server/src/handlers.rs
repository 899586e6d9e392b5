//! Thin handlers: read the request, call the registry, write the spec's headers.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use berth_auth::{Action, Principal, Required};
use berth_registry::{ByteStream, Mount, Registry, RegistryError, StoredManifest, UploadStatus};
use futures_util::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use crate::access::{self, AppState};
use crate::client_addr::ClientAddr;
use crate::error::{ApiError, ErrorCode};
use crate::route::Route;

type Result<T, E = ApiError> = std::result::Result<T, E>;

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
const DOCKER_UPLOAD_UUID: &str = "docker-upload-uuid";
const OCI_SUBJECT: &str = "oci-subject";
const OCI_FILTERS_APPLIED: &str = "oci-filters-applied";

/// The query parameters of a request, in order.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

fn body_stream(body: Body) -> ByteStream {
    TryStreamExt::map_err(body.into_data_stream(), io::Error::other).boxed()
}

fn respond(status: StatusCode, headers: Vec<(&str, String)>, body: Body) -> Response {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder.body(body).expect("valid response headers")
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.registry.ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unsupported,
            format!("not ready: {e}"),
        )
        .into_response(),
    }
}

/// 405 for the fixed routes (health, token, JWKS), in the spec's error format.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::Unsupported,
        format!("{method} is not supported on {}", uri.path()),
    )
    .into_response()
}

/// The request as the handlers see it, once access is granted.
struct Request<'a> {
    state: &'a AppState,
    principal: Option<Principal>,
    client: IpAddr,
}

impl Request<'_> {
    /// Logs a change to the registry for the audit trail.
    fn audit(&self, event: &str, repository: &str, reference: &str) {
        tracing::info!(
            target: "berth::audit",
            event,
            subject = self.principal.as_ref().map_or("", Principal::name),
            client = %self.client,
            repository,
            reference,
        );
    }
}

/// Every `/v2/…` request lands here and is routed by [`Route`].
pub async fn dispatch(
    State(state): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&state, client, method, &uri, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn handle(
    state: &AppState,
    client: IpAddr,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let Some(route) = Route::parse(uri.path()) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NameUnknown,
            format!(
                "{} is not an endpoint of the OCI Distribution API",
                uri.path()
            ),
        ));
    };
    let principal = match access::required(route, &method) {
        Some(required) => Some(state.check(headers, uri, client, &required).await?),
        None => None,
    };
    let request = Request {
        state,
        principal,
        client,
    };
    let registry = state.registry.as_ref();
    let query = Query::parse(uri.query());
    let head = method == Method::HEAD;
    match (route, method) {
        (Route::Base, Method::GET | Method::HEAD) => {
            Ok(json_response(StatusCode::OK, "{}".into(), vec![]))
        }
        (Route::Catalog, Method::GET) => {
            // Only the repositories the caller may pull are named.
            let filter = request
                .principal
                .as_ref()
                .map(|p| state.auth.catalog_filter(p));
            let visible = |name: &str| filter.as_ref().is_some_and(|f| f(name));
            let page = registry
                .catalog(query.get("n"), query.get("last"), &visible)
                .await?;
            let link = next_link("/v2/_catalog", &query, "n", page.next.as_deref());
            let body = json!({ "repositories": page.items }).to_string();
            Ok(json_response(StatusCode::OK, body, link))
        }
        (Route::Tags { name }, Method::GET) => {
            let page = registry
                .tags(name, query.get("n"), query.get("last"))
                .await?;
            let link = next_link(
                &format!("/v2/{name}/tags/list"),
                &query,
                "n",
                page.next.as_deref(),
            );
            let body = json!({ "name": name, "tags": page.items }).to_string();
            Ok(json_response(StatusCode::OK, body, link))
        }
        (Route::Manifest { name, reference }, Method::GET | Method::HEAD) => {
            if head {
                let info = registry.manifest_info(name, reference).await?;
                Ok(manifest_response(&info, Body::empty()))
            } else {
                let (info, content) = registry.manifest(name, reference).await?;
                Ok(manifest_response(&info, Body::from(content)))
            }
        }
        (Route::Manifest { name, reference }, Method::PUT) => {
            put_manifest(&request, name, reference, headers, body).await
        }
        (Route::Manifest { name, reference }, Method::DELETE) => {
            registry.delete_manifest(name, reference).await?;
            request.audit("delete", name, reference);
            Ok(accepted())
        }
        (Route::Blob { name, digest }, Method::GET | Method::HEAD) => {
            get_blob(registry, name, digest, headers, head).await
        }
        (Route::Blob { name, digest }, Method::DELETE) => {
            registry.delete_blob(name, digest).await?;
            request.audit("delete", name, digest);
            Ok(accepted())
        }
        (Route::Uploads { name }, Method::POST) => {
            start_upload(&request, name, &query, headers, body).await
        }
        (Route::Upload { name, id }, Method::GET) => {
            let status = registry.upload_status(name, id).await?;
            Ok(upload_response(StatusCode::NO_CONTENT, name, &status))
        }
        (Route::Upload { name, id }, Method::PATCH) => {
            let range = header_str(headers, header::CONTENT_RANGE);
            let result = registry
                .append_upload(name, id, range, content_length(headers), body_stream(body))
                .await;
            match result {
                Ok(status) => Ok(upload_response(StatusCode::ACCEPTED, name, &status)),
                Err(RegistryError::UploadOutOfOrder { start, size }) => {
                    let status = UploadStatus {
                        id: id.to_owned(),
                        size,
                    };
                    let mut error = ApiError::from(RegistryError::UploadOutOfOrder { start, size });
                    for (name, value) in upload_headers(name, &status) {
                        error = error.with_header(header::HeaderName::from_static(name), value);
                    }
                    Err(error)
                }
                Err(e) => Err(e.into()),
            }
        }
        (Route::Upload { name, id }, Method::PUT) => {
            let digest = query.get("digest").ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::DigestInvalid,
                    "closing an upload needs ?digest=<digest of the whole blob>",
                )
            })?;
            let length = content_length(headers);
            let body = (length != Some(0)).then(|| body_stream(body));
            let range = header_str(headers, header::CONTENT_RANGE);
            let (digest, _) = registry
                .finish_upload(name, id, digest, range, length, body)
                .await?;
            Ok(blob_created(name, &digest.to_string()))
        }
        (Route::Upload { name, id }, Method::DELETE) => {
            registry.cancel_upload(name, id).await?;
            Ok(respond(StatusCode::NO_CONTENT, vec![], Body::empty()))
        }
        (Route::Referrers { name, digest }, Method::GET) => {
            let referrers = registry
                .referrers(name, digest, query.get("artifactType"), query.get("last"))
                .await?;
            let mut headers = next_link(
                &format!("/v2/{name}/referrers/{digest}"),
                &query,
                "artifactType",
                referrers.next.as_deref(),
            );
            headers.push((
                header::CONTENT_TYPE.as_str(),
                berth_oci::media_type::OCI_INDEX.to_owned(),
            ));
            if referrers.filtered {
                headers.push((OCI_FILTERS_APPLIED, "artifactType".to_owned()));
            }
            Ok(respond(
                StatusCode::OK,
                headers,
                Body::from(referrers.index),
            ))
        }
        (_, method) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            format!("{method} is not supported on {}", uri.path()),
        )),
    }
}

fn json_response(status: StatusCode, body: String, mut headers: Vec<(&str, String)>) -> Response {
    headers.push((header::CONTENT_TYPE.as_str(), "application/json".to_owned()));
    respond(status, headers, Body::from(body))
}

/// The `Link` header of a paginated listing, when there is a next page:
/// `path` with the request's `kept` parameter (the page size, the filter)
/// and the next page's `last`.
fn next_link<'a>(
    path: &str,
    query: &Query,
    kept: &str,
    last: Option<&str>,
) -> Vec<(&'a str, String)> {
    let Some(last) = last else {
        return vec![];
    };
    let mut next = form_urlencoded::Serializer::new(String::new());
    if let Some(value) = query.get(kept) {
        next.append_pair(kept, value);
    }
    next.append_pair("last", last);
    vec![(
        header::LINK.as_str(),
        format!("<{path}?{}>; rel=\"next\"", next.finish()),
    )]
}

fn accepted() -> Response {
    respond(
        StatusCode::ACCEPTED,
        vec![(header::CONTENT_LENGTH.as_str(), "0".into())],
        Body::empty(),
    )
}

fn manifest_response(info: &StoredManifest, body: Body) -> Response {
    respond(
        StatusCode::OK,
        vec![
            (header::CONTENT_TYPE.as_str(), info.media_type.clone()),
            (header::CONTENT_LENGTH.as_str(), info.size.to_string()),
            (DOCKER_CONTENT_DIGEST, info.digest.to_string()),
            (header::ETAG.as_str(), format!("\"{}\"", info.digest)),
        ],
        body,
    )
}

async fn put_manifest(
    request: &Request<'_>,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let registry = &request.state.registry;
    let limit = registry.config().max_manifest_bytes;
    let too_large = || ApiError::from(RegistryError::ManifestTooLarge { limit });
    if content_length(headers).is_some_and(|l| l > limit as u64) {
        return Err(too_large());
    }
    let content = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::ManifestInvalid,
                format!("the manifest body could not be read: {e}"),
            ));
        }
    };
    let content_type = header_str(headers, header::CONTENT_TYPE);
    let pushed = registry
        .put_manifest(name, reference, content_type, content)
        .await?;
    let digest = pushed.digest.to_string();
    request.audit("push", name, &format!("{reference} {digest}"));
    let mut headers = vec![
        (
            header::LOCATION.as_str(),
            format!("/v2/{name}/manifests/{digest}"),
        ),
        (header::CONTENT_LENGTH.as_str(), "0".to_owned()),
        (DOCKER_CONTENT_DIGEST, digest),
    ];
    if let Some(subject) = pushed.subject {
        headers.push((OCI_SUBJECT, subject.to_string()));
    }
    Ok(respond(StatusCode::CREATED, headers, Body::empty()))
}

async fn get_blob(
    registry: &Registry,
    name: &str,
    digest: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response> {
    let common = |digest: &str| {
        vec![
            (
                header::CONTENT_TYPE.as_str(),
                "application/octet-stream".to_owned(),
            ),
            (DOCKER_CONTENT_DIGEST, digest.to_owned()),
            (header::ACCEPT_RANGES.as_str(), "bytes".to_owned()),
            (header::ETAG.as_str(), format!("\"{digest}\"")),
        ]
    };
    if head {
        let (digest, size) = registry.blob_size(name, digest).await?;
        let mut headers = common(digest.as_str());
        headers.push((header::CONTENT_LENGTH.as_str(), size.to_string()));
        return Ok(respond(StatusCode::OK, headers, Body::empty()));
    }
    let range = header_str(headers, header::RANGE);
    let (digest, read) = registry.read_blob(name, digest, range).await?;
    let mut headers = common(digest.as_str());
    let status = match &read.range {
        Some(r) => {
            headers.push((
                header::CONTENT_LENGTH.as_str(),
                (r.end - r.start).to_string(),
            ));
            headers.push((
                header::CONTENT_RANGE.as_str(),
                format!("bytes {}-{}/{}", r.start, r.end - 1, read.size),
            ));
            StatusCode::PARTIAL_CONTENT
        }
        None => {
            headers.push((header::CONTENT_LENGTH.as_str(), read.size.to_string()));
            StatusCode::OK
        }
    };
    Ok(respond(status, headers, Body::from_stream(read.body)))
}

async fn start_upload(
    request: &Request<'_>,
    name: &str,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let registry = &request.state.registry;
    if let Some(mount) = query.get("mount") {
        // Mounting reads the source: without pull there, open a plain upload.
        let from = query.get("from").filter(|from| {
            request.principal.as_ref().is_some_and(|principal| {
                let read = Required::Repository {
                    name: (*from).to_owned(),
                    action: Action::Pull,
                };
                request.state.auth.permits(principal, &read)
            })
        });
        return match registry.mount_blob(name, mount, from).await? {
            Mount::Mounted { digest, .. } => Ok(blob_created(name, digest.as_str())),
            Mount::Session(status) => Ok(upload_response(StatusCode::ACCEPTED, name, &status)),
        };
    }
    if let Some(digest) = query.get("digest") {
        let (digest, _) = registry
            .upload_monolithic(name, digest, content_length(headers), body_stream(body))
            .await?;
        return Ok(blob_created(name, digest.as_str()));
    }
    let status = registry.start_upload(name).await?;
    Ok(upload_response(StatusCode::ACCEPTED, name, &status))
}

fn blob_created(name: &str, digest: &str) -> Response {
    respond(
        StatusCode::CREATED,
        vec![
            (
                header::LOCATION.as_str(),
                format!("/v2/{name}/blobs/{digest}"),
            ),
            (header::CONTENT_LENGTH.as_str(), "0".to_owned()),
            (DOCKER_CONTENT_DIGEST, digest.to_owned()),
        ],
        Body::empty(),
    )
}

/// `Location`, `Range` and `Docker-Upload-UUID` of an upload. `Range` is the
/// inclusive span received, `0-0` when empty, as Distribution answers.
fn upload_headers(name: &str, status: &UploadStatus) -> Vec<(&'static str, String)> {
    vec![
        (
            "location",
            format!("/v2/{name}/blobs/uploads/{}", status.id),
        ),
        ("range", format!("0-{}", status.size.saturating_sub(1))),
        (DOCKER_UPLOAD_UUID, status.id.clone()),
    ]
}

fn upload_response(code: StatusCode, name: &str, status: &UploadStatus) -> Response {
    let mut headers = upload_headers(name, status);
    headers.push(("content-length", "0".to_owned()));
    respond(code, headers, Body::empty())
}
