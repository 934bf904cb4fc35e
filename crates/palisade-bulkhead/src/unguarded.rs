//! [`Unguarded`]: a service with no bulkhead whose responses look like a
//! bulkhead's.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::permit::ReleaseMode;

/// A service passed through without a bulkhead, its responses shaped like
/// those of a [`Bulkhead`](crate::Bulkhead) in release mode `M` (for
/// [`OnBodyEnd`](crate::OnBodyEnd), bodies are wrapped in a
/// [`PermitBody`](crate::PermitBody) holding nothing).
///
/// Use it where a bulkhead is switched off by configuration but the type
/// must stay the same, for example one side of a `tower::util::Either`.
/// Errors are converted into [`BoxError`]s, as a bulkhead's are.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use palisade_bulkhead::{OnBodyEnd, Unguarded};
/// use palisade_core::BoxError;
/// use tower::{service_fn, ServiceExt};
///
/// let svc = Unguarded::<_, OnBodyEnd>::new(service_fn(|_: ()| async {
///     Ok::<_, BoxError>(http::Response::new(String::from("hi")))
/// }));
/// let res = svc.oneshot(()).await.unwrap();
/// assert!(!res.body().holds_permit());
/// # }
/// ```
pub struct Unguarded<S, M> {
    inner: S,
    _mode: PhantomData<fn() -> M>,
}

impl<S, M> Unguarded<S, M> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Unguarded {
            inner,
            _mode: PhantomData,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, M> Clone for Unguarded<S, M> {
    fn clone(&self) -> Self {
        Unguarded::new(self.inner.clone())
    }
}

impl<S: fmt::Debug, M> fmt::Debug for Unguarded<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unguarded")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, M, Req> Service<Req> for Unguarded<S, M>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    M: ReleaseMode<S::Response>,
{
    type Response = M::Response;
    type Error = BoxError;
    type Future = UnguardedFuture<S::Future, M>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        UnguardedFuture {
            fut: self.inner.call(req),
            _mode: PhantomData,
        }
    }
}

pin_project! {
    /// The response future of [`Unguarded`].
    pub struct UnguardedFuture<F, M> {
        #[pin]
        fut: F,
        _mode: PhantomData<fn() -> M>,
    }
}

impl<F, M> fmt::Debug for UnguardedFuture<F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnguardedFuture").finish()
    }
}

impl<F, M, T, E> Future for UnguardedFuture<F, M>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    M: ReleaseMode<T>,
{
    type Output = Result<M::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = ready!(self.project().fut.poll(cx));
        Poll::Ready(res.map(M::unguarded).map_err(Into::into))
    }
}
