//! What a request may take: a head within limits (answered in the spec's
//! error format when it is not), and a body paced by [`BodyPace`].
//!
//! hyper refuses heads beyond its own limits before any of berth runs, with
//! an empty body: more than 100 header fields (raising that costs every
//! request an allocation), or a head beyond ~400 KiB. berth's limits on the
//! target's and the headers' length are lower than hyper's, so a client that
//! sends a long URL or large headers gets a JSON error that says which
//! limit it hit.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::body::{BodyPace, paced};
use crate::error::{ApiError, EdgeError};

/// The longest request target (path and query) accepted.
pub const MAX_TARGET: usize = 16 * 1024;
/// The most bytes of header names and values accepted.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Middleware: refuses requests whose head exceeds berth's limits, and
/// paces the bodies of the others. One middleware for both: each costs
/// every request a boxed service.
pub async fn enforce(pace: BodyPace, request: Request, next: Next) -> Response {
    match head_error(&request) {
        Some(error) => ApiError::from(error).into_response(),
        None => next.run(paced(request, pace)).await,
    }
}

fn head_error(request: &Request) -> Option<EdgeError> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if target > MAX_TARGET {
        return Some(EdgeError::UriTooLong {
            length: target,
            limit: MAX_TARGET,
        });
    }
    let headers = request.headers();
    // Each field as it came: name, ": ", value, CRLF.
    let size: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > MAX_HEADER_BYTES {
        return Some(EdgeError::HeadersTooLarge { size });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[test]
    fn long_targets_and_large_heads_are_named() {
        let ok = Request::get("/v2/").body(Body::empty()).unwrap();
        assert!(head_error(&ok).is_none());
        let long = format!("/v2/{}", "a".repeat(MAX_TARGET));
        let request = Request::get(long).body(Body::empty()).unwrap();
        assert!(matches!(
            head_error(&request),
            Some(EdgeError::UriTooLong { .. })
        ));
        let mut request = Request::get("/v2/").body(Body::empty()).unwrap();
        let large = "v".repeat(MAX_HEADER_BYTES);
        request
            .headers_mut()
            .insert("x-large", large.parse().unwrap());
        assert!(matches!(
            head_error(&request),
            Some(EdgeError::HeadersTooLarge { .. })
        ));
    }
}
