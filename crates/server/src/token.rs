//! The Docker token endpoint (`/token`, both forms) and the JWKS of the key
//! that signs its tokens.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use berth_auth::{AuthError, Credentials, Subject};
use serde_json::json;

use crate::access::AppState;
use crate::body::read_small;
use crate::client_addr::ClientAddr;
use crate::error::{ApiError, EdgeError};
use crate::query::Query;

/// The largest token request body read.
const TOKEN_BODY_LIMIT: usize = 64 * 1024;
/// How long a token request body may take: it is a few hundred bytes of
/// form, and the endpoint answers anonymous clients.
const TOKEN_BODY_DEADLINE: Duration = Duration::from_secs(10);

fn json_ok(body: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /token?service=&scope=&scope=&offline_token=`, with Basic credentials
/// or anonymous: the Docker token endpoint.
pub async fn get(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = Query::parse(uri.query());
    let scopes: Vec<String> = query.all("scope").map(str::to_owned).collect();
    let offline = query.all("offline_token").any(|v| v == "true");
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let subject = match Credentials::from_header(authorization) {
        Ok(Credentials::Basic { user, password }) => {
            state.login(&user, &password, client.ip, false).await?
        }
        Ok(Credentials::None) => Subject::Anonymous,
        Ok(Credentials::Bearer(_)) | Err(_) => return Err(AuthError::Malformed.into()),
    };
    let (token, refresh) = state.auth.issue(&subject, &scopes, offline);
    let mut body = json!({
        "token": token.token,
        "access_token": token.token,
        "expires_in": token.expires_in,
        "issued_at": token.issued_at,
    });
    if let Some(refresh) = refresh {
        body["refresh_token"] = refresh.into();
    }
    Ok(json_ok(body))
}

/// `POST /token`: the OAuth2 form (`grant_type=password` or `refresh_token`).
pub async fn post(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_small(body, TOKEN_BODY_LIMIT, TOKEN_BODY_DEADLINE)
        .await
        .map_err(|e| EdgeError::TokenRequestInvalid(e.to_string()))?;
    let form = Query::from_form(&bytes);
    let field = |name| form.get(name);
    let invalid = |message: String| ApiError::from(EdgeError::TokenRequestInvalid(message));
    let scopes: Vec<String> = field("scope")
        .map(|s| vec![s.to_owned()])
        .unwrap_or_default();
    let subject = match field("grant_type") {
        Some("password") => {
            let (Some(user), Some(password)) = (field("username"), field("password")) else {
                return Err(invalid(
                    "grant_type=password needs username and password".into(),
                ));
            };
            state.login(user, password, client.ip, true).await?
        }
        Some("refresh_token") => {
            let Some(token) = field("refresh_token") else {
                return Err(invalid(
                    "grant_type=refresh_token needs refresh_token".into(),
                ));
            };
            state.auth.refresh(token)?
        }
        other => {
            return Err(invalid(format!(
                "grant_type {other:?} is not supported: use password or refresh_token"
            )));
        }
    };
    let offline = field("access_type") == Some("offline");
    let (token, refresh) = state.auth.issue(&subject, &scopes, offline);
    let mut body = json!({
        "access_token": token.token,
        // What was granted, which may be less than what was asked.
        "scope": token.scope,
        "expires_in": token.expires_in,
        "issued_at": token.issued_at,
    });
    if let Some(refresh) = refresh {
        body["refresh_token"] = refresh.into();
    }
    Ok(json_ok(body))
}

/// The token signing key's public half, as a JSON Web Key Set.
pub async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    json_ok(state.auth.jwks())
}
