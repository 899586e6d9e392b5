//! `Connection: close` on answers given before the request body was read to
//! its end.
//!
//! When a handler answers without the whole body (an error before the upload
//! was read, a body that stalled past the timeout, a manifest over the size
//! limit), hyper cannot reuse the connection: the rest of the body is still
//! on the wire, so it closes the connection after the answer. Without saying
//! so, the client puts the connection back in its pool and its next request
//! races the close (`IncompleteMessage`, "connection reset"). Saying
//! `Connection: close`, as Go's net/http does in the same case, makes the
//! client open a fresh connection instead.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header::CONNECTION;
use axum::http::{HeaderValue, Version};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

/// Middleware: answers `Connection: close` when the request body was not
/// read to its end by the time the answer is ready (HTTP/1 only; HTTP/2
/// ends one stream, never the connection).
pub async fn close_after_unread_body(request: Request, next: Next) -> Response {
    if request.body().is_end_stream() || request.version() > Version::HTTP_11 {
        return next.run(request).await;
    }
    let ended = Arc::new(AtomicBool::new(false));
    let request = request.map(|inner| {
        Body::new(EndWatched {
            inner,
            ended: Arc::clone(&ended),
        })
    });
    let mut response = next.run(request).await;
    if !ended.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A body that records reaching its end (an error is not an end).
struct EndWatched {
    inner: Body,
    ended: Arc<AtomicBool>,
}

impl HttpBody for EndWatched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.ended.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::post;
    use futures_util::stream;
    use tower::ServiceExt;

    fn app() -> Router {
        // "/read" reads the whole body; "/ignore" answers without it.
        Router::new()
            .route(
                "/read",
                post(|body: Body| async move {
                    axum::body::to_bytes(body, usize::MAX)
                        .await
                        .map(|_| ())
                        .ok();
                }),
            )
            .route("/ignore", post(|| async {}))
            .layer(axum::middleware::from_fn(close_after_unread_body))
    }

    async fn connection_header(path: &str, body: Body) -> Option<HeaderValue> {
        let request = Request::post(path).body(body).unwrap();
        let response = app().oneshot(request).await.unwrap();
        response.headers().get(CONNECTION).cloned()
    }

    fn streamed(chunks: Vec<Result<&'static [u8], std::io::Error>>) -> Body {
        Body::from_stream(stream::iter(chunks))
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_keeps_the_connection() {
        assert_eq!(connection_header("/read", Body::from("abc")).await, None);
        let chunks = vec![Ok(&b"ab"[..]), Ok(&b"c"[..])];
        assert_eq!(connection_header("/read", streamed(chunks)).await, None);
        assert_eq!(connection_header("/ignore", Body::empty()).await, None);
    }

    #[tokio::test]
    async fn an_unread_or_broken_body_closes_the_connection() {
        let close = Some(HeaderValue::from_static("close"));
        assert_eq!(connection_header("/ignore", Body::from("abc")).await, close);
        let broken = vec![Ok(&b"ab"[..]), Err(std::io::Error::other("stalled"))];
        assert_eq!(connection_header("/read", streamed(broken)).await, close);
    }
}
