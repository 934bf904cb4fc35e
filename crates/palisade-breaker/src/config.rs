//! The breaker's validated configuration.

use std::time::Duration;

use palisade_core::{Policy, ProviderId};

/// How the breaker's `poll_ready` behaves while it is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadinessMode {
    /// `poll_ready` stays ready (without polling the inner service while
    /// open) and `call` rejects at once. What a fallback chain wants: the
    /// caller learns immediately and moves on. The default.
    #[default]
    FailFast,
    /// `poll_ready` returns `Pending` while the breaker is open and wakes the
    /// task when the open period ends, so a load balancer (tower's
    /// `Balance`) routes around this endpoint, as linkerd's failure accrual
    /// does. A forced-open breaker makes `poll_ready` fail instead of
    /// parking the caller forever.
    LoadBalancer,
}

/// How the breaker judges its half-open probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HalfOpenRule {
    /// Any failed probe re-opens at once; `half_open_successes` successful
    /// probes close it. Up to `half_open_probes` probes are in flight at a
    /// time. The default: a provider that is still failing gets one more
    /// call, not a window's worth.
    #[default]
    AnyFailure,
    /// Resilience4j's rule: exactly `half_open_probes` probe calls are let
    /// through; once all have finished, their failure rate and slow-call
    /// rate are held against the closed state's thresholds
    /// (`failure_rate`, `slow_call_rate`): at or above either, the breaker
    /// re-opens, otherwise it closes. Probes whose outcome is ignored (the
    /// caller's own 4xx) give their place to another probe. A provider
    /// asking for a cooldown (429/503 with a wait) still re-opens at once.
    Rate,
}

/// The window over which failure and slow-call rates are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// The last `n` calls.
    Count(usize),
    /// The calls of the last `span`, kept in `buckets` time buckets (the
    /// window slides by `span / buckets`).
    Time {
        /// How far back calls count.
        span: Duration,
        /// How many buckets the span is split into.
        buckets: usize,
    },
}

pub use palisade_core::ConfigError;
use palisade_core::Problems;

/// Every knob of the breaker. Built and checked by
/// [`CircuitBreakerLayer::builder`](crate::CircuitBreakerLayer::builder).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) provider: Option<ProviderId>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_call_rate: Option<f64>,
    pub(crate) slow_call_threshold: Duration,
    pub(crate) window: WindowKind,
    pub(crate) minimum_calls: u64,
    pub(crate) open_duration: Duration,
    pub(crate) open_multiplier: f64,
    pub(crate) max_open_duration: Duration,
    pub(crate) open_jitter: f64,
    pub(crate) half_open_permitted: u32,
    pub(crate) half_open_successes: u32,
    pub(crate) half_open_max_wait: Option<Duration>,
    pub(crate) half_open_rule: HalfOpenRule,
    pub(crate) cooldown: bool,
    pub(crate) max_cooldown: Duration,
    pub(crate) policy: Policy,
    pub(crate) mode: ReadinessMode,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            provider: None,
            consecutive_failures: Some(5),
            failure_rate: Some(0.5),
            slow_call_rate: None,
            slow_call_threshold: Duration::from_secs(30),
            window: WindowKind::Count(50),
            minimum_calls: 20,
            open_duration: Duration::from_secs(30),
            open_multiplier: 2.0,
            max_open_duration: Duration::from_secs(300),
            open_jitter: 0.1,
            half_open_permitted: 2,
            half_open_successes: 2,
            half_open_max_wait: None,
            half_open_rule: HalfOpenRule::AnyFailure,
            cooldown: true,
            max_cooldown: Duration::from_secs(300),
            policy: Policy::default(),
            mode: ReadinessMode::FailFast,
        }
    }
}

/// Upper bound on probes and windows, so a typo cannot allocate gigabytes.
pub(crate) const MAX_WINDOW: usize = 1 << 20;
const MAX_BUCKETS: usize = 4096;
/// Probe counts are packed into 16 bits of the state word.
pub(crate) const MAX_PROBES: u32 = u16::MAX as u32 - 1;

impl Config {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::new("breaker");
        for (field, v) in [
            ("failure_rate", self.failure_rate),
            ("slow_call_rate", self.slow_call_rate),
        ] {
            if let Some(r) = v.filter(|r| !(*r > 0.0 && *r <= 1.0)) {
                p.add(field, format!("{r} is not within (0, 1]"));
            }
        }
        if self.consecutive_failures == Some(0) {
            p.add(
                "consecutive_failures",
                "0 would trip on no failure; use None to switch the rule off",
            );
        }
        match self.window {
            WindowKind::Count(n) if n == 0 || n > MAX_WINDOW => p.add(
                "count_window",
                format!("{n} is not within 1..={MAX_WINDOW}"),
            ),
            WindowKind::Time { span, buckets } => {
                if buckets == 0 || buckets > MAX_BUCKETS {
                    p.add(
                        "time_window",
                        format!("{buckets} buckets is not within 1..={MAX_BUCKETS}"),
                    );
                } else if span.is_zero() || span.as_nanos() < buckets as u128 {
                    p.add(
                        "time_window",
                        format!("span {span:?} is too short for {buckets} buckets"),
                    );
                }
            }
            _ => {}
        }
        if self.minimum_calls == 0 {
            p.add(
                "minimum_calls",
                "must be at least 1 (a rate over no calls means nothing)",
            );
        }
        if let WindowKind::Count(n) = self.window {
            if self.minimum_calls > n as u64
                && (self.failure_rate.is_some() || self.slow_call_rate.is_some())
            {
                p.add(
                    "minimum_calls",
                    format!(
                        "{} exceeds the count window of {n} calls, so the rate rules could never fire",
                        self.minimum_calls
                    ),
                );
            }
        }
        if self.open_duration.is_zero() {
            p.add("open_duration", "must be longer than zero");
        }
        if !(self.open_multiplier >= 1.0 && self.open_multiplier.is_finite()) {
            p.add(
                "open_backoff",
                format!(
                    "multiplier {} must be finite and at least 1",
                    self.open_multiplier
                ),
            );
        }
        if self.max_open_duration < self.open_duration {
            p.add(
                "open_backoff",
                format!(
                    "max {:?} is shorter than the base open duration {:?}",
                    self.max_open_duration, self.open_duration
                ),
            );
        }
        if !(0.0..1.0).contains(&self.open_jitter) {
            p.add(
                "open_jitter",
                format!("{} is not within [0, 1)", self.open_jitter),
            );
        }
        if self.half_open_permitted == 0 || self.half_open_permitted > MAX_PROBES {
            p.add(
                "half_open_probes",
                format!(
                    "{} is not within 1..={MAX_PROBES}",
                    self.half_open_permitted
                ),
            );
        }
        if self.half_open_successes == 0 || self.half_open_successes > MAX_PROBES {
            p.add(
                "half_open_successes",
                format!(
                    "{} is not within 1..={MAX_PROBES}",
                    self.half_open_successes
                ),
            );
        }
        if self.half_open_max_wait.is_some_and(|d| d.is_zero()) {
            p.add("half_open_max_wait", "must be longer than zero");
        }
        if self.half_open_rule == HalfOpenRule::Rate
            && self.failure_rate.is_none()
            && self.slow_call_rate.is_none()
        {
            p.add(
                "half_open_rule",
                "the rate rule judges probes by failure_rate or slow_call_rate, and both are off",
            );
        }
        if self.consecutive_failures.is_none()
            && self.failure_rate.is_none()
            && self.slow_call_rate.is_none()
            && !self.cooldown
        {
            p.add(
                "rules",
                "every trip rule is off, so the breaker could never open (use a plain service instead)",
            );
        }
        p.finish()
    }
}
