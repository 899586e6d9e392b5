//! `GET /v2/<name>/referrers/<digest>?artifactType=&last=`.

use axum::response::IntoResponse;

use super::{Request, Result};
use crate::response::ReferrersIndex;

pub(super) async fn list(request: &Request<'_>, name: &str, digest: &str) -> Result {
    let query = &request.query;
    let referrers = request
        .state
        .registry
        .referrers(name, digest, query.get("artifactType"), query.get("last"))
        .await?;
    Ok(ReferrersIndex {
        index: referrers.index,
        filtered: referrers.filtered,
        link: query.next_link(
            &format!("/v2/{name}/referrers/{digest}"),
            "artifactType",
            referrers.next.as_deref(),
        ),
    }
    .into_response())
}
