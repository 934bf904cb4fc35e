//! The breaker's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use palisade_core::{BoxError, Classify, Rejected};
use pin_project_lite::pin_project;

use crate::state::{Core, Permit};

/// Hands the permit back when the call ends; if the future is dropped
/// first, frees its probe slot and counts it as neither success nor failure.
struct Guard {
    core: Arc<Core>,
    permit: Option<Permit>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.core.abandon(p);
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] fut: F },
        Rejected { error: Option<BoxError> },
    }
}

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker):
    /// the inner call, whose outcome is recorded when it finishes, or an
    /// immediate rejection.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        guard: Option<Guard>,
        classifier: Option<C>,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(fut: F, core: Arc<Core>, permit: Permit, classifier: C) -> Self {
        ResponseFuture {
            kind: Kind::Called { fut },
            guard: Some(Guard {
                core,
                permit: Some(permit),
            }),
            classifier: Some(classifier),
        }
    }

    pub(crate) fn rejected(rejected: Rejected) -> Self {
        ResponseFuture {
            kind: Kind::Rejected {
                error: Some(rejected.into()),
            },
            guard: None,
            classifier: None,
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &what)
            .finish()
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
            KindProj::Called { fut } => {
                let result = ready!(fut.poll(cx)).map_err(Into::into);
                if let (Some(mut guard), Some(classifier)) =
                    (this.guard.take(), this.classifier.take())
                {
                    if let Some(permit) = guard.permit.take() {
                        let outcome = classifier.classify(result.as_ref());
                        guard.core.record(permit, guard.core.verdict(&outcome));
                    }
                }
                Poll::Ready(result)
            }
        }
    }
}
