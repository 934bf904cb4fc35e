//! What every clone of a retry service shares: the settings, the budget,
//! the random source for jitter and the counters; and the decision made
//! after each failed attempt.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use palisade_core::{Failure, HasDeadline, Policy, ProviderId, StripedCounter};
use rand::rngs::SmallRng;
use tokio::time::Instant;

use crate::backoff::{Backoff, Jitter};
use crate::budget::RetryBudget;
use crate::error::StopReason;

/// The validated settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) provider: Option<ProviderId>,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) jitter: Jitter,
    pub(crate) honor_retry_after: bool,
    pub(crate) max_retry_after: Duration,
    pub(crate) min_attempt_time: Duration,
    pub(crate) policy: Policy,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) requests: StripedCounter,
    pub(crate) retries: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) budget_refusals: AtomicU64,
    pub(crate) deadline_stops: AtomicU64,
    pub(crate) exhausted: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: Config,
    pub(crate) budget: RetryBudget,
    pub(crate) rng: Mutex<SmallRng>,
    pub(crate) stats: Stats,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Sleep `delay`, then re-send. `told` when the provider gave the
    /// wait (`Retry-After`, a gRPC pushback): the backoff then starts over.
    Retry {
        /// How long to wait.
        delay: Duration,
        /// Whether the provider set the wait.
        told: bool,
    },
    /// Return the result as it is: attempts used up, or no copy to re-send.
    GiveUp,
    /// Return the result, wrapping an error in `RetryStopped`.
    Stop(StopReason),
}

impl Shared {
    /// Decides what follows failed attempt number `attempt` (from 1).
    /// `backoff_step` is the retry's place in the backoff sequence (from 1;
    /// it starts over after a provider-given wait, as gRFC A6 resets the
    /// backoff after a pushback), `previous` the last delay slept (for
    /// decorrelated jitter).
    pub(crate) fn plan<Req: HasDeadline>(
        &self,
        failure: &Failure,
        attempt: u32,
        backoff_step: u32,
        previous: Duration,
        next: Option<&Req>,
    ) -> Plan {
        let cfg = &self.cfg;
        if attempt >= cfg.max_attempts {
            self.stats.exhausted.fetch_add(1, Ordering::Relaxed);
            return Plan::GiveUp;
        }
        let Some(next) = next else {
            return Plan::GiveUp;
        };
        let told = if cfg.honor_retry_after {
            failure.kind.retry_after()
        } else {
            None
        };
        let wait = match told {
            Some(after) => after.min(cfg.max_retry_after),
            None => {
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                cfg.jitter
                    .apply(&cfg.backoff, backoff_step, previous, &mut *rng)
            }
        };
        if let Some(deadline) = next.deadline() {
            let remaining = deadline.remaining_at(Instant::now());
            let needed = wait.saturating_add(cfg.min_attempt_time);
            // A zero remaining means the deadline passed: never retry then,
            // even with a zero wait and no minimum.
            if remaining.is_zero() || needed > remaining {
                self.stats.deadline_stops.fetch_add(1, Ordering::Relaxed);
                return Plan::Stop(StopReason::DeadlineTooClose { wait, remaining });
            }
        }
        if !self.budget.try_withdraw() {
            self.stats.budget_refusals.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                provider = cfg.provider.as_ref().map(|p| p.as_str()),
                attempt,
                reason = %failure.kind,
                "not retrying: the retry budget is exhausted"
            );
            return Plan::Stop(StopReason::BudgetExhausted);
        }
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            provider = cfg.provider.as_ref().map(|p| p.as_str()),
            attempt,
            delay_ms = wait.as_millis() as u64,
            retry_after = told.is_some(),
            reason = %failure.kind,
            "retrying"
        );
        Plan::Retry {
            delay: wait,
            told: told.is_some(),
        }
    }
}
