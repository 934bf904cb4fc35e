//! Adaptive concurrency: a limit that follows observed latency, after the
//! TCP Vegas idea as Netflix's concurrency-limits applies it to services.
//!
//! Every completed call reports its round-trip time. The smallest RTT seen
//! stands for the provider's unloaded latency; the excess of the current
//! RTT over it estimates how many calls are queueing at the provider:
//! `queue = limit × (1 − rtt_noload / rtt)`. A short queue means there is
//! room (grow), a long one means the provider is saturating (shrink),
//! and a failed call shrinks the limit at once. The limit stays within the
//! configured bounds and is applied with the bulkhead's runtime resize, so
//! calls in flight are never disturbed.
//!
//! The unloaded latency is re-measured every `probe_interval` samples (the
//! minimum is forgotten and found again), so a provider that got slower for
//! good does not leave the limiter believing in a latency it will never see
//! again.

use std::sync::Mutex;
use std::time::Duration;

/// Settings for an adaptive limit. Pass to
/// [`Builder::adaptive`](crate::Builder::adaptive).
///
/// ```
/// use palisade_bulkhead::{AdaptiveLimit, BulkheadLayer};
///
/// let layer = BulkheadLayer::builder()
///     .max_concurrent(20) // where the limit starts
///     .adaptive(AdaptiveLimit::vegas(4, 200))
///     .build()
///     .unwrap();
/// assert_eq!(layer.handle().snapshot().max_concurrent, 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveLimit {
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) smoothing: f64,
    pub(crate) probe_interval: u64,
}

impl AdaptiveLimit {
    /// A Vegas-style limit that moves within `min..=max`. The bulkhead's
    /// `max_concurrent` is where it starts.
    pub fn vegas(min: usize, max: usize) -> Self {
        AdaptiveLimit {
            min,
            max,
            smoothing: 1.0,
            probe_interval: 1000,
        }
    }

    /// How much of each new estimate is taken (1.0 = all of it, the
    /// default; smaller values move the limit more calmly).
    pub fn smoothing(mut self, factor: f64) -> Self {
        self.smoothing = factor;
        self
    }

    /// After how many samples the unloaded latency is measured afresh
    /// (default 1000).
    pub fn probe_interval(mut self, samples: u64) -> Self {
        self.probe_interval = samples;
        self
    }
}

#[derive(Debug)]
struct VegasState {
    estimate: f64,
    rtt_noload: Option<Duration>,
    samples: u64,
}

/// The limiter's state. Samples are folded in under a `try_lock`: a sample
/// that finds another being folded in is skipped, so no call ever waits for
/// the limiter.
#[derive(Debug)]
pub(crate) struct Vegas {
    cfg: AdaptiveLimit,
    state: Mutex<VegasState>,
}

fn log10(limit: f64) -> f64 {
    limit.log10().max(1.0)
}

impl Vegas {
    pub(crate) fn new(cfg: AdaptiveLimit, initial: usize) -> Self {
        Vegas {
            cfg,
            state: Mutex::new(VegasState {
                estimate: initial.clamp(cfg.min, cfg.max) as f64,
                rtt_noload: None,
                samples: 0,
            }),
        }
    }

    pub(crate) fn bounds(&self) -> (usize, usize) {
        (self.cfg.min, self.cfg.max)
    }

    /// Restarts the estimate from `limit` (an operator's resize).
    pub(crate) fn reset_to(&self, limit: usize) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.estimate = limit.clamp(self.cfg.min, self.cfg.max) as f64;
    }

    /// Folds in one call's round trip; returns the new limit when it
    /// changed.
    pub(crate) fn sample(&self, rtt: Duration, in_flight: usize, failed: bool) -> Option<usize> {
        let Ok(mut st) = self.state.try_lock() else {
            return None;
        };
        st.samples += 1;
        if st.samples % self.cfg.probe_interval == 0 {
            st.rtt_noload = None;
        }
        let old = st.estimate;
        let noload = match st.rtt_noload {
            Some(n) if rtt >= n || failed => n,
            _ => {
                // A new minimum: the provider's unloaded latency.
                if !failed && !rtt.is_zero() {
                    st.rtt_noload = Some(rtt);
                }
                return None;
            }
        };
        let target = if failed {
            old - log10(old)
        } else if (in_flight as f64) * 2.0 < old {
            // The application is not using the limit; no evidence either
            // way.
            return None;
        } else {
            let ratio = noload.as_secs_f64() / rtt.as_secs_f64().max(f64::MIN_POSITIVE);
            let queue = (old * (1.0 - ratio)).ceil();
            let step = log10(old);
            if queue <= step {
                old + 6.0 * step
            } else if queue < 3.0 * step {
                old + step
            } else if queue > 6.0 * step {
                old - step
            } else {
                return None;
            }
        };
        let target = target.clamp(self.cfg.min as f64, self.cfg.max as f64);
        st.estimate = (1.0 - self.cfg.smoothing) * old + self.cfg.smoothing * target;
        let (before, after) = (old as usize, st.estimate as usize);
        (before != after).then_some(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grows_while_latency_stays_at_the_floor() {
        let v = Vegas::new(AdaptiveLimit::vegas(1, 100), 10);
        assert_eq!(
            v.sample(100 * MS, 10, false),
            None,
            "first sample sets the floor"
        );
        let grown = v.sample(100 * MS, 10, false).expect("no queue: grow");
        assert_eq!(grown, 16, "10 + 6 × max(1, log10 10)");
    }

    #[test]
    fn shrinks_when_latency_climbs_and_on_failure() {
        let v = Vegas::new(AdaptiveLimit::vegas(1, 100), 50);
        v.sample(100 * MS, 50, false);
        // rtt 4× the floor: queue = 50 × 0.75 = 38 > 6 × log10(50).
        let shrunk = v.sample(400 * MS, 50, false).expect("long queue: shrink");
        assert!(shrunk < 50, "{shrunk}");
        let after_fail = v.sample(100 * MS, 50, true).expect("failure: shrink");
        assert!(after_fail < shrunk);
    }

    #[test]
    fn idle_application_leaves_the_limit_alone_and_bounds_hold() {
        let v = Vegas::new(AdaptiveLimit::vegas(5, 12), 10);
        v.sample(100 * MS, 1, false);
        assert_eq!(v.sample(100 * MS, 1, false), None, "1 in flight of 10");
        assert_eq!(v.sample(100 * MS, 10, false), Some(12), "capped at max");
        for _ in 0..20 {
            v.sample(10_000 * MS, 12, true);
        }
        assert_eq!(v.state.lock().unwrap().estimate, 5.0, "floored at min");
    }
}
