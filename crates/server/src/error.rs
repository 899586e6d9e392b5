//! Registry errors as HTTP answers: the one mapping to OCI error codes.
//!
//! Only the error codes of the OCI Distribution Specification are ever sent, in
//! its body format `{"errors":[{"code","message","detail"}]}`, since clients act
//! on them. The spec has no code for a server-side failure; those answer 500
//! with `UNSUPPORTED` ("the operation could not be carried out") and the cause
//! goes to the log, not to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_registry::RegistryError;
use serde_json::json;

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
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Extra headers (a challenge, Retry-After, Range…); few, so a list.
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: header::HeaderName, value: String) -> Self {
        if let Ok(value) = HeaderValue::from_str(&value) {
            self.headers.push((name, value));
        }
        self
    }
}

/// The status and code for each registry error.
pub fn classify(error: &RegistryError) -> (StatusCode, ErrorCode) {
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
        E::UploadOutOfOrder { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, BlobUploadInvalid),
        E::UploadInvalid(_) => (StatusCode::BAD_REQUEST, BlobUploadInvalid),
        E::SizeInvalid(_) => (StatusCode::BAD_REQUEST, SizeInvalid),
        E::RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, SizeInvalid),
        E::InvalidParameter(_) => (StatusCode::BAD_REQUEST, Unsupported),
        E::DeleteDisabled => (StatusCode::METHOD_NOT_ALLOWED, Unsupported),
        E::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, Unsupported),
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        let (status, code) = classify(&error);
        let message = match &error {
            RegistryError::Storage(cause) => {
                tracing::error!(error = %cause, "storage failure");
                "the registry could not complete the request; the cause is in its log".to_owned()
            }
            other => other.to_string(),
        };
        let api = ApiError::new(status, code, message);
        match error {
            RegistryError::RangeNotSatisfiable { size } => {
                api.with_header(header::CONTENT_RANGE, format!("bytes */{size}"))
            }
            _ => api,
        }
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

    #[test]
    fn statuses_follow_the_spec() {
        let d = Digest::sha256_of(b"");
        assert_eq!(
            classify(&RegistryError::BlobUnknown(d.clone())),
            (StatusCode::NOT_FOUND, ErrorCode::BlobUnknown)
        );
        assert_eq!(
            classify(&RegistryError::ManifestTooLarge { limit: 1 }).0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            classify(&RegistryError::UploadOutOfOrder { start: 1, size: 0 }).0,
            StatusCode::RANGE_NOT_SATISFIABLE
        );
        assert_eq!(
            classify(&RegistryError::DeleteDisabled),
            (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::Unsupported)
        );
    }

    #[test]
    fn body_is_spec_shaped() {
        let response = ApiError::from(RegistryError::NameUnknown("x".into())).into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
