//! berth-server: the HTTP edge of the registry.
//!
//! It turns requests into calls on [`berth_registry::Registry`] and results into
//! responses: routing of `/v2/…` paths ([`route`]) to one module per resource
//! ([`routes`]), the spec's headers ([`response`]), how fast bodies must
//! arrive ([`body`]), and the one place where errors become OCI error codes
//! and statuses ([`error`]). Handlers stay thin; the protocol rules live in
//! the registry and OCI crates where they are tested without HTTP. Beside
//! `/v2/`: the token endpoint and JWKS ([`token`]), berth's own API
//! (`POST /berth/v1/pull-credentials`, administration under
//! `/berth/v1/gc` and `/berth/v1/repositories`), and the health probes.

mod access;
mod admin;
pub mod body;
mod client_addr;
pub mod error;
mod health;
pub mod limits;
mod logging;
pub mod metrics;
mod pull_credentials;
mod query;
mod response;
pub mod route;
mod routes;
mod token;
mod unread_body;

use std::sync::Arc;

pub use access::AppState;
use axum::Router;
use axum::http::{HeaderName, HeaderValue};
use axum::routing::{get, post};
pub use client_addr::TrustedProxies;
use tower_http::set_header::SetResponseHeaderLayer;

/// Builds the HTTP application. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: client addresses are
/// needed for login throttling and the audit log.
pub fn app(state: Arc<AppState>) -> Router {
    let pace = state.body_pace;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(metrics::metrics_for_administrators))
        .route("/readyz", get(health::readyz))
        .route("/token", get(token::get).post(token::post))
        .route("/.well-known/jwks.json", get(token::jwks))
        .route(pull_credentials::PATH, post(pull_credentials::exchange))
        .route(admin::GC_PATH, post(admin::gc))
        .route(admin::REPOSITORIES_PATH, get(admin::repositories))
        .route(
            &format!("{}/{{*name}}", admin::REPOSITORIES_PATH),
            axum::routing::delete(admin::delete_repository),
        )
        .fallback(routes::dispatch)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state.clone())
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("docker-distribution-api-version"),
            HeaderValue::from_static("registry/2.0"),
        ))
        .layer(axum::middleware::from_fn_with_state(
            state,
            logging::log_request,
        ))
        // Heads past berth's limits are refused; a stalled, trickling or
        // vanished client's body errors out instead of holding its
        // connection (and upload) open.
        .layer(axum::middleware::from_fn(move |request, next| {
            limits::enforce(pace, request, next)
        }))
        // Outermost (layers wrap what is added before them), so it sees
        // hyper's own body, which knows when it is empty or complete.
        .layer(axum::middleware::from_fn(
            unread_body::close_after_unread_body,
        ))
}

/// `/metrics` alone, for a separate address (`--metrics-addr`): scraped
/// without going through the registry's own port.
pub fn metrics_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .with_state(state)
}
