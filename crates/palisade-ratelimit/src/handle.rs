//! [`RateLimitHandle`]: the operator's view of a limiter, and its
//! admission and inspection views.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{
    Admission, HealthStatus, Inspect, Inspection, ProviderId, Refusing, RejectReason, Sample,
};
use serde::Serialize;

use crate::gcra::Cell;
use crate::limiter::Shared;
use crate::pool::Pool;
use crate::quota::Quota;

/// One quota's state now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuotaSnapshot {
    /// `requests` or `tokens`.
    pub unit: &'static str,
    /// Units per period.
    pub amount: u64,
    /// The period, in ms.
    pub period_ms: u64,
    /// Units that may be spent at once.
    pub burst: u64,
    /// Units that could be spent now without waiting.
    pub available: u64,
}

/// What the provider's headers said is left, while it holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowSnapshot {
    /// Units left.
    pub remaining: u64,
    /// Until the provider's count resets, in ms.
    pub reset_ms: u64,
}

/// A point-in-time view of a limiter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimitSnapshot {
    /// The provider, when named.
    pub provider: Option<ProviderId>,
    /// Each configured quota.
    pub quotas: Vec<QuotaSnapshot>,
    /// Requests left by the provider's headers, while that holds.
    pub provider_requests: Option<WindowSnapshot>,
    /// Tokens left by the provider's headers, while that holds.
    pub provider_tokens: Option<WindowSnapshot>,
    /// How long until a one-request call would have room, in ms (0: now).
    pub wait_ms: u64,
    /// Calls sent.
    pub admitted: u64,
    /// Calls refused.
    pub refused: u64,
    /// Calls that waited for room.
    pub waited: u64,
    /// Whether the quotas are shared with other processes through a
    /// [`Pool`] (then `quotas[].available` is what this process's own cells
    /// hold for when the pool is alone, and `wait_ms` the pool's answer).
    pub shared: bool,
    /// Calls sent and not yet answered; `None` when the limiter reads no
    /// responses (no token quota, not following headers), so does not
    /// follow calls after sending them.
    pub in_flight: Option<u64>,
}

/// A cloneable handle on one limiter. Get it from
/// [`RateLimitLayer::handle`](crate::RateLimitLayer::handle).
#[derive(Clone)]
pub struct RateLimitHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for RateLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitHandle")
            .field("provider", &self.shared.provider)
            .finish()
    }
}

fn ms(nanos: u64) -> u64 {
    nanos / 1_000_000
}

impl RateLimitHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        RateLimitHandle { shared }
    }

    /// How long until a one-request call would have room (zero: now).
    pub fn wait(&self) -> Duration {
        let s = &self.shared;
        Duration::from_nanos(s.wait(0, s.now()))
    }

    /// The direct check, for code that is not a tower service (a queue
    /// consumer, a batch job): takes room for one call of `tokens` (its
    /// weight; 0 for a limiter with no token quota) from every quota and,
    /// when following headers, from the provider's windows, all or
    /// nothing, now. `Err(wait)`: no room, nothing taken, and room comes
    /// after `wait`. It never waits, whatever the layer's mode; it counts
    /// as admitted or refused in the [`snapshot`](Self::snapshot), and an
    /// admitted call counts as sent and answered at once (no usage to
    /// correct a token estimate by, no headers to learn from: that is the
    /// layer's work).
    ///
    /// Lock-free and allocation-free: a clock read and one compare-and-swap
    /// per quota.
    ///
    /// ```
    /// use palisade_ratelimit::{Quota, RateLimitLayer};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let layer = RateLimitLayer::builder()
    ///     .quota(Quota::per_minute(60).burst(2))
    ///     .build()
    ///     .unwrap();
    /// let limit = layer.handle();
    /// assert!(limit.try_acquire(1).is_ok());
    /// assert!(limit.try_acquire(1).is_ok());
    /// // The burst is spent: the next request has room in a second.
    /// assert_eq!(limit.try_acquire(1), Err(Duration::from_secs(1)));
    /// tokio::time::advance(Duration::from_secs(1)).await;
    /// assert!(limit.try_acquire(1).is_ok());
    /// assert_eq!((limit.snapshot().admitted, limit.snapshot().refused), (3, 1));
    /// # }
    /// ```
    #[inline]
    pub fn try_acquire(&self, tokens: u64) -> Result<(), Duration> {
        self.shared
            .try_acquire(tokens)
            .map_err(Duration::from_nanos)
    }

    /// Shares this limiter's quotas with other processes through `pool`
    /// (see [`Pool`]): from now on a call goes only if the pool has room
    /// for it, or, while the pool is alone, if this limiter's own quotas
    /// cut to the pool's share have. Given once: a second pool is refused
    /// and handed back.
    pub fn share(&self, pool: Arc<dyn Pool>) -> Result<(), Arc<dyn Pool>> {
        self.shared.pool.set(pool)
    }

    /// Whether the limiter shares its quotas through a [`Pool`].
    pub fn is_shared(&self) -> bool {
        self.shared.pool.get().is_some()
    }

    /// The configured quotas, in the order they were added.
    pub fn quotas(&self) -> Vec<Quota> {
        self.shared.quotas.iter().map(|(q, _)| *q).collect()
    }

    /// The numbers now.
    pub fn snapshot(&self) -> RateLimitSnapshot {
        let s = &self.shared;
        let now = s.now();
        let window = |w: &crate::pacing::Window| {
            w.state(now).map(|(remaining, left)| WindowSnapshot {
                remaining,
                reset_ms: ms(left),
            })
        };
        RateLimitSnapshot {
            provider: s.provider.clone(),
            quotas: s
                .quotas
                .iter()
                .zip(s.tats.iter().map(Cell::tat))
                .map(|((q, rate), tat)| QuotaSnapshot {
                    unit: q.unit.as_str(),
                    amount: q.amount,
                    period_ms: q.period.as_millis() as u64,
                    burst: rate.burst(),
                    available: rate.available(tat, now),
                })
                .collect(),
            provider_requests: window(&s.requests),
            provider_tokens: window(&s.tokens),
            wait_ms: ms(s.wait(0, now)),
            admitted: s.admitted.get(),
            refused: s.refused.get(),
            waited: s.waited.get(),
            shared: s.pool.get().is_some(),
            in_flight: s.reads_responses().then(|| s.in_flight().0),
        }
    }
}

/// A limiter with no room now refuses: a fallback chain skips its
/// provider without a call, and lists it as rate-limited with the time
/// until there will be room.
impl Admission for RateLimitHandle {
    fn refusing(&self) -> Option<Refusing> {
        let wait = self.wait();
        (!wait.is_zero()).then_some(Refusing {
            reason: RejectReason::RateLimited,
            retry_in: Some(wait),
        })
    }

    /// The tightest of: each quota's free share of its burst, and the
    /// share of the provider's reported limit it says is left.
    fn headroom(&self) -> Option<f64> {
        let s = &self.shared;
        let now = s.now();
        let quotas = s
            .quotas
            .iter()
            .zip(s.tats.iter().map(Cell::tat))
            .map(|((_, rate), tat)| rate.available(tat, now) as f64 / rate.burst().max(1) as f64);
        quotas
            .chain(s.requests.headroom(now))
            .chain(s.tokens.headroom(now))
            .reduce(f64::min)
    }
}

/// Warning while there is no room (calls go elsewhere or wait), Healthy
/// otherwise.
impl Inspect for RateLimitHandle {
    fn inspect(&self) -> Inspection {
        let m = self.snapshot();
        let (status, notes) = if m.wait_ms > 0 {
            let by = if m
                .provider_requests
                .as_ref()
                .is_some_and(|w| w.remaining == 0)
            {
                "the provider's own limit"
            } else {
                "the configured quota"
            };
            (
                HealthStatus::Warning,
                vec![format!(
                    "rate limited by {by}: room again in {:.1}s; raise the quota if the provider allows more, or add a provider",
                    m.wait_ms as f64 / 1000.0
                )],
            )
        } else {
            (HealthStatus::Healthy, Vec::new())
        };
        Inspection {
            layer: "rate_limit",
            status,
            notes,
            samples: vec![
                Sample::counter(
                    "palisade_ratelimit_admitted_total",
                    "Calls the rate limit let through.",
                    m.admitted as f64,
                ),
                Sample::counter(
                    "palisade_ratelimit_refused_total",
                    "Calls the rate limit refused.",
                    m.refused as f64,
                ),
                Sample::counter(
                    "palisade_ratelimit_waited_total",
                    "Calls that waited for room.",
                    m.waited as f64,
                ),
                Sample::gauge(
                    "palisade_ratelimit_wait_seconds",
                    "Time until a call would have room.",
                    m.wait_ms as f64 / 1000.0,
                ),
            ],
            detail: serde_json::to_value(&m).unwrap_or_default(),
        }
    }
}
