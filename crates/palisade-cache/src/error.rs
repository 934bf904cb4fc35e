//! [`Coalesced`]: the error every caller of a shared call gets.

use std::fmt;
use std::sync::Arc;

use palisade_core::BoxError;

/// The error of a call that several identical requests shared: each caller
/// gets one of these, holding the same error. Its
/// [`source`](std::error::Error::source) is that error, so classifiers
/// look through it; [`Coalesced::original`] finds it for code that
/// downcasts.
///
/// ```
/// use palisade_cache::Coalesced;
/// use palisade_core::BoxError;
///
/// let plain: BoxError = "boom".into();
/// assert_eq!(Coalesced::original(&*plain).to_string(), "boom");
/// ```
#[derive(Debug, Clone)]
pub struct Coalesced {
    shared: Arc<BoxError>,
}

impl Coalesced {
    pub(crate) fn new(shared: Arc<BoxError>) -> Self {
        Coalesced { shared }
    }

    /// The call's own error.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &**self.shared
    }

    /// `err`'s shared error if it is a [`Coalesced`], else `err` itself.
    pub fn original<'a>(
        err: &'a (dyn std::error::Error + Send + Sync + 'static),
    ) -> &'a (dyn std::error::Error + Send + Sync + 'static) {
        match err.downcast_ref::<Coalesced>() {
            Some(c) => c.error(),
            None => err,
        }
    }
}

impl fmt::Display for Coalesced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self.shared, f)
    }
}

impl std::error::Error for Coalesced {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self.shared)
    }
}
