//! The [`Bulkhead`] service.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::BoxError;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::handle::BulkheadHandle;
use crate::permit::{BulkheadPermit, ReleaseMode};
use crate::semaphore::Semaphore;

/// A service behind a bulkhead. Made by
/// [`BulkheadLayer`](crate::BulkheadLayer); all clones share the layer's
/// slots.
///
/// `poll_ready` only readies the inner service: the slot is taken in `call`
/// (at once when one is free, otherwise by queueing inside the response
/// future), so an idle clone that was readied never holds a slot. A call
/// that has to queue takes the readied inner service with it and leaves a
/// fresh clone behind, which is why the inner service must be `Clone`.
///
/// Errors are [`BoxError`]s: the inner service's own error, unchanged, or a
/// [`Rejected`](palisade_core::Rejected) with reason `BulkheadFull` or
/// `BulkheadTimeout`.
pub struct Bulkhead<S, M> {
    inner: S,
    sem: Arc<Semaphore>,
    _mode: PhantomData<fn() -> M>,
}

impl<S, M> Bulkhead<S, M> {
    pub(crate) fn new(inner: S, sem: Arc<Semaphore>) -> Self {
        Bulkhead {
            inner,
            sem,
            _mode: PhantomData,
        }
    }

    /// The operator's handle on this service's bulkhead.
    pub fn handle(&self) -> BulkheadHandle {
        BulkheadHandle {
            sem: self.sem.clone(),
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

impl<S: Clone, M> Clone for Bulkhead<S, M> {
    fn clone(&self) -> Self {
        Bulkhead::new(self.inner.clone(), self.sem.clone())
    }
}

impl<S: fmt::Debug, M> fmt::Debug for Bulkhead<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("inner", &self.inner)
            .field("provider", &self.sem.provider)
            .field("max_concurrent", &self.sem.limit())
            .finish()
    }
}

impl<S, M, Req> Service<Req> for Bulkhead<S, M>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    M: ReleaseMode<S::Response>,
{
    type Response = M::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, M>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if self.sem.try_acquire() {
            let permit = BulkheadPermit::new(self.sem.clone());
            return ResponseFuture::running(self.inner.call(req), permit);
        }
        match self.sem.enqueue() {
            Ok(waiter) => {
                // The readied service goes with the queued call; this
                // service keeps a clone, readied on its next poll_ready.
                let fresh = self.inner.clone();
                let readied = std::mem::replace(&mut self.inner, fresh);
                ResponseFuture::queued(readied, req, waiter, self.sem.clone())
            }
            Err(rejected) => ResponseFuture::rejected(rejected),
        }
    }
}
