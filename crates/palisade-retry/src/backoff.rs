//! How long to wait before each retry: the base schedule and its jitter.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

/// The base delay schedule, before jitter. `retry` counts from 1 (the wait
/// before the first re-send).
///
/// ```
/// use palisade_retry::Backoff;
/// use std::time::Duration;
///
/// let ms = Duration::from_millis;
/// let exp = Backoff::exponential(ms(100), 2.0, ms(1000));
/// let delays: Vec<_> = (1..=5).map(|n| exp.base_delay(n)).collect();
/// assert_eq!(delays, [ms(100), ms(200), ms(400), ms(800), ms(1000)]);
///
/// let fib = Backoff::fibonacci(ms(100), ms(1000));
/// let delays: Vec<_> = (1..=6).map(|n| fib.base_delay(n)).collect();
/// assert_eq!(delays, [ms(100), ms(100), ms(200), ms(300), ms(500), ms(800)]);
/// ```
#[derive(Clone)]
pub enum Backoff {
    /// `base × multiplier^(retry−1)`, capped at `max`.
    Exponential {
        /// The first delay.
        base: Duration,
        /// The growth factor per retry (≥ 1).
        multiplier: f64,
        /// The largest delay.
        max: Duration,
    },
    /// `base + step × (retry−1)`, capped at `max`.
    Linear {
        /// The first delay.
        base: Duration,
        /// Added per retry.
        step: Duration,
        /// The largest delay.
        max: Duration,
    },
    /// `base × fib(retry)` (1, 1, 2, 3, 5, ...), capped at `max`.
    Fibonacci {
        /// The first delay.
        base: Duration,
        /// The largest delay.
        max: Duration,
    },
    /// The same delay every time.
    Constant(Duration),
    /// Your own schedule: retry number to delay.
    Custom(Arc<dyn Fn(u32) -> Duration + Send + Sync>),
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backoff::Exponential {
                base,
                multiplier,
                max,
            } => write!(f, "Exponential({base:?} × {multiplier}, max {max:?})"),
            Backoff::Linear { base, step, max } => {
                write!(f, "Linear({base:?} + {step:?}, max {max:?})")
            }
            Backoff::Fibonacci { base, max } => write!(f, "Fibonacci({base:?}, max {max:?})"),
            Backoff::Constant(d) => write!(f, "Constant({d:?})"),
            Backoff::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl Default for Backoff {
    /// Exponential from 200 ms, doubling, capped at 10 s.
    fn default() -> Self {
        Backoff::exponential(Duration::from_millis(200), 2.0, Duration::from_secs(10))
    }
}

/// The largest delay a schedule will produce, whatever it is asked.
const CEILING: Duration = Duration::from_secs(24 * 3600);

impl Backoff {
    /// Exponential backoff: `base × multiplier^(retry−1)`, capped at `max`.
    pub fn exponential(base: Duration, multiplier: f64, max: Duration) -> Self {
        Backoff::Exponential {
            base,
            multiplier,
            max,
        }
    }

    /// Linear backoff: `base + step × (retry−1)`, capped at `max`.
    pub fn linear(base: Duration, step: Duration, max: Duration) -> Self {
        Backoff::Linear { base, step, max }
    }

    /// Fibonacci backoff: `base × fib(retry)`, capped at `max`.
    pub fn fibonacci(base: Duration, max: Duration) -> Self {
        Backoff::Fibonacci { base, max }
    }

    /// The same delay before every retry.
    pub fn constant(delay: Duration) -> Self {
        Backoff::Constant(delay)
    }

    /// Your own schedule.
    pub fn custom(f: impl Fn(u32) -> Duration + Send + Sync + 'static) -> Self {
        Backoff::Custom(Arc::new(f))
    }

    /// The delay before retry number `retry` (from 1), without jitter.
    /// Never panics or overflows: huge results saturate at the cap.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let n = retry.max(1);
        match self {
            Backoff::Exponential {
                base,
                multiplier,
                max,
            } => {
                let secs = base.as_secs_f64() * multiplier.powi((n - 1).min(1024) as i32);
                from_secs_capped(secs, *max)
            }
            Backoff::Linear { base, step, max } => {
                let d = step
                    .checked_mul(n - 1)
                    .and_then(|s| s.checked_add(*base))
                    .unwrap_or(*max);
                d.min(*max)
            }
            Backoff::Fibonacci { base, max } => {
                let (mut a, mut b) = (1u64, 1u64);
                for _ in 1..n.min(90) {
                    (a, b) = (b, a.saturating_add(b));
                }
                from_secs_capped(base.as_secs_f64() * a as f64, *max)
            }
            Backoff::Constant(d) => *d,
            Backoff::Custom(f) => f(n).min(CEILING),
        }
    }

    /// The smallest delay the schedule gives: the floor of decorrelated
    /// jitter.
    pub(crate) fn first(&self) -> Duration {
        self.base_delay(1)
    }

    /// The cap of the schedule, when it has one.
    pub(crate) fn cap(&self) -> Duration {
        match self {
            Backoff::Exponential { max, .. }
            | Backoff::Linear { max, .. }
            | Backoff::Fibonacci { max, .. } => *max,
            Backoff::Constant(d) => *d,
            Backoff::Custom(_) => CEILING,
        }
    }
}

fn from_secs_capped(secs: f64, max: Duration) -> Duration {
    if secs.is_finite() && secs < max.as_secs_f64() {
        Duration::from_secs_f64(secs.max(0.0))
    } else {
        max
    }
}

/// Randomness added to each delay so that many clients do not retry in
/// lockstep: the variants of AWS's "Exponential Backoff and Jitter".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// The base delay as is.
    None,
    /// Uniform in `[0, delay]`. Spreads retries the most. The default.
    #[default]
    Full,
    /// `delay/2 + uniform[0, delay/2]`: never less than half the delay.
    Equal,
    /// `min(cap, uniform[first, previous × 3])`: each delay grows from the
    /// one actually slept, not from the retry number.
    Decorrelated,
}

impl Jitter {
    /// The delay to sleep before retry `retry`, given the base schedule and
    /// the previous delay actually slept (zero before the first retry).
    pub fn apply<R: Rng + ?Sized>(
        self,
        backoff: &Backoff,
        retry: u32,
        previous: Duration,
        rng: &mut R,
    ) -> Duration {
        match self {
            Jitter::None => backoff.base_delay(retry),
            Jitter::Full => uniform(rng, Duration::ZERO, backoff.base_delay(retry)),
            Jitter::Equal => {
                let d = backoff.base_delay(retry);
                d / 2 + uniform(rng, Duration::ZERO, d - d / 2)
            }
            Jitter::Decorrelated => {
                let first = backoff.first();
                let hi = previous.max(first).saturating_mul(3).min(backoff.cap());
                uniform(rng, first.min(hi), hi)
            }
        }
    }
}

fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: Duration, hi: Duration) -> Duration {
    if hi <= lo {
        return lo;
    }
    let span = u64::try_from((hi - lo).as_nanos()).unwrap_or(u64::MAX);
    lo + Duration::from_nanos(rng.random_range(0..=span))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn exact_schedules_without_jitter() {
        let lin = Backoff::linear(100 * MS, 50 * MS, 300 * MS);
        let got: Vec<_> = (1..=6).map(|n| lin.base_delay(n)).collect();
        assert_eq!(got, [100, 150, 200, 250, 300, 300].map(|m| m * MS));
        let c = Backoff::constant(70 * MS);
        assert!((1..=4).all(|n| c.base_delay(n) == 70 * MS));
        let custom = Backoff::custom(|n| n * 10 * MS);
        assert_eq!(custom.base_delay(3), 30 * MS);
        let mut rng = SmallRng::seed_from_u64(1);
        let exp = Backoff::exponential(100 * MS, 3.0, 10_000 * MS);
        let got: Vec<_> = (1..=4)
            .map(|n| Jitter::None.apply(&exp, n, Duration::ZERO, &mut rng))
            .collect();
        assert_eq!(got, [100, 300, 900, 2700].map(|m| m * MS));
    }

    #[test]
    fn huge_retry_numbers_saturate_at_the_cap() {
        let exp = Backoff::exponential(100 * MS, 2.0, 5_000 * MS);
        assert_eq!(exp.base_delay(u32::MAX), 5_000 * MS);
        let fib = Backoff::fibonacci(100 * MS, 5_000 * MS);
        assert_eq!(fib.base_delay(u32::MAX), 5_000 * MS);
        let lin = Backoff::linear(100 * MS, Duration::MAX, 5_000 * MS);
        assert_eq!(lin.base_delay(u32::MAX), 5_000 * MS);
    }

    fn backoff() -> impl Strategy<Value = Backoff> {
        (1u64..1000, 1.0f64..4.0, 1u64..60_000).prop_map(|(b, m, c)| {
            Backoff::exponential(Duration::from_millis(b), m, Duration::from_millis(c.max(b)))
        })
    }

    proptest! {
        #[test]
        fn full_jitter_stays_within_zero_and_the_delay(b in backoff(), n in 1u32..40, seed: u64) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let d = Jitter::Full.apply(&b, n, Duration::ZERO, &mut rng);
            prop_assert!(d <= b.base_delay(n));
        }

        #[test]
        fn equal_jitter_keeps_at_least_half(b in backoff(), n in 1u32..40, seed: u64) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let d = Jitter::Equal.apply(&b, n, Duration::ZERO, &mut rng);
            let base = b.base_delay(n);
            prop_assert!(d >= base / 2 && d <= base, "{:?} vs {:?}", d, base);
        }

        #[test]
        fn decorrelated_jitter_stays_within_first_and_three_times_previous(
            b in backoff(), prev_ms in 0u64..100_000, seed: u64,
        ) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let prev = Duration::from_millis(prev_ms);
            let d = Jitter::Decorrelated.apply(&b, 2, prev, &mut rng);
            let hi = prev.max(b.first()).saturating_mul(3).min(b.cap());
            prop_assert!(d >= b.first().min(hi) && d <= hi, "{:?} not in [{:?}, {:?}]", d, b.first(), hi);
        }
    }
}
