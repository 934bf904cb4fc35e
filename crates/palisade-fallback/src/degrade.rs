//! Graceful degradation: an answer built from the failure when every
//! provider failed, marked so the caller can tell.

use crate::error::AllFailed;

pub use palisade_core::{Degraded, MarkDegraded, DEGRADED_HEADER};

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
