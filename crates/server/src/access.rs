//! Authentication and authorization at the HTTP edge: which access a request
//! needs, the 401/403/429 answers clients act on, and the token endpoint.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use berth_auth::{Action, AuthError, Authenticator, Credentials, Decision, Principal, Required};
use berth_registry::Registry;
use serde_json::json;

use crate::client_addr::{ClientAddr, TrustedProxies};
use crate::error::{ApiError, ErrorCode};
use crate::route::Route;

/// What every handler shares.
pub struct AppState {
    pub registry: Arc<Registry>,
    pub auth: Arc<Authenticator>,
    /// The token endpoint's URL for challenges; derived from each request's
    /// Host when not configured.
    pub realm: Option<String>,
    /// Whether berth itself terminates TLS (for the derived realm's scheme).
    pub tls: bool,
    /// A request body that sends nothing for this long is ended.
    pub body_timeout: std::time::Duration,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
}

/// The access a request needs; `None` for requests that are answered without
/// any (an unsupported method gets its 405 either way).
pub fn required(route: Route<'_>, method: &Method) -> Option<Required> {
    let repository = |name: &str, action| Required::Repository {
        name: name.to_owned(),
        action,
    };
    Some(match (route, method) {
        (Route::Base, &Method::GET | &Method::HEAD) => Required::Login,
        (Route::Catalog, &Method::GET) => Required::Catalog,
        (
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::Referrers { name, .. },
            &Method::GET | &Method::HEAD,
        ) => repository(name, Action::Pull),
        (Route::Manifest { name, .. }, &Method::PUT) => repository(name, Action::Push),
        (Route::Manifest { name, .. } | Route::Blob { name, .. }, &Method::DELETE) => {
            repository(name, Action::Delete)
        }
        (Route::Uploads { name }, &Method::POST) => repository(name, Action::Push),
        (
            Route::Upload { name, .. },
            &Method::GET | &Method::PATCH | &Method::PUT | &Method::DELETE,
        ) => repository(name, Action::Push),
        _ => return None,
    })
}

impl AppState {
    fn realm(&self, headers: &HeaderMap, uri: &Uri) -> String {
        if let Some(realm) = &self.realm {
            return realm.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or("localhost");
        // Behind an ingress that terminates TLS, the client used https.
        let scheme = headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .filter(|p| *p == "https" || *p == "http")
            .unwrap_or(if self.tls { "https" } else { "http" });
        format!("{scheme}://{host}/token")
    }

    fn challenge(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        required: &Required,
        error: Option<&str>,
    ) -> ApiError {
        let mut value = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.realm(headers, uri),
            self.auth.service()
        );
        if let Some(scope) = required.scope() {
            value.push_str(&format!(",scope=\"{scope}\""));
        }
        if let Some(error) = error {
            value.push_str(&format!(",error=\"{error}\""));
        }
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "authentication required: log in with a user or robot account that may do this",
        )
        .with_header(header::WWW_AUTHENTICATE, value)
    }

    /// Runs `f` with the authenticator: on the blocking pool when it may
    /// check a password (bcrypt takes tens of milliseconds of CPU, which would
    /// stall every request sharing the runtime thread), inline otherwise.
    async fn authenticate<T: Send + 'static>(
        &self,
        may_hash: bool,
        f: impl FnOnce(&Authenticator) -> T + Send + 'static,
    ) -> T {
        if !may_hash {
            return f(&self.auth);
        }
        let auth = self.auth.clone();
        tokio::task::spawn_blocking(move || f(&auth))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Checks a user name and password (`oauth`: from the OAuth2 form).
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        client: IpAddr,
        oauth: bool,
    ) -> Result<berth_auth::Subject, AuthError> {
        let may_hash = self.auth.login_may_hash(user, password);
        let (user, password) = (user.to_owned(), password.to_owned());
        self.authenticate(may_hash, move |auth| {
            if oauth {
                auth.login_oauth(&user, &password, client)
            } else {
                auth.login(&user, &password, client)
            }
        })
        .await
    }

    /// Authenticates and authorizes a request needing `required`.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        client: IpAddr,
        required: &Required,
    ) -> Result<Principal, ApiError> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok());
        let Ok(credentials) = Credentials::from_header(authorization) else {
            return Err(self.challenge(headers, uri, required, Some("invalid_token")));
        };
        let needed = required.clone();
        let decision = self
            .authenticate(self.auth.may_hash(&credentials), move |auth| {
                auth.decide(&credentials, client, &needed)
            })
            .await;
        match decision {
            Decision::Allow(principal) => Ok(principal),
            Decision::Challenge { error } => Err(self.challenge(headers, uri, required, error)),
            Decision::Deny(subject) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Denied,
                format!("{subject} may not do this here: ask an administrator for access"),
            )),
            Decision::Throttled(wait) => Err(throttled(wait)),
        }
    }
}

pub(crate) fn throttled(wait: std::time::Duration) -> ApiError {
    let seconds = wait.as_secs().max(1);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::TooManyRequests,
        format!("too many failed logins: retry in {seconds} s"),
    )
    .with_header(header::RETRY_AFTER, seconds.to_string())
}

fn login_error(error: AuthError) -> ApiError {
    match error {
        AuthError::Throttled(wait) => throttled(wait),
        other => ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            other.to_string(),
        )
        .with_header(header::WWW_AUTHENTICATE, "Basic realm=\"berth\"".to_owned()),
    }
}

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
pub async fn token_get(
    State(state): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let query: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let scopes: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    let offline = query
        .iter()
        .any(|(k, v)| k == "offline_token" && v == "true");
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let subject = match Credentials::from_header(authorization) {
        Ok(Credentials::Basic { user, password }) => {
            match state.login(&user, &password, client, false).await {
                Ok(subject) => subject,
                Err(e) => return login_error(e).into_response(),
            }
        }
        Ok(Credentials::None) => berth_auth::Subject::Anonymous,
        Ok(Credentials::Bearer(_)) | Err(_) => {
            return login_error(AuthError::Malformed).into_response();
        }
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
    json_ok(body)
}

/// `POST /token`: the OAuth2 form (`grant_type=password` or `refresh_token`).
pub async fn token_post(
    State(state): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    body: Body,
) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return bad_request("the token request body could not be read").into_response();
    };
    let form: Vec<(String, String)> = form_urlencoded::parse(&bytes).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let scopes: Vec<String> = field("scope")
        .map(|s| vec![s.to_owned()])
        .unwrap_or_default();
    let subject = match field("grant_type") {
        Some("password") => {
            let (Some(user), Some(password)) = (field("username"), field("password")) else {
                return bad_request("grant_type=password needs username and password")
                    .into_response();
            };
            state.login(user, password, client, true).await
        }
        Some("refresh_token") => {
            let Some(token) = field("refresh_token") else {
                return bad_request("grant_type=refresh_token needs refresh_token").into_response();
            };
            state.auth.refresh(token)
        }
        other => {
            return bad_request(&format!(
                "grant_type {other:?} is not supported: use password or refresh_token"
            ))
            .into_response();
        }
    };
    let subject = match subject {
        Ok(subject) => subject,
        Err(e) => return login_error(e).into_response(),
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
    json_ok(body)
}

fn bad_request(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, message)
}

/// The token signing key's public half, as a JSON Web Key Set.
pub async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    json_ok(state.auth.jwks())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_access_per_endpoint() {
        let pull = |n: &str| {
            Some(Required::Repository {
                name: n.into(),
                action: Action::Pull,
            })
        };
        let push = |n: &str| {
            Some(Required::Repository {
                name: n.into(),
                action: Action::Push,
            })
        };
        let r = |p: &str, m: Method| required(Route::parse(p).unwrap(), &m);
        assert_eq!(r("/v2/", Method::GET), Some(Required::Login));
        assert_eq!(r("/v2/_catalog", Method::GET), Some(Required::Catalog));
        assert_eq!(r("/v2/a/tags/list", Method::GET), pull("a"));
        assert_eq!(r("/v2/a/manifests/x", Method::HEAD), pull("a"));
        assert_eq!(r("/v2/a/manifests/x", Method::PUT), push("a"));
        assert_eq!(r("/v2/a/blobs/uploads/", Method::POST), push("a"));
        assert_eq!(r("/v2/a/blobs/uploads/u", Method::PATCH), push("a"));
        assert_eq!(r("/v2/a/referrers/d", Method::GET), pull("a"));
        assert_eq!(
            r("/v2/a/blobs/d", Method::DELETE),
            Some(Required::Repository {
                name: "a".into(),
                action: Action::Delete
            })
        );
        assert_eq!(r("/v2/a/tags/list", Method::POST), None);
    }
}
