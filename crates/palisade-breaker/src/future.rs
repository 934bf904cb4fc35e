//! The breaker's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use palisade_core::{BoxError, Classify};
use pin_project_lite::pin_project;

use crate::error::{BreakerError, Refusal};
use crate::state::{Core, Permit};

/// The breaker's claim on a call in flight: handed back with the outcome
/// when the call ends, or, if the future is dropped first, abandoned (a
/// probe slot is freed and the call counts as neither success nor
/// failure).
struct Claim {
    core: Arc<Core>,
    permit: Option<Permit>,
}

impl Drop for Claim {
    #[inline]
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.core.abandon(p);
        }
    }
}

/// The refusal a refused future hands out, on a 16-byte boundary of the
/// future. Futures are moved with 16-byte copies; aligned this way, `poll`
/// reads the refusal back with loads that match those copies' stores, where
/// a refusal straddling two of them stalled every refused call on a failed
/// store-to-load forward (a measurable share of a refusal's cost in the
/// side-by-side bench).
#[repr(align(16))]
struct Aligned(Option<Refusal>);

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] fut: F, claim: Claim },
        Refused { refusal: Aligned },
    }
}

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker):
    /// the inner call, whose outcome is recorded when it finishes, or an
    /// immediate refusal.
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: State<F>,
        classifier: C,
    }
}

impl<F, C> ResponseFuture<F, C> {
    #[inline]
    pub(crate) fn called(fut: F, core: Arc<Core>, permit: Permit, classifier: C) -> Self {
        ResponseFuture {
            state: State::Called {
                fut,
                claim: Claim {
                    core,
                    permit: Some(permit),
                },
            },
            classifier,
        }
    }

    #[inline]
    pub(crate) fn refused(refusal: Refusal, classifier: C) -> Self {
        ResponseFuture {
            state: State::Refused {
                refusal: Aligned(Some(refusal)),
            },
            classifier,
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.state {
            State::Called { .. } => "called",
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &what)
            .finish()
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BreakerError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            StateProj::Refused { refusal } => Poll::Ready(Err(BreakerError::Refused(
                refusal
                    .0
                    .take()
                    .expect("ResponseFuture polled after completion"),
            ))),
            StateProj::Called { fut, claim } => {
                let result = ready!(fut.poll(cx)).map_err(Into::into);
                if let Some(permit) = claim.permit.take() {
                    let outcome = this.classifier.classify(result.as_ref());
                    claim.core.record(permit, claim.core.verdict(&outcome));
                }
                Poll::Ready(result.map_err(BreakerError::Inner))
            }
        }
    }
}
