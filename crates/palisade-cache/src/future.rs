//! [`ResponseFuture`]: a cache's answer, from the store, from the call, or
//! from the identical call it joined.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use palisade_core::BoxError;
use pin_project_lite::pin_project;

use crate::flight::{settle, Adopt, Flight, Pending};
use crate::key::Lookup;
use crate::record::{Record, Replay};
use crate::service::{coalesced_error, Shared};

pin_project! {
    /// The future a [`Cache`](crate::Cache) returns.
    pub struct ResponseFuture<F, R, E, Res> {
        #[pin]
        state: State<F, R, E, Res>,
    }

    impl<F, R, E, Res> PinnedDrop for ResponseFuture<F, R, E, Res> {
        fn drop(this: Pin<&mut Self>) {
            // The request that started a call goes away: if others wait on
            // it, its work goes on in a task of its own.
            if let StateProj::Lead { pending, flight, lookup, shared, adopt } =
                this.project().state.project()
            {
                if let Some(rest) = pending.take() {
                    shared.flights.remove_if(&lookup.key, |_, f| Arc::ptr_eq(f, flight));
                    if Arc::strong_count(flight) > 1 && !flight.is_done() {
                        adopt(rest, flight.clone(), shared.clone(), lookup.key);
                    }
                }
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R, E, Res> {
        // A fresh hit (taken once).
        Ready { res: Option<Res> },
        // A request the cache does not key: the call, passed through.
        Pass { #[pin] fut: F },
        // The call, its answer recorded, a stale answer if it fails.
        Call { #[pin] fut: F, lookup: Lookup, shared: Arc<Shared<E, R>> },
        // The call this request started, which identical requests may
        // join until it ends.
        Lead {
            pending: Option<Pending<Res, E>>,
            flight: Arc<Flight<E>>,
            lookup: Lookup,
            shared: Arc<Shared<E, R>>,
            adopt: Adopt<Res, E, R>,
        },
        // The identical call in flight, joined.
        Join { flight: Arc<Flight<E>>, lookup: Lookup, shared: Arc<Shared<E, R>> },
    }
}

impl<F, R, E, Res> ResponseFuture<F, R, E, Res> {
    pub(crate) fn ready(res: Res) -> Self {
        ResponseFuture {
            state: State::Ready { res: Some(res) },
        }
    }

    pub(crate) fn pass(fut: F) -> Self {
        ResponseFuture {
            state: State::Pass { fut },
        }
    }

    pub(crate) fn call(fut: F, lookup: Lookup, shared: Arc<Shared<E, R>>) -> Self {
        ResponseFuture {
            state: State::Call {
                fut,
                lookup,
                shared,
            },
        }
    }

    pub(crate) fn lead(
        call: futures_util::future::BoxFuture<'static, Result<Res, BoxError>>,
        flight: Arc<Flight<E>>,
        lookup: Lookup,
        shared: Arc<Shared<E, R>>,
        adopt: Adopt<Res, E, R>,
    ) -> Self {
        ResponseFuture {
            state: State::Lead {
                pending: Some(Pending::Call(call)),
                flight,
                lookup,
                shared,
                adopt,
            },
        }
    }

    pub(crate) fn join(flight: Arc<Flight<E>>, lookup: Lookup, shared: Arc<Shared<E, R>>) -> Self {
        ResponseFuture {
            state: State::Join {
                flight,
                lookup,
                shared,
            },
        }
    }
}

const POLLED_AGAIN: &str = "palisade-cache: a finished future was polled again";

impl<F, Er, R, E, Res> Future for ResponseFuture<F, R, E, Res>
where
    F: Future<Output = Result<Res, Er>>,
    Er: Into<BoxError>,
    R: Record<Res, Entry = E>,
    E: Clone + Send + Sync + 'static,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Ready { res } => match res.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => Poll::Ready(Err(POLLED_AGAIN.into())),
            },
            StateProj::Pass { fut } => fut.poll(cx).map_err(Into::into),
            StateProj::Call {
                fut,
                lookup,
                shared,
            } => match ready!(fut.poll(cx)) {
                Ok(res) => Poll::Ready(Ok(shared.record.record(res, shared.keep(lookup.key)))),
                Err(e) => {
                    let e = e.into();
                    Poll::Ready(shared.stale(lookup, &e).ok_or(e))
                }
            },
            StateProj::Lead {
                pending,
                flight,
                lookup,
                shared,
                ..
            } => loop {
                match pending {
                    Some(Pending::Call(call)) => {
                        let out = ready!(call.as_mut().poll(cx));
                        // Nobody joins from here on.
                        shared
                            .flights
                            .remove_if(&lookup.key, |_, f| Arc::ptr_eq(f, flight));
                        let alone = Arc::strong_count(flight) == 1;
                        match out {
                            // Alone: the answer passes as any call's does,
                            // a stream recorded as it streams.
                            Ok(res) if alone => {
                                *pending = None;
                                return Poll::Ready(Ok(shared
                                    .record
                                    .record(res, shared.keep(lookup.key))));
                            }
                            Ok(res) => {
                                *pending = Some(Pending::Collect(shared.record.collect(res)))
                            }
                            Err(e) if alone => {
                                *pending = None;
                                return Poll::Ready(shared.stale(lookup, &e).ok_or(e));
                            }
                            Err(e) => {
                                *pending = None;
                                let shared_err = Arc::new(e);
                                flight.finish(Err(shared_err.clone()));
                                let e = coalesced_error(&shared_err);
                                return Poll::Ready(shared.stale(lookup, &e).ok_or(e));
                            }
                        }
                    }
                    Some(Pending::Collect(collect)) => {
                        let collected = ready!(collect.as_mut().poll(cx));
                        *pending = None;
                        return Poll::Ready(
                            match settle::<Res, E, R>(shared, flight, lookup.key, collected) {
                                Ok(entry) => Ok(shared.record.replay(&entry, lookup, Replay::Own)),
                                Err(shared_err) => {
                                    let e = coalesced_error(&shared_err);
                                    shared.stale(lookup, &e).ok_or(e)
                                }
                            },
                        );
                    }
                    None => return Poll::Ready(Err(POLLED_AGAIN.into())),
                }
            },
            StateProj::Join {
                flight,
                lookup,
                shared,
            } => match ready!(flight.poll_done(cx)) {
                Ok(entry) => Poll::Ready(Ok(shared.record.replay(entry, lookup, Replay::Copy))),
                Err(shared_err) => {
                    let e = coalesced_error(shared_err);
                    Poll::Ready(shared.stale(lookup, &e).ok_or(e))
                }
            },
        }
    }
}

impl<F, R, E, Res> std::fmt::Debug for ResponseFuture<F, R, E, Res> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
