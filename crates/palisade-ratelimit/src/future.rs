//! [`ResponseFuture`]: a call through the rate limit, from admission
//! (maybe after a wait) to the response that settles it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use palisade_core::{
    BoxError, Classify, FailureKind, Outcome, ProviderId, RateInfo, RejectReason, Rejected,
};
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
        // Every other state, nested: dropping a call sent at once tests
        // one tag inline, the rest dropped out of line.
        Other { #[pin] other: Other<F, S, Req, C> },
    }
}

pin_project! {
    #[project = OtherProj]
    enum Other<F, S, Req, C> {
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

/// What a sent call owes the limiter until its response comes: settled
/// by the response ([`Settle::with`]), or, dropped first, as a call
/// answered with nothing to tell.
struct Settle<C> {
    shared: Arc<Shared>,
    classifier: C,
    taken: Taken,
    owed: bool,
}

impl<C> Settle<C> {
    fn new(shared: Arc<Shared>, classifier: C, taken: Taken) -> Self {
        Settle {
            shared,
            classifier,
            taken,
            owed: true,
        }
    }

    /// Settles the call with what its response told; a stream's tokens
    /// (`later`, when its response reports its usage only at its end)
    /// once they are known.
    fn with(
        mut self,
        info: Option<&RateInfo>,
        cooldown: Option<Duration>,
        later: Option<palisade_core::UsageLater>,
    ) {
        self.owed = false;
        self.shared.settle(self.taken, info, cooldown);
        if let Some(later) = later.filter(|_| info.is_none_or(|i| i.used_tokens.is_none())) {
            let (shared, taken) = (self.shared.clone(), self.taken);
            later.push(move |used| {
                if let Some(used) = used {
                    shared.correct(taken, used);
                }
            });
        }
    }
}

impl<C> Drop for Settle<C> {
    fn drop(&mut self) {
        if self.owed {
            self.shared.settle(self.taken, None, None);
        }
    }
}

pin_project! {
    /// A call waiting for its reservation, or to ask again.
    pub(crate) struct Wait<S, Req, C> {
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

    impl<S, Req, C> PinnedDrop for Wait<S, Req, C> {
        // Dropped while its room is reserved: the room is given back.
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.reserved {
                this.shared.release(*this.taken, this.shared.now());
            }
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
        state: State<S::Future, S, Req, C>,
    }
}

impl<S: Service<Req>, Req, C> fmt::Debug for ResponseFuture<S, Req, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Sent { .. } => "sent",
            State::Other { other } => match other {
                Other::Settling { .. } => "settling",
                Other::Waiting { .. } => "waiting",
                Other::Refused { .. } => "refused",
                Other::Done => "done",
            },
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
            Some(shared) => State::other(Other::Settling {
                fut,
                settle: Some(Settle::new(shared, classifier, taken)),
            }),
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
            state: State::other(Other::Refused {
                provider: shared.provider.clone(),
                wait,
            }),
        }
    }

    /// A call parked in `wait`.
    #[inline]
    pub(crate) fn parked(wait: Pin<Box<Wait<S, Req, C>>>) -> Self {
        ResponseFuture {
            state: State::other(Other::Waiting { wait }),
        }
    }
}

impl<S: Service<Req>, Req, C> Wait<S, Req, C> {
    /// A call parked at `now` until `at` (limiter nanoseconds): for its
    /// reservation when `reserved`, else to ask again; it may wait until
    /// `until`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        inner: S,
        req: Req,
        shared: Arc<Shared>,
        classifier: C,
        taken: Taken,
        reserved: bool,
        at: u64,
        until: u64,
        role: Role,
    ) -> Pin<Box<Self>> {
        Box::pin(Wait {
            sleep: tokio::time::sleep_until(shared.instant(at)),
            pending: Some((inner, req)),
            reserved,
            wait_until: until,
            shared,
            classifier: Some(classifier),
            taken,
            role,
        })
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
        let settle = shared.reads_responses().then(|| {
            Settle::new(
                shared,
                this.classifier.take().expect("sent once"),
                *this.taken,
            )
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

    /// The common state (sent, owing nothing) is polled inline, and left
    /// as it is when the inner future is done (polled again, it is the
    /// inner future's to answer); the others out of line.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let StateProj::Sent { fut } = this.state.as_mut().project() {
            return fut.poll(cx).map_err(Into::into);
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
            let mut other = match self.as_mut().project() {
                StateProj::Sent { fut } => return fut.poll(cx).map_err(Into::into),
                StateProj::Other { other } => other,
            };
            match other.as_mut().project() {
                OtherProj::Settling { fut, settle } => {
                    let result = ready!(fut.poll(cx)).map_err(Into::into);
                    let s = settle.take().expect("polled after completion");
                    other.set(Other::Done);
                    let (info, cooldown, later) = match &result {
                        Ok(res) => {
                            let cooldown = match s.classifier.classify(Ok(res)) {
                                Outcome::Failure(f) => match f.kind {
                                    FailureKind::RateLimited { retry_after } => retry_after,
                                    _ => None,
                                },
                                Outcome::Success => None,
                            };
                            let later = s.classifier.usage_later(res);
                            (Some(s.classifier.rate_info(res)), cooldown, later)
                        }
                        _ => (None, None, None),
                    };
                    s.with(info.as_ref(), cooldown, later);
                    return Poll::Ready(result);
                }
                OtherProj::Waiting { wait } => {
                    ready!(wait.as_mut().project().sleep.poll(cx));
                    match wait.as_mut().woken() {
                        Woken::Parked => continue,
                        Woken::Sent(fut, None) => self.set(State::Sent { fut }),
                        Woken::Sent(fut, settle) => {
                            other.set(Other::Settling { fut, settle });
                        }
                        Woken::Refused(provider, wait) => {
                            other.set(Other::Refused { provider, wait });
                        }
                    }
                }
                OtherProj::Refused { provider, wait } => {
                    let mut e = Rejected::new(RejectReason::RateLimited).with_retry_after(*wait);
                    if let Some(p) = provider.take() {
                        e = e.with_provider(p);
                    }
                    other.set(Other::Done);
                    return Poll::Ready(Err(e.into()));
                }
                OtherProj::Done => panic!("rate limit future polled after completion"),
            }
        }
    }
}

impl<F, S, Req, C> State<F, S, Req, C> {
    #[inline]
    fn other(other: Other<F, S, Req, C>) -> Self {
        State::Other { other }
    }
}
