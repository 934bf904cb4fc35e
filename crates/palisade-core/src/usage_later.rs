//! [`UsageLater`]: the tokens a streamed answer used, known only when the
//! stream ends, reported then to the layers that charged for the call.

use std::fmt;
use std::sync::{Arc, Mutex};

/// What is owed a layer once the usage is known: called with the tokens
/// used (`None`: the stream ended without saying).
type Settlement = Box<dyn FnOnce(Option<u64>) + Send>;

/// The tokens a streamed answer used, reported when the stream ends.
///
/// A whole answer's usage is known with its response
/// ([`TokenUsage`](crate::TokenUsage)); a stream's comes in its last
/// event. The service that makes a streamed response puts a `UsageLater`
/// in its extensions; each token-counting layer the response passes
/// ([`Classify::usage_later`](crate::Classify::usage_later)) leaves its
/// settlement in it instead of correcting its estimate at once; whoever
/// reads the stream to its end calls [`report`](Self::report) with what
/// it used. A `UsageLater` dropped (every clone of it) without a report
/// settles with `None`: each layer keeps its estimate, and nothing owed
/// is left waiting.
///
/// Clones share one set of settlements (http's extensions need `Clone`).
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use palisade_core::UsageLater;
///
/// let charged = Arc::new(AtomicU64::new(0));
/// let later = UsageLater::new();
/// let c = charged.clone();
/// later.push(move |used| {
///     c.store(used.unwrap_or(0), Ordering::SeqCst);
/// });
/// // ... the stream is read to its end, its usage event says 42 ...
/// later.report(Some(42));
/// assert_eq!(charged.load(Ordering::SeqCst), 42);
/// ```
#[derive(Clone, Default)]
pub struct UsageLater {
    owed: Arc<Owed>,
}

#[derive(Default)]
struct Owed(Mutex<Vec<Settlement>>);

impl UsageLater {
    /// An empty one, for a streamed response's extensions.
    pub fn new() -> Self {
        UsageLater::default()
    }

    /// Leaves `settle` to be called once with the usage (or `None`).
    pub fn push(&self, settle: impl FnOnce(Option<u64>) + Send + 'static) {
        self.owed
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(settle));
    }

    /// Settles everything owed with `used` tokens (`None`: unknown). A
    /// second report finds nothing owed.
    pub fn report(&self, used: Option<u64>) {
        let owed = std::mem::take(&mut *self.owed.0.lock().unwrap_or_else(|e| e.into_inner()));
        for settle in owed {
            settle(used);
        }
    }

    /// How many settlements wait for the report.
    pub fn owed(&self) -> usize {
        self.owed.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        let owed = std::mem::take(self.0.get_mut().unwrap_or_else(|e| e.into_inner()));
        for settle in owed {
            settle(None);
        }
    }
}

impl fmt::Debug for UsageLater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageLater")
            .field("owed", &self.owed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn each_settlement_is_called_once_with_the_report_or_none_when_dropped() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let later = UsageLater::new();
        for i in 0..3 {
            let seen = seen.clone();
            later.push(move |used| seen.lock().unwrap().push((i, used)));
        }
        let clone = later.clone();
        assert_eq!(clone.owed(), 3);
        later.report(Some(7));
        later.report(Some(8));
        drop((later, clone));
        assert_eq!(
            *seen.lock().unwrap(),
            [(0, Some(7)), (1, Some(7)), (2, Some(7))]
        );

        // Never reported: the last clone dropped settles with None.
        let calls = Arc::new(AtomicUsize::new(0));
        let later = UsageLater::new();
        let c = calls.clone();
        later.push(move |used| {
            assert_eq!(used, None);
            c.fetch_add(1, Ordering::SeqCst);
        });
        let clone = later.clone();
        drop(later);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "a clone still holds it");
        drop(clone);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
