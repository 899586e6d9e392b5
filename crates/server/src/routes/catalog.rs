//! `GET /v2/_catalog?n=&last=`: the repositories the caller may pull.

use axum::response::IntoResponse;
use serde_json::json;

use super::{Request, Result};
use crate::response::Json;

pub(super) async fn list(request: &Request<'_>) -> Result {
    let filter = request
        .principal
        .as_ref()
        .map(|p| request.state.auth.catalog_filter(p));
    let visible = |name: &str| filter.as_ref().is_some_and(|f| f(name));
    let page = request
        .state
        .registry
        .catalog(request.query.get("n"), request.query.get("last"), &visible)
        .await?;
    Ok(Json {
        body: json!({ "repositories": page.items }).to_string(),
        link: request
            .query
            .next_link("/v2/_catalog", "n", page.next.as_deref()),
    }
    .into_response())
}
