//! The response future of [`Hedge`](crate::Hedge): the race.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Classify};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::service::Shared;

type Attempt<F> = (Pin<Box<F>>, Instant);

pin_project! {
    /// The response future of [`Hedge`](crate::Hedge): the first attempt,
    /// a timer, and the hedges it started. The first success wins and the
    /// other attempts are dropped (cancelled); a failure wins only when
    /// no attempt is left in flight. The timer is set only once the first
    /// attempt has had to wait, so an answer ready at once costs none.
    pub struct ResponseFuture<S: Service<Req>, Req, C> {
        shared: Arc<Shared<C>>,
        svc: Option<S>,
        req: Option<Req>,
        delay: Duration,
        #[pin]
        primary: Option<S::Future>,
        started: Instant,
        streaming: bool,
        hedges: Vec<Attempt<S::Future>>,
        readying: Option<S>,
        // Whether a timer is still to be set for the first hedge.
        arm: bool,
        #[pin]
        timer: Option<Sleep>,
        sent: u32,
        failure: Option<Result<S::Response, BoxError>>,
    }
}

impl<S: Service<Req>, Req, C> fmt::Debug for ResponseFuture<S, Req, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("hedges_sent", &self.sent)
            .field("in_flight", &self.hedges.len())
            .finish()
    }
}

impl<S: Service<Req>, Req, C> ResponseFuture<S, Req, C> {
    /// A call that is not hedged: only the first attempt.
    pub(crate) fn plain(shared: Arc<Shared<C>>, fut: S::Future, started: (Instant, bool)) -> Self {
        Self::new(shared, fut, None, started, Duration::ZERO)
    }

    /// A call that is hedged after `delay` with copies of `req` sent
    /// through clones of `svc`; `started` is when, and whether it is a
    /// stream.
    pub(crate) fn new(
        shared: Arc<Shared<C>>,
        fut: S::Future,
        hedge: Option<(S, Req)>,
        (started, streaming): (Instant, bool),
        delay: Duration,
    ) -> Self {
        let (svc, req) = match hedge {
            Some((svc, req)) => (Some(svc), Some(req)),
            None => (None, None),
        };
        let svc_is_some = svc.is_some();
        ResponseFuture {
            shared,
            svc,
            req,
            delay,
            primary: Some(fut),
            started,
            streaming,
            hedges: Vec::new(),
            readying: None,
            arm: svc_is_some,
            timer: None,
            sent: 0,
            failure: None,
        }
    }
}

impl<S, Req, C> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: Clone,
    C: Classify<S::Response, BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let shared = &**this.shared;
        loop {
            // The first attempt.
            if let Some(fut) = this.primary.as_mut().as_pin_mut() {
                if let Poll::Ready(result) = fut.poll(cx) {
                    this.primary.set(None);
                    let result = result.map_err(Into::into);
                    if shared.classifier.classify(result.as_ref()).is_success() {
                        let now = Instant::now();
                        shared
                            .window_for(*this.streaming)
                            .record_at(now.saturating_duration_since(*this.started), now);
                        if *this.sent > 0 {
                            shared.policy.settled(false, this.hedges.len() as u32);
                        }
                        return Poll::Ready(result);
                    }
                    if *this.sent == 0 {
                        // Failed before any hedge: a failure is for retries to
                        // handle, not hedging.
                        return Poll::Ready(result);
                    }
                    this.failure.get_or_insert(result);
                }
            }
            // The hedges.
            let mut i = 0;
            while i < this.hedges.len() {
                let (fut, at) = &mut this.hedges[i];
                match fut.as_mut().poll(cx) {
                    Poll::Pending => i += 1,
                    Poll::Ready(result) => {
                        let at = *at;
                        drop(this.hedges.swap_remove(i));
                        let mut result = result.map_err(Into::into);
                        if shared.classifier.classify(result.as_ref()).is_success() {
                            shared.window_for(*this.streaming).record(at.elapsed());
                            if let Ok(res) = result.as_mut() {
                                if let Some(served) = shared.classifier.served(res) {
                                    served.hedged = true;
                                }
                            }
                            let left = this.hedges.len() + usize::from(this.primary.is_some());
                            shared.policy.settled(true, left as u32);
                            tracing::debug!(hedges = *this.sent, "a hedge answered first");
                            return Poll::Ready(result);
                        }
                        this.failure.get_or_insert(result);
                    }
                }
            }
            if std::mem::take(this.arm) && this.primary.is_some() {
                // The first attempt has to wait: time the first hedge.
                this.timer
                    .set(Some(tokio::time::sleep_until(*this.started + *this.delay)));
            }
            // Time for another hedge?
            if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                if timer.poll(cx).is_ready() {
                    if shared.policy.try_spend() {
                        *this.sent += 1;
                        shared.policy.sent();
                        tracing::debug!(
                            after_ms = this.delay.as_millis() as u64,
                            "sending a hedge"
                        );
                        *this.readying = this.svc.clone();
                    }
                    if *this.sent < shared.policy.max_hedges() && this.readying.is_some() {
                        let next = Instant::now() + *this.delay;
                        if let Some(mut t) = this.timer.as_mut().as_pin_mut() {
                            t.as_mut().reset(next);
                            let _ = t.poll(cx);
                        }
                    } else {
                        this.timer.set(None);
                    }
                }
            }
            if let Some(svc) = this.readying.as_mut() {
                match svc.poll_ready(cx) {
                    Poll::Pending => {}
                    Poll::Ready(Ok(())) => {
                        let req = this.req.clone().expect("kept for hedges");
                        this.hedges.push((Box::pin(svc.call(req)), Instant::now()));
                        *this.readying = None;
                        // Round again, so the hedges' loop polls it once and
                        // it registers its wake-up.
                        continue;
                    }
                    Poll::Ready(Err(e)) => {
                        *this.readying = None;
                        this.failure.get_or_insert(Err(e.into()));
                    }
                }
            }
            if this.primary.is_none() && this.hedges.is_empty() && this.readying.is_none() {
                shared.policy.settled(false, 0);
                return Poll::Ready(
                    this.failure
                        .take()
                        .expect("an attempt ended without an answer"),
                );
            }
            return Poll::Pending;
        }
    }
}
