//! [`SharedError`]: one failure handed to every caller that shared the
//! call (a coalesced request, a batch).

use std::fmt;
use std::sync::Arc;

use crate::BoxError;

/// The error of a call several callers shared (identical requests
/// coalesced by a cache, requests batched into one call): each caller
/// gets one of these, all holding the same error. Its
/// [`source`](std::error::Error::source) is that error, so classifiers
/// look through it; [`SharedError::original`] finds it for code that
/// downcasts.
///
/// ```
/// use palisade_core::{classify_error, BoxError, Classified, FailureKind, SharedError};
/// use std::sync::Arc;
///
/// let call: BoxError = Classified::new(FailureKind::Connect, "refused").into();
/// let shared = Arc::new(call);
/// let mine: BoxError = SharedError::new(shared.clone()).into();
/// assert_eq!(classify_error(&*mine).kind, FailureKind::Connect);
/// assert!(SharedError::original(&*mine).is::<Classified>());
/// let plain: BoxError = "boom".into();
/// assert_eq!(SharedError::original(&*plain).to_string(), "boom");
/// ```
#[derive(Debug, Clone)]
pub struct SharedError {
    shared: Arc<BoxError>,
}

impl SharedError {
    /// One caller's copy of the shared `error`.
    pub fn new(error: Arc<BoxError>) -> Self {
        SharedError { shared: error }
    }

    /// The call's own error.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &**self.shared
    }

    /// `err`'s shared error if it is a [`SharedError`], else `err` itself.
    pub fn original<'a>(
        err: &'a (dyn std::error::Error + Send + Sync + 'static),
    ) -> &'a (dyn std::error::Error + Send + Sync + 'static) {
        match err.downcast_ref::<SharedError>() {
            Some(s) => s.error(),
            None => err,
        }
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self.shared, f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self.shared)
    }
}
