//! Limits on request heads, answered in the spec's error format.
//!
//! hyper refuses heads beyond its own limits before any of berth runs, with
//! an empty body. berth's limits are lower, so a client that sends a long
//! URL or many or large headers gets a JSON error that says which limit it
//! hit; only heads far beyond any real client's reach hyper's.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, EdgeError};

/// The longest request target (path and query) accepted.
pub const MAX_TARGET: usize = 16 * 1024;
/// The most bytes of header names and values accepted.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The most header fields accepted; hyper must be configured to parse more.
pub const MAX_HEADERS: usize = 100;

/// Middleware: refuses requests whose head exceeds berth's limits.
pub async fn check_head(request: Request, next: Next) -> Response {
    match head_error(&request) {
        Some(error) => ApiError::from(error).into_response(),
        None => next.run(request).await,
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
    if headers.len() > MAX_HEADERS || size > MAX_HEADER_BYTES {
        return Some(EdgeError::HeadersTooLarge {
            fields: headers.len(),
            size,
        });
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
        for i in 0..=MAX_HEADERS {
            let name = axum::http::HeaderName::try_from(format!("x-h{i}")).unwrap();
            request.headers_mut().insert(name, "v".parse().unwrap());
        }
        assert!(matches!(
            head_error(&request),
            Some(EdgeError::HeadersTooLarge { .. })
        ));
    }
}
