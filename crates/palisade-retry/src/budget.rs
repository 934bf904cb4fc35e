//! Retry budgets: a cap on retries as a share of traffic, shared by every
//! clone of the service and, if you pass the same budget to several layers,
//! by several providers.
//!
//! Without a budget, a provider's brownout multiplies the load on it by the
//! number of attempts just when it can least take it. With one, retries
//! stay a bounded fraction of requests whatever fails.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use palisade_core::{clock, Problems};
use tokio::time::Instant;

use crate::error::ConfigError;

/// Fixed-point unit: budgets count in thousandths of a retry / token.
const MILLI: u64 = 1000;
/// Time slots the ratio budget's window is split into.
const SLOTS: usize = 10;

/// A retry budget. Cloning shares it.
///
/// Two kinds:
///
/// - [`ratio`](Self::ratio) (Finagle's and tower's `TpsBudget` semantics):
///   every request deposits `ratio` of a retry, every retry withdraws one,
///   over a sliding window of `ttl`, plus a floor of `min_per_sec` retries
///   per second so that low traffic can still retry. Each deposit counts
///   for exactly one `ttl` from when it was made (to a tenth of the `ttl`),
///   whatever the traffic did before it.
/// - [`token_bucket`](Self::token_bucket) (gRPC's retry throttling): a
///   bucket of `max_tokens` starts full; every failed attempt takes one
///   token, every success puts back `token_ratio`; retries are allowed
///   only while more than half the tokens remain.
///
/// ```
/// use palisade_retry::RetryBudget;
/// use std::time::Duration;
///
/// // Retries may add at most 20% to the traffic, and at least 1/s.
/// let budget = RetryBudget::ratio(0.2, Duration::from_secs(10), 1).unwrap();
/// // Shared by two providers' retry layers:
/// let for_openai = budget.clone();
/// let for_anthropic = budget.clone();
/// # let _ = (for_openai, for_anthropic);
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Shared>,
}

/// A budget and, once given, the pool it is shared through.
struct Shared {
    kind: Inner,
    pool: OnceLock<Arc<dyn BudgetPool>>,
}

/// A retry budget shared with other processes (the replicas of a fleet):
/// given to a ratio budget ([`RetryBudget::share`]), it is told of every
/// request and asked for every retry, and while it can answer it decides;
/// while it cannot ([`try_withdraw`](Self::try_withdraw) answers `None`)
/// the budget decides on this process's own requests. palisade-redis
/// implements it on Redis. Both methods are on the call path: atomics only.
///
/// ```
/// use palisade_retry::{BudgetPool, RetryBudget};
/// use std::sync::atomic::{AtomicI64, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// /// Three retries for everyone, whatever the traffic.
/// #[derive(Debug)]
/// struct Three(AtomicI64);
/// impl BudgetPool for Three {
///     fn deposit(&self) {}
///     fn try_withdraw(&self) -> Option<bool> {
///         Some(self.0.fetch_sub(1, Ordering::AcqRel) > 0)
///     }
/// }
///
/// let budget = RetryBudget::ratio(0.2, Duration::from_secs(10), 0).unwrap();
/// budget.share(Arc::new(Three(AtomicI64::new(3)))).unwrap();
/// assert_eq!((0..10).filter(|_| budget.try_withdraw()).count(), 3);
/// ```
pub trait BudgetPool: Send + Sync + fmt::Debug + 'static {
    /// A new request (not a retry) was made here.
    fn deposit(&self);
    /// May a retry be taken? `Some(true)` with it paid for, `Some(false)`
    /// if the shared budget has none, `None` if the pool cannot tell now
    /// (the budget then decides alone).
    fn try_withdraw(&self) -> Option<bool>;
}

/// A ratio budget's shape (see [`RetryBudget::ratio`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioShape {
    /// Retries per request.
    pub ratio: f64,
    /// The window requests count in.
    pub ttl: Duration,
    /// Retries per second always allowed.
    pub min_per_sec: u32,
}

// One per budget, behind an `Arc`: the size of the ratio window is fine.
#[allow(clippy::large_enum_variant)]
enum Inner {
    Ratio(RatioBudget),
    Bucket(TokenBucket),
    Unlimited,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.snapshot(), f)
    }
}

/// A budget's state at one moment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BudgetSnapshot {
    /// A ratio budget.
    Ratio {
        /// Retries that may be taken now (deposits in the window × ratio,
        /// plus the floor, minus retries taken).
        available: f64,
        /// The configured ratio.
        ratio: f64,
    },
    /// A token bucket.
    TokenBucket {
        /// Tokens in the bucket.
        tokens: f64,
        /// The bucket's size; retries need more than half of it.
        max_tokens: f64,
    },
    /// No budget.
    Unlimited,
}

impl RetryBudget {
    /// A ratio budget: retries ≤ `ratio` × requests over the last `ttl`,
    /// plus `min_per_sec` × `ttl` retries always allowed.
    ///
    /// `ratio` must be within (0, 1000], `ttl` within 1 s..=60 s (as
    /// tower's `TpsBudget`).
    pub fn ratio(ratio: f64, ttl: Duration, min_per_sec: u32) -> Result<Self, ConfigError> {
        let mut p = Problems::new("retry");
        if !(ratio > 0.0 && ratio <= 1000.0) {
            p.add("budget.ratio", format!("{ratio} is not within (0, 1000]"));
        }
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(60) {
            p.add("budget.ttl", format!("{ttl:?} is not within 1s..=60s"));
        }
        p.finish()?;
        let reserve = (min_per_sec as f64 * ttl.as_secs_f64() * MILLI as f64) as u64;
        Ok(RetryBudget {
            inner: Shared::new(Inner::Ratio(RatioBudget {
                deposit: ((ratio * MILLI as f64).round() as u64).max(1),
                ratio,
                ttl,
                min_per_sec,
                reserve,
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                slot_len: ttl / SLOTS as u32,
                epoch: Instant::now(),
                slots: Default::default(),
                withdraw: Mutex::new(()),
            })),
        })
    }

    /// A gRPC-style token bucket: `max_tokens` within 1..=1000,
    /// `token_ratio` within (0, max_tokens].
    pub fn token_bucket(max_tokens: u32, token_ratio: f64) -> Result<Self, ConfigError> {
        let mut p = Problems::new("retry");
        if max_tokens == 0 || max_tokens > 1000 {
            p.add(
                "budget.max_tokens",
                format!("{max_tokens} is not within 1..=1000"),
            );
        } else if !(token_ratio > 0.0 && token_ratio <= max_tokens as f64) {
            p.add(
                "budget.token_ratio",
                format!("{token_ratio} is not within (0, {max_tokens}]"),
            );
        }
        p.finish()?;
        let max = max_tokens as u64 * MILLI;
        Ok(RetryBudget {
            inner: Shared::new(Inner::Bucket(TokenBucket {
                tokens: AtomicU64::new(max),
                max,
                ratio: ((token_ratio * MILLI as f64).round() as u64).max(1),
            })),
        })
    }

    /// No budget: every retry the policy allows is taken. Only for tests
    /// and for callers that bound retries some other way.
    pub fn unlimited() -> Self {
        RetryBudget {
            inner: Shared::new(Inner::Unlimited),
        }
    }

    /// Records a new request (not a retry).
    #[inline]
    pub fn deposit(&self) {
        if let Inner::Ratio(r) = &self.inner.kind {
            r.deposit();
            if let Some(pool) = self.inner.pool.get() {
                pool.deposit();
            }
        }
    }

    /// Shares this budget with other processes through `pool` (see
    /// [`BudgetPool`]): from now on the pool decides retries while it can,
    /// and this budget, which still counts this process's requests, while
    /// it cannot. Only a ratio budget can be shared; a token bucket or an
    /// unlimited budget is refused, as is a second pool (each handed back).
    pub fn share(&self, pool: Arc<dyn BudgetPool>) -> Result<(), Arc<dyn BudgetPool>> {
        if !matches!(self.inner.kind, Inner::Ratio(_)) {
            return Err(pool);
        }
        self.inner.pool.set(pool)
    }

    /// A ratio budget's shape; `None` for the other kinds.
    pub fn ratio_shape(&self) -> Option<RatioShape> {
        match &self.inner.kind {
            Inner::Ratio(r) => Some(RatioShape {
                ratio: r.ratio,
                ttl: r.ttl,
                min_per_sec: r.min_per_sec,
            }),
            _ => None,
        }
    }

    /// Records an attempt that succeeded.
    #[inline]
    pub fn record_success(&self) {
        if let Inner::Bucket(b) = &self.inner.kind {
            b.success();
        }
    }

    /// Records an attempt that failed in a way worth retrying.
    pub fn record_failure(&self) {
        if let Inner::Bucket(b) = &self.inner.kind {
            b.failure();
        }
    }

    /// Asks for one retry; `true` means take it (and, for a ratio budget,
    /// it has been paid for).
    pub fn try_withdraw(&self) -> bool {
        match &self.inner.kind {
            Inner::Ratio(r) => match self.inner.pool.get().and_then(|p| p.try_withdraw()) {
                Some(granted) => granted,
                None => r.withdraw(Instant::now()),
            },
            Inner::Bucket(b) => b.allows_retry(),
            Inner::Unlimited => true,
        }
    }

    /// The budget's state now.
    pub fn snapshot(&self) -> BudgetSnapshot {
        match &self.inner.kind {
            Inner::Ratio(r) => BudgetSnapshot::Ratio {
                available: r.balance(Instant::now()).max(0) as f64 / MILLI as f64,
                ratio: r.ratio,
            },
            Inner::Bucket(b) => BudgetSnapshot::TokenBucket {
                tokens: b.tokens.load(Ordering::Relaxed) as f64 / MILLI as f64,
                max_tokens: b.max as f64 / MILLI as f64,
            },
            Inner::Unlimited => BudgetSnapshot::Unlimited,
        }
    }
}

impl Shared {
    fn new(kind: Inner) -> Arc<Self> {
        Arc::new(Shared {
            kind,
            pool: OnceLock::new(),
        })
    }
}

/// Source of [`RatioBudget::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The slot this thread last deposited into: which budget, its tick and
/// the instants it spans.
#[derive(Clone, Copy)]
struct TickCache {
    budget: u64,
    tick: u32,
    span: Option<(Instant, Instant)>,
}

thread_local! {
    static TICK: Cell<TickCache> = const {
        Cell::new(TickCache { budget: u64::MAX, tick: 0, span: None })
    };
}

/// One time slot of the ratio window: deposits and withdrawals, each a
/// word holding the slot's tick (which `slot_len` since the epoch it
/// counts for) in its high half and the count in its low half. A slot is
/// reused every `SLOTS` ticks; a count stamped with an older tick is stale
/// and read as zero, so nothing has to sweep the window.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot {
    deposits: AtomicU64,
    withdrawals: AtomicU64,
}

/// A slot word's tick.
#[inline]
fn tick_of(word: u64) -> u32 {
    (word >> 32) as u32
}

/// A slot word's count.
#[inline]
fn count_of(word: u64) -> u64 {
    word & u64::from(u32::MAX)
}

/// Counts one event at `tick` in `cell`. The common case (the slot already
/// counts for this tick) is a load and a `fetch_add`; the first event of a
/// tick restarts the slot with a compare-and-swap. The `fetch_add` after
/// a matching load could only land in a later tick if this thread stalled
/// between the two for a whole window (`ttl`).
#[inline]
fn count_at(cell: &AtomicU64, tick: u32) {
    let mut word = cell.load(Ordering::Relaxed);
    loop {
        let at = tick_of(word);
        if at == tick {
            cell.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if (tick.wrapping_sub(at) as i32) < 0 {
            // The slot already counts for a later tick, so this reading is
            // a whole window old: the event has expired already.
            return;
        }
        let fresh = (u64::from(tick) << 32) | 1;
        match cell.compare_exchange_weak(word, fresh, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(actual) => word = actual,
        }
    }
}

/// The count in a slot word if it belongs to the window ending at `tick`.
#[inline]
fn live_count(word: u64, tick: u32) -> u64 {
    if tick.wrapping_sub(tick_of(word)) < SLOTS as u32 {
        count_of(word)
    } else {
        0
    }
}

/// Deposits are stamped with the time they are made: one clock read (or
/// the reading an enclosing deadline layer already made for this call, see
/// [`palisade_core::clock`]), then one `fetch_add` into that time's slot.
/// Each slot word carries its own tick, so a deposit made after any length
/// of silence counts for exactly one `ttl` and no sweep is needed.
/// Withdrawals, the retry path, pay under a lock so that concurrent
/// retries never overdraw.
struct RatioBudget {
    /// Milli-retries one request earns.
    deposit: u64,
    ratio: f64,
    ttl: Duration,
    min_per_sec: u32,
    /// Milli-retries always available (the floor).
    reserve: u64,
    /// Unique per budget for the life of the process (the key of the
    /// per-thread tick cache).
    id: u64,
    slot_len: Duration,
    epoch: Instant,
    slots: [Slot; SLOTS],
    withdraw: Mutex<()>,
}

impl RatioBudget {
    #[inline]
    fn deposit(&self) {
        let tick = self.cached_tick(clock::now());
        count_at(&self.slots[tick as usize % SLOTS].deposits, tick);
    }

    /// [`tick_at`](Self::tick_at), through a per-thread cache of the last
    /// slot this thread deposited into and the instants it spans: two
    /// comparisons of instants instead of turning one into nanoseconds
    /// (which costs as much as the rest of a deposit).
    #[inline]
    fn cached_tick(&self, now: Instant) -> u32 {
        TICK.with(|cache| {
            let c = cache.get();
            if c.budget == self.id {
                if let Some((from, to)) = c.span {
                    if from <= now && now < to {
                        return c.tick;
                    }
                }
            }
            let tick = self.tick_at(now);
            let from = self.epoch + self.slot_len * tick;
            cache.set(TickCache {
                budget: self.id,
                tick,
                span: Some((from, from + self.slot_len)),
            });
            tick
        })
    }

    /// The slot `now` falls in, as a count of slots since the epoch
    /// (wrapping after 2^32 slots, which the window arithmetic allows).
    #[inline]
    fn tick_at(&self, now: Instant) -> u32 {
        let since = now.saturating_duration_since(self.epoch);
        (since.as_nanos() / self.slot_len.as_nanos()) as u32
    }

    /// Milli-retries available at `tick`: the floor plus the deposits in
    /// the window, minus what was withdrawn in it.
    fn balance_at(&self, tick: u32) -> i64 {
        let (mut dep, mut wd) = (0u64, 0u64);
        for s in &self.slots {
            dep += live_count(s.deposits.load(Ordering::Relaxed), tick);
            wd += live_count(s.withdrawals.load(Ordering::Relaxed), tick);
        }
        self.reserve as i64 + (dep * self.deposit) as i64 - (wd * MILLI) as i64
    }

    fn balance(&self, now: Instant) -> i64 {
        self.balance_at(self.tick_at(now))
    }

    fn withdraw(&self, now: Instant) -> bool {
        let _guard = self.withdraw.lock().unwrap_or_else(|e| e.into_inner());
        let tick = self.tick_at(now);
        if self.balance_at(tick) < MILLI as i64 {
            return false;
        }
        count_at(&self.slots[tick as usize % SLOTS].withdrawals, tick);
        true
    }
}

/// gRPC retry throttling, in milli-tokens. A success on a full bucket is
/// one load.
struct TokenBucket {
    tokens: AtomicU64,
    max: u64,
    ratio: u64,
}

impl TokenBucket {
    #[inline]
    fn success(&self) {
        if self.tokens.load(Ordering::Relaxed) >= self.max {
            return;
        }
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |t| {
                (t < self.max).then(|| (t + self.ratio).min(self.max))
            });
    }

    fn failure(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(MILLI))
            });
    }

    fn allows_retry(&self) -> bool {
        self.tokens.load(Ordering::Acquire) > self.max / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ratio_budget_allows_its_share_of_requests_exactly() {
        let b = RetryBudget::ratio(0.2, Duration::from_secs(10), 0).unwrap();
        for _ in 0..100 {
            b.deposit();
        }
        let taken = (0..1000).take_while(|_| b.try_withdraw()).count();
        assert_eq!(taken, 20, "0.2 × 100 requests");
        assert!(!b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_budget_floor_adds_min_per_sec_times_ttl() {
        let b = RetryBudget::ratio(0.2, Duration::from_secs(10), 1).unwrap();
        for _ in 0..100 {
            b.deposit();
        }
        let taken = (0..1000).take_while(|_| b.try_withdraw()).count();
        assert_eq!(taken, 20 + 10, "the share plus 1/s over 10 s");
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_budget_deposits_expire_after_the_ttl() {
        let b = RetryBudget::ratio(0.5, Duration::from_secs(10), 0).unwrap();
        for _ in 0..10 {
            b.deposit();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.try_withdraw(), "still in the window");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!b.try_withdraw(), "deposits older than the ttl are gone");
        assert_eq!(
            b.snapshot(),
            BudgetSnapshot::Ratio {
                available: 0.0,
                ratio: 0.5
            }
        );
    }

    #[test]
    fn token_bucket_follows_grpc_throttling() {
        // max 10, ratio 0.5: throttled once tokens ≤ 5.
        let b = RetryBudget::token_bucket(10, 0.5).unwrap();
        for _ in 0..4 {
            b.record_failure();
        }
        assert!(b.try_withdraw(), "6 tokens > 5");
        b.record_failure();
        assert!(!b.try_withdraw(), "5 tokens is not more than half");
        b.record_success();
        assert!(b.try_withdraw(), "5.5 tokens > 5");
        for _ in 0..100 {
            b.record_success();
        }
        assert_eq!(
            b.snapshot(),
            BudgetSnapshot::TokenBucket {
                tokens: 10.0,
                max_tokens: 10.0
            },
            "capped at max"
        );
        for _ in 0..100 {
            b.record_failure();
        }
        assert_eq!(
            b.snapshot(),
            BudgetSnapshot::TokenBucket {
                tokens: 0.0,
                max_tokens: 10.0
            },
            "floored at zero"
        );
    }

    #[test]
    fn bad_budgets_are_refused() {
        assert_eq!(
            RetryBudget::ratio(0.0, Duration::from_secs(10), 0)
                .unwrap_err()
                .problems()[0]
                .path,
            "retry.budget.ratio"
        );
        assert_eq!(
            RetryBudget::ratio(f64::NAN, Duration::from_secs(10), 0)
                .unwrap_err()
                .problems()[0]
                .path,
            "retry.budget.ratio"
        );
        assert_eq!(
            RetryBudget::ratio(0.1, Duration::from_millis(10), 0)
                .unwrap_err()
                .problems()[0]
                .path,
            "retry.budget.ttl"
        );
        assert_eq!(
            RetryBudget::token_bucket(0, 0.1).unwrap_err().problems()[0].path,
            "retry.budget.max_tokens"
        );
        assert_eq!(
            RetryBudget::token_bucket(10, -1.0).unwrap_err().problems()[0].path,
            "retry.budget.token_ratio"
        );
    }

    #[test]
    fn concurrent_deposits_are_all_counted() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let b = rt.block_on(async { RetryBudget::ratio(0.5, Duration::from_secs(60), 0).unwrap() });
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..10_000).for_each(|_| b.deposit()))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let taken = (0..100_000).take_while(|_| b.try_withdraw()).count();
        assert_eq!(taken, 40_000, "0.5 × 80 000 deposits, however they raced");
    }

    #[test]
    fn concurrent_withdrawals_never_overdraw() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let b = rt.block_on(async { RetryBudget::ratio(0.1, Duration::from_secs(60), 0).unwrap() });
        for _ in 0..1000 {
            b.deposit();
        }
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..100).filter(|_| b.try_withdraw()).count())
            })
            .collect();
        let taken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(taken, 100, "0.1 × 1000, however the threads race");
    }
}
