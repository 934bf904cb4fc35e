//! The response future of [`Balance`](crate::Balance).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use palisade_core::{BoxError, Classify};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::load::InFlight;

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Req>, Req> {
        Readying { svc: S, req: Option<Req> },
        Calling { #[pin] fut: S::Future },
        Refused { error: Option<BoxError> },
    }
}

pin_project! {
    /// The response future of [`Balance`](crate::Balance): readies the
    /// provider picked, calls it, and records the call in its
    /// [`Load`](crate::Load) (dropped early, it uncounts the call).
    pub struct ResponseFuture<S: Service<Req>, C, Req> {
        classifier: Option<C>,
        call: Option<InFlight>,
        #[pin]
        state: State<S, Req>,
    }
}

impl<S: Service<Req>, C, Req> ResponseFuture<S, C, Req> {
    pub(crate) fn call(classifier: C, svc: S, req: Req, call: InFlight) -> Self {
        ResponseFuture {
            classifier: Some(classifier),
            call: Some(call),
            state: State::Readying {
                svc,
                req: Some(req),
            },
        }
    }

    pub(crate) fn refused(error: BoxError) -> Self {
        ResponseFuture {
            classifier: None,
            call: None,
            state: State::Refused { error: Some(error) },
        }
    }
}

impl<S: Service<Req>, C, Req> fmt::Debug for ResponseFuture<S, C, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("call", &self.call)
            .finish()
    }
}

impl<S, C, Req> Future for ResponseFuture<S, C, Req>
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
                StateProj::Readying { svc, req } => {
                    if let Err(e) = ready!(svc.poll_ready(cx)) {
                        finish(this.call, false);
                        return Poll::Ready(Err(e.into()));
                    }
                    let req = req.take().expect("readied once");
                    let fut = svc.call(req);
                    this.state.set(State::Calling { fut });
                }
                StateProj::Calling { fut } => {
                    let result = ready!(fut.poll(cx)).map_err(Into::into);
                    let ok = this
                        .classifier
                        .as_ref()
                        .is_some_and(|c| c.classify(result.as_ref()).is_success());
                    finish(this.call, ok);
                    return Poll::Ready(result);
                }
                StateProj::Refused { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .expect("ResponseFuture polled after completion")));
                }
            }
        }
    }
}

fn finish(call: &mut Option<InFlight>, ok: bool) {
    if let Some(call) = call.take() {
        call.finish(ok);
    }
}
