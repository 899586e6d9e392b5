//! One structured log line per request: what was asked, by whom and from
//! where, and how it went; the same moment counts it in the metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::body::HttpBody;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, USER_AGENT};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::access::AppState;
use crate::client_addr::ClientAddr;

/// The authenticated subject a response was for, set by the handler that
/// checked the request's credentials.
#[derive(Debug, Clone)]
pub struct Subject(pub String);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The longest user agent logged.
const USER_AGENT_LOGGED: usize = 256;

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The request's id: the one a trusted proxy (an ingress) put in
/// `X-Request-Id`, so its logs and berth's line up, when it is a plain
/// token; else a new one. Sent back in the response.
fn request_id(headers: &HeaderMap, via_trusted_proxy: bool) -> String {
    headers
        .get(&REQUEST_ID)
        .filter(|_| via_trusted_proxy)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned)
}

/// Logs method, path, status, bytes in and out, duration, the client's
/// address, the authenticated subject, the user agent and a request id.
/// Logged when the response head is ready; for a streamed blob the duration
/// is time to first byte and the byte count is the announced length. The
/// query string is left out: it can carry state a log has no need of.
/// Health probes and metric scrapes are logged at debug level: they come
/// every few seconds.
pub async fn log_request(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let bytes_in = declared_length(request.headers()).unwrap_or(0);
    let timer = state.metrics.start(&method, &path, bytes_in);
    let id = request_id(request.headers(), client.via_trusted_proxy);
    let user_agent: String = request
        .headers()
        .get(USER_AGENT)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(USER_AGENT_LOGGED)
                .collect()
        })
        .unwrap_or_default();
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    // Small bodies get their Content-Length from hyper later; their size is known now.
    let bytes_out = declared_length(response.headers())
        .or_else(|| response.body().size_hint().exact())
        .unwrap_or(0);
    let took = started.elapsed();
    timer.done(response.status(), bytes_out, took);
    let duration_ms = (took.as_secs_f64() * 1e6).round() / 1e3;
    let subject = response
        .extensions()
        .get::<Subject>()
        .map_or("", |s| s.0.as_str());
    let status = response.status().as_u16();
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                target: "berth::access",
                %method,
                path,
                status,
                bytes_in,
                bytes_out,
                duration_ms,
                client = %client.ip,
                subject,
                user_agent,
                request_id = id,
                "request"
            )
        };
    }
    if matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics") {
        line!(debug);
    } else {
        line!(info);
    }
    response
}
