//! Graceful degradation: an answer built from the failure when every
//! provider failed, marked so the caller can tell.

use http::HeaderValue;

use crate::error::AllFailed;

/// The header a degraded HTTP response carries.
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
/// [`Served`](palisade_core::Served) record); implement it for your own response type to use
/// [`Builder::degrade`](crate::Builder::degrade) with it.
pub trait MarkDegraded {
    /// Marks `self` as a degraded answer.
    fn mark_degraded(&mut self, degraded: Degraded);
}

impl<B> MarkDegraded for http::Response<B> {
    fn mark_degraded(&mut self, degraded: Degraded) {
        self.headers_mut()
            .insert(DEGRADED_HEADER, HeaderValue::from_static("1"));
        self.extensions_mut().insert(degraded);
        palisade_core::Served::in_response(self).degraded = true;
    }
}

/// Builds the final answer when every provider failed, or declines.
pub trait Degrade<Res> {
    /// An answer for the caller, or `None` to return the error.
    fn degrade(&self, failure: &AllFailed) -> Option<Res>;
}

/// No degradation: the error is returned. The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDegrade;

impl<Res> Degrade<Res> for NoDegrade {
    fn degrade(&self, _: &AllFailed) -> Option<Res> {
        None
    }
}

/// Degrades with a function, marking what it returns.
#[derive(Debug, Clone, Copy)]
pub struct DegradeWith<F>(pub(crate) F);

impl<Res, F> Degrade<Res> for DegradeWith<F>
where
    F: Fn(&AllFailed) -> Option<Res>,
    Res: MarkDegraded,
{
    fn degrade(&self, failure: &AllFailed) -> Option<Res> {
        let mut res = (self.0)(failure)?;
        res.mark_degraded(Degraded {
            reason: failure.to_string(),
        });
        Some(res)
    }
}
