//! [`Degraded`]: the mark on an answer that stands in for a failed call
//! (a fallback's built answer, a cache's stale one).

use http::HeaderValue;

/// The header a degraded HTTP response carries (`1`, or what stood in:
/// `stale-cache`).
pub const DEGRADED_HEADER: &str = "x-palisade-degraded";

/// The extension a degraded response carries, saying why it was degraded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degraded {
    /// The chain's failure, as text.
    pub reason: String,
}

/// A response that can be marked as degraded. Implemented for
/// `http::Response<B>` (the [`Degraded`] extension, the
/// `x-palisade-degraded: 1` header, and `degraded` on its
/// [`Served`](crate::Served) record); implement it for your own response
/// type to have it marked by the layers that degrade (palisade-fallback's
/// `Builder::degrade`).
///
/// ```
/// use palisade_core::{Degraded, MarkDegraded, Served, DEGRADED_HEADER};
///
/// let mut res = http::Response::new(());
/// res.mark_degraded(Degraded { reason: "every provider failed".into() });
/// assert_eq!(res.headers()[DEGRADED_HEADER], "1");
/// assert!(res.extensions().get::<Served>().unwrap().degraded);
/// ```
pub trait MarkDegraded {
    /// Marks `self` as a degraded answer.
    fn mark_degraded(&mut self, degraded: Degraded);
}

impl<B> MarkDegraded for http::Response<B> {
    fn mark_degraded(&mut self, degraded: Degraded) {
        self.headers_mut()
            .insert(DEGRADED_HEADER, HeaderValue::from_static("1"));
        self.extensions_mut().insert(degraded);
        crate::Served::in_response(self).degraded = true;
    }
}
