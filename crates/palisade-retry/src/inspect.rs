//! The retry layer's inspection view: its verdict on the provider, notes
//! and metric samples, for health reports and metrics exports.

use palisade_core::{HealthStatus, Inspect, Inspection, Sample};

use crate::budget::BudgetSnapshot;
use crate::handle::{RetryHandle, RetrySnapshot};

impl RetrySnapshot {
    /// The retry layer's verdict on its provider: Warning when the budget
    /// has refused retries and has less than one retry left (the provider
    /// is failing and retries are being shed), Healthy otherwise.
    ///
    /// ```
    /// use palisade_core::HealthStatus;
    /// use palisade_retry::RetryLayer;
    ///
    /// let snapshot = RetryLayer::builder().build().unwrap().handle().snapshot();
    /// assert_eq!(snapshot.status(), HealthStatus::Healthy);
    /// ```
    pub fn status(&self) -> HealthStatus {
        if self.budget_spent() {
            HealthStatus::Warning
        } else {
            HealthStatus::Healthy
        }
    }

    fn budget_spent(&self) -> bool {
        self.budget_refusals > 0
            && matches!(self.budget, BudgetSnapshot::Ratio { available, .. } if available < 1.0)
    }
}

impl Inspect for RetryHandle {
    fn inspect(&self) -> Inspection {
        let r = self.snapshot();
        let notes = if r.budget_spent() {
            vec![format!(
                "retry budget spent ({} retries refused); the provider is failing and retries are being shed, as intended",
                r.budget_refusals
            )]
        } else {
            Vec::new()
        };
        Inspection {
            layer: "retry",
            status: r.status(),
            notes,
            samples: vec![
                Sample::counter(
                    "palisade_retry_attempts_total",
                    "Attempts made (requests plus retries).",
                    r.attempts as f64,
                ),
                Sample::counter(
                    "palisade_retry_refused_total",
                    "Attempts refused without a call by a palisade layer inside (open breaker, rate limit, deadline).",
                    r.refused as f64,
                ),
                Sample::counter(
                    "palisade_retry_retries_total",
                    "Retries made.",
                    r.retries as f64,
                ),
                Sample::counter(
                    "palisade_retry_budget_refusals_total",
                    "Retries the budget refused.",
                    r.budget_refusals as f64,
                ),
            ],
            detail: serde_json::to_value(&r).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RetryLayer;

    #[test]
    fn a_spent_budget_that_refused_is_a_warning() {
        let mut s = RetryLayer::builder().build().unwrap().handle().snapshot();
        s.budget = BudgetSnapshot::Ratio {
            available: 0.5,
            ratio: 0.2,
        };
        assert_eq!(s.status(), HealthStatus::Healthy, "nothing refused yet");
        s.budget_refusals = 1;
        assert_eq!(s.status(), HealthStatus::Warning);
        s.budget = BudgetSnapshot::Ratio {
            available: 1.0,
            ratio: 0.2,
        };
        assert_eq!(s.status(), HealthStatus::Healthy, "a retry left");
    }
}
