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

use crate::future::{ResponseFuture, Wait};
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

    /// Inline when the limiter is not in [`Mode::Ready`] (the common
    /// case): only the inner service's readiness.
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.shared.mode == Mode::Ready && self.poll_room(cx).is_pending() {
            return Poll::Pending;
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        // The common path, small enough to inline into the caller: a
        // limiter that never waits, admitting or refusing at once. The
        // admission itself is out of line, its answer in two registers.
        let plan = if self.role == Role::Limit && !matches!(self.shared.mode, Mode::Wait(_)) {
            let tokens = self.weigh.tokens(&req);
            match self.shared.admit(tokens) {
                Decision::Now(share) => return self.send(req, Taken::new(tokens, share)),
                Decision::Refused(wait) => {
                    return ResponseFuture::refused(&self.shared, Duration::from_nanos(wait))
                }
                // A reservation needs a wait, and none is allowed here;
                // were there one, it is given back before the slow way.
                Decision::Reserved(_, share) => {
                    let taken = Taken::new(tokens, share);
                    self.shared.release(taken, self.shared.now());
                    self.plan(&req)
                }
                // A closed window: nothing taken, asked again below.
                Decision::Retry(_) => self.plan(&req),
            }
        } else {
            self.plan(&req)
        };
        // Every future is built here, inline, from the plan's fields: a
        // future built out of line comes back through memory, and copying
        // it whole at once (wider loads than the stores that wrote it)
        // stalls the store buffer on every call.
        match plan {
            Plan::Send(taken) => self.send(req, taken),
            Plan::Refused(wait) => {
                ResponseFuture::refused(&self.shared, Duration::from_nanos(wait))
            }
            Plan::Pace(taken) => ResponseFuture::paced(&mut self.inner, req, &self.shared, taken),
            Plan::Park(park) => ResponseFuture::parked(self.park(req, park)),
        }
    }
}

/// What a call not settled on the common path will do, decided out of
/// line ([`RateLimit::plan`]) and built into its future inline.
enum Plan {
    /// Send it; its room is taken.
    Send(Taken),
    /// A pacer's call with room now: offer the room to the limiter inside.
    Pace(Taken),
    /// Refuse it: room comes only after this many nanoseconds.
    Refused(u64),
    /// Wait for a reservation, or to ask again.
    Park(Park),
}

/// A call to park: what it took, what was decided, and how long it may
/// wait.
struct Park {
    taken: Taken,
    /// Whether the room is reserved (else a closed window is asked again).
    reserved: bool,
    /// Nanoseconds from `now` until the reservation, or the window's reset.
    wait: u64,
    /// When it was decided, in limiter nanoseconds.
    now: u64,
    /// The longest it may wait from `now`, in nanoseconds.
    limit: u64,
}

impl<S, C, W> RateLimit<S, C, W> {
    /// In [`Mode::Ready`]: ready once a request would have room now, else
    /// pending on a timer set for when it will.
    #[inline(never)]
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let shared = &self.shared;
            let now = shared.now();
            let wait = shared.wait(0, now);
            if wait == 0 {
                self.room = None;
                return Poll::Ready(());
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

    /// Every other call: a pacer's, a waiting limiter's (which may find
    /// its room already taken by its pacer), or one that must wait.
    #[inline(never)]
    fn plan<Req>(&mut self, req: &Req) -> Plan
    where
        W: Weigh<Req>,
        Req: HasDeadline,
    {
        let shared = &self.shared;
        if self.role == Role::Limit && matches!(shared.mode, Mode::Wait(_)) {
            // This limiter's pacer, outside, already waited for the room.
            if let Some(taken) = prepaid::claim(shared) {
                return Plan::Send(taken);
            }
        }
        let tokens = self.weigh.tokens(req);
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
        let (taken, reserved, wait) = match decision {
            Decision::Now(share) if self.role == Role::Pace => return Plan::Pace(taken(share)),
            Decision::Now(share) => return Plan::Send(taken(share)),
            Decision::Refused(wait) => return Plan::Refused(wait),
            Decision::Reserved(wait, share) => (taken(share), true, wait),
            // Nothing taken: the share is set when it is.
            Decision::Retry(wait) => (taken(1), false, wait),
        };
        Plan::Park(Park {
            taken,
            reserved,
            wait,
            now,
            limit,
        })
    }

    /// Parks a call: takes the service that was readied (leaving a clone
    /// in its place) and the request into the boxed wait.
    #[inline(never)]
    fn park<Req>(&mut self, req: Req, park: Park) -> Pin<Box<Wait<S, Req, C>>>
    where
        S: Service<Req> + Clone,
        C: Clone,
    {
        self.shared.waited.add(1);
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Wait::new(
            inner,
            req,
            self.shared.clone(),
            self.classifier.clone(),
            park.taken,
            park.reserved,
            park.now.saturating_add(park.wait),
            park.now.saturating_add(park.limit),
            self.role,
        )
    }
}
