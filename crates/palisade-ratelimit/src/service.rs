//! [`RateLimit`]: the service a [`RateLimitLayer`](crate::RateLimitLayer)
//! makes.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Classify, HasDeadline};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::limiter::{Decision, Mode, Shared, Taken};
use crate::weigh::Weigh;

/// A service whose calls pass a rate limit. Made by
/// [`RateLimitLayer`](crate::RateLimitLayer).
pub struct RateLimit<S, C, W> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
    weigh: W,
}

impl<S, C, W> RateLimit<S, C, W> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, classifier: C, weigh: W) -> Self {
        RateLimit {
            inner,
            shared,
            classifier,
            weigh,
        }
    }
}

impl<S: Clone, C: Clone, W: Clone> Clone for RateLimit<S, C, W> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
            weigh: self.weigh.clone(),
        }
    }
}

impl<S, C, W> fmt::Debug for RateLimit<S, C, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("provider", &self.shared.provider)
            .finish_non_exhaustive()
    }
}

impl<S, C, W, Req> Service<Req> for RateLimit<S, C, W>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
    W: Weigh<Req>,
    Req: HasDeadline,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        let tokens = self.weigh.tokens(&req);
        let taken = Taken { tokens };
        let now = shared.now();
        // The longest this call may wait: the mode's, never past its
        // deadline.
        let limit = match shared.mode {
            Mode::Reject => 0,
            Mode::Wait(d) => {
                let d = match req.deadline() {
                    Some(deadline) => deadline.clamp(d),
                    None => d,
                };
                d.as_nanos().min(u64::MAX as u128) as u64
            }
        };
        let decision = shared.decide(tokens, now, limit);
        match decision {
            Decision::Now => {
                shared.sent(tokens);
                return ResponseFuture::sent(
                    self.inner.call(req),
                    shared.reads_responses().then(|| shared.clone()),
                    self.classifier.clone(),
                    taken,
                );
            }
            Decision::Refused(wait) => {
                return ResponseFuture::refused(shared.clone(), Duration::from_nanos(wait));
            }
            Decision::Reserved(_) | Decision::Retry(_) => {}
        }
        shared.waited.add(1);
        // Take the service that was readied; leave a clone in its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::waiting(
            inner,
            req,
            shared.clone(),
            self.classifier.clone(),
            taken,
            decision,
            now,
            limit,
        )
    }
}
