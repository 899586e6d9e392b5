//! The `/v2/` API: [`dispatch`] reads the [`Route`] and method, checks
//! access, and hands the request to the module of its resource.

mod blobs;
mod catalog;
mod manifests;
mod referrers;
mod tags;
mod uploads;

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use berth_auth::Principal;
use berth_cache::{CacheError, CacheRoute, PullThroughCache};

use crate::access::{self, AppState};
use crate::client_addr::ClientAddr;
use crate::error::{ApiError, EdgeError};
use crate::logging::Subject;
use crate::query::Query;
use crate::response::Json;
use crate::route::Route;

type Result<T = Response, E = ApiError> = std::result::Result<T, E>;

/// The request as the handlers see it, once access is granted.
struct Request<'a> {
    state: &'a AppState,
    /// Where the repository's content comes from when it is a cached one.
    cache: Option<&'a CacheRoute>,
    principal: Option<Principal>,
    client: IpAddr,
    headers: &'a HeaderMap,
    query: Query,
}

impl Request<'_> {
    /// The cache and the route of a cached repository's request.
    fn cached(&self) -> Option<(&PullThroughCache, &CacheRoute)> {
        Some((self.state.cache.as_deref()?, self.cache?))
    }

    /// Who is asking, as upload sessions record their owner: empty for
    /// anonymous.
    fn subject(&self) -> &str {
        self.principal.as_ref().map_or("", Principal::name)
    }

    /// Logs a change to the registry for the audit trail.
    fn audit(&self, event: &str, repository: &str, reference: &str) {
        tracing::info!(
            target: "berth::audit",
            event,
            subject = self.subject(),
            client = %self.client,
            repository,
            reference,
        );
    }

    /// Logs a manifest pull for the audit trail: the reference asked for
    /// (a tag, or the digest containerd pulls by) and the digest served.
    fn audit_pull(&self, repository: &str, reference: &str, digest: &str) {
        tracing::info!(
            target: "berth::audit",
            event = "pull",
            subject = self.subject(),
            client = %self.client,
            repository,
            reference,
            digest,
        );
    }

    fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn content_length(&self) -> Option<u64> {
        self.header(header::CONTENT_LENGTH)
            .and_then(|v| v.parse().ok())
    }
}

/// Every `/v2/…` request lands here.
pub async fn dispatch(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut subject = None;
    let handled = handle(&state, client, method, &uri, &headers, body, &mut subject).await;
    let mut response = handled.into_response();
    // The access log names who was served.
    if let Some(subject) = subject {
        response.extensions_mut().insert(Subject(subject));
    }
    response
}

async fn handle(
    state: &AppState,
    client: ClientAddr,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    subject: &mut Option<String>,
) -> Result {
    let Some(route) = Route::parse(uri.path()) else {
        return Err(EdgeError::NotAnEndpoint(uri.path().to_owned()).into());
    };
    let query = Query::parse(uri.query());
    // A cached repository is checked under the name the client asked for
    // (whose token scope it requested), and stored under its local name.
    // Without a cache, `?ns=` (berth named as a mirror under another name)
    // changes nothing.
    let cached = match (&state.cache, route.name()) {
        (Some(cache), Some(name)) => cache
            .route(name, query.get("ns"))
            .map_err(CacheError::from)?,
        _ => None,
    };
    let checked = match &cached {
        Some(cached) => route.renamed(&cached.access),
        None => route,
    };
    let route = match &cached {
        Some(cached) => route.renamed(&cached.local),
        None => route,
    };
    let principal = match access::required(checked, &method) {
        Some(required) => match state.check(headers, uri, client, &required).await {
            Ok(principal) => Some(principal),
            Err(refused) => {
                // A subject known but refused is named in the access log.
                *subject = refused.subject().map(str::to_owned);
                return Err(refused);
            }
        },
        None => None,
    };
    *subject = principal.as_ref().map(|p| p.name().to_owned());
    if let (Some(cached), Some(cache)) = (&cached, &state.cache)
        && !matches!(method, Method::GET | Method::HEAD)
    {
        return Err(EdgeError::CacheReadOnly {
            repository: cached.local.clone(),
            upstream: cache.upstream_url(cached).to_owned(),
        }
        .into());
    }
    let request = Request {
        state,
        cache: cached.as_ref(),
        principal,
        client: client.ip,
        headers,
        query,
    };
    let head = method == Method::HEAD;
    match (route, method) {
        (Route::Base, Method::GET | Method::HEAD) => Ok(Json {
            body: "{}".into(),
            link: None,
        }
        .into_response()),
        (Route::Catalog, Method::GET) => catalog::list(&request).await,
        (Route::Tags { name }, Method::GET) => tags::list(&request, name).await,
        (Route::Manifest { name, reference }, Method::GET | Method::HEAD) => {
            manifests::get(&request, name, reference, head).await
        }
        (Route::Manifest { name, reference }, Method::PUT) => {
            manifests::put(&request, name, reference, body).await
        }
        (Route::Manifest { name, reference }, Method::DELETE) => {
            manifests::delete(&request, name, reference).await
        }
        (Route::Blob { name, digest }, Method::GET | Method::HEAD) => {
            blobs::get(&request, name, digest, head).await
        }
        (Route::Blob { name, digest }, Method::DELETE) => {
            blobs::delete(&request, name, digest).await
        }
        (Route::Uploads { name }, Method::POST) => uploads::start(&request, name, body).await,
        (Route::Upload { name, id }, Method::GET) => uploads::status(&request, name, id).await,
        (Route::Upload { name, id }, Method::PATCH) => {
            uploads::append(&request, name, id, body).await
        }
        (Route::Upload { name, id }, Method::PUT) => {
            uploads::finish(&request, name, id, body).await
        }
        (Route::Upload { name, id }, Method::DELETE) => uploads::cancel(&request, name, id).await,
        (Route::Referrers { name, digest }, Method::GET) => {
            referrers::list(&request, name, digest).await
        }
        (_, method) => Err(EdgeError::MethodNotAllowed {
            method,
            path: uri.path().to_owned(),
        }
        .into()),
    }
}

/// 405 for the fixed routes (health, token, JWKS), in the spec's error format.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::from(EdgeError::MethodNotAllowed {
        method,
        path: uri.path().to_owned(),
    })
    .into_response()
}

/// A status with nothing more to say.
fn done(status: StatusCode) -> Response {
    crate::response::Done(status).into_response()
}
