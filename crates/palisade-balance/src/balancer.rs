//! [`Balancer`]: one tier's choice of provider, lock-free.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use palisade_core::{splitmix64, ConfigError, Problems, SPLITMIX_GAMMA};

use crate::load::Load;
use crate::strategy::Strategy;

/// The most providers one tier holds (a pick tracks them in one `u64`).
pub const MAX_TIER: usize = 64;
/// The largest weight a provider may have.
pub const MAX_WEIGHT: u32 = 1000;

/// The providers a [`Balancer`] chooses among, as the caller holds them:
/// which may take this call, and their load.
pub trait Candidates {
    /// How many providers the tier has (the balancer's own count).
    fn len(&self) -> usize;
    /// Whether the tier has no provider.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether provider `i` may take this call: not refusing (no open
    /// breaker, rate-limit room, bulkhead space), not already tried.
    /// Asked only of the providers a strategy looks at.
    fn eligible(&self, i: usize) -> bool;
    /// Provider `i`'s load.
    fn load(&self, i: usize) -> &Load;
    /// Provider `i`'s share of rate-limit room left, 0 to 1 (`None`: no
    /// limit known). Read only by [`Strategy::MostHeadroom`].
    fn headroom(&self, i: usize) -> Option<f64> {
        let _ = i;
        None
    }
    /// Whether the call being placed is a stream: [`Strategy::PeakEwma`]
    /// then compares the providers' time to first token
    /// ([`Load::first_token`]) instead of whole-call latency.
    fn streaming(&self) -> bool {
        false
    }
}

/// Chooses a provider within one tier by a [`Strategy`] and per-provider
/// weights. A pick touches atomics only: no lock, no allocation. Providers
/// that are not [eligible](Candidates::eligible) are stepped around; when
/// none is, the pick is `None` and the caller moves on (the next tier).
///
/// ```
/// use palisade_balance::{Balancer, Candidates, Load, Strategy};
///
/// struct Tier { loads: Vec<Load>, down: usize }
/// impl Candidates for Tier {
///     fn len(&self) -> usize { self.loads.len() }
///     fn eligible(&self, i: usize) -> bool { i != self.down }
///     fn load(&self, i: usize) -> &Load { &self.loads[i] }
/// }
///
/// let tier = Tier { loads: (0..3).map(|_| Load::default()).collect(), down: 1 };
/// let rr = Balancer::new(Strategy::RoundRobin, vec![2, 1, 1]).unwrap();
/// let picks: Vec<_> = (0..6).map(|_| rr.pick(&tier).unwrap()).collect();
/// // The round is 0, 1, 2, 0; provider 1 is down, so its turns go to the next in the round.
/// assert_eq!(picks, [0, 2, 2, 0, 0, 2]);
/// assert!(Balancer::new(Strategy::Random, vec![0]).is_err());
/// ```
pub struct Balancer {
    strategy: Strategy,
    weights: Box<[u32]>,
    schedule: Box<[u8]>,
    cursor: AtomicUsize,
    /// The seeded generator's counter; `None` draws from the thread's own
    /// generator, which no other thread writes.
    rng: Option<AtomicU64>,
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("strategy", &self.strategy)
            .field("weights", &self.weights)
            .finish()
    }
}

impl Balancer {
    /// A balancer over `weights.len()` providers (1 to [`MAX_TIER`]), each
    /// weighted 1 to [`MAX_WEIGHT`]. Random draws come from a generator per
    /// thread (seeded from the clock), so threads picking at once share no
    /// counter; see [`seeded`](Self::seeded) for reproducible draws.
    pub fn new(strategy: Strategy, weights: Vec<u32>) -> Result<Self, ConfigError> {
        let mut b = Self::seeded(strategy, weights, 0)?;
        b.rng = None;
        Ok(b)
    }

    /// As [`new`](Self::new), with the random draws fixed by `seed` (for
    /// tests and simulations: the same seed and call order give the same
    /// picks). The draws come from one counter shared by every thread.
    pub fn seeded(strategy: Strategy, weights: Vec<u32>, seed: u64) -> Result<Self, ConfigError> {
        let mut problems = Problems::new("balance");
        if weights.is_empty() {
            problems.add("weights", "a tier needs at least one provider");
        }
        if weights.len() > MAX_TIER {
            problems.add(
                "weights",
                format!(
                    "{} providers in one tier; at most {MAX_TIER}",
                    weights.len()
                ),
            );
        }
        for (i, &w) in weights.iter().enumerate() {
            if w == 0 || w > MAX_WEIGHT {
                problems.add(
                    &format!("weights[{i}]"),
                    format!("weight {w}; use 1 to {MAX_WEIGHT}"),
                );
            }
        }
        problems.finish()?;
        let schedule = smooth_schedule(&weights);
        Ok(Balancer {
            strategy,
            weights: weights.into_boxed_slice(),
            schedule,
            cursor: AtomicUsize::new(0),
            rng: Some(AtomicU64::new(seed)),
        })
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Each provider's weight.
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// How many providers the balancer chooses among.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Always false: a balancer has at least one provider.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The provider to call, or `None` when none is eligible.
    pub fn pick<C: Candidates + ?Sized>(&self, c: &C) -> Option<usize> {
        let n = self.weights.len().min(c.len());
        if n == 0 {
            return None;
        }
        if n == 1 {
            return c.eligible(0).then_some(0);
        }
        match self.strategy {
            Strategy::RoundRobin => self.round_robin(c, n),
            Strategy::Random => {
                let i = self.weighted(full(n), n);
                if c.eligible(i) {
                    return Some(i);
                }
                let mask = eligible(c, n) & !bit(i);
                (mask != 0).then(|| self.weighted(mask, n))
            }
            Strategy::LeastInFlight => self.best(c, n, |i| self.in_flight_cost(c, i)),
            Strategy::PeakEwma => self.p2c(c, n),
            Strategy::MostHeadroom => self.best(c, n, |i| {
                let room = c.headroom(i).unwrap_or(1.0).clamp(0.0, 1.0);
                // Room first (more is better), then calls in flight.
                (1.0 - room) * 1e9 + self.in_flight_cost(c, i)
            }),
        }
    }

    fn next_random(&self) -> u64 {
        // splitmix64 over a counter: the seeded one is an atomic shared by
        // every thread (reproducible), else the thread's own.
        let state = match &self.rng {
            Some(rng) => rng.fetch_add(GOLDEN, Ordering::Relaxed),
            None => THREAD_RNG.with(|c| {
                let v = c.get();
                c.set(v.wrapping_add(GOLDEN));
                v
            }),
        };
        splitmix64(state.wrapping_add(GOLDEN))
    }

    fn round_robin<C: Candidates + ?Sized>(&self, c: &C, n: usize) -> Option<usize> {
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let len = self.schedule.len();
        let all = full(n);
        let mut bad = 0u64;
        for k in 0..len {
            let i = self.schedule[(start.wrapping_add(k)) % len] as usize;
            if i >= n || bad & bit(i) != 0 {
                continue;
            }
            if c.eligible(i) {
                return Some(i);
            }
            bad |= bit(i);
            if bad == all {
                return None;
            }
        }
        None
    }

    /// A provider from `mask` drawn with probability proportional to its
    /// weight.
    fn weighted(&self, mask: u64, n: usize) -> usize {
        let total: u64 = (0..n)
            .filter(|&i| mask & bit(i) != 0)
            .map(|i| u64::from(self.weights[i]))
            .sum();
        let mut r = self.next_random() % total.max(1);
        for i in (0..n).filter(|&i| mask & bit(i) != 0) {
            let w = u64::from(self.weights[i]);
            if r < w {
                return i;
            }
            r -= w;
        }
        mask.trailing_zeros() as usize
    }

    fn in_flight_cost<C: Candidates + ?Sized>(&self, c: &C, i: usize) -> f64 {
        f64::from(c.load(i).in_flight() + 1) / f64::from(self.weights[i])
    }

    /// The eligible provider of lowest `cost`, ties going round robin.
    fn best<C: Candidates + ?Sized>(
        &self,
        c: &C,
        n: usize,
        cost: impl Fn(usize) -> f64,
    ) -> Option<usize> {
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, f64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !c.eligible(i) {
                continue;
            }
            let cost = cost(i);
            if best.is_none_or(|(_, b)| cost < b) {
                best = Some((i, cost));
            }
        }
        best.map(|(i, _)| i)
    }

    fn p2c<C: Candidates + ?Sized>(&self, c: &C, n: usize) -> Option<usize> {
        let r = self.next_random();
        let a = (r % n as u64) as usize;
        let mut b = ((r >> 32) % (n as u64 - 1)) as usize;
        if b >= a {
            b += 1;
        }
        let (a, b) = match (c.eligible(a), c.eligible(b)) {
            (true, true) => (a, b),
            (ea, eb) => {
                let mut mask = eligible(c, n);
                if !ea {
                    mask &= !bit(a);
                }
                if !eb {
                    mask &= !bit(b);
                }
                match mask.count_ones() {
                    0 => return None,
                    1 => return Some(mask.trailing_zeros() as usize),
                    k => {
                        let r = self.next_random();
                        let x = nth_set(mask, (r % u64::from(k)) as u32);
                        let y = nth_set(mask & !bit(x), ((r >> 32) % u64::from(k - 1)) as u32);
                        (x, y)
                    }
                }
            }
        };
        let now = palisade_core::clock::now();
        let streaming = c.streaming();
        let cost = |i: usize| {
            let load = c.load(i);
            load.estimate_for(streaming).estimate_ns(now) * f64::from(load.in_flight() + 1)
                / f64::from(self.weights[i])
        };
        Some(if cost(b) < cost(a) { b } else { a })
    }
}

const GOLDEN: u64 = SPLITMIX_GAMMA;

thread_local! {
    /// The unseeded balancers' generator: one counter per thread, started
    /// from the clock and the thread's own address so threads differ.
    static THREAD_RNG: std::cell::Cell<u64> = std::cell::Cell::new({
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(GOLDEN);
        let here = 0u8;
        clock ^ (&here as *const u8 as u64).rotate_left(32)
    });
}

fn bit(i: usize) -> u64 {
    1u64 << i
}

fn full(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

fn eligible<C: Candidates + ?Sized>(c: &C, n: usize) -> u64 {
    (0..n).filter(|&i| c.eligible(i)).fold(0, |m, i| m | bit(i))
}

/// The index of the `k`-th set bit of `mask` (counting from 0).
fn nth_set(mut mask: u64, k: u32) -> usize {
    for _ in 0..k {
        mask &= mask - 1;
    }
    mask.trailing_zeros() as usize
}

/// Smooth weighted round robin (nginx's), laid out once: every provider
/// appears `weight / gcd` times per round, spread out rather than in runs.
fn smooth_schedule(weights: &[u32]) -> Box<[u8]> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let w: Vec<i64> = weights.iter().map(|&x| i64::from(x / g)).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += wi;
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|&(i, &c)| (c, std::cmp::Reverse(i)))
            .expect("at least one provider");
        current[best] -= total;
        out.push(best as u8);
    }
    out.into_boxed_slice()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use tokio::time::Instant;

    struct Tier {
        loads: Vec<Load>,
        up: Cell<u64>,
        rooms: Vec<Option<f64>>,
    }

    impl Tier {
        fn new(n: usize) -> Self {
            Tier {
                loads: (0..n).map(|_| Load::default()).collect(),
                up: Cell::new(full(n)),
                rooms: vec![None; n],
            }
        }
    }

    impl Candidates for Tier {
        fn len(&self) -> usize {
            self.loads.len()
        }
        fn eligible(&self, i: usize) -> bool {
            self.up.get() & bit(i) != 0
        }
        fn load(&self, i: usize) -> &Load {
            &self.loads[i]
        }
        fn headroom(&self, i: usize) -> Option<f64> {
            self.rooms[i]
        }
    }

    /// Loads shared with their callers, every one eligible.
    struct Shared<'a>(&'a [std::sync::Arc<Load>]);

    impl Candidates for Shared<'_> {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn eligible(&self, _: usize) -> bool {
            true
        }
        fn load(&self, i: usize) -> &Load {
            &self.0[i]
        }
    }

    fn counts(b: &Balancer, t: &Tier, picks: usize) -> Vec<usize> {
        let mut out = vec![0; t.len()];
        for _ in 0..picks {
            out[b.pick(t).unwrap()] += 1;
        }
        out
    }

    #[test]
    fn smooth_round_robin_interleaves_and_is_exact() {
        let s = smooth_schedule(&[5, 1, 1]);
        assert_eq!(&*s, &[0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(&*smooth_schedule(&[2, 4]), &[1, 0, 1]);
        let b = Balancer::new(Strategy::RoundRobin, vec![3, 2, 5]).unwrap();
        assert_eq!(counts(&b, &Tier::new(3), 10_000), [3000, 2000, 5000]);
    }

    #[test]
    fn weighted_random_is_within_one_percent() {
        let b = Balancer::seeded(Strategy::Random, vec![1, 3, 6], 7).unwrap();
        let c = counts(&b, &Tier::new(3), 100_000);
        for (got, want) in c.iter().zip([10_000.0, 30_000.0, 60_000.0]) {
            assert!((*got as f64 - want).abs() / 100_000.0 < 0.01, "{c:?}");
        }
    }

    #[test]
    fn unseeded_draws_are_per_thread_and_still_weighted() {
        let b = Balancer::new(Strategy::Random, vec![1, 3, 6]).unwrap();
        let loads: Vec<std::sync::Arc<Load>> = (0..3)
            .map(|_| std::sync::Arc::new(Load::default()))
            .collect();
        let all = Shared(&loads);
        let per_thread: Vec<Vec<usize>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let mut c = vec![0; 3];
                        for _ in 0..25_000 {
                            c[b.pick(&all).unwrap()] += 1;
                        }
                        c
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total: Vec<usize> = (0..3)
            .map(|i| per_thread.iter().map(|c| c[i]).sum())
            .collect();
        for (got, want) in total.iter().zip([20_000.0, 60_000.0, 120_000.0]) {
            assert!((*got as f64 - want).abs() / 200_000.0 < 0.01, "{total:?}");
        }
        assert!(
            per_thread.windows(2).any(|w| w[0] != w[1]),
            "threads drew the same sequence: {per_thread:?}"
        );
    }

    #[test]
    fn every_strategy_steps_around_refusers_and_gives_up_when_all_refuse() {
        for s in Strategy::ALL {
            let t = Tier::new(5);
            let b = Balancer::seeded(s, vec![1, 2, 3, 4, 5], 3).unwrap();
            t.up.set(0b10010);
            for _ in 0..200 {
                let i = b.pick(&t).unwrap();
                assert!(i == 1 || i == 4, "{s}: {i}");
            }
            t.up.set(0);
            assert_eq!(b.pick(&t), None, "{s}");
        }
    }

    #[test]
    fn least_in_flight_takes_the_idlest_per_weight() {
        let t = Tier::new(3);
        let b = Balancer::new(Strategy::LeastInFlight, vec![1, 1, 1]).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _g = rt.enter();
        let loads: Vec<std::sync::Arc<Load>> = (0..3)
            .map(|_| std::sync::Arc::new(Load::default()))
            .collect();
        let c = Shared(&loads);
        let mut held = Vec::new();
        for _ in 0..30 {
            let i = b.pick(&c).unwrap();
            held.push(loads[i].start(false));
            let counts: Vec<u32> = loads.iter().map(|l| l.in_flight()).collect();
            let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(hi - lo <= 1, "{counts:?}");
        }
        drop(held);
        assert!(loads.iter().all(|l| l.in_flight() == 0));
        drop(t);
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_avoids_a_slow_provider() {
        let t = Tier::new(3);
        let now = Instant::now();
        t.loads[0]
            .latency()
            .observe(std::time::Duration::from_secs(5), now);
        t.loads[1]
            .latency()
            .observe(std::time::Duration::from_millis(300), now);
        t.loads[2]
            .latency()
            .observe(std::time::Duration::from_millis(300), now);
        let b = Balancer::seeded(Strategy::PeakEwma, vec![1, 1, 1], 11).unwrap();
        let c = counts(&b, &t, 3000);
        // The slow one wins only when drawn twice, which p2c never does.
        assert_eq!(c[0], 0, "{c:?}");
    }

    #[test]
    fn most_headroom_prefers_room() {
        let mut t = Tier::new(3);
        t.rooms = vec![Some(0.2), Some(0.9), None];
        let b = Balancer::new(Strategy::MostHeadroom, vec![1, 1, 1]).unwrap();
        // No limiter counts as all room.
        assert_eq!(counts(&b, &t, 10), [0, 0, 10]);
        t.up.set(0b011);
        assert_eq!(counts(&b, &t, 10), [0, 10, 0]);
    }

    #[test]
    fn bad_weights_are_refused_with_their_place() {
        let e = Balancer::new(Strategy::RoundRobin, vec![1, 0, 5000]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("weights[1]") && text.contains("weights[2]"),
            "{text}"
        );
        assert!(Balancer::new(Strategy::RoundRobin, vec![1; 65]).is_err());
        assert!(Balancer::new(Strategy::RoundRobin, vec![]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn picks_are_always_eligible(
            weights in proptest::collection::vec(1u32..20, 1..12),
            up in proptest::num::u64::ANY,
            strategy in 0usize..5,
            seed in proptest::num::u64::ANY,
        ) {
            let n = weights.len();
            let t = Tier::new(n);
            t.up.set(up & full(n));
            let b = Balancer::seeded(Strategy::ALL[strategy], weights, seed).unwrap();
            for _ in 0..20 {
                match b.pick(&t) {
                    Some(i) => proptest::prop_assert!(t.eligible(i)),
                    None => proptest::prop_assert_eq!(t.up.get(), 0),
                }
            }
        }

        #[test]
        fn round_robin_shares_are_exact_per_round(weights in proptest::collection::vec(1u32..30, 1..10)) {
            let n = weights.len();
            let b = Balancer::new(Strategy::RoundRobin, weights.clone()).unwrap();
            let g = weights.iter().copied().fold(0, gcd);
            let round: u32 = weights.iter().map(|w| w / g).sum();
            let c = counts(&b, &Tier::new(n), round as usize * 3);
            for (got, w) in c.iter().zip(&weights) {
                proptest::prop_assert_eq!(*got as u32, 3 * w / g);
            }
        }
    }
}
