//! Authentication and authorization at the HTTP edge: which access a request
//! needs, and the 401/403/429 answers clients act on.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use axum::http::uri::Authority;
use axum::http::{HeaderMap, Method, Uri, header};
use berth_auth::{Action, AuthError, Authenticator, Credentials, Decision, Principal, Required};
use berth_cache::PullThroughCache;
use berth_registry::Registry;

use crate::body::BodyPace;
use crate::client_addr::{ClientAddr, TrustedProxies};
use crate::error::{AccessError, ApiError, EdgeError};
use crate::metrics::Metrics;
use crate::route::Route;

/// What every handler shares.
pub struct AppState {
    pub registry: Arc<Registry>,
    /// The pull-through cache, when upstreams are configured.
    pub cache: Option<Arc<PullThroughCache>>,
    pub auth: Arc<Authenticator>,
    /// The token endpoint's URL for challenges; derived from each request's
    /// Host when not configured.
    pub realm: Option<String>,
    /// Whether berth itself terminates TLS (for the derived realm's scheme).
    pub tls: bool,
    /// How fast request bodies must arrive.
    pub body_pace: BodyPace,
    /// Proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed.
    pub trusted_proxies: TrustedProxies,
    /// Whether manifest pulls go to the audit log.
    pub audit_pulls: bool,
    pub metrics: Metrics,
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

/// The host a client reached berth by: `Host`, or the request target's
/// authority (HTTP/2 sends `:authority` and no `Host`). It goes into the
/// challenge's realm, inside quotes, so anything but a DNS name or an IP
/// address with an optional port (a quote, a comma, user info) is refused
/// rather than echoed.
fn request_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Result<&'a str, EdgeError> {
    let text = match headers.get(header::HOST) {
        Some(value) => value.to_str().map_err(|_| {
            EdgeError::HostInvalid(String::from_utf8_lossy(value.as_bytes()).into())
        })?,
        None => match uri.authority() {
            Some(authority) => authority.as_str(),
            None => return Ok("localhost"),
        },
    };
    let is_host = |host: &str| match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ipv6) => ipv6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }
    };
    match Authority::from_str(text) {
        Ok(authority) if !text.contains('@') && is_host(authority.host()) => Ok(text),
        _ => Err(EdgeError::HostInvalid(text.to_owned())),
    }
}

impl AppState {
    fn realm(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        client: ClientAddr,
    ) -> Result<String, EdgeError> {
        if let Some(realm) = &self.realm {
            return Ok(realm.clone());
        }
        let host = request_host(headers, uri)?;
        // Behind an ingress that terminates TLS, the client used https; only
        // a trusted proxy is believed, as for X-Forwarded-For, and only the
        // value it added last (a proxy that appends keeps the client's own
        // value first).
        let forwarded = client
            .via_trusted_proxy
            .then(|| headers.get_all("x-forwarded-proto").iter().next_back())
            .flatten()
            .and_then(|h| h.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .map(str::trim)
            .filter(|p| *p == "https" || *p == "http");
        let scheme = forwarded.unwrap_or(if self.tls { "https" } else { "http" });
        Ok(format!("{scheme}://{host}/token"))
    }

    fn challenge(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        client: ClientAddr,
        required: &Required,
        error: Option<&str>,
    ) -> ApiError {
        let realm = match self.realm(headers, uri, client) {
            Ok(realm) => realm,
            Err(e) => return e.into(),
        };
        let mut value = format!(
            "Bearer realm=\"{realm}\",service=\"{}\"",
            self.auth.service()
        );
        if let Some(scope) = required.scope() {
            value.push_str(&format!(",scope=\"{scope}\""));
        }
        if let Some(error) = error {
            value.push_str(&format!(",error=\"{error}\""));
        }
        AccessError::Challenge(value).into()
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
        client: ClientAddr,
        required: &Required,
    ) -> Result<Principal, ApiError> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok());
        let Ok(credentials) = Credentials::from_header(authorization) else {
            return Err(self.challenge(headers, uri, client, required, Some("invalid_token")));
        };
        let needed = required.clone();
        let ip = client.ip;
        let decision = self
            .authenticate(self.auth.may_hash(&credentials), move |auth| {
                auth.decide(&credentials, ip, &needed)
            })
            .await;
        match decision {
            Decision::Allow(principal) => Ok(principal),
            Decision::Challenge { error } => {
                Err(self.challenge(headers, uri, client, required, error))
            }
            Decision::Deny(subject) => Err(AccessError::Denied {
                subject,
                required: required.clone(),
            }
            .into()),
            Decision::Throttled(wait) => Err(AccessError::Throttled(wait).into()),
        }
    }
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

    #[test]
    fn only_a_host_goes_into_the_realm() {
        let origin = Uri::from_static("/v2/");
        let host = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, value.parse().unwrap());
            request_host(&headers, &origin).map(str::to_owned)
        };
        for good in [
            "registry.example.com",
            "127.0.0.1:5000",
            "[::1]:5000",
            "reg",
        ] {
            assert_eq!(host(good).unwrap(), good);
        }
        for bad in ["a\"b", "a,b=c", "user@host", "a b", "", "host/path"] {
            assert!(host(bad).is_err(), "{bad}");
        }
        assert_eq!(
            request_host(&HeaderMap::new(), &origin).unwrap(),
            "localhost"
        );
        // HTTP/2: the authority of the target, checked the same way.
        let h2 = Uri::from_static("https://registry.example.com:5000/v2/");
        assert_eq!(
            request_host(&HeaderMap::new(), &h2).unwrap(),
            "registry.example.com:5000"
        );
    }
}
