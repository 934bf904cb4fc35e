//! The slot a call holds, when it is given back, and a body that keeps it
//! until a streamed response ends.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::semaphore::Semaphore;

/// One bulkhead slot, held by a call. Dropping it gives the slot back (to
/// the head of the queue if someone waits).
///
/// The service hands it over with the response only in
/// [`OnBodyEnd`] mode, inside a [`PermitBody`].
pub struct BulkheadPermit {
    sem: Arc<Semaphore>,
    /// For an adaptive limit: bit 63 marks a failed call; the rest is when
    /// the call started, in nanoseconds since the semaphore's epoch, plus
    /// one (zero: not measured). Packed so that the permit is two words.
    meta: u64,
}

const FAILED: u64 = 1 << 63;

impl BulkheadPermit {
    #[inline]
    pub(crate) fn new(sem: Arc<Semaphore>) -> Self {
        let meta = match &sem.adaptive {
            None => 0,
            Some(_) => (sem.epoch.elapsed().as_nanos() as u64 & !FAILED).max(1),
        };
        BulkheadPermit { sem, meta }
    }

    /// Marks the call as failed, for an adaptive limit (which shrinks on
    /// failures).
    pub(crate) fn set_failed(&mut self) {
        self.meta |= FAILED;
    }
}

impl Drop for BulkheadPermit {
    #[inline]
    fn drop(&mut self) {
        if self.meta & !FAILED != 0 {
            self.sample();
        }
        self.sem.release();
    }
}

impl BulkheadPermit {
    #[cold]
    fn sample(&self) {
        let Some(adaptive) = &self.sem.adaptive else {
            return;
        };
        let started = std::time::Duration::from_nanos((self.meta & !FAILED) - 1);
        let rtt = self.sem.epoch.elapsed().saturating_sub(started);
        let failed = self.meta & FAILED != 0;
        if let Some(limit) = adaptive.sample(rtt, self.sem.in_flight(), failed) {
            tracing::debug!(
                provider = self.sem.provider.as_ref().map(|p| p.as_str()),
                limit,
                "bulkhead adaptive limit changed"
            );
            self.sem.resize(limit);
        }
    }
}

impl fmt::Debug for BulkheadPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadPermit")
            .field("provider", &self.sem.provider)
            .finish()
    }
}

/// When a call gives its slot back. Chosen with the layer's type:
/// [`OnResponse`] (the default) or [`OnBodyEnd`] for streamed HTTP
/// responses.
pub trait ReleaseMode<Res> {
    /// The response the service returns in this mode.
    type Response;

    /// Attaches (or drops) the permit once the inner service has answered.
    fn attach(res: Res, permit: BulkheadPermit) -> Self::Response;

    /// Shapes a response of a call made without a bulkhead (see
    /// [`Unguarded`](crate::Unguarded)) like this mode's, holding nothing.
    fn unguarded(res: Res) -> Self::Response;
}

/// The slot is given back as soon as the inner service's future completes.
/// Right for buffered responses. The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnResponse;

impl<Res> ReleaseMode<Res> for OnResponse {
    type Response = Res;

    #[inline]
    fn attach(res: Res, permit: BulkheadPermit) -> Res {
        drop(permit);
        res
    }

    #[inline]
    fn unguarded(res: Res) -> Res {
        res
    }
}

/// The slot rides on the response body ([`PermitBody`]) and is given back
/// when the body ends, fails or is dropped. Right for streamed LLM
/// responses (SSE), where the provider keeps working until the last token.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnBodyEnd;

impl<B> ReleaseMode<http::Response<B>> for OnBodyEnd {
    type Response = http::Response<PermitBody<B>>;

    fn attach(res: http::Response<B>, permit: BulkheadPermit) -> Self::Response {
        res.map(|body| PermitBody::new(body, permit))
    }

    fn unguarded(res: http::Response<B>) -> Self::Response {
        res.map(PermitBody::unguarded)
    }
}

pin_project! {
    /// An `http_body::Body` that holds a [`BulkheadPermit`] until the body
    /// ends (its last frame, an error, or being dropped).
    ///
    /// Made by [`OnBodyEnd`] mode; also usable by hand with any permit.
    pub struct PermitBody<B> {
        #[pin]
        body: B,
        permit: Option<BulkheadPermit>,
    }
}

impl<B> PermitBody<B> {
    /// Wraps `body`, holding `permit` until it ends.
    pub fn new(body: B, permit: BulkheadPermit) -> Self {
        let permit = Some(permit);
        PermitBody { body, permit }
    }

    /// Wraps `body` holding no slot: the shape of a response that did not
    /// pass a bulkhead.
    pub fn unguarded(body: B) -> Self {
        PermitBody { body, permit: None }
    }

    /// Whether the body still holds its slot.
    pub fn holds_permit(&self) -> bool {
        self.permit.is_some()
    }

    /// Unwraps the body, giving the slot back.
    pub fn into_inner(self) -> B {
        self.body
    }
}

impl<B: fmt::Debug> fmt::Debug for PermitBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PermitBody")
            .field("body", &self.body)
            .field("holds_permit", &self.permit.is_some())
            .finish()
    }
}

impl<B: Body> Body for PermitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let res = this.body.poll_frame(cx);
        match &res {
            Poll::Ready(None) => drop(this.permit.take()),
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut p) = this.permit.take() {
                    p.set_failed();
                }
            }
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
