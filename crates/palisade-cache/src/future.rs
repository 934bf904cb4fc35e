//! [`ResponseFuture`]: a cache's answer, from the store, from the call, or
//! from the identical call it joined.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use palisade_core::BoxError;
use pin_project_lite::pin_project;

use crate::key::Lookup;
use crate::record::{Record, Replay};
use crate::service::{coalesced_error, Flight, Shared};

pin_project! {
    /// The future a [`Cache`](crate::Cache) returns.
    pub struct ResponseFuture<F, R, E, Res> {
        #[pin]
        state: State<F, R, E, Res>,
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
        // The identical call in flight, joined.
        Wait { #[pin] flight: Flight<E>, lookup: Lookup, shared: Arc<Shared<E, R>>, joined: bool },
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

    pub(crate) fn wait(
        flight: Flight<E>,
        lookup: Lookup,
        shared: Arc<Shared<E, R>>,
        joined: bool,
    ) -> Self {
        ResponseFuture {
            state: State::Wait {
                flight,
                lookup,
                shared,
                joined,
            },
        }
    }
}

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
                None => Poll::Ready(Err(
                    "palisade-cache: a finished future was polled again".into()
                )),
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
            StateProj::Wait {
                flight,
                lookup,
                shared,
                joined,
            } => match ready!(flight.poll(cx)) {
                Ok(entry) => {
                    let how = if *joined { Replay::Copy } else { Replay::Own };
                    Poll::Ready(Ok(shared.record.replay(&entry, lookup, how)))
                }
                Err(e) => {
                    let e = coalesced_error(&e);
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
