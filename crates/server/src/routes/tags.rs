//! `GET /v2/<name>/tags/list?n=&last=`.

use axum::response::IntoResponse;
use serde_json::json;

use super::{Request, Result};
use crate::response::Json;

pub(super) async fn list(request: &Request<'_>, name: &str) -> Result {
    let query = &request.query;
    let page = request
        .state
        .registry
        .tags(name, query.get("n"), query.get("last"))
        .await?;
    Ok(Json {
        body: json!({ "name": name, "tags": page.items }).to_string(),
        link: query.next_link(&format!("/v2/{name}/tags/list"), "n", page.next.as_deref()),
    }
    .into_response())
}
