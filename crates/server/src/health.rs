//! The probes: `/healthz` (the process answers) and `/readyz` (its metadata
//! store answers too).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::access::AppState;
use crate::error::{ApiError, EdgeError};

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Unauthenticated, so the cause goes to the log, not into the answer.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.registry.ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the metadata store does not answer");
            ApiError::from(EdgeError::NotReady).into_response()
        }
    }
}
