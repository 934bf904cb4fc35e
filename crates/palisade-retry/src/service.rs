//! The [`Retry`] service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{BoxError, Classify, HasDeadline};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::handle::RetryHandle;
use crate::hooks::{Replay, RetryPredicate};
use crate::shared::Shared;

/// A service whose failed requests are re-sent. Made by
/// [`RetryLayer`](crate::RetryLayer).
///
/// Each call keeps a copy of the request (made by the [`Replay`] hook) and
/// a clone of this service; a retry waits, then re-acquires the clone's
/// readiness before re-sending, as tower's `Retry` does. Requests carry
/// their deadline ([`HasDeadline`]): wrap plain requests in
/// [`WithDeadline`](palisade_core::WithDeadline).
///
/// Errors are [`BoxError`]s: the last attempt's own error, unchanged, or
/// wrapped in a [`RetryStopped`](crate::RetryStopped) when the budget or
/// the deadline stopped retrying early.
pub struct Retry<S, C, P, R> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
    pub(crate) classifier: C,
    pub(crate) predicate: P,
    pub(crate) replay: R,
}

impl<S, C, P, R> Retry<S, C, P, R> {
    pub(crate) fn new(
        inner: S,
        shared: Arc<Shared>,
        classifier: C,
        predicate: P,
        replay: R,
    ) -> Self {
        Retry {
            inner,
            shared,
            classifier,
            predicate,
            replay,
        }
    }

    /// The operator's view of this service's retry layer.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle {
            shared: self.shared.clone(),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone, P: Clone, R: Clone> Clone for Retry<S, C, P, R> {
    fn clone(&self) -> Self {
        Retry::new(
            self.inner.clone(),
            self.shared.clone(),
            self.classifier.clone(),
            self.predicate.clone(),
            self.replay.clone(),
        )
    }
}

impl<S: fmt::Debug, C, P, R> fmt::Debug for Retry<S, C, P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("provider", &self.shared.cfg.provider)
            .field("max_attempts", &self.shared.cfg.max_attempts)
            .finish()
    }
}

impl<S, C, P, R, Req> Service<Req> for Retry<S, C, P, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
    P: RetryPredicate<S::Response> + Clone,
    R: Replay<Req> + Clone,
    Req: HasDeadline,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, C, P, R, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.shared.stats.requests.add(1);
        self.shared.budget.deposit();
        let copy = if self.shared.cfg.max_attempts > 1 {
            self.replay.replay(&req)
        } else {
            None
        };
        let fut = self.inner.call(req);
        ResponseFuture::new(fut, self.clone(), copy)
    }
}
