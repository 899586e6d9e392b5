//! One structured log line per request.

use std::time::Instant;

use axum::body::HttpBody;
use axum::extract::Request;
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::Response;

fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Logs method, path, status, bytes in and out, and duration. Logged when the
/// response head is ready; for a streamed blob the duration is time to first
/// byte and the byte count is the announced length. The query string is left
/// out: it can carry state a log has no need of.
pub async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let bytes_in = declared_length(request.headers()).unwrap_or(0);
    let response = next.run(request).await;
    // Small bodies get their Content-Length from hyper later; their size is known now.
    let bytes_out = declared_length(response.headers())
        .or_else(|| response.body().size_hint().exact())
        .unwrap_or(0);
    let duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    tracing::info!(
        target: "berth::access",
        %method,
        path,
        status = response.status().as_u16(),
        bytes_in,
        bytes_out,
        duration_ms,
        "request"
    );
    response
}
