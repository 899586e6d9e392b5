//! Request bodies: how long a client may take to send one.
//!
//! Every body is paced ([`paced`]): one that sends nothing for the idle
//! timeout, or that sends less than the minimum rate over any window of that
//! length, is ended with an error, so a client trickling a byte now and then
//! cannot hold a connection (and an upload) forever. Small bodies (token and
//! pull-credential requests, manifests) are also read under a total deadline
//! ([`read_small`]): nothing legitimate takes long to send a few kilobytes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use berth_registry::ByteStream;
use futures_util::{StreamExt, TryStreamExt};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::{Instant, Sleep};

/// How fast request bodies must arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    /// A body that sends nothing this long is ended; also the window over
    /// which the rate is measured.
    pub idle: Duration,
    /// Bytes per second a body must average over each window; 0 for none.
    pub min_rate: u64,
}

/// Why a body was ended for being too slow.
#[derive(Debug, thiserror::Error)]
pub enum TooSlow {
    #[error("the request body sent nothing for {}", humantime::format_duration(*.0))]
    Idle(Duration),
    #[error(
        "the request body sent {received} bytes in {}, slower than the {min_rate} bytes/s \
         required",
        humantime::format_duration(*.window)
    )]
    BelowRate {
        received: u64,
        window: Duration,
        min_rate: u64,
    },
    #[error("the request body did not arrive within {}", humantime::format_duration(*.0))]
    Deadline(Duration),
}

/// `request`, its body paced by `pace` (an empty one, as most requests
/// have, needs no timer).
pub fn paced(request: Request, pace: BodyPace) -> Request {
    if request.body().is_end_stream() {
        return request;
    }
    request.map(|inner| Body::new(PacedBody::new(inner, pace)))
}

/// A body that fails with [`TooSlow`] when its client falls behind.
struct PacedBody {
    inner: Body,
    pace: BodyPace,
    timer: Pin<Box<Sleep>>,
    /// When berth last asked for more of the body.
    last_poll: Instant,
    last_data: Instant,
    window_start: Instant,
    window_bytes: u64,
}

impl PacedBody {
    fn new(inner: Body, pace: BodyPace) -> Self {
        let now = Instant::now();
        let mut body = PacedBody {
            inner,
            pace,
            timer: Box::pin(tokio::time::sleep_until(now + pace.idle)),
            last_poll: now,
            last_data: now,
            window_start: now,
            window_bytes: 0,
        };
        body.arm();
        body
    }

    /// Sets the timer to the next moment something must be checked.
    fn arm(&mut self) {
        let idle_end = self.last_data + self.pace.idle;
        let window_end = self.window_start + self.pace.idle;
        let next = if self.pace.min_rate > 0 {
            idle_end.min(window_end)
        } else {
            idle_end
        };
        self.timer.as_mut().reset(next);
    }

    /// Whether the client kept pace up to `now`; starts a new window when
    /// one has passed.
    fn check(&mut self, now: Instant) -> Result<(), TooSlow> {
        if now >= self.last_data + self.pace.idle {
            return Err(TooSlow::Idle(self.pace.idle));
        }
        if self.pace.min_rate > 0 && now >= self.window_start + self.pace.idle {
            let window = now - self.window_start;
            let needed = (self.pace.min_rate as f64 * window.as_secs_f64()) as u64;
            if self.window_bytes < needed {
                return Err(TooSlow::BelowRate {
                    received: self.window_bytes,
                    window,
                    min_rate: self.pace.min_rate,
                });
            }
            self.window_start = now;
            self.window_bytes = 0;
        }
        Ok(())
    }
}

impl HttpBody for PacedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        // While waiting for the client this is polled at least once a
        // window (the timer sees to it); a longer gap means berth itself did
        // not read (its disk stalled), which is not the client's doing.
        let now = Instant::now();
        if now - this.last_poll > 2 * this.pace.idle {
            this.last_data = now;
            this.window_start = now;
            this.window_bytes = 0;
            this.arm();
        }
        this.last_poll = now;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let now = Instant::now();
                    this.window_bytes += data.len() as u64;
                    this.last_data = now;
                    if let Err(slow) = this.check(now) {
                        return Poll::Ready(Some(Err(axum::Error::new(slow))));
                    }
                    this.arm();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => loop {
                ready!(this.timer.as_mut().poll(cx));
                if let Err(slow) = this.check(Instant::now()) {
                    return Poll::Ready(Some(Err(axum::Error::new(slow))));
                }
                this.arm();
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body as the registry takes it.
pub fn stream(body: Body) -> ByteStream {
    TryStreamExt::map_err(body.into_data_stream(), std::io::Error::other).boxed()
}

/// Why a small body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SmallBodyError {
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error(transparent)]
    TooSlow(TooSlow),
    #[error("the request body could not be read: {0}")]
    Broken(String),
}

/// A small JSON request body whose fields are all optional: none at all
/// (only whitespace) is the default request.
pub fn json_or_default<T: serde::de::DeserializeOwned + Default>(
    bytes: &[u8],
) -> Result<T, serde_json::Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
}

/// Reads a body of at most `limit` bytes that must arrive within `deadline`.
pub async fn read_small(
    body: Body,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, SmallBodyError> {
    let read = Limited::new(body, limit).collect();
    match tokio::time::timeout(deadline, read).await {
        Err(_) => Err(SmallBodyError::TooSlow(TooSlow::Deadline(deadline))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(SmallBodyError::TooLarge { limit })
        }
        Ok(Err(e)) => Err(SmallBodyError::Broken(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    /// A body of `chunks`, each sent after its delay.
    fn timed(chunks: Vec<(u64, &'static [u8])>) -> Body {
        let stream = stream::iter(chunks).then(|(millis, bytes)| async move {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            Ok::<_, std::io::Error>(Bytes::from_static(bytes))
        });
        Body::from_stream(stream)
    }

    fn paced(body: Body, idle_secs: u64, min_rate: u64) -> Body {
        let pace = BodyPace {
            idle: Duration::from_secs(idle_secs),
            min_rate,
        };
        Body::new(PacedBody::new(body, pace))
    }

    async fn read(body: Body) -> Result<usize, String> {
        axum::body::to_bytes(body, usize::MAX)
            .await
            .map(|b| b.len())
            .map_err(|e| {
                use std::error::Error as _;
                e.source().map_or(e.to_string(), ToString::to_string)
            })
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_passes_however_long_it_takes() {
        // 100 bytes every 500 ms for a minute: 200 bytes/s against 100 required.
        let chunks = vec![(500, &[7u8; 100][..]); 120];
        assert_eq!(read(paced(timed(chunks), 2, 100)).await, Ok(12_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_within_the_idle_timeout_is_ended_by_the_rate() {
        // A byte every 1.5 s never trips a 2 s idle timeout, but 1.3 bytes
        // per 2 s window is far below 100 bytes/s.
        let chunks = vec![(1500, &b"x"[..]); 1000];
        let error = read(paced(timed(chunks), 2, 100)).await.unwrap_err();
        assert!(error.contains("slower than the 100 bytes/s"), "{error}");
        // Without a rate, only the idle timeout applies: it passes.
        let chunks = vec![(1500, &b"x"[..]); 10];
        assert_eq!(read(paced(timed(chunks), 2, 0)).await, Ok(10));
    }

    #[tokio::test(start_paused = true)]
    async fn time_berth_spends_not_reading_is_not_the_clients() {
        // The client sent everything at once; berth reads it slowly, with a
        // gap of three windows, as a stalled disk would make it.
        let pace = BodyPace {
            idle: Duration::from_secs(2),
            min_rate: 100,
        };
        let chunks = [&[1u8; 300][..], &[2u8; 300][..]]
            .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c)));
        let mut body = PacedBody::new(Body::from_stream(stream::iter(chunks)), pace);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap().len(), 300);
        tokio::time::sleep(Duration::from_secs(6)).await;
        let second = body.frame().await.unwrap();
        assert!(second.is_ok(), "{second:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_body_is_ended_by_the_idle_timeout() {
        let chunks = vec![(10, &b"abc"[..]), (5000, &b"late"[..])];
        let error = read(paced(timed(chunks), 2, 0)).await.unwrap_err();
        assert!(error.contains("sent nothing for 2s"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn small_bodies_have_a_deadline_and_a_limit() {
        let slow = timed(vec![(100, &b"{"[..]); 200]);
        let deadline = Duration::from_secs(10);
        assert!(matches!(
            read_small(slow, 1024, deadline).await,
            Err(SmallBodyError::TooSlow(TooSlow::Deadline(_)))
        ));
        let large = timed(vec![(0, &[0u8; 600][..]); 2]);
        assert!(matches!(
            read_small(large, 1024, deadline).await,
            Err(SmallBodyError::TooLarge { limit: 1024 })
        ));
        let fine = timed(vec![(0, &b"{}"[..])]);
        assert_eq!(read_small(fine, 1024, deadline).await.unwrap(), &b"{}"[..]);
    }
}
