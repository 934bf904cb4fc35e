//! Active health checks: a provider probed in the background, so its
//! breaker learns it is down before a user's call fails, and learns it is
//! back without waiting out its open period.
//!
//! A check is any tower service and a request to send it (for an
//! OpenAI-style provider: `GET /v1/models` or a one-token completion, sent
//! straight to the provider, not through its stack, so checks are never
//! counted as user traffic). Every `interval` (± `jitter`, so replicas do
//! not check in step), while:
//!
//! - **open**: a check is sent; `healthy_threshold` passes in a row move
//!   the breaker to half-open at once (its probes, real calls, then close
//!   it as usual);
//! - **closed**: a check is sent only if user traffic since the last one
//!   did not already show the provider healthy (calls succeeded, none
//!   failed): checks cost at most one call per interval, and none while
//!   traffic flows well; `unhealthy_threshold` failures in a row open the
//!   breaker;
//! - half-open, forced open or disabled: nothing is sent.
//!
//! The task holds the breaker weakly and ends when the provider is gone
//! (or [`CheckHandle::stop`]).

mod section;
mod start;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use palisade_breaker::{BreakerHandle, WeakBreakerHandle};
use palisade_core::{
    BoxError, CircuitState, Classify, ErrorClassifier, HealthStatus, Inspect, Inspection, Outcome,
    ProviderId, Sample,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tower::{Service, ServiceExt};

pub use self::section::{HealthCheckSection, HealthCheckSettings};

/// A health check waiting to be started: the settings, the service checked
/// and the request it is sent.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade::check::{HealthCheck, HealthCheckSettings};
/// use palisade_breaker::CircuitBreakerLayer;
/// use palisade_core::{BoxError, CircuitState};
/// use std::time::Duration;
/// use tower::service_fn;
///
/// let breaker = CircuitBreakerLayer::builder().provider("openai").build().unwrap();
/// let handle = breaker.handle();
/// let settings = HealthCheckSettings { interval_ms: 1_000, unhealthy_threshold: 2, ..Default::default() };
/// // The provider is down: every check fails.
/// let probe = service_fn(|()| async { Err::<(), BoxError>("connection refused".into()) });
/// let check = HealthCheck::new(settings, probe, || ()).spawn(&handle).unwrap();
/// tokio::time::sleep(Duration::from_millis(2_200)).await;
/// assert_eq!(handle.state(), CircuitState::Open, "opened by two failed checks");
/// assert_eq!(check.snapshot().failed, 2);
/// # }
/// ```
pub struct HealthCheck<S, R, C = ErrorClassifier> {
    settings: HealthCheckSettings,
    probe: S,
    request: Arc<dyn Fn() -> R + Send + Sync>,
    classifier: C,
    seed: Option<u64>,
}

impl<S, R, C> fmt::Debug for HealthCheck<S, R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthCheck")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S, R> HealthCheck<S, R, ErrorClassifier> {
    /// Checks by sending `request()` to `probe`; an `Ok` answer passes
    /// (give a [`classifier`](Self::classifier) to judge answers).
    pub fn new(
        settings: HealthCheckSettings,
        probe: S,
        request: impl Fn() -> R + Send + Sync + 'static,
    ) -> Self {
        HealthCheck {
            settings,
            probe,
            request: Arc::new(request),
            classifier: ErrorClassifier,
            seed: None,
        }
    }
}

impl<S, R, C> HealthCheck<S, R, C> {
    /// Judges answers with `classifier` (an HTTP 503 is a failed check with
    /// [`HttpClassifier`](palisade_core::HttpClassifier)).
    pub fn classifier<C2>(self, classifier: C2) -> HealthCheck<S, R, C2> {
        HealthCheck {
            settings: self.settings,
            probe: self.probe,
            request: self.request,
            classifier,
            seed: self.seed,
        }
    }

    /// Seeds the jitter, for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

impl<S, R, C> HealthCheck<S, R, C>
where
    S: Service<R> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send,
    R: Send + 'static,
    C: Classify<S::Response, BoxError> + Send + 'static,
{
    /// Starts checking for `breaker`, on the current tokio runtime; the
    /// settings are checked first (every problem named).
    pub fn spawn(self, breaker: &BreakerHandle) -> Result<CheckHandle, palisade_core::ConfigError> {
        self.settings.check()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(palisade_core::ConfigError::invalid(
                "health_check",
                "checks run in the background: start them within a tokio runtime",
            ));
        }
        let shared = Arc::new(CheckShared {
            provider: breaker.provider().cloned(),
            interval_ms: self.settings.interval_ms,
            sent: AtomicU64::new(0),
            passed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            last: AtomicU8::new(LAST_NONE),
            stopped: AtomicBool::new(false),
        });
        let rng = match self.seed {
            Some(s) => SmallRng::seed_from_u64(s),
            None => SmallRng::from_os_rng(),
        };
        tokio::spawn(run(self, breaker.downgrade(), shared.clone(), rng));
        Ok(CheckHandle { shared })
    }
}

const LAST_NONE: u8 = 0;
const LAST_PASSED: u8 = 1;
const LAST_FAILED: u8 = 2;

#[derive(Debug)]
struct CheckShared {
    provider: Option<ProviderId>,
    interval_ms: u64,
    sent: AtomicU64,
    passed: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    last: AtomicU8,
    stopped: AtomicBool,
}

/// A running health check's counts and switch. Cloning shares it; the check
/// runs until its provider's breaker is dropped or [`stop`](Self::stop).
#[derive(Debug, Clone)]
pub struct CheckHandle {
    shared: Arc<CheckShared>,
}

/// A health check's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckSnapshot {
    /// The provider checked, when its breaker names it.
    pub provider: Option<ProviderId>,
    /// Time between checks, in ms.
    pub interval_ms: u64,
    /// Checks sent.
    pub sent: u64,
    /// Checks passed.
    pub passed: u64,
    /// Checks failed (an error, a failed answer, or no answer in time).
    pub failed: u64,
    /// Checks not sent: traffic had just shown the provider healthy, or
    /// the breaker was half-open, forced open or disabled.
    pub skipped: u64,
    /// The last check's result: `passed`, `failed` or `none` yet.
    pub last: &'static str,
}

impl CheckHandle {
    /// The numbers now.
    pub fn snapshot(&self) -> CheckSnapshot {
        let s = &self.shared;
        CheckSnapshot {
            provider: s.provider.clone(),
            interval_ms: s.interval_ms,
            sent: s.sent.load(Ordering::Relaxed),
            passed: s.passed.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            skipped: s.skipped.load(Ordering::Relaxed),
            last: match s.last.load(Ordering::Relaxed) {
                LAST_PASSED => "passed",
                LAST_FAILED => "failed",
                _ => "none",
            },
        }
    }

    /// Stops checking (at the next interval).
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::Release);
    }
}

/// Warning while the last check failed, Healthy otherwise.
impl Inspect for CheckHandle {
    fn inspect(&self) -> Inspection {
        let m = self.snapshot();
        let (status, notes) = if m.last == "failed" {
            (
                HealthStatus::Warning,
                vec![
                    "the last health check failed: the provider may be down before users notice"
                        .to_string(),
                ],
            )
        } else {
            (HealthStatus::Healthy, Vec::new())
        };
        Inspection {
            layer: "health_check",
            status,
            notes,
            samples: vec![
                Sample::counter(
                    "palisade_check_sent_total",
                    "Health checks sent.",
                    m.sent as f64,
                ),
                Sample::counter(
                    "palisade_check_failed_total",
                    "Health checks failed.",
                    m.failed as f64,
                ),
            ],
            detail: serde_json::to_value(&m).unwrap_or_default(),
        }
    }
}

async fn run<S, R, C>(
    check: HealthCheck<S, R, C>,
    breaker: WeakBreakerHandle,
    shared: Arc<CheckShared>,
    mut rng: SmallRng,
) where
    S: Service<R>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
{
    let HealthCheck {
        settings,
        mut probe,
        request,
        classifier,
        ..
    } = check;
    let (mut passes, mut failures) = (0u32, 0u32);
    let mut traffic: Option<(u64, u64)> = None;
    loop {
        let factor = 1.0 + settings.jitter * (rng.random::<f64>() * 2.0 - 1.0);
        tokio::time::sleep(settings.interval().mul_f64(factor)).await;
        if shared.stopped.load(Ordering::Acquire) {
            return;
        }
        let Some(handle) = breaker.upgrade() else {
            return;
        };
        let snap = handle.snapshot();
        let now = (snap.successes, snap.failures);
        let traffic_healthy = traffic.is_some_and(|(s, f)| now.0 > s && now.1 == f);
        traffic = Some(now);
        let send = match snap.state {
            CircuitState::Open => true,
            CircuitState::Closed => !traffic_healthy,
            _ => false,
        };
        drop(handle);
        if !send {
            if traffic_healthy {
                failures = 0;
            }
            shared.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let answer = tokio::time::timeout(settings.timeout(), async {
            let svc = probe.ready().await.map_err(Into::into)?;
            svc.call(request()).await.map_err(Into::into)
        })
        .await;
        let passed = match &answer {
            Ok(result) => matches!(classifier.classify(result.as_ref()), Outcome::Success),
            Err(_) => false,
        };
        let Some(handle) = breaker.upgrade() else {
            return;
        };
        let provider = shared.provider.as_ref().map(|p| p.as_str()).unwrap_or("-");
        if passed {
            shared.passed.fetch_add(1, Ordering::Relaxed);
            shared.last.store(LAST_PASSED, Ordering::Relaxed);
            passes = passes.saturating_add(1);
            failures = 0;
            if passes >= settings.healthy_threshold && handle.checks_passed(passes) {
                tracing::info!(
                    provider,
                    passes,
                    "health checks passed: probing the provider now"
                );
            }
        } else {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            shared.last.store(LAST_FAILED, Ordering::Relaxed);
            failures = failures.saturating_add(1);
            passes = 0;
            let error = match &answer {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(_)) => "a failed answer".to_string(),
                Err(_) => format!("no answer within {:?}", settings.timeout()),
            };
            tracing::debug!(provider, failures, error, "health check failed");
            if failures >= settings.unhealthy_threshold && handle.checks_failed(failures) {
                tracing::warn!(
                    provider,
                    failures,
                    "health checks failed: the provider's breaker opens"
                );
            }
        }
    }
}
