//! berth-server: the HTTP edge of the registry.
//!
//! It turns requests into calls on [`berth_registry::Registry`] and results into
//! responses: routing of `/v2/…` paths ([`route`]), the spec's headers, and the
//! one place where registry errors become OCI error codes and statuses
//! ([`error`]). Handlers stay thin; the protocol rules live in the registry and
//! OCI crates where they are tested without HTTP. Beside `/v2/`: the token
//! endpoint and JWKS, and berth's own `POST /berth/v1/pull-credentials`.

mod access;
mod client_addr;
pub mod error;
mod handlers;
mod logging;
mod pull_credentials;
pub mod route;
mod unread_body;

use std::sync::Arc;

pub use access::AppState;
use axum::Router;
use axum::http::{HeaderName, HeaderValue};
use axum::routing::get;
pub use client_addr::TrustedProxies;
use tower_http::map_request_body::MapRequestBodyLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// Builds the HTTP application. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: client addresses are
/// needed for login throttling and the audit log.
pub fn app(state: AppState) -> Router {
    let body_timeout = state.body_timeout;
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/token", get(access::token_get).post(access::token_post))
        .route("/.well-known/jwks.json", get(access::jwks))
        .route(
            pull_credentials::PATH,
            axum::routing::post(pull_credentials::exchange),
        )
        .fallback(handlers::dispatch)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(Arc::new(state))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("docker-distribution-api-version"),
            HeaderValue::from_static("registry/2.0"),
        ))
        .layer(axum::middleware::from_fn(logging::log_request))
        // A stalled or vanished client's body errors out after the idle
        // timeout instead of holding its connection (and upload) open; the
        // timed body is handed on as an ordinary one.
        .layer(MapRequestBodyLayer::new(axum::body::Body::new))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        // Outermost (layers wrap what is added before them), so it sees
        // hyper's own body, which knows when it is empty or complete: the
        // timeout's wrapper does not say.
        .layer(axum::middleware::from_fn(
            unread_body::close_after_unread_body,
        ))
}
