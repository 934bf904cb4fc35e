//! [`BufferBodyLayer`]: request bodies a retry can send again.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::request::Parts;
use http::Request;
use http_body::Body;
use http_body_util::{Full, Limited};
use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::ConfigError;

/// Reads each request's body into memory, up to a limit, and hands the
/// inner service an `http::Request<Full<Bytes>>`, which is `Clone`: put it
/// outside a [`RetryLayer`](crate::RetryLayer) so the retry can send a
/// streamed request (a hyper or tonic client's) again.
///
/// A body longer than the limit fails the call with
/// [`http_body_util::LengthLimitError`] before anything is sent, as does an
/// error reading the body (passed on unchanged). Request trailers, which
/// hardly any client sends, are dropped. Use it for requests that
/// are small and complete when sent (unary gRPC calls, JSON prompts), not
/// for uploads that must stream.
///
/// For a tonic channel, turn the buffered body back into tonic's own body
/// inside the retry: `.map_request(|r: http::Request<Full<Bytes>>|
/// r.map(tonic::body::Body::new))`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use bytes::{Buf, Bytes, BytesMut};
/// use http::Request;
/// use http_body_util::{BodyExt, Full};
/// use palisade_core::BoxError;
/// use palisade_retry::{BufferBodyLayer, RetryLayer};
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// // Fails the first time, answers with the body it got the second.
/// let tries = Arc::new(AtomicU32::new(0));
/// let t = tries.clone();
/// let flaky = service_fn(move |req: Request<Full<Bytes>>| {
///     let t = t.clone();
///     async move {
///         if t.fetch_add(1, Ordering::SeqCst) == 0 {
///             return Err::<Bytes, BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into());
///         }
///         Ok(req.into_body().collect().await?.to_bytes())
///     }
/// });
/// let svc = ServiceBuilder::new()
///     .layer(BufferBodyLayer::new(64 * 1024).unwrap())
///     .layer(RetryLayer::builder().build().unwrap())
///     .service(flaky);
/// // Any body type: here a body of borrowed bytes.
/// let res = svc.oneshot(Request::new(Full::new(&b"prompt"[..]))).await.unwrap();
/// assert_eq!(res, "prompt");
/// assert_eq!(tries.load(Ordering::SeqCst), 2);
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct BufferBodyLayer {
    limit: usize,
}

impl BufferBodyLayer {
    /// Buffers bodies of up to `limit` bytes; refused if `limit` is zero.
    pub fn new(limit: usize) -> Result<Self, ConfigError> {
        if limit == 0 {
            return Err(ConfigError::invalid(
                "buffer.limit",
                "must be at least one byte",
            ));
        }
        Ok(BufferBodyLayer { limit })
    }
}

impl<S> Layer<S> for BufferBodyLayer {
    type Service = BufferBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BufferBody {
            inner,
            limit: self.limit,
        }
    }
}

/// A service whose requests' bodies are read into memory before it is
/// called. Made by [`BufferBodyLayer`].
#[derive(Debug, Clone)]
pub struct BufferBody<S> {
    inner: S,
    limit: usize,
}

impl<S> BufferBody<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for BufferBody<S>
where
    S: Service<Request<Full<Bytes>>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BufferFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The readied service goes with the call, which reaches it once the
        // body is read; this service keeps a clone, readied on its next
        // poll_ready.
        let fresh = self.inner.clone();
        let readied = std::mem::replace(&mut self.inner, fresh);
        let (parts, body) = req.into_parts();
        BufferFuture {
            state: State::Reading {
                body: Limited::new(body, self.limit),
                read: BytesMut::new(),
                rest: Some((parts, readied)),
            },
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<Full<Bytes>>>, B> {
        Reading {
            #[pin]
            body: Limited<B>,
            read: BytesMut,
            rest: Option<(Parts, S)>,
        },
        Calling {
            #[pin]
            fut: S::Future,
        },
    }
}

pin_project! {
    /// The response future of [`BufferBody`]: the body being read, then the
    /// inner call.
    pub struct BufferFuture<S: Service<Request<Full<Bytes>>>, B> {
        #[pin]
        state: State<S, B>,
    }
}

impl<S: Service<Request<Full<Bytes>>>, B> fmt::Debug for BufferFuture<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.state {
            State::Reading { .. } => "reading",
            State::Calling { .. } => "calling",
        };
        f.debug_struct("BufferFuture")
            .field("state", &what)
            .finish()
    }
}

impl<S, B> Future for BufferFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Reading {
                    mut body,
                    read,
                    rest,
                } => {
                    while let Some(frame) = ready!(body.as_mut().poll_frame(cx)) {
                        // Request trailers have nowhere to go in a `Full`
                        // body; they are dropped.
                        if let Ok(mut data) = frame?.into_data() {
                            while data.has_remaining() {
                                let chunk = data.chunk();
                                let n = chunk.len();
                                read.extend_from_slice(chunk);
                                data.advance(n);
                            }
                        }
                    }
                    let bytes = std::mem::take(read).freeze();
                    let (parts, mut svc) =
                        rest.take().expect("BufferFuture polled after completion");
                    let fut = svc.call(Request::from_parts(parts, Full::new(bytes)));
                    this.state.set(State::Calling { fut });
                }
                StateProj::Calling { fut } => return fut.poll(cx).map_err(Into::into),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, LengthLimitError, StreamBody};
    use std::sync::{Arc, Mutex};
    use tower::{service_fn, ServiceExt};

    type Seen = Arc<Mutex<Vec<Bytes>>>;

    /// Records every body it is called with (and, when it has one, the
    /// request's `x-k` header and path in front of it).
    fn recorder() -> (
        impl Service<Request<Full<Bytes>>, Response = (), Error = BoxError, Future: Send> + Clone,
        Seen,
    ) {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let svc = service_fn(move |req: Request<Full<Bytes>>| {
            let s = s.clone();
            async move {
                let head = match req.headers().get("x-k") {
                    Some(v) => format!("{} {} ", req.uri(), v.to_str()?),
                    None => String::new(),
                };
                let body = req.into_body().collect().await?.to_bytes();
                s.lock()
                    .unwrap()
                    .push([head.as_bytes(), &body].concat().into());
                Ok::<_, BoxError>(())
            }
        });
        (svc, seen)
    }

    /// A body streamed in `chunks`, then failing if `fail` says so.
    fn streamed(
        chunks: &[&'static str],
        fail: bool,
    ) -> impl Body<Data = Bytes, Error = std::io::Error> {
        let mut frames: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = chunks
            .iter()
            .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        if fail {
            frames.push(Err(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            )));
        }
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn the_inner_service_gets_the_whole_body_with_the_head() {
        let (svc, seen) = recorder();
        let svc = BufferBodyLayer::new(1024).unwrap().layer(svc);
        let req = Request::builder()
            .uri("/v1/chat")
            .header("x-k", "v")
            .body(streamed(&["hel", "lo ", "world"], false))
            .unwrap();
        svc.oneshot(req).await.unwrap();
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [Bytes::from("/v1/chat v hello world")]
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_fails_before_any_call() {
        let (svc, seen) = recorder();
        let svc = BufferBodyLayer::new(8).unwrap().layer(svc);
        let err = svc
            .oneshot(Request::new(streamed(&["0123", "45678"], false)))
            .await
            .unwrap_err();
        assert!(err.downcast_ref::<LengthLimitError>().is_some(), "{err}");
        assert!(seen.lock().unwrap().is_empty());
        // exactly at the limit is fine
        let (svc, seen) = recorder();
        let svc = BufferBodyLayer::new(8).unwrap().layer(svc);
        svc.oneshot(Request::new(streamed(&["0123", "4567"], false)))
            .await
            .unwrap();
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_body_error_passes_through_and_nothing_is_sent() {
        let (svc, seen) = recorder();
        let svc = BufferBodyLayer::new(1024).unwrap().layer(svc);
        let err = svc
            .oneshot(Request::new(streamed(&["par"], true)))
            .await
            .unwrap_err();
        let io = err
            .downcast_ref::<std::io::Error>()
            .expect("the body's own error");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_retry_inside_resends_the_same_body() {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let flaky = service_fn(move |req: Request<Full<Bytes>>| {
            let s = s.clone();
            async move {
                let body = req.into_body().collect().await?.to_bytes();
                let mut seen = s.lock().unwrap();
                seen.push(body);
                if seen.len() < 3 {
                    return Err::<(), BoxError>(
                        std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
                    );
                }
                Ok(())
            }
        });
        let retry = crate::RetryLayer::builder()
            .max_attempts(3)
            .backoff(crate::Backoff::constant(std::time::Duration::ZERO))
            .build()
            .unwrap();
        let svc = BufferBodyLayer::new(1024)
            .unwrap()
            .layer(retry.layer(flaky));
        svc.oneshot(Request::new(streamed(&["same ", "prompt"], false)))
            .await
            .unwrap();
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [
                Bytes::from("same prompt"),
                Bytes::from("same prompt"),
                Bytes::from("same prompt")
            ]
        );
    }

    #[tokio::test]
    async fn a_dropped_call_never_reaches_the_service() {
        let (svc, seen) = recorder();
        let mut svc = BufferBodyLayer::new(1024).unwrap().layer(svc);
        // A body that never ends: the call is dropped while reading it.
        type Endless = StreamBody<
            futures_util::stream::Pending<Result<http_body::Frame<Bytes>, std::io::Error>>,
        >;
        let body: Endless = StreamBody::new(futures_util::stream::pending());
        let fut = ServiceExt::<Request<Endless>>::ready(&mut svc)
            .await
            .unwrap()
            .call(Request::new(body));
        drop(fut);
        ServiceExt::<Request<Full<Bytes>>>::ready(&mut svc)
            .await
            .unwrap()
            .call(Request::new(Full::new(Bytes::from("next"))))
            .await
            .unwrap();
        assert_eq!(seen.lock().unwrap().as_slice(), [Bytes::from("next")]);
    }

    #[test]
    fn a_zero_limit_is_refused_naming_the_field() {
        let e = BufferBodyLayer::new(0).unwrap_err();
        assert_eq!(e.problems()[0].path, "buffer.limit");
    }
}
