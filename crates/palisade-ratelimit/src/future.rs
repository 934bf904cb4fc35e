//! [`ResponseFuture`]: a call through the rate limit, from admission
//! (maybe after a wait) to the response that settles it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Classify, FailureKind, Outcome, ProviderId, RejectReason, Rejected};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::limiter::{Decision, Shared, Taken};
use crate::prepaid::Offer;
use crate::service::Role;

pin_project! {
    #[project = StateProj]
    enum State<F, S, Req, C> {
        // Sent by a limiter that reads no responses: it owes nothing, and
        // holds nothing but the inner future.
        Sent { #[pin] fut: F },
        // Sent; its response settles it (its usage, the provider's
        // headers), or its drop does. `None` once settled.
        Settling { #[pin] fut: F, settle: Option<Settle<C>> },
        // Waiting for room, boxed: the rare path, kept out of the size of
        // every call admitted at once.
        Waiting { wait: Pin<Box<Wait<S, Req, C>>> },
        Refused { provider: Option<ProviderId>, wait: Duration },
        Done,
    }
}

/// What a sent call owes the limiter until its response comes.
struct Settle<C> {
    shared: Arc<Shared>,
    classifier: C,
    taken: Taken,
}

pin_project! {
    /// A call waiting for its reservation, or to ask again.
    struct Wait<S, Req, C> {
        #[pin]
        sleep: Sleep,
        // The readied service and the request.
        pending: Option<(S, Req)>,
        shared: Arc<Shared>,
        classifier: Option<C>,
        taken: Taken,
        // Whether the room is reserved (else the provider's window was
        // closed: ask again when the sleep ends).
        reserved: bool,
        // The latest instant (limiter nanoseconds) a wait may end at.
        wait_until: u64,
        role: Role,
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
        state: State<S::Future, S, Req, C>,
    }

    impl<S, Req, C> PinnedDrop for ResponseFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        fn drop(this: Pin<&mut Self>) {
            match this.project().state.project() {
                StateProj::Settling { settle: Some(s), .. } => {
                    s.shared.settle(s.taken, None, None);
                }
                StateProj::Waiting { wait } if wait.reserved => {
                    wait.shared.release(wait.taken, wait.shared.now());
                }
                _ => {}
            }
        }
    }
}

impl<S: Service<Req>, Req, C> fmt::Debug for ResponseFuture<S, Req, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Sent { .. } => "sent",
            State::Settling { .. } => "settling",
            State::Waiting { .. } => "waiting",
            State::Refused { .. } => "refused",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<S: Service<Req>, Req, C> ResponseFuture<S, Req, C> {
    /// A call sent at once; `shared` is given only when the limiter reads
    /// responses.
    #[inline]
    pub(crate) fn sent(
        fut: S::Future,
        shared: Option<Arc<Shared>>,
        classifier: C,
        taken: Taken,
    ) -> Self {
        let state = match shared {
            None => State::Sent { fut },
            Some(shared) => State::Settling {
                fut,
                settle: Some(Settle {
                    shared,
                    classifier,
                    taken,
                }),
            },
        };
        ResponseFuture { state }
    }

    /// A pacer's call with room now: offered to the limiter inside.
    pub(crate) fn paced(inner: &mut S, req: Req, shared: &Shared, taken: Taken) -> Self {
        ResponseFuture {
            state: State::Sent {
                fut: offer(inner, req, shared, taken),
            },
        }
    }

    pub(crate) fn refused(shared: &Shared, wait: Duration) -> Self {
        ResponseFuture {
            state: State::Refused {
                provider: shared.provider.clone(),
                wait,
            },
        }
    }

    /// A call parked by `decision` (a reservation, or a closed window to
    /// ask again after) at `now`, that may wait until `now + limit`.
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
        let state = match decision {
            Decision::Reserved(w, _) | Decision::Retry(w) => State::Waiting {
                wait: Box::pin(Wait {
                    sleep: tokio::time::sleep_until(shared.instant(now.saturating_add(w))),
                    pending: Some((inner, req)),
                    reserved: matches!(decision, Decision::Reserved(..)),
                    wait_until: now.saturating_add(limit),
                    shared,
                    classifier: Some(classifier),
                    taken,
                    role,
                }),
            },
            Decision::Refused(w) => State::Refused {
                provider: shared.provider.clone(),
                wait: Duration::from_nanos(w),
            },
            Decision::Now(_) => unreachable!("a call decided Now is sent, not parked"),
        };
        ResponseFuture { state }
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

/// What a waiting call does when its sleep ends.
enum Woken<F, C> {
    /// Still waiting (asked again: a new reservation or window).
    Parked,
    /// Sent; settled later if the limiter reads responses.
    Sent(F, Option<Settle<C>>),
    /// Refused: room comes too late.
    Refused(Option<ProviderId>, Duration),
}

impl<S: Service<Req>, Req, C> Wait<S, Req, C> {
    /// The sleep has ended: sends the call, or parks it again (a window
    /// that was closed is asked again, within what is left of the wait).
    fn woken(self: Pin<&mut Self>) -> Woken<S::Future, C> {
        let mut this = self.project();
        let shared = this.shared.clone();
        if !*this.reserved {
            let now = shared.now();
            let limit = this.wait_until.saturating_sub(now);
            match shared.decide(this.taken.tokens, now, limit) {
                Decision::Now(share) => this.taken.share = share,
                Decision::Refused(w) => {
                    return Woken::Refused(shared.provider.clone(), Duration::from_nanos(w))
                }
                decision @ (Decision::Reserved(w, _) | Decision::Retry(w)) => {
                    if let Decision::Reserved(_, share) = decision {
                        this.taken.share = share;
                    }
                    *this.reserved = matches!(decision, Decision::Reserved(..));
                    this.sleep
                        .as_mut()
                        .reset(shared.instant(now.saturating_add(w)));
                    return Woken::Parked;
                }
            }
        }
        let (mut inner, req) = this.pending.take().expect("sent once");
        // From here the call owes the limiter what a sent call owes.
        *this.reserved = false;
        if *this.role == Role::Pace {
            return Woken::Sent(offer(&mut inner, req, &shared, *this.taken), None);
        }
        shared.sent(this.taken);
        let fut = inner.call(req);
        let settle = shared.reads_responses().then(|| Settle {
            shared,
            classifier: this.classifier.take().expect("sent once"),
            taken: *this.taken,
        });
        Woken::Sent(fut, settle)
    }
}

impl<S, Req, C> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    /// The common state (sent, owing nothing) is polled inline; the others
    /// out of line.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let StateProj::Sent { fut } = this.state.as_mut().project() {
            let result = ready!(fut.poll(cx)).map_err(Into::into);
            this.state.set(State::Done);
            return Poll::Ready(result);
        }
        this.state.poll_other(cx)
    }
}

impl<F, S, Req, C, T, E> State<F, S, Req, C>
where
    F: Future<Output = Result<T, E>>,
    S: Service<Req, Future = F, Response = T, Error = E>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    #[inline(never)]
    fn poll_other(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, BoxError>> {
        loop {
            match self.as_mut().project() {
                StateProj::Sent { fut } => {
                    let result = ready!(fut.poll(cx)).map_err(Into::into);
                    self.set(State::Done);
                    return Poll::Ready(result);
                }
                StateProj::Settling { fut, settle } => {
                    let result = ready!(fut.poll(cx)).map_err(Into::into);
                    let s = settle.take().expect("polled after completion");
                    self.set(State::Done);
                    let (info, cooldown) = match &result {
                        Ok(res) => {
                            let cooldown = match s.classifier.classify(Ok(res)) {
                                Outcome::Failure(f) => match f.kind {
                                    FailureKind::RateLimited { retry_after } => retry_after,
                                    _ => None,
                                },
                                Outcome::Success => None,
                            };
                            (Some(s.classifier.rate_info(res)), cooldown)
                        }
                        _ => (None, None),
                    };
                    s.shared.settle(s.taken, info.as_ref(), cooldown);
                    return Poll::Ready(result);
                }
                StateProj::Waiting { wait } => {
                    ready!(wait.as_mut().project().sleep.poll(cx));
                    match wait.as_mut().woken() {
                        Woken::Parked => continue,
                        Woken::Sent(fut, None) => self.set(State::Sent { fut }),
                        Woken::Sent(fut, settle) => self.set(State::Settling { fut, settle }),
                        Woken::Refused(provider, wait) => {
                            self.set(State::Refused { provider, wait })
                        }
                    }
                }
                StateProj::Refused { provider, wait } => {
                    let mut e = Rejected::new(RejectReason::RateLimited).with_retry_after(*wait);
                    if let Some(p) = provider.take() {
                        e = e.with_provider(p);
                    }
                    self.set(State::Done);
                    return Poll::Ready(Err(e.into()));
                }
                StateProj::Done => panic!("rate limit future polled after completion"),
            }
        }
    }
}
