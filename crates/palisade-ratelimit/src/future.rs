//! [`ResponseFuture`]: a call through the rate limit, from admission
//! (maybe after a wait) to the response that settles it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Classify, FailureKind, Outcome, RejectReason, Rejected};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::limiter::{Decision, Shared, Taken};
use crate::prepaid::Offer;
use crate::service::Role;

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // The timer is boxed: waiting is the rare path, and an unboxed
        // `Sleep` would make every admitted call's future several times
        // larger (and slower to move).
        Waiting { sleep: Pin<Box<Sleep>>, reserved: bool },
        Calling { #[pin] fut: F },
        Refused { wait: Duration },
        Done,
    }
}

impl<F> State<F> {
    /// Where a call decided at `now` parks: waiting (for its reservation,
    /// or to ask again) or refused; `None` for [`Decision::Now`], which
    /// is sent.
    fn parked(shared: &Shared, now: u64, decision: Decision) -> Option<Self> {
        let wait = |nanos: u64, reserved| State::Waiting {
            sleep: Box::pin(tokio::time::sleep_until(
                shared.instant(now.saturating_add(nanos)),
            )),
            reserved,
        };
        match decision {
            Decision::Now => None,
            Decision::Reserved(w) => Some(wait(w, true)),
            Decision::Retry(w) => Some(wait(w, false)),
            Decision::Refused(w) => Some(State::Refused {
                wait: Duration::from_nanos(w),
            }),
        }
    }
}

pin_project! {
    /// The response future of [`RateLimit`](crate::RateLimit). Dropped
    /// while waiting, it gives its reservation back; dropped after sending,
    /// it counts the call as finished.
    pub struct ResponseFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        // The readied service and the request, while waiting: boxed, so a
        // call admitted at once (the common case) carries two words for
        // them, not the whole inner service.
        pending: Option<Box<(S, Req)>>,
        // `None` for a call sent by a limiter that reads no responses: it
        // owes the limiter nothing, so holds no reference to it.
        shared: Option<Arc<Shared>>,
        classifier: Option<C>,
        taken: Taken,
        // The latest instant (limiter nanoseconds) a wait may end at.
        wait_until: u64,
        phase: Phase,
        role: Role,
    }

    impl<S, Req, C> PinnedDrop for ResponseFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let Some(shared) = this.shared.as_ref() else { return };
            match *this.phase {
                Phase::Reserved => shared.release(*this.taken, shared.now()),
                Phase::Sent => shared.settle(*this.taken, None, None),
                Phase::None => {}
            }
        }
    }
}

/// What the future owes the limiter if dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing.
    None,
    /// A reservation not yet used.
    Reserved,
    /// A call sent and not yet settled.
    Sent,
}

impl<S: Service<Req>, Req, C> fmt::Debug for ResponseFuture<S, Req, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl<S: Service<Req>, Req, C> ResponseFuture<S, Req, C> {
    /// A call sent at once; `shared` is given only when the limiter reads
    /// responses.
    pub(crate) fn sent(
        fut: S::Future,
        shared: Option<Arc<Shared>>,
        classifier: C,
        taken: Taken,
    ) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            pending: None,
            phase: if shared.is_some() {
                Phase::Sent
            } else {
                Phase::None
            },
            shared,
            classifier: Some(classifier),
            taken,
            wait_until: 0,
            role: Role::Limit,
        }
    }

    /// A pacer's call with room now: offered to the limiter inside.
    pub(crate) fn paced(inner: &mut S, req: Req, shared: Arc<Shared>, taken: Taken) -> Self {
        ResponseFuture {
            state: State::Calling {
                fut: offer(inner, req, &shared, taken),
            },
            pending: None,
            shared: None,
            classifier: None,
            taken,
            wait_until: 0,
            phase: Phase::None,
            role: Role::Pace,
        }
    }

    pub(crate) fn refused(shared: Arc<Shared>, wait: Duration) -> Self {
        ResponseFuture {
            state: State::Refused { wait },
            pending: None,
            shared: Some(shared),
            classifier: None,
            taken: Taken::default(),
            wait_until: 0,
            phase: Phase::None,
            role: Role::Limit,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn waiting(
        inner: S,
        req: Req,
        shared: Arc<Shared>,
        classifier: C,
        taken: Taken,
        decision: Decision,
        now: u64,
        limit: u64,
        role: Role,
    ) -> Self {
        let reserved = matches!(decision, Decision::Reserved(_));
        ResponseFuture {
            state: State::parked(&shared, now, decision)
                .expect("a call decided Now is sent, not parked"),
            pending: Some(Box::new((inner, req))),
            shared: Some(shared),
            classifier: Some(classifier),
            taken,
            wait_until: now.saturating_add(limit),
            phase: if reserved {
                Phase::Reserved
            } else {
                Phase::None
            },
            role,
        }
    }
}

/// Calls `inner` with the room `taken` offered to the limiter inside it;
/// gives the room back if nothing there claimed it.
fn offer<S: Service<Req>, Req>(
    inner: &mut S,
    req: Req,
    shared: &Shared,
    taken: Taken,
) -> S::Future {
    let offer = Offer::new(shared, taken);
    let fut = inner.call(req);
    if !offer.claimed() {
        shared.release(taken, shared.now());
    }
    fut
}

impl<S, Req, C> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { sleep, reserved } => {
                    ready!(sleep.as_mut().poll(cx));
                    let shared = this
                        .shared
                        .clone()
                        .expect("a waiting call holds its limiter");
                    if !*reserved {
                        // The provider's window has reset: ask again, within
                        // what is left of the wait.
                        let now = shared.now();
                        let limit = this.wait_until.saturating_sub(now);
                        let decision = shared.decide(this.taken, now, limit);
                        if let Some(parked) = State::parked(&shared, now, decision) {
                            if let Decision::Reserved(_) = decision {
                                *this.phase = Phase::Reserved;
                            }
                            this.state.set(parked);
                            continue;
                        }
                    }
                    let (mut inner, req) = *this.pending.take().expect("sent once");
                    if *this.role == Role::Pace {
                        *this.phase = Phase::None;
                        *this.shared = None;
                        this.state.set(State::Calling {
                            fut: offer(&mut inner, req, &shared, *this.taken),
                        });
                        continue;
                    }
                    shared.sent(this.taken);
                    *this.phase = if shared.reads_responses() {
                        Phase::Sent
                    } else {
                        // Nothing to settle: the limiter does not follow
                        // calls once sent.
                        Phase::None
                    };
                    this.state.set(State::Calling {
                        fut: inner.call(req),
                    });
                }
                StateProj::Calling { fut } => {
                    let result = ready!(fut.poll(cx)).map_err(Into::into);
                    this.state.set(State::Done);
                    let Some(shared) = this.shared.as_ref().filter(|s| s.reads_responses()) else {
                        return Poll::Ready(result);
                    };
                    let classifier = this.classifier.take().expect("polled after completion");
                    let (info, cooldown) = match &result {
                        Ok(res) => {
                            let cooldown = match classifier.classify(Ok(res)) {
                                Outcome::Failure(f) => match f.kind {
                                    FailureKind::RateLimited { retry_after } => retry_after,
                                    _ => None,
                                },
                                Outcome::Success => None,
                            };
                            (Some(classifier.rate_info(res)), cooldown)
                        }
                        _ => (None, None),
                    };
                    *this.phase = Phase::None;
                    shared.settle(*this.taken, info.as_ref(), cooldown);
                    return Poll::Ready(result);
                }
                StateProj::Refused { wait } => {
                    let wait = *wait;
                    this.state.set(State::Done);
                    let mut e = Rejected::new(RejectReason::RateLimited).with_retry_after(wait);
                    if let Some(p) = this.shared.as_ref().and_then(|s| s.provider.as_ref()) {
                        e = e.with_provider(p.clone());
                    }
                    return Poll::Ready(Err(e.into()));
                }
                StateProj::Done => panic!("rate limit future polled after completion"),
            }
        }
    }
}
