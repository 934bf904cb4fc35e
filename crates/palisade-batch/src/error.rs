//! [`Batched`]: the error every request of a failed batch gets.

use std::fmt;
use std::sync::Arc;

use palisade_core::BoxError;

/// The error of a batch's upstream call (or of splitting its answer),
/// which every request in the batch gets. Its
/// [`source`](std::error::Error::source) is that error, so classifiers
/// look through it; [`Batched::original`] finds it for code that
/// downcasts.
///
/// ```
/// use palisade_batch::Batched;
/// use palisade_core::BoxError;
///
/// let plain: BoxError = "boom".into();
/// assert_eq!(Batched::original(&*plain).to_string(), "boom");
/// ```
#[derive(Debug, Clone)]
pub struct Batched {
    shared: Arc<BoxError>,
}

impl Batched {
    pub(crate) fn new(shared: Arc<BoxError>) -> Self {
        Batched { shared }
    }

    /// The batch's own error.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &**self.shared
    }

    /// `err`'s batch error if it is a [`Batched`], else `err` itself.
    pub fn original<'a>(
        err: &'a (dyn std::error::Error + Send + Sync + 'static),
    ) -> &'a (dyn std::error::Error + Send + Sync + 'static) {
        match err.downcast_ref::<Batched>() {
            Some(b) => b.error(),
            None => err,
        }
    }
}

impl fmt::Display for Batched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self.shared, f)
    }
}

impl std::error::Error for Batched {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self.shared)
    }
}
