//! The [`Hedge`] service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{BoxError, RequestMarks};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::policy::HedgePolicy;
use crate::window::LatencyWindow;

// Aligned so the `Arc`'s counts, bumped by every call, sit on a line of
// their own, apart from the policy every call reads.
#[repr(align(128))]
pub(crate) struct Shared<C> {
    pub(crate) policy: HedgePolicy,
    pub(crate) window: LatencyWindow,
    pub(crate) first_token_window: LatencyWindow,
    pub(crate) classifier: C,
}

impl<C> Shared<C> {
    pub(crate) fn window_for(&self, streaming: bool) -> &LatencyWindow {
        if streaming {
            &self.first_token_window
        } else {
            &self.window
        }
    }
}

/// Sends a request again when its answer is late and takes whichever
/// answer comes first; made by [`HedgeLayer`](crate::HedgeLayer).
///
/// - Only hedgeable requests are hedged (their
///   [`Hedgeable`](palisade_core::Hedgeable) mark, else the policy's
///   default); each hedge withdraws from the policy's budget, and none is
///   sent when it is dry.
/// - The first *success* wins; the other attempts are dropped at once
///   (their futures cancelled, releasing whatever they held). A failure
///   is returned only when no attempt is left in flight, and a first
///   attempt that fails before any hedge was sent returns at once.
/// - Behind a first-frame gate (palisade-deadline's `FirstFrameLayer`) an
///   HTTP answer is ready only when its first body frame is: the race is
///   then to the first token, and once an answer is returned nothing more
///   is sent.
/// - Successful latencies feed the service's [`LatencyWindow`] (for
///   percentile delays).
pub struct Hedge<S, C> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S: Clone, C> Clone for Hedge<S, C> {
    fn clone(&self) -> Self {
        Hedge {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, C> fmt::Debug for Hedge<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("policy", &self.shared.policy)
            .field("window", &self.shared.window)
            .finish()
    }
}

impl<S, C> Hedge<S, C> {
    pub(crate) fn new(inner: S, policy: HedgePolicy, classifier: C) -> Self {
        let window = policy.window();
        let first_token_window = policy.window();
        Hedge {
            inner,
            shared: Arc::new(Shared {
                policy,
                window,
                first_token_window,
                classifier,
            }),
        }
    }

    /// The latencies this service has seen (of calls that are not
    /// streams).
    pub fn window(&self) -> &LatencyWindow {
        &self.shared.window
    }

    /// The times to first token of streams
    /// ([`RequestMarks::streaming`]) this service has seen: a stream's
    /// hedge delay is a percentile of these.
    pub fn first_token_window(&self) -> &LatencyWindow {
        &self.shared.first_token_window
    }

    /// The policy (and its counts, through [`HedgePolicy::handle`]).
    pub fn policy(&self) -> &HedgePolicy {
        &self.shared.policy
    }
}

impl<S, C, Req> Service<Req> for Hedge<S, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: Clone + RequestMarks,
    C: palisade_core::Classify<S::Response, BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // One clock read for the whole call (and the layers it calls).
        let (now, _reading) = palisade_core::clock::SharedReading::enter();
        let shared = self.shared.clone();
        let streaming = req.streaming();
        let delay = if shared.policy.admits(&req) {
            shared
                .policy
                .delay()
                .for_window_at(shared.window_for(streaming), now)
        } else {
            None
        };
        match delay {
            Some(delay) => {
                let copy = req.clone();
                let fut = self.inner.call(req);
                ResponseFuture::new(
                    shared,
                    fut,
                    Some((self.inner.clone(), copy)),
                    (now, streaming),
                    delay,
                )
            }
            None => {
                let fut = self.inner.call(req);
                ResponseFuture::plain(shared, fut, (now, streaming))
            }
        }
    }
}
