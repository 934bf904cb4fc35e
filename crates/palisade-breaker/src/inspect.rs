//! The breaker's inspection view: its verdict on the provider, notes and
//! metric samples, for health reports and metrics exports.

use palisade_core::{CircuitState, HealthStatus, Inspect, Inspection, Sample};

use crate::handle::{BreakerHandle, BreakerSnapshot};

/// Failure rate in the window at or above which the provider is in
/// Warning.
pub const WARN_FAILURE_RATE: f64 = 0.25;

impl BreakerSnapshot {
    /// The breaker's verdict on its provider, the first rule that matches:
    /// refusing calls (open, forced open, no probe slot free) is Critical;
    /// half-open (probing) is Degraded; a failure rate of at least
    /// [`WARN_FAILURE_RATE`] over a non-empty window is Warning; otherwise
    /// Healthy. `refusing` is [`BreakerHandle::is_refusing`] read with the
    /// snapshot.
    ///
    /// ```
    /// use palisade_breaker::CircuitBreakerLayer;
    /// use palisade_core::HealthStatus;
    ///
    /// let handle = CircuitBreakerLayer::builder().build().unwrap().handle();
    /// assert_eq!(handle.snapshot().status(false), HealthStatus::Healthy);
    /// handle.force_open();
    /// assert_eq!(handle.snapshot().status(handle.is_refusing()), HealthStatus::Critical);
    /// ```
    pub fn status(&self, refusing: bool) -> HealthStatus {
        if refusing {
            HealthStatus::Critical
        } else if self.state == CircuitState::HalfOpen {
            HealthStatus::Degraded
        } else if self.failing() {
            HealthStatus::Warning
        } else {
            HealthStatus::Healthy
        }
    }

    fn failing(&self) -> bool {
        self.window_calls > 0 && self.failure_rate >= WARN_FAILURE_RATE
    }

    fn notes(&self) -> Vec<String> {
        let t = &self.last_transition;
        match self.state {
            CircuitState::Open | CircuitState::ForcedOpen => {
                let mut s = format!(
                    "circuit {} after {} -> {} ({})",
                    self.state, t.from, t.to, t.reason
                );
                if let Some(d) = self.open_remaining {
                    s.push_str(&format!(", probing again in {:.1}s", d.as_secs_f64()));
                }
                vec![s]
            }
            CircuitState::HalfOpen => vec![
                "recovering, probe calls in flight; no action needed unless it re-opens".into(),
            ],
            _ if self.failing() => vec![format!(
                "{:.0}% of recent calls failed; check the provider's status page",
                self.failure_rate * 100.0
            )],
            _ => Vec::new(),
        }
    }
}

fn state_number(s: CircuitState) -> f64 {
    match s {
        CircuitState::Closed => 0.0,
        CircuitState::HalfOpen => 1.0,
        CircuitState::Open => 2.0,
        CircuitState::ForcedOpen => 3.0,
        CircuitState::Disabled => 4.0,
    }
}

impl Inspect for BreakerHandle {
    fn inspect(&self) -> Inspection {
        let refusing = self.is_refusing();
        let m = self.snapshot();
        let t = &m.last_transition;
        Inspection {
            layer: "breaker",
            status: m.status(refusing),
            notes: m.notes(),
            samples: vec![
                Sample::gauge(
                    "palisade_breaker_state",
                    "Breaker state: 0 closed, 1 half-open, 2 open, 3 forced open, 4 disabled.",
                    state_number(m.state),
                ),
                Sample::gauge(
                    "palisade_breaker_failure_rate",
                    "Failure rate in the breaker's window.",
                    m.failure_rate,
                ),
                Sample::counter(
                    "palisade_breaker_opened_total",
                    "Times the breaker opened.",
                    m.times_opened as f64,
                ),
            ],
            detail: serde_json::json!({
                "state": m.state,
                "failure_rate": m.failure_rate,
                "slow_call_rate": m.slow_call_rate,
                "window_calls": m.window_calls,
                "times_opened": m.times_opened,
                "open_remaining_ms": m.open_remaining.map(|d| d.as_millis() as u64),
                "last_transition": format!("{} -> {} ({})", t.from, t.to, t.reason),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CircuitBreakerLayer;

    fn snapshot(state: CircuitState, rate: f64) -> BreakerSnapshot {
        let mut s = CircuitBreakerLayer::builder()
            .build()
            .unwrap()
            .handle()
            .snapshot();
        s.state = state;
        s.failure_rate = rate;
        s.window_calls = 40;
        s
    }

    #[test]
    fn rules_at_their_boundaries() {
        use HealthStatus::*;
        let closed = |r| snapshot(CircuitState::Closed, r);
        assert_eq!(closed(0.2499).status(false), Healthy);
        assert_eq!(closed(0.25).status(false), Warning);
        let mut empty = closed(1.0);
        empty.window_calls = 0;
        assert_eq!(empty.status(false), Healthy, "no calls, no rate");
        let half = snapshot(CircuitState::HalfOpen, 0.0);
        assert_eq!(half.status(false), Degraded);
        assert_eq!(half.status(true), Critical, "no probe slot free");
    }
}
