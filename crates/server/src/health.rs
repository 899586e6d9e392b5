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

pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.registry.ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(e) => ApiError::from(EdgeError::NotReady(e.to_string())).into_response(),
    }
}
