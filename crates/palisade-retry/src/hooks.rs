//! The two hooks a user may plug in: which results to retry (beyond the
//! classification policy) and how to make a copy of a request to re-send.

use palisade_core::{BoxError, Outcome};

/// Overrides the retry decision for a result. Return `Some(true)` to retry,
/// `Some(false)` to stop, `None` to let the layer's
/// [`Policy`](palisade_core::Policy) decide from the classification.
///
/// Closures `Fn(Result<&Res, &BoxError>, &Outcome) -> Option<bool>`
/// implement it.
///
/// ```
/// use palisade_core::{BoxError, Outcome};
///
/// // Retry an empty completion even though the provider said 200.
/// let retry_empty = |res: Result<&String, &BoxError>, _: &Outcome| match res {
///     Ok(text) if text.is_empty() => Some(true),
///     _ => None,
/// };
/// # let _ = palisade_retry::RetryLayer::builder().retry_if(retry_empty);
/// ```
pub trait RetryPredicate<Res> {
    /// Whether to retry after this result; `None` defers to the policy.
    fn should_retry(&self, result: Result<&Res, &BoxError>, outcome: &Outcome) -> Option<bool>;
}

/// The default predicate: always defers to the classification policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsePolicy;

impl<Res> RetryPredicate<Res> for UsePolicy {
    #[inline]
    fn should_retry(&self, _: Result<&Res, &BoxError>, _: &Outcome) -> Option<bool> {
        None
    }
}

impl<Res, F> RetryPredicate<Res> for F
where
    F: Fn(Result<&Res, &BoxError>, &Outcome) -> Option<bool>,
{
    fn should_retry(&self, result: Result<&Res, &BoxError>, outcome: &Outcome) -> Option<bool> {
        self(result, outcome)
    }
}

/// Makes the copy of a request that a retry re-sends. Return `None` when
/// the request cannot be re-sent (a streamed body already consumed, say):
/// the first attempt's result is then final.
///
/// The copy is made before the first send. Closures
/// `Fn(&Req) -> Option<Req>` implement it; [`CloneRequest`] (the default)
/// uses `Clone`.
///
/// **HTTP requests**: `http::Request<B>` is `Clone` when its body `B` is,
/// so a request with a buffered body (`String`, `Bytes`,
/// `http_body_util::Full<Bytes>`) works with the default. A streaming body
/// (hyper's `Incoming`) must be buffered first, or given a hook that
/// returns `None` so such requests are sent once:
///
/// ```
/// use http::Request;
/// use palisade_retry::RetryLayer;
///
/// // Bodies are `Option<String>`: `None` stands for "already streamed".
/// let replay = |req: &Request<Option<String>>| {
///     let body = req.body().clone()?;
///     let mut copy = Request::new(Some(body));
///     *copy.method_mut() = req.method().clone();
///     *copy.uri_mut() = req.uri().clone();
///     *copy.headers_mut() = req.headers().clone();
///     *copy.extensions_mut() = req.extensions().clone();
///     Some(copy)
/// };
/// let layer = RetryLayer::builder().replay(replay).build().unwrap();
/// # let _ = layer;
/// ```
pub trait Replay<Req> {
    /// A copy of `req` to re-send, or `None` when it cannot be re-sent.
    fn replay(&self, req: &Req) -> Option<Req>;
}

/// The default [`Replay`]: `Clone`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneRequest;

impl<Req: Clone> Replay<Req> for CloneRequest {
    #[inline]
    fn replay(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

impl<Req, F> Replay<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    fn replay(&self, req: &Req) -> Option<Req> {
        self(req)
    }
}
