//! Closing connections that never send a first byte.
//!
//! hyper's header read timeout (`--idle-timeout`) starts once a connection
//! is known to speak HTTP/1, which takes a first byte: a client that connects
//! (or finishes its TLS handshake) and then stays silent would hold its
//! connection forever. This acceptor gives every connection the same time
//! for its first byte.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Wraps another acceptor's streams in [`FirstByteDeadline`].
#[derive(Clone, Debug)]
pub struct FirstByteAcceptor<A> {
    inner: A,
    limit: Duration,
}

impl<A> FirstByteAcceptor<A> {
    pub fn new(inner: A, limit: Duration) -> Self {
        FirstByteAcceptor { inner, limit }
    }
}

impl<A, I, S> Accept<I, S> for FirstByteAcceptor<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send,
    A::Service: Send,
{
    type Stream = FirstByteDeadline<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, A::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.inner.accept(stream, service);
        let limit = self.limit;
        Box::pin(async move {
            let (inner, service) = accepted.await?;
            let deadline = Some(Box::pin(tokio::time::sleep(limit)));
            Ok((FirstByteDeadline { inner, deadline }, service))
        })
    }
}

/// A stream whose reads fail with `TimedOut` when nothing at all has
/// arrived by its deadline; after the first byte it is the stream itself.
pub struct FirstByteDeadline<S> {
    inner: S,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if result.is_err() || buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    let silent = "no request within the idle timeout";
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, silent)));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn guarded(stream: tokio::io::DuplexStream) -> FirstByteDeadline<tokio::io::DuplexStream> {
        let deadline = Some(Box::pin(tokio::time::sleep(Duration::from_secs(5))));
        FirstByteDeadline {
            inner: stream,
            deadline,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silence_past_the_deadline_is_an_error() {
        let (_client, server) = tokio::io::duplex(64);
        let mut buf = [0; 8];
        let error = guarded(server).read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_first_byte_the_deadline_is_gone() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = guarded(server);
        client.write_all(b"G").await.unwrap();
        let mut buf = [0; 8];
        assert_eq!(server.read(&mut buf).await.unwrap(), 1);
        // Long past the deadline, the stream still waits for data.
        tokio::time::sleep(Duration::from_secs(60)).await;
        client.write_all(b"ET").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 2);
    }
}
