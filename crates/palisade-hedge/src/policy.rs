//! [`HedgePolicy`]: when to hedge, how often, and who pays; and the counts
//! of what hedging did ([`HedgeHandle`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{ConfigError, Problems, RequestMarks};
use palisade_retry::RetryBudget;
use tokio::time::Instant;

use crate::window::LatencyWindow;

/// The most extra attempts one request may get.
pub const MAX_HEDGES: u32 = 4;

/// How long to wait for an answer before sending a hedge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    /// Always this long.
    Fixed(Duration),
    /// The given percentile (0 to 1, e.g. 0.95) of the provider's recent
    /// latencies; no hedging until the window holds `min_samples`.
    Percentile {
        /// Which percentile, 0 to 1.
        percentile: f64,
        /// Samples needed before the first hedge.
        min_samples: u64,
    },
}

impl HedgeDelay {
    /// The delay for a call whose provider's latencies are in `window`;
    /// `None`: do not hedge (not enough samples yet).
    pub fn for_window(&self, window: &LatencyWindow) -> Option<Duration> {
        self.for_window_at(window, Instant::now())
    }

    /// As [`for_window`](Self::for_window), with the time already read.
    pub(crate) fn for_window_at(&self, window: &LatencyWindow, now: Instant) -> Option<Duration> {
        match *self {
            HedgeDelay::Fixed(d) => Some(d),
            HedgeDelay::Percentile {
                percentile,
                min_samples,
            } => window.percentile_at(percentile, min_samples, now),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    // Counted on every call: striped, so threads do not share its line.
    hedgeable: palisade_core::StripedCounter,
    sent: AtomicU64,
    won: AtomicU64,
    wasted: AtomicU64,
    no_budget: AtomicU64,
}

/// What hedging did so far (shared by every clone of the policy).
///
/// ```
/// use palisade_hedge::HedgePolicy;
/// use std::time::Duration;
///
/// let policy = HedgePolicy::fixed(Duration::from_millis(300)).build().unwrap();
/// let stats = policy.handle().snapshot();
/// assert_eq!((stats.sent, stats.won, stats.wasted), (0, 0, 0));
/// ```
#[derive(Debug, Clone)]
pub struct HedgeHandle {
    counts: Arc<Counts>,
}

/// The counts of a [`HedgeHandle`] at one moment (with the `serde`
/// feature, serializable under these field names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct HedgeSnapshot {
    /// Requests that could have been hedged (marked or defaulted
    /// hedgeable).
    pub hedgeable: u64,
    /// Hedges sent.
    pub sent: u64,
    /// Answers that came from a hedge rather than the first attempt.
    pub won: u64,
    /// Attempts started whose answers were not used (cancelled, or lost
    /// the race): the extra load hedging cost.
    pub wasted: u64,
    /// Hedges not sent because the budget was dry.
    pub no_budget: u64,
}

impl HedgeHandle {
    /// The counts now.
    pub fn snapshot(&self) -> HedgeSnapshot {
        let c = &self.counts;
        HedgeSnapshot {
            hedgeable: c.hedgeable.get(),
            sent: c.sent.load(Ordering::Relaxed),
            won: c.won.load(Ordering::Relaxed),
            wasted: c.wasted.load(Ordering::Relaxed),
            no_budget: c.no_budget.load(Ordering::Relaxed),
        }
    }
}

/// When and how often to hedge, and who pays: a delay ([`HedgeDelay`]),
/// a cap on extra attempts, whether unmarked requests may be hedged, and
/// an optional retry budget each hedge must withdraw from. Shared by the
/// standalone [`HedgeLayer`](crate::HedgeLayer) and the palisade router's
/// tiers.
///
/// ```
/// use palisade_hedge::HedgePolicy;
/// use palisade_retry::RetryBudget;
/// use std::time::Duration;
///
/// let policy = HedgePolicy::percentile(0.95)
///     .min_samples(20)
///     .max_hedges(1)
///     .budget(RetryBudget::ratio(0.1, Duration::from_secs(10), 1).unwrap())
///     .build()
///     .unwrap();
/// assert_eq!(policy.max_hedges(), 1);
/// assert!(HedgePolicy::percentile(1.5).build().is_err());
/// ```
#[derive(Clone)]
pub struct HedgePolicy {
    delay: HedgeDelay,
    max_hedges: u32,
    by_default: bool,
    budget: Option<RetryBudget>,
    deposits: bool,
    period: Duration,
    handle: HedgeHandle,
}

impl fmt::Debug for HedgePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgePolicy")
            .field("delay", &self.delay)
            .field("max_hedges", &self.max_hedges)
            .field("by_default", &self.by_default)
            .field("budget", &self.budget.is_some())
            .finish()
    }
}

/// Builds a [`HedgePolicy`]; [`build`](Self::build) checks it.
#[derive(Debug, Clone)]
pub struct HedgePolicyBuilder {
    policy: HedgePolicy,
}

impl HedgePolicy {
    fn start(delay: HedgeDelay) -> HedgePolicyBuilder {
        HedgePolicyBuilder {
            policy: HedgePolicy {
                delay,
                max_hedges: 1,
                by_default: true,
                budget: None,
                deposits: true,
                period: Duration::from_secs(30),
                handle: HedgeHandle {
                    counts: Arc::default(),
                },
            },
        }
    }

    /// Hedges a call that has not answered after `delay`.
    pub fn fixed(delay: Duration) -> HedgePolicyBuilder {
        Self::start(HedgeDelay::Fixed(delay))
    }

    /// Hedges a call that has taken longer than `percentile` (0 to 1) of
    /// its provider's recent calls, once 20 have been seen (see
    /// [`HedgePolicyBuilder::min_samples`]).
    pub fn percentile(percentile: f64) -> HedgePolicyBuilder {
        Self::start(HedgeDelay::Percentile {
            percentile,
            min_samples: 20,
        })
    }

    /// The delay rule.
    pub fn delay(&self) -> HedgeDelay {
        self.delay
    }

    /// The most hedges per request.
    pub fn max_hedges(&self) -> u32 {
        self.max_hedges
    }

    /// The counts of what hedging did.
    pub fn handle(&self) -> &HedgeHandle {
        &self.handle
    }

    /// A fresh latency window for one provider, rotating at the policy's
    /// period.
    pub fn window(&self) -> LatencyWindow {
        LatencyWindow::new(self.period)
    }

    /// Whether `req` may be hedged: its own mark, else the default. Counts
    /// it and pays its deposit into the budget when it may.
    pub fn admits<Req: RequestMarks>(&self, req: &Req) -> bool {
        let yes = req.hedgeable().unwrap_or(self.by_default);
        if yes {
            self.handle.counts.hedgeable.add(1);
            if self.deposits {
                if let Some(b) = &self.budget {
                    b.deposit();
                }
            }
        }
        yes
    }

    /// Asks the budget for one hedge (always yes without a budget),
    /// counting a refusal.
    pub fn try_spend(&self) -> bool {
        let ok = self.budget.as_ref().is_none_or(|b| b.try_withdraw());
        if !ok {
            self.handle.counts.no_budget.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("hedge not sent: the budget is dry");
        }
        ok
    }

    /// Counts a hedge sent.
    pub fn sent(&self) {
        self.handle.counts.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a hedged request's end: whether a hedge won, and how many
    /// attempts' answers went unused.
    pub fn settled(&self, hedge_won: bool, wasted: u32) {
        let c = &self.handle.counts;
        if hedge_won {
            c.won.fetch_add(1, Ordering::Relaxed);
        }
        if wasted > 0 {
            c.wasted.fetch_add(u64::from(wasted), Ordering::Relaxed);
        }
    }
}

impl HedgePolicyBuilder {
    /// The most hedges per request (1 to [`MAX_HEDGES`]; default 1).
    pub fn max_hedges(mut self, n: u32) -> Self {
        self.policy.max_hedges = n;
        self
    }

    /// Samples a provider's window needs before percentile hedging starts
    /// (default 20; ignored by a fixed delay).
    pub fn min_samples(mut self, n: u64) -> Self {
        if let HedgeDelay::Percentile { min_samples, .. } = &mut self.policy.delay {
            *min_samples = n;
        }
        self
    }

    /// Whether requests that do not say (no
    /// [`Hedgeable`](palisade_core::Hedgeable) mark) may be hedged
    /// (default true).
    pub fn by_default(mut self, yes: bool) -> Self {
        self.policy.by_default = yes;
        self
    }

    /// Each hedge withdraws from `budget` (no hedge when it is dry); each
    /// hedgeable request deposits into it.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.policy.budget = Some(budget);
        self.policy.deposits = true;
        self
    }

    /// Each hedge withdraws from `budget`, which retry layers already fill
    /// with a deposit per request (the router's shared retry budget):
    /// hedges and retries then share one allowance.
    pub fn shared_budget(mut self, budget: RetryBudget) -> Self {
        self.policy.budget = Some(budget);
        self.policy.deposits = false;
        self
    }

    /// How long latency windows hold samples (rotated every `period`;
    /// default 30 s).
    pub fn period(mut self, period: Duration) -> Self {
        self.policy.period = period;
        self
    }

    /// Checks the policy: a delay above zero and under an hour, a
    /// percentile in (0, 1), 1 to [`MAX_HEDGES`] hedges, a period of at
    /// least a second.
    pub fn build(self) -> Result<HedgePolicy, ConfigError> {
        let p = self.policy;
        let mut problems = Problems::new("hedge");
        match p.delay {
            HedgeDelay::Fixed(d) if d.is_zero() || d > Duration::from_secs(3600) => problems.add(
                "delay_ms",
                format!("{} ms; use 1 to 3600000", d.as_millis()),
            ),
            HedgeDelay::Percentile { percentile, .. }
                if !(percentile > 0.0 && percentile < 1.0) =>
            {
                problems.add(
                    "percentile",
                    format!("{percentile}; use a share between 0 and 1, e.g. 0.95"),
                )
            }
            _ => {}
        }
        if p.max_hedges == 0 || p.max_hedges > MAX_HEDGES {
            problems.add(
                "max_hedges",
                format!("{}; use 1 to {MAX_HEDGES}", p.max_hedges),
            );
        }
        if p.period < Duration::from_secs(1) {
            problems.add(
                "period_ms",
                format!("{} ms; use at least 1000", p.period.as_millis()),
            );
        }
        problems.finish()?;
        Ok(p)
    }
}
