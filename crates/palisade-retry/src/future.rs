//! The retry layer's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use std::sync::atomic::Ordering;

use palisade_core::{
    Action, BoxError, Classify, Failure, FailureKind, HasDeadline, Outcome, Rejected,
};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::error::{FailedAnswer, RetryStopped};
use crate::hooks::{Replay, RetryPredicate};
use crate::service::Retry;
use crate::shared::Plan;

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // An attempt is in flight.
        Called { #[pin] fut: F },
        // Waiting out the delay before the next attempt. Boxed so that the
        // future stays small on the path that never retries.
        Sleeping { sleep: Pin<Box<Sleep>> },
        // Waiting for the inner service to be ready for the re-send.
        Readying,
    }
}

pin_project! {
    /// The response future of [`Retry`]: the current attempt, the wait
    /// before the next, or the wait for the inner service's readiness.
    ///
    /// Dropping it at any point stops retrying and leaves nothing behind:
    /// a retry pays the budget only when it is decided, and a pending wait
    /// is just a timer.
    pub struct ResponseFuture<S: Service<Req>, C, P, R, Req> {
        #[pin]
        state: State<S::Future>,
        retry: Retry<S, C, P, R>,
        // The copy to send next, when the request can be re-sent.
        next: Option<Req>,
        // Attempts made so far (the one in flight included).
        attempt: u32,
        // The attempt after which the provider last set the wait (0: never);
        // the backoff counts its steps from there.
        told_at: u32,
        // The last delay slept (zero after a provider-given wait).
        previous: Duration,
        // The last retried failure, to keep as the source of a refusal
        // that ends the retries (only set once a retry is planned).
        last: Option<BoxError>,
    }
}

impl<S: Service<Req>, C, P, R, Req> ResponseFuture<S, C, P, R, Req> {
    pub(crate) fn new(fut: S::Future, retry: Retry<S, C, P, R>, next: Option<Req>) -> Self {
        ResponseFuture {
            state: State::Called { fut },
            retry,
            next,
            attempt: 1,
            told_at: 0,
            previous: Duration::ZERO,
            last: None,
        }
    }
}

impl<S: Service<Req>, C, P, R, Req> fmt::Debug for ResponseFuture<S, C, P, R, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.state {
            State::Called { .. } => "called",
            State::Sleeping { .. } => "sleeping",
            State::Readying => "readying",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &what)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl<S, C, P, R, Req> Future for ResponseFuture<S, C, P, R, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
    P: RetryPredicate<S::Response>,
    R: Replay<Req>,
    Req: HasDeadline,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { fut } => {
                    let mut result = ready!(fut.poll(cx)).map_err(Into::into);
                    let retry = &*this.retry;
                    let shared = &*retry.shared;
                    if let Err(e) = &mut result {
                        if let Some(refusal) = e.downcast_ref::<Rejected>() {
                            // Refused without a call: not a provider call.
                            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                            if let Some(last) = this.last.take() {
                                *e = refusal.clone().with_source(last).into();
                            }
                        }
                    }
                    let outcome = retry.classifier.classify(result.as_ref());
                    let verdict = retry.predicate.should_retry(result.as_ref(), &outcome);
                    let attempt = *this.attempt;
                    if attempt > 1 {
                        // The answer records how many calls it took (a
                        // first-time answer needs no record: one call is
                        // the default, and writing costs an allocation).
                        if let Ok(res) = &mut result {
                            if let Some(served) = retry.classifier.served(res) {
                                served.attempts = attempt;
                            }
                        }
                    }
                    let failure = match (outcome, verdict) {
                        (Outcome::Success, None | Some(false)) => {
                            shared.budget.record_success();
                            return Poll::Ready(result);
                        }
                        (Outcome::Success, Some(true)) => Failure::new(FailureKind::Other),
                        (Outcome::Failure(f), Some(true)) => f,
                        (Outcome::Failure(f), None) if shared.cfg.policy.retries(&f) => f,
                        (Outcome::Failure(f), _) => {
                            // A provider that says "do not retry" about a
                            // failure worth retrying still failed: it
                            // counts against a token bucket (gRFC A6), or a
                            // server pushing back never drains it. The
                            // caller's own errors never count.
                            if f.retry_hint == Some(false)
                                && shared.cfg.policy.applies(Action::Retry, &f)
                            {
                                shared.budget.record_failure();
                            }
                            return Poll::Ready(result);
                        }
                    };
                    shared.budget.record_failure();
                    let plan = shared.plan(
                        &failure,
                        attempt,
                        attempt - *this.told_at,
                        *this.previous,
                        this.next.as_ref(),
                    );
                    match plan {
                        Plan::Retry { delay, told } => {
                            *this.last = Some(match result {
                                Err(e) => e,
                                Ok(_) => FailedAnswer::new(failure, attempt).into(),
                            });
                            if told {
                                *this.told_at = attempt;
                                *this.previous = Duration::ZERO;
                            } else {
                                *this.previous = delay;
                            }
                            if delay.is_zero() {
                                this.state.set(State::Readying);
                            } else {
                                let sleep = Box::pin(tokio::time::sleep(delay));
                                this.state.set(State::Sleeping { sleep });
                            }
                        }
                        Plan::GiveUp => return Poll::Ready(result),
                        Plan::Stop(reason) => {
                            let attempts = *this.attempt;
                            let provider = shared.cfg.provider.clone();
                            return Poll::Ready(result.map_err(|e| {
                                RetryStopped::new(reason, attempts, provider, e).into()
                            }));
                        }
                    }
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    if let Err(e) = ready!(this.retry.inner.poll_ready(cx)) {
                        return Poll::Ready(Err(e.into()));
                    }
                    let req = this
                        .next
                        .take()
                        .expect("a retry is only planned with a copy to send");
                    *this.attempt += 1;
                    if *this.attempt < this.retry.shared.cfg.max_attempts {
                        *this.next = this.retry.replay.replay(&req);
                    }
                    let fut = this.retry.inner.call(req);
                    this.state.set(State::Called { fut });
                }
            }
        }
    }
}
