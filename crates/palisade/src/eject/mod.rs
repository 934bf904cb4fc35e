//! Outlier ejection within tiers: a provider that does much worse than the
//! others of its tier (a lower success rate, or a latency several times
//! theirs) is ejected for a while, though its breaker would not open: it
//! answers the admission view as refusing (`Ejected`), so the tier's
//! balancer and the fallback chain skip it.
//!
//! Every `interval`, for each tier of two or more, each provider with at
//! least `min_requests` calls since the last judgement is held against its
//! tier mates': ejected when its success rate is below the mean of theirs
//! by more than `success_rate_gap`, or its latency is above
//! `latency_factor` × the median of theirs (latency as the router measures
//! it: the balancer's peak-EWMA estimate in a `peak_ewma` tier, else the
//! median of the provider's latency window when percentile hedging records
//! it; without either, only success rates are judged). An ejection lasts
//! `base_ejection × times ejected` (capped at `max_ejection`; the count
//! goes down by one for each judgement it passes), at most
//! `max_ejection_percent` of a tier is ejected at once (at least one
//! provider), and when fewer than `panic_threshold` percent of a tier are
//! left, ejection is ignored for that tier: traffic spreads over all of it
//! (Envoy's panic mode).

mod section;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use palisade_core::{
    Admission, ConfigError, HealthStatus, Inspect, Inspection, ProviderId, Refusing, RejectReason,
    Sample,
};
use serde::Serialize;
use tokio::time::Instant;

pub use self::section::OutlierSection;
use crate::registry::Registry;

/// One provider's ejection state: the admission view that refuses while it
/// is ejected (and its tier is not panicking). Cloning shares it.
#[derive(Debug, Clone)]
pub struct Ejection {
    inner: Arc<State>,
}

#[derive(Debug)]
struct State {
    provider: ProviderId,
    epoch: Instant,
    /// Ejected until (ns since `epoch`); 0: not ejected.
    until: AtomicU64,
    /// The ejection multiplier: times ejected, less judgements passed since.
    times: AtomicU32,
    /// Ejections in all.
    total: AtomicU64,
    /// Its tier has too few providers left: ejection is ignored.
    panic: AtomicBool,
}

/// An ejection's state, for `/health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EjectionSnapshot {
    /// The provider.
    pub provider: ProviderId,
    /// Whether it is ejected now (and its tier is not panicking).
    pub ejected: bool,
    /// Until the ejection ends, in ms (0 when not ejected).
    pub remaining_ms: u64,
    /// The multiplier of the next ejection's length.
    pub multiplier: u32,
    /// Times ejected in all.
    pub times_ejected: u64,
    /// Whether its tier is in panic mode (ejection ignored).
    pub tier_panicking: bool,
}

impl Ejection {
    /// Not ejected.
    pub fn new(provider: ProviderId) -> Self {
        Ejection {
            inner: Arc::new(State {
                provider,
                epoch: Instant::now(),
                until: AtomicU64::new(0),
                times: AtomicU32::new(0),
                total: AtomicU64::new(0),
                panic: AtomicBool::new(false),
            }),
        }
    }

    fn now(&self) -> u64 {
        self.inner.epoch.elapsed().as_nanos() as u64
    }

    /// Time left in the ejection, if ejected now (whatever the tier's
    /// panic).
    fn remaining(&self) -> Option<Duration> {
        let until = self.inner.until.load(Ordering::Acquire);
        if until == 0 {
            return None;
        }
        let now = self.now();
        (now < until).then(|| Duration::from_nanos(until - now))
    }

    /// Ejects it for `base × multiplier` (capped at `max`), the multiplier
    /// counting this one.
    fn eject(&self, base: Duration, max: Duration) -> Duration {
        let times = self
            .inner
            .times
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        self.inner.total.fetch_add(1, Ordering::Relaxed);
        let length = base.saturating_mul(times).min(max);
        let until = self.now().saturating_add(length.as_nanos() as u64).max(1);
        self.inner.until.store(until, Ordering::Release);
        length
    }

    /// A judgement passed: the next ejection is one step shorter.
    fn passed(&self) {
        let _ = self
            .inner
            .times
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(1));
    }

    /// The numbers now.
    pub fn snapshot(&self) -> EjectionSnapshot {
        let remaining = self.remaining();
        let panic = self.inner.panic.load(Ordering::Acquire);
        EjectionSnapshot {
            provider: self.inner.provider.clone(),
            ejected: remaining.is_some() && !panic,
            remaining_ms: remaining.map_or(0, |d| d.as_millis() as u64),
            multiplier: self.inner.times.load(Ordering::Acquire),
            times_ejected: self.inner.total.load(Ordering::Relaxed),
            tier_panicking: panic,
        }
    }
}

/// Refusing while ejected, unless its tier is panicking.
impl Admission for Ejection {
    #[inline]
    fn refusing(&self) -> Option<Refusing> {
        if self.inner.until.load(Ordering::Acquire) == 0 {
            return None;
        }
        let left = self.remaining()?;
        if self.inner.panic.load(Ordering::Acquire) {
            return None;
        }
        Some(Refusing {
            reason: RejectReason::Ejected,
            retry_in: Some(left),
        })
    }
}

/// Warning while ejected, Healthy otherwise.
impl Inspect for Ejection {
    fn inspect(&self) -> Inspection {
        let m = self.snapshot();
        let (status, notes) = if m.ejected {
            (
                HealthStatus::Warning,
                vec![format!(
                    "ejected from its tier for {:.1}s more: it did much worse than its tier mates",
                    m.remaining_ms as f64 / 1000.0
                )],
            )
        } else {
            (HealthStatus::Healthy, Vec::new())
        };
        Inspection {
            layer: "outlier",
            status,
            notes,
            samples: vec![
                Sample::gauge(
                    "palisade_outlier_ejected",
                    "Whether the provider is ejected from its tier (1) or not (0).",
                    if m.ejected { 1.0 } else { 0.0 },
                ),
                Sample::counter(
                    "palisade_outlier_ejections_total",
                    "Times the provider was ejected from its tier.",
                    m.times_ejected as f64,
                ),
            ],
            detail: serde_json::to_value(&m).unwrap_or_default(),
        }
    }
}

/// One provider as judged: its calls and successes since the last
/// judgement, and its latency estimate.
#[derive(Debug, Clone, Copy)]
struct Judged {
    calls: u64,
    success_rate: f64,
    latency_ns: Option<f64>,
}

/// Why a provider is an outlier, and by how much (the larger, the worse).
fn outlier(me: &Judged, mates: &[Judged], s: &OutlierSection) -> Option<(f64, &'static str)> {
    let judged: Vec<&Judged> = mates.iter().filter(|m| m.calls >= s.min_requests).collect();
    if me.calls < s.min_requests || judged.is_empty() {
        return None;
    }
    let mean = judged.iter().map(|m| m.success_rate).sum::<f64>() / judged.len() as f64;
    let gap = mean - me.success_rate;
    if gap > s.success_rate_gap {
        return Some((gap, "success rate"));
    }
    if s.latency_factor > 0.0 {
        let mut lat: Vec<f64> = judged.iter().filter_map(|m| m.latency_ns).collect();
        if let (Some(mine), false) = (me.latency_ns, lat.is_empty()) {
            lat.sort_by(f64::total_cmp);
            let median = lat[lat.len() / 2];
            if median > 0.0 && mine > s.latency_factor * median {
                return Some((mine / median / s.latency_factor, "latency"));
            }
        }
    }
    None
}

/// Judges the tiers of `registry` every `section.interval_ms` until the
/// registry is dropped (or the returned handle is told to stop).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::sync::Arc;
/// use palisade::eject::{OutlierDetection, OutlierSection};
/// use palisade::{Config, Registry};
/// use palisade_core::{BoxError, HttpClassifier};
/// use tower::service_fn;
///
/// let cfg = Config::from_toml(r#"
///     [router]
///     tiers = [["a", "b", "c"]]
///     [providers.a]
///     [providers.b]
///     [providers.c]
/// "#).unwrap();
/// let registry = Arc::new(Registry::from_config(&cfg, HttpClassifier::new(), |_| {
///     service_fn(|_: http::Request<String>| async { Ok::<_, BoxError>(http::Response::new(String::new())) })
/// }).unwrap());
/// let detection = OutlierDetection::spawn(&registry, OutlierSection::default()).unwrap();
/// assert!(registry.get("a").unwrap().ejection.snapshot().times_ejected == 0);
/// detection.stop();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct OutlierDetection {
    stopped: Arc<AtomicBool>,
}

impl OutlierDetection {
    /// Starts judging `registry`'s tiers; the section is checked first.
    pub fn spawn<S, C, M>(
        registry: &Arc<Registry<S, C, M>>,
        section: OutlierSection,
    ) -> Result<OutlierDetection, ConfigError>
    where
        S: Send + Sync + 'static,
        C: Send + Sync + 'static,
        M: Send + Sync + 'static,
    {
        section.check()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::invalid(
                "outlier",
                "outlier detection runs in the background: start it within a tokio runtime",
            ));
        }
        let stopped = Arc::new(AtomicBool::new(false));
        tokio::spawn(judge(Arc::downgrade(registry), section, stopped.clone()));
        Ok(OutlierDetection { stopped })
    }

    /// Stops judging (ejections in force run out as set).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }
}

async fn judge<S, C, M>(
    registry: Weak<Registry<S, C, M>>,
    s: OutlierSection,
    stopped: Arc<AtomicBool>,
) {
    let base = Duration::from_millis(s.base_ejection_ms);
    let max = Duration::from_millis(s.max_ejection_ms);
    // Each provider's (calls, successes) at the last judgement.
    let mut last: HashMap<ProviderId, (u64, u64)> = HashMap::new();
    loop {
        tokio::time::sleep(s.interval()).await;
        if stopped.load(Ordering::Acquire) {
            return;
        }
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut seen = HashMap::new();
        for (ids, _) in registry.tiers() {
            let tier: Vec<_> = ids
                .iter()
                .filter_map(|id| registry.get(id.as_str()))
                .collect();
            if tier.len() < 2 {
                continue;
            }
            let judged: Vec<Judged> = tier
                .iter()
                .map(|p| {
                    let (calls, successes) = p.handles.breaker.as_ref().map_or((0, 0), |b| {
                        let snap = b.snapshot();
                        (snap.successes + snap.failures, snap.successes)
                    });
                    seen.insert(p.id.clone(), (calls, successes));
                    let (c0, s0) = last.get(&p.id).copied().unwrap_or((0, 0));
                    let (dc, ds) = (calls.saturating_sub(c0), successes.saturating_sub(s0));
                    // Latency as the router measures it: the balancer's
                    // peak-EWMA estimate (peak_ewma tiers), else the median
                    // of the latency window (percentile hedging).
                    let est = p.load.latency();
                    let latency_ns = if est.observed() {
                        Some(est.estimate_ns(now))
                    } else {
                        p.latency
                            .percentile_at(0.5, s.min_requests, now)
                            .map(|d| d.as_nanos() as f64)
                    };
                    Judged {
                        calls: dc,
                        success_rate: if dc == 0 { 1.0 } else { ds as f64 / dc as f64 },
                        latency_ns,
                    }
                })
                .collect();
            let cap = ((tier.len() as u32 * s.max_ejection_percent) / 100).max(1) as usize;
            let mut ejected = tier
                .iter()
                .filter(|p| p.ejection.remaining().is_some())
                .count();
            // The worst first, while the cap allows.
            let mut outliers: Vec<(usize, f64, &'static str)> = Vec::new();
            for (i, me) in judged.iter().enumerate() {
                if tier[i].ejection.remaining().is_some() {
                    continue;
                }
                let mates: Vec<Judged> = judged
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, m)| *m)
                    .collect();
                match outlier(me, &mates, &s) {
                    Some((by, why)) => outliers.push((i, by, why)),
                    None if me.calls >= s.min_requests => tier[i].ejection.passed(),
                    None => {}
                }
            }
            outliers.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (i, _, why) in outliers {
                if ejected >= cap {
                    break;
                }
                let p = &tier[i];
                let length = p.ejection.eject(base, max);
                ejected += 1;
                tracing::warn!(
                    provider = p.id.as_str(),
                    by = why,
                    success_rate = judged[i].success_rate,
                    calls = judged[i].calls,
                    ejected_for_ms = length.as_millis() as u64,
                    "outlier ejected from its tier"
                );
            }
            // Panic mode: too few left, ejection ignored for the tier.
            let left = tier.len() - ejected;
            let panic = (left as u64) * 100 < u64::from(s.panic_threshold) * tier.len() as u64;
            for p in &tier {
                if p.ejection.inner.panic.swap(panic, Ordering::AcqRel) != panic && panic {
                    tracing::warn!(
                        provider = p.id.as_str(),
                        "too few providers left in the tier: ejection ignored (panic mode)"
                    );
                }
            }
        }
        last = seen;
    }
}
