//! The bulkhead's response future.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use palisade_core::{BoxError, Rejected};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::permit::{BulkheadPermit, ReleaseMode};
use crate::semaphore::{Semaphore, Waiter};

/// A place in the queue. Dropping it while still waiting leaves the queue;
/// if a slot was handed over meanwhile, it is passed on.
struct Place {
    sem: Arc<Semaphore>,
    waiter: Arc<Waiter>,
    settled: bool,
}

impl Drop for Place {
    fn drop(&mut self) {
        if !self.settled && self.sem.leave(&self.waiter) {
            self.sem.release();
        }
    }
}

pin_project! {
    /// A call waiting in the queue, with the readied inner service.
    struct Queued<S, Req> {
        svc: S,
        req: Option<Req>,
        place: Place,
        since: Instant,
        #[pin]
        sleep: Option<Sleep>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Req>, Req> {
        Running { #[pin] fut: S::Future },
        Queued { queued: Pin<Box<Queued<S, Req>>> },
        Rejected { error: Option<Box<Rejected>> },
    }
}

pin_project! {
    /// The response future of [`Bulkhead`](crate::Bulkhead): the inner call
    /// holding a slot, a call waiting in the queue (which calls the inner
    /// service once a slot is its own), or an immediate rejection.
    ///
    /// Dropping it gives back its slot, or its place in the queue.
    pub struct ResponseFuture<S: Service<Req>, Req, M> {
        #[pin]
        state: State<S, Req>,
        permit: Option<BulkheadPermit>,
        _mode: PhantomData<fn() -> M>,
    }
}

impl<S: Service<Req>, Req, M> ResponseFuture<S, Req, M> {
    pub(crate) fn running(fut: S::Future, permit: BulkheadPermit) -> Self {
        ResponseFuture {
            state: State::Running { fut },
            permit: Some(permit),
            _mode: PhantomData,
        }
    }

    pub(crate) fn queued(svc: S, req: Req, waiter: Arc<Waiter>, sem: Arc<Semaphore>) -> Self {
        let since = Instant::now();
        let sleep = sem.max_wait.map(|w| tokio::time::sleep_until(since + w));
        ResponseFuture {
            state: State::Queued {
                queued: Box::pin(Queued {
                    svc,
                    req: Some(req),
                    place: Place {
                        sem,
                        waiter,
                        settled: false,
                    },
                    since,
                    sleep,
                }),
            },
            permit: None,
            _mode: PhantomData,
        }
    }

    pub(crate) fn rejected(rejected: Rejected) -> Self {
        ResponseFuture {
            state: State::Rejected {
                error: Some(Box::new(rejected)),
            },
            permit: None,
            _mode: PhantomData,
        }
    }
}

impl<S: Service<Req>, Req, M> fmt::Debug for ResponseFuture<S, Req, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.state {
            State::Running { .. } => "running",
            State::Queued { .. } => "queued",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &what)
            .finish()
    }
}

/// What a queued call found when polled.
enum Turn<F> {
    Called(F),
    TimedOut(Rejected),
}

impl<S: Service<Req>, Req> Queued<S, Req> {
    fn poll_turn(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Turn<S::Future>> {
        let this = self.project();
        let mut granted = this.place.waiter.poll_granted(cx.waker());
        if !granted {
            let fired = match this.sleep.as_pin_mut() {
                Some(sleep) => sleep.poll(cx).is_ready(),
                None => false,
            };
            if !fired {
                return Poll::Pending;
            }
            // Out of time; but a slot may have been handed over just now.
            granted = this.place.sem.leave(&this.place.waiter);
            this.place.settled = true;
            if !granted {
                let waited = this.since.elapsed();
                return Poll::Ready(Turn::TimedOut(this.place.sem.reject_timeout(waited)));
            }
        }
        this.place.settled = true;
        this.place.sem.record_wait(this.since.elapsed());
        let req = this
            .req
            .take()
            .expect("queued call polled after it was sent");
        Poll::Ready(Turn::Called(this.svc.call(req)))
    }
}

impl<S, Req, M> Future for ResponseFuture<S, Req, M>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    M: ReleaseMode<S::Response>,
{
    type Output = Result<M::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Running { fut } => {
                    let result = ready!(fut.poll(cx));
                    let mut permit = this
                        .permit
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(match result {
                        Ok(res) => Ok(M::attach(res, permit)),
                        Err(e) => {
                            permit.set_failed();
                            Err(e.into())
                        }
                    });
                }
                StateProj::Queued { queued } => {
                    let turn = ready!(queued.as_mut().poll_turn(cx));
                    match turn {
                        Turn::Called(fut) => {
                            // The slot is ours: the place handed it over.
                            let sem = queued.place.sem.clone();
                            *this.permit = Some(BulkheadPermit::new(sem));
                            this.state.set(State::Running { fut });
                        }
                        Turn::TimedOut(rejected) => {
                            this.state.set(State::Rejected { error: None });
                            return Poll::Ready(Err(rejected.into()));
                        }
                    }
                }
                StateProj::Rejected { error } => {
                    let error: BoxError = error
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Err(error));
                }
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    #[derive(Clone)]
    struct Answer;

    #[derive(Debug)]
    struct Never;

    impl std::fmt::Display for Never {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("never")
        }
    }

    impl std::error::Error for Never {}

    impl tower_service::Service<u64> for Answer {
        type Response = u64;
        type Error = Never;
        type Future = std::future::Ready<Result<u64, Never>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Never>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, r: u64) -> Self::Future {
            std::future::ready(Ok(r))
        }
    }

    /// Every layer's future is copied on each move by the caller, so the
    /// bulkhead's costs the inner future plus the permit and nothing more:
    /// the queued state and the rejection live behind one pointer each
    /// (32 bytes here, as tower's `ConcurrencyLimit`; 40 before).
    #[test]
    fn the_future_is_the_inner_future_plus_the_permit() {
        use std::mem::size_of;
        type Inner = std::future::Ready<Result<u64, Never>>;
        assert_eq!(
            size_of::<super::ResponseFuture<Answer, u64, crate::permit::OnResponse>>(),
            size_of::<Inner>() + size_of::<Option<crate::permit::BulkheadPermit>>()
        );
    }
}
