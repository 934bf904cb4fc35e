//! Timeouts on streamed response bodies (LLM token streams, SSE): time to
//! first frame, idle time between frames, and the request's deadline.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use palisade_core::{BoxError, Deadline, Elapsed, HasDeadline, ProviderId, TimeoutScope};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::ConfigError;
use crate::request::check_timeout;

/// The timeouts a streamed body is held to. Each is optional.
///
/// ```
/// use palisade_deadline::StreamTimeouts;
/// use std::time::Duration;
///
/// let t = StreamTimeouts::new()
///     .first_frame(Duration::from_secs(20)) // time to first token
///     .idle(Duration::from_secs(10))        // longest pause between tokens
///     .build()
///     .unwrap();
/// # let _ = t;
/// ```
#[derive(Debug, Clone, Default)]
pub struct StreamTimeouts {
    first_frame: Option<Duration>,
    idle: Option<Duration>,
    provider: Option<&'static ProviderId>,
}

impl StreamTimeouts {
    /// No timeouts yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The longest wait for the first frame, counted from when the body is
    /// wrapped (when the response head arrived).
    pub fn first_frame(mut self, d: Duration) -> Self {
        self.first_frame = Some(d);
        self
    }

    /// The longest pause between two frames.
    pub fn idle(mut self, d: Duration) -> Self {
        self.idle = Some(d);
        self
    }

    /// Names the provider in the timeout errors. The name is
    /// [interned](ProviderId::interned), so calls name it without cloning.
    pub fn provider(mut self, provider: impl Into<ProviderId>) -> Self {
        self.provider = Some(provider.into().interned());
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<Self, ConfigError> {
        if let Some(d) = self.first_frame {
            check_timeout("first_frame", d)?;
        }
        if let Some(d) = self.idle {
            check_timeout("idle", d)?;
        }
        Ok(self)
    }

    /// Wraps `body`, also holding it to `deadline` when given.
    pub fn wrap<B>(&self, body: B, deadline: Option<Deadline>) -> TimeoutBody<B> {
        TimeoutBody::new(body, self.clone(), deadline)
    }
}

pin_project! {
    /// An `http_body::Body` held to [`StreamTimeouts`] and a deadline.
    ///
    /// When a timeout fires, the body yields one error, an
    /// [`Elapsed`](palisade_core::Elapsed) whose scope names it
    /// (`FirstFrame`, `Idle`, or `Request` for the deadline), and then ends.
    /// A steady stream is never cut by the first-frame or idle timeouts,
    /// however long it lasts; only the deadline bounds its total length.
    ///
    /// One timer per body, armed only when the inner body is pending and
    /// moved (not re-created) as frames arrive.
    pub struct TimeoutBody<B> {
        #[pin]
        body: B,
        timeouts: StreamTimeouts,
        deadline: Option<Instant>,
        started: Instant,
        // When the last frame was seen pending-after; `None` right after a
        // frame, until the body next reports pending.
        quiet_since: Option<Instant>,
        frames: u64,
        sleep: Option<Pin<Box<Sleep>>>,
        // The waker the timer was last polled with: it keeps it until it
        // fires, so it is not polled again with the same one.
        timer_waker: Option<Waker>,
        done: bool,
    }
}

impl<B> TimeoutBody<B> {
    fn new(body: B, timeouts: StreamTimeouts, deadline: Option<Deadline>) -> Self {
        let started = Instant::now();
        TimeoutBody {
            body,
            timeouts,
            deadline: deadline.map(Deadline::instant),
            started,
            quiet_since: Some(started),
            frames: 0,
            sleep: None,
            timer_waker: None,
            done: false,
        }
    }

    /// Frames seen so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Unwraps the body.
    pub fn into_inner(self) -> B {
        self.body
    }
}

impl<B: fmt::Debug> fmt::Debug for TimeoutBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutBody")
            .field("body", &self.body)
            .field("frames", &self.frames)
            .field("done", &self.done)
            .finish()
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match this.body.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.frames += 1;
                *this.quiet_since = None;
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => {
                *this.done = true;
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Ready(None) => {
                *this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        // Pending: which timeout comes next? The first frame counts from
        // the start; idle counts from when the body first went quiet after
        // the last frame (so a slow reader does not make the provider look
        // idle); the deadline bounds everything.
        let quiet_since = *this.quiet_since.get_or_insert_with(Instant::now);
        let gap = if *this.frames == 0 {
            let start = *this.started;
            this.timeouts
                .first_frame
                .map(|d| (start + d, start, TimeoutScope::FirstFrame))
        } else {
            this.timeouts
                .idle
                .map(|d| (quiet_since + d, quiet_since, TimeoutScope::Idle))
        };
        let total = this
            .deadline
            .map(|dl| (dl, *this.started, TimeoutScope::Request));
        let next = match (gap, total) {
            (Some(g), Some(t)) => Some(if t.0 < g.0 { t } else { g }),
            (g, t) => g.or(t),
        };
        let Some((at, from, scope)) = next else {
            return Poll::Pending;
        };
        // A timer set for an earlier quiet spell is left as it is: each
        // frame would move it otherwise. When it fires before `at`, it is
        // moved then, once.
        let moved = match this.sleep {
            Some(s) if s.deadline() <= at => false,
            Some(s) => {
                s.as_mut().reset(at);
                true
            }
            None => {
                *this.sleep = Some(Box::pin(tokio::time::sleep_until(at)));
                true
            }
        };
        let Some(sleep) = this.sleep.as_mut() else {
            return Poll::Pending;
        };
        // Registered with this task's waker, not moved, not fired: it will
        // wake the task when it fires, without being polled on every
        // pending frame.
        let same_waker = this
            .timer_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if !moved && same_waker && !sleep.is_elapsed() {
            return Poll::Pending;
        }
        if !same_waker {
            *this.timer_waker = Some(cx.waker().clone());
        }
        loop {
            ready!(sleep.as_mut().poll(cx));
            if sleep.deadline() >= at {
                break;
            }
            sleep.as_mut().reset(at);
        }
        *this.done = true;
        let after = at.saturating_duration_since(from);
        let mut elapsed = Elapsed::new(scope, after);
        if let Some(p) = this.timeouts.provider {
            elapsed = elapsed.with_provider(p.clone());
        }
        tracing::debug!(
            provider = this.timeouts.provider.as_ref().map(|p| p.as_str()),
            scope = %scope,
            after_ms = after.as_millis() as u64,
            frames = *this.frames,
            "stream timeout fired"
        );
        Poll::Ready(Some(Err(elapsed.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Wraps each response body of an HTTP service in a [`TimeoutBody`], held
/// to the [`StreamTimeouts`] and to the request's deadline. Works on
/// anything whose responses are `http::Response<B>`: hyper clients, axum
/// handlers, tonic channels.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade_core::{BoxError, Elapsed, TimeoutScope};
/// use palisade_deadline::{StreamTimeoutLayer, StreamTimeouts};
/// use http_body_util::{BodyExt, StreamBody};
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// // A provider whose stream never sends a token.
/// let provider = service_fn(|_: http::Request<()>| async {
///     let never = futures_util::stream::pending::<Result<http_body::Frame<bytes::Bytes>, BoxError>>();
///     Ok::<_, BoxError>(http::Response::new(StreamBody::new(never)))
/// });
/// let timeouts = StreamTimeouts::new().first_frame(Duration::from_secs(20)).build().unwrap();
/// let svc = StreamTimeoutLayer::new(timeouts).layer(provider);
/// let body = svc.oneshot(http::Request::new(())).await.unwrap().into_body();
/// let err = body.collect().await.unwrap_err();
/// assert_eq!(err.downcast_ref::<Elapsed>().unwrap().scope(), TimeoutScope::FirstFrame);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct StreamTimeoutLayer {
    timeouts: StreamTimeouts,
}

impl StreamTimeoutLayer {
    /// Holds every response body to `timeouts`.
    pub fn new(timeouts: StreamTimeouts) -> Self {
        StreamTimeoutLayer { timeouts }
    }
}

impl<S> Layer<S> for StreamTimeoutLayer {
    type Service = StreamTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StreamTimeout {
            inner,
            timeouts: self.timeouts.clone(),
        }
    }
}

/// A service whose response bodies are held to stream timeouts. Made by
/// [`StreamTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct StreamTimeout<S> {
    inner: S,
    timeouts: StreamTimeouts,
}

impl<S, Req, B> Service<Req> for StreamTimeout<S>
where
    S: Service<Req, Response = http::Response<B>>,
    Req: HasDeadline,
{
    type Response = http::Response<TimeoutBody<B>>;
    type Error = S::Error;
    type Future = StreamTimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let deadline = req.deadline();
        StreamTimeoutFuture {
            fut: self.inner.call(req),
            timeouts: Some(self.timeouts.clone()),
            deadline,
        }
    }
}

pin_project! {
    /// The response future of [`StreamTimeout`]: wraps the body once the
    /// response head arrives.
    pub struct StreamTimeoutFuture<F> {
        #[pin]
        fut: F,
        timeouts: Option<StreamTimeouts>,
        deadline: Option<Deadline>,
    }
}

impl<F> fmt::Debug for StreamTimeoutFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamTimeoutFuture")
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for StreamTimeoutFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<TimeoutBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.fut.poll(cx))?;
        let timeouts = this
            .timeouts
            .take()
            .expect("StreamTimeoutFuture polled after completion");
        let deadline = *this.deadline;
        Poll::Ready(Ok(res.map(|b| TimeoutBody::new(b, timeouts, deadline))))
    }
}
