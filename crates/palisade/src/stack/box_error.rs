//! [`BoxErrors`]: a service whose error is boxed into a [`BoxError`], with
//! a named future, so that parts of a stack that fail in different types
//! fail alike.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tower_service::Service;

/// Boxes the inner service's error (a breaker's `BreakerError` becomes a
/// boxed `Rejected` or the provider's own error, by its `Into`).
///
/// A named service and future rather than tower's `MapErr` with a function
/// pointer: a `fn(E) -> BoxError` in a future's type trips rustc's
/// higher-ranked `Send` check when the future is awaited inside
/// `tokio::spawn` or an axum handler.
///
/// Public but unnameable (its module is private): it appears inside
/// [`ProviderFuture`](crate::ProviderFuture)'s type, which users never
/// have to write out.
#[derive(Debug, Clone)]
#[allow(unreachable_pub)]
pub struct BoxErrors<S> {
    inner: S,
}

impl<S> BoxErrors<S> {
    pub(crate) fn new(inner: S) -> Self {
        BoxErrors { inner }
    }
}

impl<S, Req> Service<Req> for BoxErrors<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxErrorsFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        BoxErrorsFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The future of [`BoxErrors`].
    #[derive(Debug)]
    #[allow(unreachable_pub)]
    pub struct BoxErrorsFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, T, E> Future for BoxErrorsFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(ready!(self.project().inner.poll(cx)).map_err(Into::into))
    }
}
