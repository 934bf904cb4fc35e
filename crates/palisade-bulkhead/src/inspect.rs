//! The bulkhead's inspection view: its verdict on the provider, notes and
//! metric samples, for health reports and metrics exports.

use palisade_core::{HealthStatus, Inspect, Inspection, Sample};

use crate::handle::{BulkheadHandle, BulkheadSnapshot};

/// Share of slots in flight at or above which the provider is in Warning.
pub const WARN_BULKHEAD_USE: f64 = 0.8;

impl BulkheadSnapshot {
    /// The bulkhead's verdict on its provider: Warning when at least
    /// [`WARN_BULKHEAD_USE`] of its slots are in flight or anyone is
    /// queued, Healthy otherwise. A full bulkhead alone is never worse: its
    /// refusals are the admission view's business.
    ///
    /// ```
    /// use palisade_bulkhead::BulkheadLayer;
    /// use palisade_core::HealthStatus;
    ///
    /// let snapshot = BulkheadLayer::new(10).unwrap().handle().snapshot();
    /// assert_eq!(snapshot.status(), HealthStatus::Healthy);
    /// ```
    pub fn status(&self) -> HealthStatus {
        if self.crowded() {
            HealthStatus::Warning
        } else {
            HealthStatus::Healthy
        }
    }

    fn crowded(&self) -> bool {
        self.waiting > 0 || self.in_flight as f64 >= WARN_BULKHEAD_USE * self.max_concurrent as f64
    }
}

impl Inspect for BulkheadHandle {
    fn inspect(&self) -> Inspection {
        let b = self.snapshot();
        let notes = if b.crowded() {
            vec![format!(
                "bulkhead {}/{} in flight, {} waiting; raise max_concurrent if the provider has headroom, or add a provider",
                b.in_flight, b.max_concurrent, b.waiting
            )]
        } else {
            Vec::new()
        };
        Inspection {
            layer: "bulkhead",
            status: b.status(),
            notes,
            samples: vec![
                Sample::gauge(
                    "palisade_bulkhead_in_flight",
                    "Calls holding a bulkhead slot.",
                    b.in_flight as f64,
                ),
                Sample::gauge(
                    "palisade_bulkhead_waiting",
                    "Calls queued for a bulkhead slot.",
                    b.waiting as f64,
                ),
                Sample::counter(
                    "palisade_bulkhead_rejected_total",
                    "Calls the bulkhead refused (full or timed out).",
                    (b.rejected + b.timed_out) as f64,
                ),
            ],
            detail: serde_json::to_value(&b).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BulkheadLayer;

    fn snapshot(in_flight: usize, max: usize, waiting: usize) -> BulkheadSnapshot {
        let mut s = BulkheadLayer::new(max).unwrap().handle().snapshot();
        s.in_flight = in_flight;
        s.waiting = waiting;
        s
    }

    #[test]
    fn rules_at_their_boundaries() {
        use HealthStatus::*;
        assert_eq!(snapshot(7, 10, 0).status(), Healthy);
        assert_eq!(snapshot(8, 10, 0).status(), Warning);
        assert_eq!(snapshot(1, 10, 1).status(), Warning, "anyone queued");
    }
}
