//! berth-server: the HTTP edge of the registry.
//!
//! It turns requests into calls on [`berth_registry::Registry`] and results into
//! responses: routing of `/v2/…` paths ([`route`]), the spec's headers, and the
//! one place where registry errors become OCI error codes and statuses
//! ([`error`]). Handlers stay thin; the protocol rules live in the registry and
//! OCI crates where they are tested without HTTP.

pub mod error;
mod handlers;
mod logging;
pub mod route;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, HeaderValue};
use axum::routing::get;
use berth_registry::Registry;
use tower_http::set_header::SetResponseHeaderLayer;

/// Builds the HTTP application around `registry`.
pub fn app(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .fallback(handlers::dispatch)
        .with_state(registry)
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("docker-distribution-api-version"),
            HeaderValue::from_static("registry/2.0"),
        ))
        .layer(axum::middleware::from_fn(logging::log_request))
}
