//! [`RateLimit`]: the service a [`RateLimitLayer`](crate::RateLimitLayer)
//! makes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Classify, HasDeadline};
use tokio::time::Sleep;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::limiter::{Decision, Mode, Shared, Taken};
use crate::prepaid;
use crate::weigh::Weigh;

/// What a [`RateLimit`] does with the room it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Sends the call (and settles it with its response).
    Limit,
    /// Waits for room outside a bulkhead and offers it to the same
    /// limiter inside (see `prepaid`).
    Pace,
}

/// A service whose calls pass a rate limit. Made by
/// [`RateLimitLayer`](crate::RateLimitLayer) (and, as the limiter's
/// waiting half, by [`RateLimitLayer::pacer`](crate::RateLimitLayer::pacer)).
pub struct RateLimit<S, C, W> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
    weigh: W,
    role: Role,
    // In `Mode::Ready`, the timer `poll_ready` waits on for room; boxed,
    // and only ever made in that mode.
    room: Option<Pin<Box<Sleep>>>,
}

impl<S, C, W> RateLimit<S, C, W> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, classifier: C, weigh: W, role: Role) -> Self {
        RateLimit {
            inner,
            shared,
            classifier,
            weigh,
            role,
            room: None,
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
            role: self.role,
            room: None,
        }
    }
}

impl<S, C, W> fmt::Debug for RateLimit<S, C, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("provider", &self.shared.provider)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone, W> RateLimit<S, C, W> {
    /// Sends a call whose room is taken. Always inlined: `taken` stays in
    /// registers (passed in memory, its fields written one by one and read
    /// back in wider loads stall the store buffer).
    #[inline(always)]
    fn send<Req>(&mut self, req: Req, mut taken: Taken) -> ResponseFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        let shared = &self.shared;
        shared.sent(&mut taken);
        ResponseFuture::sent(
            self.inner.call(req),
            shared.reads_responses().then(|| shared.clone()),
            self.classifier.clone(),
            taken,
        )
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
        if self.shared.mode == Mode::Ready {
            loop {
                let shared = &self.shared;
                let now = shared.now();
                let wait = shared.wait(0, now);
                if wait == 0 {
                    self.room = None;
                    break;
                }
                let at = shared.instant(now.saturating_add(wait));
                match &mut self.room {
                    Some(sleep) => sleep.as_mut().reset(at),
                    None => self.room = Some(Box::pin(tokio::time::sleep_until(at))),
                }
                let sleep = self.room.as_mut().expect("armed above");
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        // The common path, small enough to inline into the caller: a
        // limiter that never waits, admitting or refusing at once. The
        // admission itself is out of line, its answer in two registers.
        if self.role == Role::Limit && !matches!(self.shared.mode, Mode::Wait(_)) {
            let tokens = self.weigh.tokens(&req);
            match self.shared.admit(tokens) {
                Decision::Now(share) => {
                    let taken = Taken::new(tokens, share);
                    return self.send(req, taken);
                }
                Decision::Refused(wait) => {
                    return ResponseFuture::refused(&self.shared, Duration::from_nanos(wait));
                }
                // A reservation needs a wait, and none is allowed here;
                // were there one, it is given back before the slow way.
                Decision::Reserved(_, share) => {
                    let taken = Taken::new(tokens, share);
                    self.shared.release(taken, self.shared.now());
                }
                // A closed window: nothing taken, asked again below.
                Decision::Retry(_) => {}
            }
        }
        self.call_slow(req)
    }
}

impl<S, C, W> RateLimit<S, C, W> {
    /// Every other call: a pacer's, a waiting limiter's (which may find
    /// its room already taken by its pacer), or one that must wait.
    #[inline(never)]
    fn call_slow<Req>(&mut self, req: Req) -> ResponseFuture<S, Req, C>
    where
        S: Service<Req> + Clone,
        C: Clone,
        W: Weigh<Req>,
        Req: HasDeadline,
    {
        let shared = &self.shared;
        if self.role == Role::Limit && matches!(shared.mode, Mode::Wait(_)) {
            // This limiter's pacer, outside, already waited for the room.
            if let Some(taken) = prepaid::claim(shared) {
                return self.send(req, taken);
            }
        }
        let tokens = self.weigh.tokens(&req);
        let now = shared.now();
        // The longest this call may wait: the mode's, never past its
        // deadline.
        let limit = match shared.mode {
            Mode::Reject | Mode::Ready => 0,
            Mode::Wait(d) => {
                let d = match req.deadline() {
                    Some(deadline) => deadline.clamp(d),
                    None => d,
                };
                d.as_nanos().min(u64::MAX as u128) as u64
            }
        };
        let decision = shared.decide(tokens, now, limit);
        let taken = |share| Taken::new(tokens, share);
        let taken = match decision {
            Decision::Now(share) if self.role == Role::Pace => {
                return ResponseFuture::paced(&mut self.inner, req, shared, taken(share));
            }
            Decision::Now(share) => return self.send(req, taken(share)),
            Decision::Refused(wait) => {
                return ResponseFuture::refused(shared, Duration::from_nanos(wait));
            }
            Decision::Reserved(_, share) => taken(share),
            // Nothing taken: the share is set when it is.
            Decision::Retry(_) => taken(1),
        };
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
            self.role,
        )
    }
}
