//! `POST /berth/v1/pull-credentials`: a user or robot exchanges its own
//! credential (Basic authentication) for a short-lived, pull-only one, e.g. a
//! node's long-lived credential for what the kubelet presents.
//!
//! Request body (JSON, every field optional):
//! `{"repositories": ["team/*"], "ttl_seconds": 3600}`. Answer:
//! `{"username", "password", "repositories", "expires_in", "expires_at"}`.
//! Errors use the spec's error body; every issue and refusal is audit-logged.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_auth::pull_credential::PullCredentialError;
use berth_auth::{AuthError, Credentials};
use serde::Deserialize;
use serde_json::json;

use crate::access::AppState;
use crate::client_addr::ClientAddr;
use crate::error::{ApiError, ErrorCode};

pub const PATH: &str = "/berth/v1/pull-credentials";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExchangeRequest {
    #[serde(default)]
    repositories: Vec<String>,
    ttl_seconds: Option<u64>,
}

fn parse_request(bytes: &[u8]) -> Result<ExchangeRequest, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(ExchangeRequest::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported,
            format!(
                "the request body is not a pull credential request ({e}); send JSON like \
                 {{\"repositories\":[\"team/*\"],\"ttl_seconds\":3600}} or no body"
            ),
        )
    })
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
        .with_header(header::WWW_AUTHENTICATE, "Basic realm=\"berth\"".to_owned())
}

fn refusal(error: &PullCredentialError) -> ApiError {
    let (status, code) = match error {
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

pub async fn exchange(
    State(state): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let (user, password) = match Credentials::from_header(authorization) {
        Ok(Credentials::Basic { user, password }) => (user, password),
        Ok(Credentials::None) => {
            return unauthorized(
                "log in with Basic authentication as the user or robot whose credential is \
                 exchanged",
            )
            .into_response();
        }
        Ok(Credentials::Bearer(_)) | Err(_) => {
            return unauthorized(
                "only Basic authentication (a user or robot name and password) can be \
                 exchanged for a pull credential",
            )
            .into_response();
        }
    };
    let subject = match state.login(&user, &password, client, false).await {
        Ok(subject) => subject,
        Err(AuthError::Throttled(wait)) => return crate::access::throttled(wait).into_response(),
        Err(e) => return unauthorized(&e.to_string()).into_response(),
    };
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported,
            "the request body could not be read or is larger than 64 KiB",
        )
        .into_response();
    };
    let request = match parse_request(&bytes) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    let ttl = request.ttl_seconds.map(Duration::from_secs);
    match state
        .auth
        .issue_pull_credential(&subject, &request.repositories, ttl)
    {
        Ok(credential) => {
            tracing::info!(
                target: "berth::audit",
                event = "pull_credential_issued",
                subject = credential.username,
                %client,
                repositories = ?credential.repositories,
                expires_at = credential.expires_at,
            );
            let expires_at = humantime::format_rfc3339_seconds(
                UNIX_EPOCH + Duration::from_secs(credential.expires_at),
            )
            .to_string();
            let body = json!({
                "username": credential.username,
                "password": credential.password,
                "repositories": credential.repositories,
                "expires_in": credential.expires_in,
                "expires_at": expires_at,
            });
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/json"),
                    // A password: no cache may keep it.
                    (header::CACHE_CONTROL, "no-store"),
                ],
                body.to_string(),
            )
                .into_response()
        }
        Err(error) => {
            tracing::warn!(
                target: "berth::audit",
                event = "pull_credential_refused",
                subject = subject.name(),
                %client,
                reason = %error,
            );
            refusal(&error).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let r = parse_request(b"").unwrap();
        assert!(r.repositories.is_empty() && r.ttl_seconds.is_none());
        let r = parse_request(br#"{"repositories":["team/*"],"ttl_seconds":60}"#).unwrap();
        assert_eq!(
            (r.repositories, r.ttl_seconds),
            (vec!["team/*".into()], Some(60))
        );
        for bad in [&br#"{"ttl":60}"#[..], b"[]", b"{", br#"{"ttl_seconds":-1}"#] {
            let e = parse_request(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn refusals_map_to_spec_codes() {
        let code = |e: PullCredentialError| {
            let api = refusal(&e);
            (api.status.as_u16(), api.code)
        };
        assert_eq!(
            code(PullCredentialError::NotExchangeable),
            (403, ErrorCode::Denied)
        );
        assert_eq!(
            code(PullCredentialError::ZeroLifetime),
            (400, ErrorCode::Unsupported)
        );
        assert_eq!(
            code(PullCredentialError::Anonymous),
            (401, ErrorCode::Unauthorized)
        );
    }
}
