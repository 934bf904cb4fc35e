//! [`ResponseFuture`]: a request's answer, from its batch or from its own
//! call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tokio::sync::oneshot;
use tower::util::Oneshot;
use tower_service::Service;

pin_project! {
    /// The future a [`Batch`](crate::Batch) returns.
    pub struct ResponseFuture<S: Service<Req>, Req> {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Req>, Req> {
        // Not batched: its own call.
        Pass { #[pin] call: Oneshot<S, Req> },
        // Its part of a batch's answer.
        Wait { #[pin] rx: oneshot::Receiver<Result<S::Response, BoxError>> },
        // Refused before it was queued.
        Failed { why: Option<&'static str> },
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(crate) fn pass(svc: S, req: Req) -> Self {
        ResponseFuture {
            state: State::Pass {
                call: Oneshot::new(svc, req),
            },
        }
    }

    pub(crate) fn wait(rx: oneshot::Receiver<Result<S::Response, BoxError>>) -> Self {
        ResponseFuture {
            state: State::Wait { rx },
        }
    }

    pub(crate) fn failed(why: &'static str) -> Self {
        ResponseFuture {
            state: State::Failed { why: Some(why) },
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Pass { call } => call.poll(cx).map_err(Into::into),
            StateProj::Wait { rx } => rx.poll(cx).map(|out| match out {
                Ok(out) => out,
                Err(_) => Err("palisade-batch: the batch ended without an answer".into()),
            }),
            StateProj::Failed { why } => {
                Poll::Ready(Err(why.take().unwrap_or("polled again").into()))
            }
        }
    }
}

impl<S: Service<Req>, Req> std::fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
