//! Exporting the health numbers through the `metrics` facade.

use crate::health::state_number;
use crate::registry::Registry;

impl<S, C> Registry<S, C> {
    /// Records the current numbers of every provider through the `metrics`
    /// facade (names in the crate docs). Call it from a periodic task or
    /// before each scrape.
    pub fn export_metrics(&self) {
        let report = self.health();
        metrics::gauge!("palisade_health_status").set(report.status as u8 as f64);
        for p in &report.providers {
            let id = p.id.to_string();
            metrics::gauge!("palisade_provider_status", "provider" => id.clone())
                .set(p.status as u8 as f64);
            if let Some(b) = &p.breaker {
                metrics::gauge!("palisade_breaker_state", "provider" => id.clone())
                    .set(state_number(b.state));
                metrics::gauge!("palisade_breaker_failure_rate", "provider" => id.clone())
                    .set(b.failure_rate);
                metrics::counter!("palisade_breaker_opened_total", "provider" => id.clone())
                    .absolute(b.times_opened);
            }
            if let Some(b) = &p.bulkhead {
                metrics::gauge!("palisade_bulkhead_in_flight", "provider" => id.clone())
                    .set(b.in_flight as f64);
                metrics::gauge!("palisade_bulkhead_waiting", "provider" => id.clone())
                    .set(b.waiting as f64);
                metrics::counter!("palisade_bulkhead_rejected_total", "provider" => id.clone())
                    .absolute(b.rejected + b.timed_out);
            }
            if let Some(r) = &p.retry {
                metrics::counter!("palisade_retry_attempts_total", "provider" => id.clone())
                    .absolute(r.attempts);
                metrics::counter!("palisade_retry_retries_total", "provider" => id.clone())
                    .absolute(r.retries);
                metrics::counter!("palisade_retry_budget_refusals_total", "provider" => id)
                    .absolute(r.budget_refusals);
            }
        }
    }
}
