//! [`ProviderService`]: one provider's protected service, and its future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use palisade_breaker::CircuitBreaker;
use palisade_bulkhead::{Bulkhead, OnResponse, Unguarded};
use palisade_core::{BoxError, ErrorClassifier};
use palisade_deadline::AttemptTimeout;
use palisade_ratelimit::{RateLimit, Unweighted};
use palisade_retry::{CloneRequest, Retry, UsePolicy};
use pin_project_lite::pin_project;
use tower::util::{BoxCloneSyncService, Either};
use tower_service::Service;

use super::box_error::BoxErrors;

// The layers as built, outer to inner. Private: a layer switched off is the
// `Right` side of its `Either`, and adding a layer changes only these lines,
// never the public type.
pub(super) type TimeoutPart<S> = Either<AttemptTimeout<S>, S>;
pub(super) type BreakerPart<S, C> =
    Either<BoxErrors<CircuitBreaker<TimeoutPart<S>, C>>, TimeoutPart<S>>;
pub(super) type RateLimitPart<S, C> =
    Either<RateLimit<BreakerPart<S, C>, C, Unweighted>, BreakerPart<S, C>>;
pub(super) type RetryPart<S, C> =
    Either<Retry<RateLimitPart<S, C>, C, UsePolicy, CloneRequest>, RateLimitPart<S, C>>;
pub(super) type BulkheadPart<S, C, M> =
    Either<Bulkhead<RetryPart<S, C>, M>, Unguarded<RetryPart<S, C>, M>>;
pub(super) type Layers<S, C, M> =
    Either<RateLimit<BulkheadPart<S, C, M>, ErrorClassifier, Unweighted>, BulkheadPart<S, C, M>>;

/// One provider's protected service: (rate limit's pacer, in wait mode) >
/// bulkhead > retry with budget > rate limit > circuit breaker > attempt
/// timeout > the provider, each part present or switched off as
/// configured. Built by [`ProviderStack`](crate::ProviderStack).
///
/// Its type names only the provider's service `S`, the classifier `C` and
/// the bulkhead's release mode `M`, so it does not change when a layer is
/// added or switched off; errors are [`BoxError`]s. A concrete type with
/// no boxing, so every call is as cheap as the layers themselves; use
/// [`boxed`](Self::boxed) for a type to keep in application state, or to
/// put providers of different service types in one registry.
pub struct ProviderService<S, C, M = OnResponse> {
    pub(super) inner: Layers<S, C, M>,
}

impl<S: Clone, C: Clone, M> Clone for ProviderService<S, C, M> {
    fn clone(&self) -> Self {
        ProviderService {
            inner: self.inner.clone(),
        }
    }
}

impl<S, C, M> fmt::Debug for ProviderService<S, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paced = matches!(self.inner, Either::Left(_));
        f.debug_struct("ProviderService")
            .field("paced", &paced)
            .finish_non_exhaustive()
    }
}

impl<S, C, M, Req> Service<Req> for ProviderService<S, C, M>
where
    Layers<S, C, M>: Service<Req, Error = BoxError>,
{
    type Response = <Layers<S, C, M> as Service<Req>>::Response;
    type Error = BoxError;
    type Future = ProviderFuture<<Layers<S, C, M> as Service<Req>>::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        ProviderFuture {
            inner: self.inner.call(req),
        }
    }
}

impl<S, C, M> ProviderService<S, C, M> {
    /// The same service behind tower's [`BoxCloneSyncService`]: one
    /// nameable type, `Send + Sync + Clone`, whatever the provider's type
    /// (one allocation per call).
    ///
    /// ```
    /// use palisade::{Config, ProviderStack};
    /// use palisade_core::{BoxError, HttpClassifier};
    /// use tower::{service_fn, util::BoxCloneSyncService};
    ///
    /// type Llm = BoxCloneSyncService<http::Request<String>, http::Response<String>, BoxError>;
    ///
    /// let cfg = Config::from_toml("[providers.openai]\n").unwrap();
    /// let provider = service_fn(|_: http::Request<String>| async {
    ///     Ok::<_, BoxError>(http::Response::new(String::new()))
    /// });
    /// let stack = ProviderStack::build(&cfg.provider("openai").unwrap(), provider, HttpClassifier::new(), None).unwrap();
    /// let svc: Llm = stack.service.boxed();
    /// # let _ = svc;
    /// ```
    pub fn boxed<Req>(self) -> BoxCloneSyncService<Req, <Self as Service<Req>>::Response, BoxError>
    where
        Self: Service<Req, Error = BoxError> + Clone + Send + Sync + 'static,
        <Self as Service<Req>>::Future: Send + 'static,
    {
        BoxCloneSyncService::new(self)
    }
}

pin_project! {
    /// The response future of [`ProviderService`].
    #[derive(Debug)]
    pub struct ProviderFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for ProviderFuture<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
