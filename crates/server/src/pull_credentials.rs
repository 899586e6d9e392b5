//! `POST /berth/v1/pull-credentials`: a user or robot exchanges its own
//! credential (Basic authentication) for a short-lived, pull-only one, e.g. a
//! node's long-lived credential for what the kubelet presents.
//!
//! The bodies are [`berth_api::pull_credentials`]'s. Errors use the spec's
//! error body; every issue and refusal is audit-logged.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_api::pull_credentials::PullCredentialRequest;
use berth_auth::Credentials;

use crate::access::AppState;
use crate::body::{json_or_default, read_small};
use crate::client_addr::ClientAddr;
use crate::error::{ApiError, EdgeError};

pub use berth_api::pull_credentials::PATH;

/// The largest request body read.
const BODY_LIMIT: usize = 64 * 1024;
/// How long the request body may take: it is a few bytes of JSON.
const BODY_DEADLINE: Duration = Duration::from_secs(10);

fn parse_request(bytes: &[u8]) -> Result<PullCredentialRequest, EdgeError> {
    json_or_default(bytes).map_err(|e| {
        EdgeError::PullCredentialRequestInvalid(format!(
            "the request body is not a pull credential request ({e}); send JSON like \
             {{\"repositories\":[\"team/*\"],\"ttl_seconds\":3600}} or no body"
        ))
    })
}

pub async fn exchange(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let (user, password) = match Credentials::from_header(authorization) {
        Ok(Credentials::Basic { user, password }) => (user, password),
        Ok(Credentials::None) => {
            return Err(EdgeError::BasicLoginRequired(
                "log in with Basic authentication as the user or robot whose credential is \
                 exchanged",
            )
            .into());
        }
        Ok(Credentials::Bearer(_)) | Err(_) => {
            return Err(EdgeError::BasicLoginRequired(
                "only Basic authentication (a user or robot name and password) can be \
                 exchanged for a pull credential",
            )
            .into());
        }
    };
    let subject = state.login(&user, &password, client.ip, false).await?;
    let bytes = read_small(body, BODY_LIMIT, BODY_DEADLINE)
        .await
        .map_err(|e| EdgeError::PullCredentialRequestInvalid(e.to_string()))?;
    let request = parse_request(&bytes)?;
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
                client = %client.ip,
                repositories = ?credential.repositories,
                expires_at = credential.expires_at,
            );
            Ok((
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/json"),
                    // A password: no cache may keep it.
                    (header::CACHE_CONTROL, "no-store"),
                ],
                serde_json::to_string(&credential).expect("a credential serialises"),
            )
                .into_response())
        }
        Err(error) => {
            tracing::warn!(
                target: "berth::audit",
                event = "pull_credential_refused",
                subject = subject.name(),
                client = %client.ip,
                reason = %error,
            );
            Err(error.into())
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
            let e = ApiError::from(parse_request(bad).unwrap_err());
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        }
    }
}
