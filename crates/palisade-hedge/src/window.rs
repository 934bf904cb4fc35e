//! [`LatencyWindow`]: recent latencies in a lock-free rotating histogram,
//! read as a percentile.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use palisade_core::STRIPES;
use tokio::time::Instant;

/// Sub-buckets per power of two: latencies are kept to within 1/8 (12.5%).
const SUB: u32 = 8;
const SUB_BITS: u32 = 3;
/// Microsecond values below this are exact.
const LINEAR: u64 = 2 * SUB as u64;
/// Enough buckets for latencies up to 2^40 µs (12 days).
const BUCKETS: usize = LINEAR as usize + (40 - 4) * SUB as usize;
/// How long a cached percentile is reused.
const CACHE_NS: u64 = 50_000_000;

fn bucket(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros(); // >= 4
    let sub = (us >> (octave - SUB_BITS)) & u64::from(SUB - 1);
    let i = LINEAR as usize + (octave as usize - 4) * SUB as usize + sub as usize;
    i.min(BUCKETS - 1)
}

/// The upper bound of a bucket, in µs (a percentile reads as the bound of
/// the bucket it falls in: never below the true value by more than 1/8).
fn bound(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let k = i - LINEAR as usize;
    let octave = (k / SUB as usize) as u32 + 4;
    let sub = (k % SUB as usize) as u64;
    ((u64::from(SUB) + sub + 1) << (octave - SUB_BITS)) - 1
}

/// One thread's share of a generation: its counts and their total, on
/// cache lines no other stripe shares.
#[repr(align(128))]
struct Stripe {
    counts: [AtomicU32; BUCKETS],
    total: AtomicU32,
}

/// One period's samples, striped by thread (palisade-core's [`stripe`]):
/// a record is one uncontended `fetch_add` pair, and a percentile (at most
/// every 50 ms) sums the stripes.
///
/// [`stripe`]: palisade_core::stripe
struct Generation {
    stripes: Box<[Stripe]>,
}

impl Generation {
    fn new() -> Self {
        Generation {
            stripes: (0..STRIPES)
                .map(|_| Stripe {
                    counts: std::array::from_fn(|_| AtomicU32::new(0)),
                    total: AtomicU32::new(0),
                })
                .collect(),
        }
    }

    fn record(&self, bucket: usize) {
        let s = &self.stripes[palisade_core::stripe()];
        s.counts[bucket].fetch_add(1, Ordering::Relaxed);
        s.total.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self, bucket: usize) -> u64 {
        self.stripes
            .iter()
            .map(|s| u64::from(s.counts[bucket].load(Ordering::Relaxed)))
            .sum()
    }

    fn total(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| u64::from(s.total.load(Ordering::Relaxed)))
            .sum()
    }

    fn clear(&self) {
        for s in self.stripes.iter() {
            for c in &s.counts {
                c.store(0, Ordering::Relaxed);
            }
            s.total.store(0, Ordering::Relaxed);
        }
    }
}

/// Recent latencies of one provider (or one service): the last full
/// period and the current one, kept as a histogram of atomic counters
/// (1/8 resolution), rotated by whichever call notices the period is
/// over. Recording is two `fetch_add`s on the recording thread's own stripe;
/// a percentile is cached for 50 ms.
/// tower's `hedge` keeps a rotating `hdrhistogram` behind a mutex; this
/// one takes no lock.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade_hedge::LatencyWindow;
/// use std::time::Duration;
///
/// let w = LatencyWindow::new(Duration::from_secs(30));
/// for ms in 1..=100 {
///     w.record(Duration::from_millis(ms));
/// }
/// let p95 = w.percentile(0.95, 50).unwrap();
/// assert!(p95 >= Duration::from_millis(95) && p95 <= Duration::from_millis(95 * 9 / 8));
/// assert_eq!(w.percentile(0.95, 1000), None, "not enough samples yet");
/// # }
/// ```
pub struct LatencyWindow {
    generations: [Generation; 2],
    current: AtomicUsize,
    epoch: Instant,
    period_ns: u64,
    rotated_at: AtomicU64,
    cached: AtomicU64,
    cached_at: AtomicU64,
    cached_for: AtomicU64,
}

impl fmt::Debug for LatencyWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyWindow")
            .field("period", &Duration::from_nanos(self.period_ns))
            .field("samples", &self.samples())
            .finish()
    }
}

impl LatencyWindow {
    /// A window rotating every `period` (so it holds between one and two
    /// periods of samples).
    pub fn new(period: Duration) -> Self {
        LatencyWindow {
            generations: [Generation::new(), Generation::new()],
            current: AtomicUsize::new(0),
            epoch: Instant::now(),
            period_ns: u64::try_from(period.as_nanos()).unwrap_or(u64::MAX).max(1),
            rotated_at: AtomicU64::new(0),
            cached: AtomicU64::new(0),
            cached_at: AtomicU64::new(0),
            cached_for: AtomicU64::new(u64::MAX),
        }
    }

    fn ns_at(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn rotate(&self, now: u64) {
        let at = self.rotated_at.load(Ordering::Acquire);
        if now.saturating_sub(at) < self.period_ns {
            return;
        }
        if self
            .rotated_at
            .compare_exchange(at, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let cur = self.current.load(Ordering::Acquire);
        let next = 1 - cur;
        // Older than a whole period: the previous generation goes too.
        if now.saturating_sub(at) >= 2 * self.period_ns {
            self.generations[cur].clear();
        }
        self.generations[next].clear();
        self.current.store(next, Ordering::Release);
        self.cached_for.store(u64::MAX, Ordering::Relaxed);
    }

    /// Adds one latency.
    pub fn record(&self, latency: Duration) {
        self.record_at(latency, Instant::now());
    }

    /// Adds one latency, measured at `now`.
    pub fn record_at(&self, latency: Duration, now: Instant) {
        self.rotate(self.ns_at(now));
        let g = &self.generations[self.current.load(Ordering::Acquire)];
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        g.record(bucket(us));
    }

    /// Samples in the window.
    pub fn samples(&self) -> u64 {
        self.generations.iter().map(Generation::total).sum()
    }

    /// The latency below which a share `p` (0 to 1) of the window's
    /// samples fall; `None` with fewer than `min_samples` samples.
    pub fn percentile(&self, p: f64, min_samples: u64) -> Option<Duration> {
        self.percentile_at(p, min_samples, Instant::now())
    }

    /// As [`percentile`](Self::percentile), with the time already read.
    pub fn percentile_at(&self, p: f64, min_samples: u64, now: Instant) -> Option<Duration> {
        let now = self.ns_at(now);
        self.rotate(now);
        // The cache is only ever filled with enough samples, and emptied
        // when the window rotates: a fresh entry needs no count.
        let key = (p.clamp(0.0, 1.0) * 1e6) as u64 ^ (min_samples << 24);
        if self.cached_for.load(Ordering::Acquire) == key
            && now.saturating_sub(self.cached_at.load(Ordering::Relaxed)) < CACHE_NS
        {
            return Some(Duration::from_micros(self.cached.load(Ordering::Relaxed)));
        }
        let total = self.samples();
        if total == 0 || total < min_samples {
            return None;
        }
        let rank = ((p.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        let mut found = BUCKETS - 1;
        for i in 0..BUCKETS {
            seen += self.generations.iter().map(|g| g.count(i)).sum::<u64>();
            if seen >= rank {
                found = i;
                break;
            }
        }
        let us = bound(found);
        self.cached.store(us, Ordering::Relaxed);
        self.cached_at.store(now, Ordering::Relaxed);
        self.cached_for.store(key, Ordering::Release);
        Some(Duration::from_micros(us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotone_and_bounds_hold_their_values() {
        let mut last = 0;
        for us in (0..100_000u64).chain([1 << 30, 1 << 39, u64::MAX]) {
            let b = bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            if b < BUCKETS - 1 {
                assert!(bound(b) >= us, "{us}: {}", bound(b));
                assert!(bound(b) - us <= us / 8 + 1, "{us}: {}", bound(b));
            }
        }
    }

    #[test]
    fn many_threads_recording_at_once_lose_no_sample() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let _g = rt.enter();
        let w = std::sync::Arc::new(LatencyWindow::new(Duration::from_secs(3600)));
        std::thread::scope(|s| {
            for t in 0..16u64 {
                let w = w.clone();
                s.spawn(move || {
                    for i in 0..5_000u64 {
                        // Thread t records 1..=100 ms, 50 times over.
                        w.record(Duration::from_millis(1 + (i + t) % 100));
                    }
                });
            }
        });
        assert_eq!(w.samples(), 80_000);
        let p50 = w.percentile(0.5, 1).unwrap();
        assert!(
            p50 >= Duration::from_millis(50) && p50 <= Duration::from_millis(50 * 9 / 8),
            "{p50:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn old_samples_rotate_out() {
        let w = LatencyWindow::new(Duration::from_secs(10));
        for _ in 0..100 {
            w.record(Duration::from_secs(5));
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..100 {
            w.record(Duration::from_millis(100));
        }
        // Both periods are still in: half slow.
        assert!(w.percentile(0.9, 10).unwrap() >= Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(11)).await;
        w.record(Duration::from_millis(100));
        // The slow period has gone.
        assert_eq!(w.samples(), 101);
        assert!(w.percentile(0.9, 10).unwrap() < Duration::from_millis(120));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(w.percentile(0.5, 1), None, "a long silence empties it");
    }

    proptest::proptest! {
        #[test]
        fn percentiles_are_within_an_eighth(mut xs in proptest::collection::vec(1u64..10_000_000, 1..300), p in 0.01f64..1.0) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            let _g = rt.enter();
            let w = LatencyWindow::new(Duration::from_secs(60));
            for &x in &xs { w.record(Duration::from_micros(x)); }
            xs.sort_unstable();
            let rank = ((p * xs.len() as f64).ceil() as usize).max(1);
            let want = xs[rank - 1];
            let got = w.percentile(p, 1).unwrap().as_micros() as u64;
            proptest::prop_assert!(got >= want && got <= want + want / 8 + 1, "want {} got {}", want, got);
        }
    }
}
