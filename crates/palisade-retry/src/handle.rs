//! [`RetryHandle`]: the operator's view of a retry layer.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use palisade_core::ProviderId;

use crate::budget::{BudgetSnapshot, RetryBudget};
use crate::shared::Shared;

/// A cloneable handle on a retry layer's counters and budget. Get one from
/// [`RetryLayer::handle`](crate::RetryLayer::handle) or
/// [`Retry::handle`](crate::Retry::handle).
///
/// ```
/// use palisade_retry::RetryLayer;
///
/// let handle = RetryLayer::builder().build().unwrap().handle();
/// let stats = handle.snapshot();
/// assert_eq!((stats.requests, stats.retries), (0, 0));
/// ```
#[derive(Clone)]
pub struct RetryHandle {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for RetryHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryHandle")
            .field("provider", &self.shared.cfg.provider)
            .finish()
    }
}

/// A retry layer's counters at one moment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RetrySnapshot {
    /// The provider, when named.
    pub provider: Option<ProviderId>,
    /// Requests sent through the layer.
    pub requests: u64,
    /// Attempts made: requests plus retries, refused ones included.
    pub attempts: u64,
    /// Attempts that reached the provider: `attempts` less `refused`.
    pub provider_calls: u64,
    /// Attempts refused without a call by a palisade layer inside (an
    /// open breaker, a rate limit, the deadline): each ends its request's
    /// retries, as palisade never re-sends its own refusals.
    pub refused: u64,
    /// Re-sends.
    pub retries: u64,
    /// Retries the budget refused.
    pub budget_refusals: u64,
    /// Retries not taken because the deadline was too close.
    pub deadline_stops: u64,
    /// Requests that failed on their last allowed attempt.
    pub exhausted: u64,
    /// The budget's state.
    pub budget: BudgetSnapshot,
}

impl RetryHandle {
    /// The counters and the budget now.
    pub fn snapshot(&self) -> RetrySnapshot {
        let s = &self.shared.stats;
        let requests = s.requests.get();
        let retries = s.retries.load(Ordering::Relaxed);
        let refused = s.refused.load(Ordering::Relaxed);
        RetrySnapshot {
            provider: self.shared.cfg.provider.clone(),
            requests,
            attempts: requests + retries,
            provider_calls: (requests + retries).saturating_sub(refused),
            refused,
            retries,
            budget_refusals: s.budget_refusals.load(Ordering::Relaxed),
            deadline_stops: s.deadline_stops.load(Ordering::Relaxed),
            exhausted: s.exhausted.load(Ordering::Relaxed),
            budget: self.shared.budget.snapshot(),
        }
    }

    /// The layer's budget (a clone shares it).
    pub fn budget(&self) -> RetryBudget {
        self.shared.budget.clone()
    }
}
