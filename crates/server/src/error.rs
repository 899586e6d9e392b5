//! Every error answer berth gives, and the one place where errors become
//! HTTP statuses and OCI error codes.
//!
//! Handlers return typed errors: the registry's ([`RegistryError`]), the
//! edge's own ([`EdgeError`]: requests malformed before the registry sees
//! them), access decisions ([`AccessError`]), login failures
//! ([`AuthError`]) and pull-credential refusals ([`PullCredentialError`]).
//! Each becomes an [`ApiError`] here and nowhere else.
//!
//! Only the error codes of the OCI Distribution Specification are ever sent, in
//! its body format `{"errors":[{"code","message","detail"}]}`, since clients act
//! on them. The spec has no code for a server-side failure; those answer 500
//! with `UNSUPPORTED` ("the operation could not be carried out") and the cause
//! goes to the log, not to the client.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_auth::pull_credential::PullCredentialError;
use berth_auth::{AuthError, Required};
use berth_cache::{CacheError, UpstreamError};
use berth_registry::RegistryError;
use serde_json::json;

use crate::body::SmallBodyError;
use crate::limits::MAX_HEADER_BYTES;
use crate::response::upload_headers;

/// The error codes of the OCI Distribution Specification v1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
        }
    }
}

/// An error answer: status, code, message and any extra headers.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    /// Extra headers (a challenge, Retry-After, Range…); few, so a list.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The authenticated subject refused, for the access log.
    subject: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
            subject: None,
        }
    }

    /// The authenticated subject a 403 refused, if this is one.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((name, value));
        }
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// What the HTTP edge finds wrong with a request itself.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("{0} is not an endpoint of the OCI Distribution API")]
    NotAnEndpoint(String),
    #[error("{method} is not supported on {path}")]
    MethodNotAllowed { method: Method, path: String },
    #[error("closing an upload needs ?digest=<digest of the whole blob>")]
    DigestParameterMissing,
    #[error("Content-Range {0:?} is not <start>-<end> (inclusive byte offsets, e.g. 0-1023)")]
    ContentRangeInvalid(String),
    #[error("Content-Range {range} is {length} bytes but Content-Length is {content_length}")]
    ContentLengthDisagrees {
        range: String,
        length: u64,
        content_length: u64,
    },
    #[error("requested range lies outside the blob's {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("the manifest body could not be read: {0}")]
    ManifestUnreadable(SmallBodyError),
    #[error("{0}")]
    TokenRequestInvalid(String),
    #[error("{0}")]
    PullCredentialRequestInvalid(String),
    /// Only Basic credentials can be checked here (the token endpoint's
    /// OAuth2 form, the pull-credential exchange).
    #[error("{0}")]
    BasicLoginRequired(&'static str),
    #[error(
        "the Host header {0:?} is not a host name or address with an optional port: send the \
         registry's address"
    )]
    HostInvalid(String),
    #[error("the request target is {length} bytes long; berth accepts at most {limit}")]
    UriTooLong { length: usize, limit: usize },
    #[error("the request headers take {size} bytes; berth accepts at most {MAX_HEADER_BYTES}")]
    HeadersTooLarge { size: usize },
    #[error("not ready: the metadata store does not answer; the cause is in the log")]
    NotReady,
    #[error("{0}")]
    AdminRequestInvalid(String),
    /// `?force=true` on a blob delete by someone who is no administrator.
    #[error("only an administrator may force the delete of a blob in use")]
    ForceDenied,
    #[error(
        "{repository} is a pull-through cache of {upstream}: it is read-only; push to the \
         upstream, or to a repository outside the cache's prefix"
    )]
    CacheReadOnly {
        repository: String,
        upstream: String,
    },
}

/// An access decision that refuses the request.
#[derive(Debug)]
pub enum AccessError {
    /// 401 with this `WWW-Authenticate: Bearer …` challenge.
    Challenge(String),
    /// 403: `subject` is known and may not do what `required` is.
    Denied { subject: String, required: Required },
    /// 429: too many failed logins; retry after this long.
    Throttled(Duration),
}

/// The status and code for each registry error.
fn classify(error: &RegistryError) -> (StatusCode, ErrorCode) {
    use ErrorCode::*;
    use RegistryError as E;
    match error {
        E::NameInvalid(_) => (StatusCode::BAD_REQUEST, NameInvalid),
        E::TagInvalid(_) => (StatusCode::BAD_REQUEST, ManifestInvalid),
        E::DigestInvalid(_) | E::DigestMismatch { .. } => (StatusCode::BAD_REQUEST, DigestInvalid),
        E::NameUnknown(_) => (StatusCode::NOT_FOUND, NameUnknown),
        E::BlobUnknown(_) => (StatusCode::NOT_FOUND, BlobUnknown),
        E::ManifestUnknown(_) => (StatusCode::NOT_FOUND, ManifestUnknown),
        E::ManifestInvalid(_) => (StatusCode::BAD_REQUEST, ManifestInvalid),
        E::ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, ManifestBlobUnknown),
        E::ManifestTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, SizeInvalid),
        E::UploadUnknown(_) => (StatusCode::NOT_FOUND, BlobUploadUnknown),
        E::UploadOutOfOrder { .. } | E::UploadBusy { .. } | E::ChunkLength { .. } => {
            (StatusCode::RANGE_NOT_SATISFIABLE, BlobUploadInvalid)
        }
        E::UploadInvalid(_) => (StatusCode::BAD_REQUEST, BlobUploadInvalid),
        E::InvalidParameter(_) => (StatusCode::BAD_REQUEST, Unsupported),
        E::DeleteDisabled => (StatusCode::METHOD_NOT_ALLOWED, Unsupported),
        E::QuotaExceeded { .. } | E::TagImmutable { .. } => (StatusCode::FORBIDDEN, Denied),
        E::BlobInUse { .. } => (StatusCode::METHOD_NOT_ALLOWED, Denied),
        // Not a fault inside berth: the client learns why, and may retry.
        E::StorageFull(_) => (StatusCode::INSUFFICIENT_STORAGE, Unsupported),
        E::GcBusy => (StatusCode::CONFLICT, Unsupported),
        E::BlobContentMissing(_) | E::Storage(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Unsupported)
        }
    }
}

/// What a client is told of a failure inside berth.
const SERVER_FAULT: &str = "the registry could not complete the request; the cause is in its log";

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        registry_error(&error)
    }
}

fn registry_error(error: &RegistryError) -> ApiError {
    let (status, code) = classify(error);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %error, "the request failed inside berth");
        return ApiError::new(status, code, SERVER_FAULT);
    }
    if let RegistryError::StorageFull(why) = error {
        tracing::warn!(cause = %why, "a write was refused: storage is full");
    }
    let api = ApiError::new(status, code, error.to_string());
    match error {
        // Where the upload stands, so the client can go on from there.
        RegistryError::UploadOutOfOrder { upload, .. }
        | RegistryError::UploadBusy { upload }
        | RegistryError::ChunkLength { upload, .. } => upload_headers(upload)
            .into_iter()
            .fold(api, |api, (name, value)| api.with_header(name, &value)),
        _ => api,
    }
}

/// A cache miss the upstream could not fill: 429 with the upstream's
/// `Retry-After` when it throttles berth, 503 when it cannot be reached or
/// fails, 502 when it answers wrongly (bad bytes, a manifest berth cannot
/// keep, refused credentials), 404 when it has no such thing. The message
/// names the upstream: the fix is there or in berth's settings.
impl From<CacheError> for ApiError {
    fn from(error: CacheError) -> Self {
        use ErrorCode::*;
        let message = error.to_string();
        match &error {
            CacheError::Registry(e) => registry_error(e),
            CacheError::UnknownNamespace(_) => {
                ApiError::new(StatusCode::NOT_FOUND, NameUnknown, message)
            }
            CacheError::Upstream(UpstreamError::RateLimited { retry_after, .. }) => {
                let api = ApiError::new(StatusCode::TOO_MANY_REQUESTS, TooManyRequests, message);
                match retry_after {
                    Some(after) => {
                        api.with_header(header::RETRY_AFTER, &after.as_secs().max(1).to_string())
                    }
                    None => api,
                }
            }
            CacheError::Upstream(
                UpstreamError::NotFound { .. } | UpstreamError::NoAccess { .. },
            ) => ApiError::new(StatusCode::NOT_FOUND, NameUnknown, message),
            CacheError::Upstream(UpstreamError::Unavailable { .. }) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, Unsupported, message)
            }
            CacheError::Upstream(UpstreamError::Denied { .. } | UpstreamError::Invalid { .. })
            | CacheError::Corrupt { .. }
            | CacheError::Unstorable { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, Unsupported, message)
            }
            CacheError::Internal(_) => {
                tracing::error!(error = %error, "the request failed inside berth");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Unsupported, SERVER_FAULT)
            }
        }
    }
}

impl From<EdgeError> for ApiError {
    fn from(error: EdgeError) -> Self {
        use EdgeError as E;
        use ErrorCode::*;
        let (status, code) = match &error {
            E::NotAnEndpoint(_) => (StatusCode::NOT_FOUND, NameUnknown),
            E::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, Unsupported),
            E::DigestParameterMissing => (StatusCode::BAD_REQUEST, DigestInvalid),
            E::ContentRangeInvalid(_) => (StatusCode::BAD_REQUEST, BlobUploadInvalid),
            E::ContentLengthDisagrees { .. } => (StatusCode::BAD_REQUEST, SizeInvalid),
            E::RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, SizeInvalid),
            E::ManifestUnreadable(SmallBodyError::TooLarge { .. }) => {
                (StatusCode::PAYLOAD_TOO_LARGE, SizeInvalid)
            }
            E::ManifestUnreadable(_) => (StatusCode::BAD_REQUEST, ManifestInvalid),
            E::TokenRequestInvalid(_) | E::PullCredentialRequestInvalid(_) | E::HostInvalid(_) => {
                (StatusCode::BAD_REQUEST, Unsupported)
            }
            E::BasicLoginRequired(_) => (StatusCode::UNAUTHORIZED, Unauthorized),
            E::UriTooLong { .. } => (StatusCode::URI_TOO_LONG, Unsupported),
            E::HeadersTooLarge { .. } => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Unsupported),
            E::NotReady => (StatusCode::SERVICE_UNAVAILABLE, Unsupported),
            E::AdminRequestInvalid(_) => (StatusCode::BAD_REQUEST, Unsupported),
            E::ForceDenied => (StatusCode::FORBIDDEN, Denied),
            E::CacheReadOnly { .. } => (StatusCode::METHOD_NOT_ALLOWED, Unsupported),
        };
        let api = ApiError::new(status, code, error.to_string());
        match error {
            E::RangeNotSatisfiable { size } => {
                api.with_header(header::CONTENT_RANGE, &format!("bytes */{size}"))
            }
            E::BasicLoginRequired(_) => basic_challenge(api),
            _ => api,
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(error: AccessError) -> Self {
        match error {
            AccessError::Challenge(challenge) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "authentication required: log in with a user or robot account that may do this",
            )
            .with_header(header::WWW_AUTHENTICATE, &challenge),
            AccessError::Denied { subject, required } => ApiError {
                subject: Some(subject.clone()),
                ..ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Denied,
                    denied(&subject, &required),
                )
            },
            AccessError::Throttled(wait) => {
                let seconds = wait.as_secs().max(1);
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TooManyRequests,
                    format!("too many failed logins: retry in {seconds} s"),
                )
                .with_header(header::RETRY_AFTER, &seconds.to_string())
            }
        }
    }
}

/// What a refused subject is told: what it may not do, and what would let
/// it.
fn denied(subject: &str, required: &Required) -> String {
    // A robot is held to the scope it was created with, widened only by
    // rules naming it.
    let robot = subject.strip_prefix(berth_auth::robots::ROBOT_PREFIX);
    match required {
        Required::Repository { name, action } => {
            let why = match robot {
                Some(robot) => format!(
                    "neither its scope nor a policy rule naming it (robot:{robot}) grants it"
                ),
                None => "no policy rule grants it".to_owned(),
            };
            format!(
                "{subject} may not {} {name}: {why}; ask an administrator for access",
                action.as_str()
            )
        }
        Required::Catalog => format!(
            "{subject} may not list the catalog: no policy rule with catalog = true names it"
        ),
        Required::Admin => {
            format!("{subject} may not administer berth: no policy rule with admin = true names it")
        }
        Required::Login => format!("{subject} may not log in here"),
    }
}

/// A failed login with a user name and password.
impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Throttled(wait) => AccessError::Throttled(wait).into(),
            other => basic_challenge(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                other.to_string(),
            )),
        }
    }
}

impl From<PullCredentialError> for ApiError {
    fn from(error: PullCredentialError) -> Self {
        let (status, code) = match &error {
            PullCredentialError::Anonymous => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            PullCredentialError::BadPattern(_) | PullCredentialError::ZeroLifetime => {
                (StatusCode::BAD_REQUEST, ErrorCode::Unsupported)
            }
            PullCredentialError::NotExchangeable
            | PullCredentialError::NoPullRights(_)
            | PullCredentialError::Wider { .. } => (StatusCode::FORBIDDEN, ErrorCode::Denied),
        };
        ApiError::new(status, code, error.to_string())
    }
}

fn basic_challenge(api: ApiError) -> ApiError {
    api.with_header(header::WWW_AUTHENTICATE, "Basic realm=\"berth\"")
}

impl ApiError {
    /// What the client is told (a server fault says only that).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "errors": [{ "code": self.code.as_str(), "message": self.message, "detail": null }]
        });
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_oci::Digest;
    use berth_registry::{Received, UploadStatus};

    fn status_and_code(error: impl Into<ApiError>) -> (u16, ErrorCode) {
        let api = error.into();
        (api.status.as_u16(), api.code)
    }

    #[test]
    fn statuses_follow_the_spec() {
        let d = Digest::sha256_of(b"");
        assert_eq!(
            status_and_code(RegistryError::BlobUnknown(d.clone())),
            (404, ErrorCode::BlobUnknown)
        );
        assert_eq!(
            status_and_code(RegistryError::ManifestTooLarge { limit: 1 }).0,
            413
        );
        assert_eq!(
            status_and_code(RegistryError::DeleteDisabled),
            (405, ErrorCode::Unsupported)
        );
        assert_eq!(
            status_and_code(RegistryError::BlobContentMissing(d.clone())),
            (500, ErrorCode::Unsupported)
        );
        assert_eq!(
            status_and_code(RegistryError::QuotaExceeded {
                pattern: "team/**".into(),
                usage: 1,
                limit: 2,
                adding: 3
            }),
            (403, ErrorCode::Denied)
        );
        assert_eq!(
            status_and_code(RegistryError::BlobInUse {
                blob: d.clone(),
                manifest: d
            }),
            (405, ErrorCode::Denied)
        );
        assert_eq!(
            status_and_code(RegistryError::StorageFull("0 bytes free".into())),
            (507, ErrorCode::Unsupported)
        );
        assert_eq!(
            status_and_code(EdgeError::NotAnEndpoint("/v2/x".into())),
            (404, ErrorCode::NameUnknown)
        );
        assert_eq!(
            status_and_code(PullCredentialError::NotExchangeable),
            (403, ErrorCode::Denied)
        );
        assert_eq!(
            status_and_code(PullCredentialError::ZeroLifetime),
            (400, ErrorCode::Unsupported)
        );
        assert_eq!(
            status_and_code(PullCredentialError::Anonymous),
            (401, ErrorCode::Unauthorized)
        );
    }

    #[test]
    fn a_refused_chunk_says_where_the_upload_stands() {
        let upload = UploadStatus {
            repository: "team/app".into(),
            id: "u1".into(),
            size: 10,
        };
        let response = ApiError::from(RegistryError::ChunkLength {
            expected: 10,
            received: Received::MoreThan(10),
            upload,
        })
        .into_response();
        assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(response.headers()["range"], "0-9");
        assert_eq!(
            response.headers()["location"],
            "/v2/team/app/blobs/uploads/u1"
        );
    }

    #[test]
    fn server_faults_keep_their_cause_out_of_the_answer() {
        let cause = berth_storage::StorageError::Io(std::io::Error::other("/secret/path"));
        let api = ApiError::from(RegistryError::Storage(cause));
        assert_eq!(api.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!api.message.contains("secret"), "{}", api.message);
    }

    #[test]
    fn body_is_spec_shaped() {
        let response = ApiError::from(RegistryError::NameUnknown("x".into())).into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
