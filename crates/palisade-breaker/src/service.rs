//! The [`CircuitBreaker`] service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{BoxError, Classify};
use tokio::time::Sleep;
use tower_service::Service;

use crate::config::ReadinessMode;
use crate::error::BreakerError;
use crate::future::ResponseFuture;
use crate::handle::BreakerHandle;
use crate::state::{Core, Permit, Readiness};

/// A service behind a circuit breaker. Made by
/// [`CircuitBreakerLayer`](crate::CircuitBreakerLayer); all clones share the
/// layer's breaker.
///
/// Errors are [`BreakerError`]s: the inner service's own error, unchanged,
/// or the breaker's refusal (naming the provider, the state and, when
/// open, how long until it probes again), held without an allocation.
/// Both convert into a [`BoxError`] for the next layer out.
pub struct CircuitBreaker<S, C> {
    inner: S,
    core: Arc<Core>,
    classifier: C,
    /// Whether `inner.poll_ready` said ready since the last call.
    inner_ready: bool,
    /// Load-balancer mode: the wake-up at the end of the open period.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn new(inner: S, core: Arc<Core>, classifier: C) -> Self {
        CircuitBreaker {
            inner,
            core,
            classifier,
            inner_ready: false,
            sleep: None,
        }
    }

    /// The operator's handle on this service's breaker.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            core: self.core.clone(),
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

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        // A clone has not been readied, and needs its own timer.
        CircuitBreaker::new(
            self.inner.clone(),
            self.core.clone(),
            self.classifier.clone(),
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("provider", &self.core.cfg.provider)
            .field("state", &self.core.state())
            .finish()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BreakerError;
    type Future = ResponseFuture<S::Future, C>;

    // Out of line on purpose: inlined, it makes callers such as tower's
    // `Ready` too big to inline themselves, and their 24-byte result is
    // then copied through memory on every call (store-forwarding stalls
    // that cost more than this call does; the side-by-side bench shows
    // it on both the closed and the refusing path).
    #[inline(never)]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.core.mode() {
            ReadinessMode::FailFast => {
                if self.core.is_open() {
                    // `call` will most likely reject without touching the
                    // inner service; no need to wait for it (or read the
                    // clock) here. If the open period has ended by then,
                    // `call` checks the inner service's readiness itself.
                    self.inner_ready = false;
                    return Poll::Ready(Ok(()));
                }
            }
            ReadinessMode::LoadBalancer => {
                if let Some(early) = self.poll_breaker_ready(cx) {
                    return early;
                }
            }
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.inner_ready = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                self.inner_ready = false;
                Poll::Ready(Err(BreakerError::Inner(e.into())))
            }
            Poll::Pending => {
                self.inner_ready = false;
                Poll::Pending
            }
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        // The two paths a burst takes are decided inline, each building its
        // future in place: Closed with the inner service readied, and Open
        // with time left (one clock read). Everything else (half-open,
        // forced open, an open period that just ended) goes out of line.
        let w = self.core.word();
        if self.inner_ready {
            if let Some(permit) = self.core.admit_closed(w) {
                return self.send(req, permit);
            }
        }
        if let Some(refusal) = self.core.refuse_if_open(w) {
            return ResponseFuture::refused(refusal, self.classifier.clone());
        }
        self.call_other(req)
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Load-balancer mode: not ready while open, woken when the open period
    /// ends. `None` once the breaker lets calls through.
    #[inline(never)]
    fn poll_breaker_ready(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Option<Poll<Result<(), BreakerError>>> {
        loop {
            match self.core.readiness() {
                Readiness::Go => {
                    self.sleep = None;
                    return None;
                }
                Readiness::Refuse => {
                    self.inner_ready = false;
                    return Some(Poll::Ready(Err(BreakerError::Refused(
                        self.core.refuse_now(),
                    ))));
                }
                Readiness::WaitUntil(at) => {
                    match &mut self.sleep {
                        Some(s) if s.deadline() == at => {}
                        Some(s) => s.as_mut().reset(at),
                        None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                    }
                    let sleep = self.sleep.as_mut().expect("set above");
                    if sleep.as_mut().poll(cx).is_pending() {
                        self.inner_ready = false;
                        return Some(Poll::Pending);
                    }
                }
            }
        }
    }

    /// Sends the call to the readied inner service under `permit`.
    #[inline(always)]
    fn send<Req>(&mut self, req: Req, permit: Permit) -> ResponseFuture<S::Future, C>
    where
        S: Service<Req>,
        C: Clone,
    {
        self.inner_ready = false;
        ResponseFuture::called(
            self.inner.call(req),
            self.core.clone(),
            permit,
            self.classifier.clone(),
        )
    }

    #[inline(never)]
    fn call_other<Req>(&mut self, req: Req) -> ResponseFuture<S::Future, C>
    where
        S: Service<Req>,
        C: Clone,
    {
        match self.core.acquire() {
            Ok(permit) if self.inner_ready => self.send(req, permit),
            Ok(permit) => self.call_unreadied(req, permit),
            Err(refusal) => ResponseFuture::refused(refusal, self.classifier.clone()),
        }
    }

    /// The breaker was open when readiness was checked, so the inner service
    /// was not readied; the open period has ended since. Ask the inner
    /// service now, without waiting: if it is ready, the probe goes ahead;
    /// if not, it must not be called.
    #[inline(never)]
    fn call_unreadied<Req>(&mut self, req: Req, permit: Permit) -> ResponseFuture<S::Future, C>
    where
        S: Service<Req>,
        C: Clone,
    {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.inner.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => self.send(req, permit),
            _ => {
                self.core.abandon(permit);
                ResponseFuture::refused(self.core.refuse_now(), self.classifier.clone())
            }
        }
    }
}
