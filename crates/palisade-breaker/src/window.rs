//! Sliding windows of call outcomes: the last N calls, or the calls of the
//! last T seconds in a ring of time buckets. Lock-free: recording a call is
//! a couple of atomic read-modify-writes on pre-sized storage.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

/// What a window knows about its calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Counts {
    pub(crate) fn failure_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.failures as f64 / self.calls as f64
        }
    }

    pub(crate) fn slow_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.slow as f64 / self.calls as f64
        }
    }
}

const FAIL: u8 = 1;
const SLOW: u8 = 2;
const USED: u8 = 4;

fn flags(failed: bool, slow: bool) -> u8 {
    USED | if failed { FAIL } else { 0 } | if slow { SLOW } else { 0 }
}

/// The last `size` calls. Each call swaps its flags into slot
/// `n % size` and moves the running totals by the difference with the
/// flags it replaced, so totals always equal the slots' sum once writers
/// finish (a racing reset can leave them off transiently; reads clamp).
#[derive(Debug)]
pub(crate) struct CountWindow {
    head: Head,
    calls: AtomicI64,
    failures: AtomicI64,
    slow: AtomicI64,
}

impl CountWindow {
    pub(crate) fn new(size: usize) -> Self {
        CountWindow {
            head: Head {
                next: AtomicU64::new(0),
                magic: (u64::MAX / size.max(1) as u64).wrapping_add(1),
                slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            },
            calls: AtomicI64::new(0),
            failures: AtomicI64::new(0),
            slow: AtomicI64::new(0),
        }
    }

    #[inline]
    pub(crate) fn record(&self, failed: bool, slow: bool) {
        // The cursor is used modulo 2^32 (windows are at most 2^20): once
        // every four billion calls one slot is written out of turn, which a
        // sliding estimate does not notice.
        let h = &self.head;
        let n = h.next.fetch_add(1, Ordering::Relaxed) as u32;
        let slot = &h.slots[fastmod(n, h.magic, h.slots.len() as u32)];
        let new = flags(failed, slow);
        // In a steady state most slots already hold what we would write:
        // leave the cache line shared instead of writing it. A racing
        // writer of the same slot (a full window later) holds a newer call.
        if slot.load(Ordering::Relaxed) == new {
            return;
        }
        let old = slot.swap(new, Ordering::AcqRel);
        if old & USED == 0 {
            self.calls.fetch_add(1, Ordering::AcqRel);
        }
        adjust(&self.failures, old & FAIL != 0, new & FAIL != 0);
        adjust(&self.slow, old & SLOW != 0, new & SLOW != 0);
    }

    /// How many calls were ever recorded (the cursor never goes back, not
    /// even on a reset).
    pub(crate) fn cursor(&self) -> u64 {
        self.head.next.load(Ordering::Acquire)
    }

    pub(crate) fn counts(&self) -> Counts {
        let calls = self.calls.load(Ordering::Acquire).max(0) as u64;
        let clamp = |v: i64| (v.max(0) as u64).min(calls);
        Counts {
            calls,
            failures: clamp(self.failures.load(Ordering::Acquire)),
            slow: clamp(self.slow.load(Ordering::Acquire)),
        }
    }

    pub(crate) fn reset(&self) {
        for s in self.head.slots.iter() {
            let old = s.swap(0, Ordering::AcqRel);
            if old & USED != 0 {
                self.calls.fetch_sub(1, Ordering::AcqRel);
            }
            adjust(&self.failures, old & FAIL != 0, false);
            adjust(&self.slow, old & SLOW != 0, false);
        }
    }
}

/// `n % d`, given `magic = u64::MAX / d + 1` (Lemire, Kaser & Kurz,
/// "Faster remainder by direct computation", 2019).
#[inline]
fn fastmod(n: u32, magic: u64, d: u32) -> usize {
    let low = magic.wrapping_mul(n as u64);
    ((low as u128 * d as u128) >> 64) as usize
}

/// The write cursor, on a cache line of its own together with what every
/// write reads next (the slots and the modulus): the line the cursor's
/// `fetch_add` has just claimed serves the rest of the call.
#[derive(Debug)]
#[repr(C, align(64))]
struct Head {
    next: AtomicU64,
    /// `u64::MAX / size + 1`: turns `n % size` into two multiplications
    /// (Lemire's fastmod) instead of a division on every call.
    magic: u64,
    slots: Box<[AtomicU8]>,
}

fn adjust(counter: &AtomicI64, was: bool, is: bool) {
    match (was, is) {
        (false, true) => {
            counter.fetch_add(1, Ordering::AcqRel);
        }
        (true, false) => {
            counter.fetch_sub(1, Ordering::AcqRel);
        }
        _ => {}
    }
}

/// Bucket epoch marking a bucket being reset by one writer.
const RESETTING: u64 = u64::MAX;
const FIELD_BITS: u32 = 21;
const FIELD_MAX: u64 = (1 << FIELD_BITS) - 1;
/// Headroom kept below the field maximum so concurrent writers that passed
/// the check cannot carry into the next field.
const HEADROOM: u64 = 4096;

/// One time bucket: the period it holds (`epoch`, in bucket widths since the
/// breaker's base instant) and its counts packed in one word
/// (calls | failures << 21 | slow << 42).
#[derive(Debug)]
struct Bucket {
    epoch: AtomicU64,
    packed: AtomicU64,
}

/// The calls of the last `buckets × width`. A call adds to its period's
/// bucket with one `fetch_add`. The first call of a new period claims the
/// bucket with a CAS on its epoch and clears it: two plain stores during
/// which other writers of that bucket briefly spin. That happens once per
/// bucket per period, never per call. A bucket records at most about two
/// million calls per period; calls beyond that are not sampled (the rates
/// stay those of the sample).
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    width_nanos: u64,
}

impl TimeWindow {
    pub(crate) fn new(span: Duration, buckets: usize) -> Self {
        let width_nanos = (span.as_nanos() / buckets as u128).max(1) as u64;
        TimeWindow {
            buckets: (0..buckets)
                .map(|_| Bucket {
                    epoch: AtomicU64::new(RESETTING - 1),
                    packed: AtomicU64::new(0),
                })
                .collect(),
            width_nanos,
        }
    }

    fn period(&self, now_nanos: u64) -> u64 {
        now_nanos / self.width_nanos
    }

    pub(crate) fn record(&self, now_nanos: u64, failed: bool, slow: bool) {
        let k = self.period(now_nanos);
        let delta = 1 | (failed as u64) << FIELD_BITS | (slow as u64) << (2 * FIELD_BITS);
        let b = &self.buckets[(k % self.buckets.len() as u64) as usize];
        let mut spins = 0u32;
        loop {
            let e = b.epoch.load(Ordering::Acquire);
            if e == k || (e > k && e != RESETTING && e != RESETTING - 1) {
                // Our period (or, for a writer delayed past a whole turn of
                // the ring, a later one: count it there rather than lose it).
                if b.packed.load(Ordering::Relaxed) & FIELD_MAX < FIELD_MAX - HEADROOM {
                    b.packed.fetch_add(delta, Ordering::AcqRel);
                }
                return;
            }
            if e == RESETTING {
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            if b.epoch
                .compare_exchange(e, RESETTING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                b.packed.store(delta, Ordering::Release);
                b.epoch.store(k, Ordering::Release);
                return;
            }
        }
    }

    pub(crate) fn counts(&self, now_nanos: u64) -> Counts {
        let k = self.period(now_nanos);
        let oldest = k.saturating_sub(self.buckets.len() as u64 - 1);
        let mut c = Counts::default();
        for b in self.buckets.iter() {
            let e = b.epoch.load(Ordering::Acquire);
            if e == RESETTING || e < oldest || e > k {
                continue;
            }
            let p = b.packed.load(Ordering::Acquire);
            c.calls += p & FIELD_MAX;
            c.failures += (p >> FIELD_BITS) & FIELD_MAX;
            c.slow += (p >> (2 * FIELD_BITS)) & FIELD_MAX;
        }
        c
    }

    pub(crate) fn reset(&self) {
        for b in self.buckets.iter() {
            // Mark every bucket stale; a writer racing with this may land its
            // call in the old period, which reads then ignore.
            let e = b.epoch.load(Ordering::Acquire);
            if e != RESETTING {
                let _ =
                    b.epoch
                        .compare_exchange(e, RESETTING - 1, Ordering::AcqRel, Ordering::Acquire);
            }
        }
    }
}

/// The window a breaker evaluates its rates over.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    #[inline]
    pub(crate) fn record(&self, now_nanos: u64, failed: bool, slow: bool) {
        match self {
            Window::Count(w) => w.record(failed, slow),
            Window::Time(w) => w.record(now_nanos, failed, slow),
        }
    }

    pub(crate) fn counts(&self, now_nanos: u64) -> Counts {
        match self {
            Window::Count(w) => w.counts(),
            Window::Time(w) => w.counts(now_nanos),
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            Window::Count(w) => w.reset(),
            Window::Time(w) => w.reset(),
        }
    }

    pub(crate) fn needs_clock(&self) -> bool {
        matches!(self, Window::Time(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn fastmod_is_the_remainder(n: u32, d in 1u32..=(1 << 20)) {
            let magic = (u64::MAX / d as u64).wrapping_add(1);
            proptest::prop_assert_eq!(fastmod(n, magic, d), (n % d) as usize);
        }
    }
    use proptest::prelude::*;
    use std::sync::Arc;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn count_window_keeps_last_n() {
        let w = CountWindow::new(4);
        for _ in 0..4 {
            w.record(true, false);
        }
        assert_eq!(
            w.counts(),
            Counts {
                calls: 4,
                failures: 4,
                slow: 0
            }
        );
        w.record(false, true);
        w.record(false, false);
        assert_eq!(
            w.counts(),
            Counts {
                calls: 4,
                failures: 2,
                slow: 1
            }
        );
        for _ in 0..4 {
            w.record(false, false);
        }
        assert_eq!(
            w.counts(),
            Counts {
                calls: 4,
                failures: 0,
                slow: 0
            }
        );
        w.reset();
        assert_eq!(w.counts(), Counts::default());
        w.record(true, true);
        assert_eq!(
            w.counts(),
            Counts {
                calls: 1,
                failures: 1,
                slow: 1
            }
        );
    }

    #[test]
    fn time_window_forgets_old_buckets() {
        let w = TimeWindow::new(Duration::from_secs(10), 10);
        w.record(0, true, false);
        w.record(SEC / 2, true, false);
        w.record(5 * SEC, false, true);
        assert_eq!(
            w.counts(5 * SEC),
            Counts {
                calls: 3,
                failures: 2,
                slow: 1
            }
        );
        // bucket 0 is still inside the window at 9.9 s ...
        assert_eq!(w.counts(9 * SEC + SEC / 2).failures, 2);
        // ... and out of it from 10 s on
        assert_eq!(
            w.counts(10 * SEC),
            Counts {
                calls: 1,
                failures: 0,
                slow: 1
            }
        );
        assert_eq!(w.counts(15 * SEC), Counts::default());
        // reuse of a slot for a newer period clears it first
        w.record(10 * SEC, false, false);
        assert_eq!(
            w.counts(10 * SEC),
            Counts {
                calls: 2,
                failures: 0,
                slow: 1
            }
        );
        w.reset();
        assert_eq!(w.counts(10 * SEC), Counts::default());
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let w = Arc::new(TimeWindow::new(Duration::from_secs(3600), 4));
        let c = Arc::new(CountWindow::new(1_000_000));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let w = w.clone();
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        let failed = (i + t) % 3 == 0;
                        w.record(0, failed, i % 5 == 0);
                        c.record(failed, i % 5 == 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let expect_fail: u64 = (0..8u64)
            .map(|t| (0..10_000u64).filter(|i| (i + t) % 3 == 0).count() as u64)
            .sum();
        let tw = w.counts(0);
        assert_eq!(tw.calls, 80_000);
        assert_eq!(tw.failures, expect_fail);
        assert_eq!(tw.slow, 8 * 2_000);
        assert_eq!(c.counts(), tw);
    }

    proptest! {
        /// The count window equals a plain "last N" over the same sequence.
        #[test]
        fn count_window_matches_model(size in 1usize..20, calls in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..100)) {
            let w = CountWindow::new(size);
            for (f, s) in &calls {
                w.record(*f, *s);
            }
            let last: Vec<_> = calls.iter().rev().take(size).collect();
            prop_assert_eq!(w.counts(), Counts {
                calls: last.len() as u64,
                failures: last.iter().filter(|c| c.0).count() as u64,
                slow: last.iter().filter(|c| c.1).count() as u64,
            });
        }

        /// The time window equals "calls whose period is within the last
        /// `buckets` periods" for any sequence of nondecreasing times.
        #[test]
        fn time_window_matches_model(steps in proptest::collection::vec((0u64..3 * SEC, any::<bool>()), 1..80)) {
            let w = TimeWindow::new(Duration::from_secs(10), 5);
            let mut now = 0;
            let mut seen = Vec::new();
            for (dt, f) in steps {
                now += dt;
                w.record(now, f, false);
                seen.push((now, f));
                let k = now / (2 * SEC);
                let live: Vec<_> = seen.iter().filter(|(t, _)| t / (2 * SEC) + 5 > k).collect();
                let c = w.counts(now);
                prop_assert_eq!(c.calls, live.len() as u64);
                prop_assert_eq!(c.failures, live.iter().filter(|x| x.1).count() as u64);
            }
        }
    }
}
