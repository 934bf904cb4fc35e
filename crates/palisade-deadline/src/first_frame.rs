//! [`FirstFrameLayer`]: a response is not an answer until its body starts.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use palisade_core::{BoxError, Deadline, Elapsed, HasDeadline, ProviderId, TimeoutScope};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::ConfigError;
use crate::request::check_timeout;

/// Holds back each response until its body's first frame has arrived,
/// within `wait` and the request's deadline, so a provider that answers
/// with headers and then never starts streaming fails the attempt (and can
/// be retried or failed over) before the caller has seen a byte.
///
/// The response's body then yields that frame first, then the rest as the
/// inner body gives it (hold the rest to an idle timeout with
/// [`StreamTimeoutLayer`](crate::StreamTimeoutLayer) inside this layer). A
/// body that is already at its end is passed on at once.
///
/// Errors: the wait running out is an [`Elapsed`] with scope `FirstFrame`
/// (or `Request` when the deadline came first), naming the provider; the
/// body failing before its first frame is that error. Both are
/// [`BoxError`]s, as is the inner service's error.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use bytes::Bytes;
/// use http_body_util::StreamBody;
/// use palisade_core::{BoxError, Elapsed, TimeoutScope};
/// use palisade_deadline::FirstFrameLayer;
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// // A provider that sends its headers, then nothing.
/// let stalled = service_fn(|_: http::Request<()>| async {
///     let never = futures_util::stream::pending::<Result<http_body::Frame<Bytes>, BoxError>>();
///     Ok::<_, BoxError>(http::Response::new(StreamBody::new(never)))
/// });
/// let svc = FirstFrameLayer::new(Duration::from_secs(10)).unwrap().provider("openai").layer(stalled);
/// let err = svc.oneshot(http::Request::new(())).await.unwrap_err();
/// assert_eq!(err.downcast_ref::<Elapsed>().unwrap().scope(), TimeoutScope::FirstFrame);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FirstFrameLayer {
    wait: Duration,
    provider: Option<&'static ProviderId>,
}

impl FirstFrameLayer {
    /// Waits up to `wait` for a body's first frame; refused if zero or
    /// over a year.
    pub fn new(wait: Duration) -> Result<Self, ConfigError> {
        check_timeout("first_frame", wait)?;
        Ok(FirstFrameLayer {
            wait,
            provider: None,
        })
    }

    /// Names the provider in the timeout errors. The name is
    /// [interned](ProviderId::interned), so calls name it without cloning.
    pub fn provider(mut self, provider: impl Into<ProviderId>) -> Self {
        self.provider = Some(provider.into().interned());
        self
    }
}

impl<S> Layer<S> for FirstFrameLayer {
    type Service = FirstFrame<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FirstFrame {
            inner,
            wait: self.wait,
            provider: self.provider,
        }
    }
}

/// A service whose responses wait for their body's first frame. Made by
/// [`FirstFrameLayer`].
#[derive(Debug, Clone)]
pub struct FirstFrame<S> {
    inner: S,
    wait: Duration,
    provider: Option<&'static ProviderId>,
}

impl<S, Req, B> Service<Req> for FirstFrame<S>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
    Req: HasDeadline,
{
    type Response = http::Response<FirstFrameBody<B>>;
    type Error = BoxError;
    type Future = FirstFrameFuture<S::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let deadline = req.deadline();
        FirstFrameFuture {
            state: State::Calling {
                fut: self.inner.call(req),
            },
            wait: self.wait,
            deadline,
            provider: self.provider,
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Calling { #[pin] fut: F },
        Waiting {
            head: Option<(http::response::Parts, B)>,
            #[pin]
            sleep: Sleep,
            limit: Duration,
        },
        Done,
    }
}

pin_project! {
    /// The response future of [`FirstFrame`].
    pub struct FirstFrameFuture<F, B> {
        #[pin]
        state: State<F, B>,
        wait: Duration,
        deadline: Option<Deadline>,
        provider: Option<&'static ProviderId>,
    }
}

impl<F, B> fmt::Debug for FirstFrameFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirstFrameFuture")
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for FirstFrameFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<http::Response<FirstFrameBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    let res = ready!(fut.poll(cx)).map_err(Into::into)?;
                    if res.body().is_end_stream() {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(
                            res.map(|rest| FirstFrameBody { first: None, rest })
                        ));
                    }
                    let limit = match *this.deadline {
                        Some(d) => d.clamp(*this.wait),
                        None => *this.wait,
                    };
                    this.state.set(State::Waiting {
                        head: Some(res.into_parts()),
                        sleep: tokio::time::sleep(limit),
                        limit,
                    });
                }
                StateProj::Waiting { head, sleep, limit } => {
                    let (_, body) = head.as_mut().expect("the head is taken once");
                    let first = match Pin::new(body).poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => Some(frame),
                        Poll::Ready(Some(Err(e))) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e.into()));
                        }
                        Poll::Ready(None) => None,
                        Poll::Pending => {
                            ready!(sleep.poll(cx));
                            let scope = if *limit < *this.wait {
                                TimeoutScope::Request
                            } else {
                                TimeoutScope::FirstFrame
                            };
                            let mut e = Elapsed::new(scope, *limit);
                            if let Some(p) = this.provider {
                                e = e.with_provider((*p).clone());
                            }
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e.into()));
                        }
                    };
                    let (parts, rest) = head.take().expect("the head is taken once");
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(http::Response::from_parts(
                        parts,
                        FirstFrameBody { first, rest },
                    )));
                }
                StateProj::Done => panic!("FirstFrameFuture polled after completion"),
            }
        }
    }
}

pin_project! {
    /// A body whose first frame was read ahead by [`FirstFrame`]: that
    /// frame, then the rest.
    pub struct FirstFrameBody<B: Body> {
        first: Option<Frame<B::Data>>,
        #[pin]
        rest: B,
    }
}

impl<B: Body> FirstFrameBody<B> {
    /// Unwraps the body; the frame read ahead, if any, is returned with
    /// it.
    pub fn into_parts(self) -> (Option<Frame<B::Data>>, B) {
        (self.first, self.rest)
    }
}

impl<B: Body> fmt::Debug for FirstFrameBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirstFrameBody")
            .field("first_pending", &self.first.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> Body for FirstFrameBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.project();
        if let Some(f) = this.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        this.rest.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // The frame read ahead is not counted; the hint is then only as
        // good as "unknown".
        if self.first.is_some() {
            SizeHint::default()
        } else {
            self.rest.size_hint()
        }
    }
}
