//! The errors palisade layers produce themselves, shared so that every layer
//! (and every user) recognises them the same way.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::ProviderId;

/// The error type palisade layers return: the inner service's own error is
/// passed through unchanged (boxed, never wrapped in a string), and palisade's
/// own errors ([`Rejected`], [`Elapsed`], and each layer's wrappers) sit beside
/// it.
///
/// This is tower's convention (`tower::BoxError`): it lets layers stack in any
/// order without the error type nesting one level per layer, and lets one
/// [`Classify`](crate::Classify) see the same error type at every level. The
/// box is only built on the failure path, and not at all when the inner
/// service already returns a `BoxError` (as every palisade layer does).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The states a circuit breaker can be in.
///
/// Defined here rather than in `palisade-breaker` because the fallback layer,
/// the health report and rejections all speak about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls flow; outcomes are recorded.
    Closed,
    /// Calls fail fast until the open period ends.
    Open,
    /// A limited number of probe calls are let through to test recovery.
    HalfOpen,
    /// Held open by an operator; calls fail fast until reset.
    ForcedOpen,
    /// Switched off by an operator: calls pass, outcomes are still recorded.
    Disabled,
}

impl CircuitState {
    /// The state's name in snake case, as used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
            CircuitState::ForcedOpen => "forced_open",
            CircuitState::Disabled => "disabled",
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a palisade layer refused a call without sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The circuit breaker is open (or forced open), or its half-open probe
    /// slots are all taken.
    CircuitOpen(CircuitState),
    /// The bulkhead has no free slot and its queue is full.
    BulkheadFull,
    /// The call waited in the bulkhead's queue for longer than allowed.
    BulkheadTimeout,
    /// The retry budget has no token left for another attempt.
    BudgetExhausted,
    /// The request's deadline passed (or too little of it remained) before
    /// the call could be started.
    DeadlineExceeded,
    /// No provider is registered to take the call.
    NoProvider,
    /// A rate limit has no room for the call now (a configured quota, or
    /// what the provider's own rate headers said).
    RateLimited,
    /// The provider is ejected from its tier for a while: it did much worse
    /// than its tier mates (outlier detection).
    Ejected,
    /// This process is out of something the call needs (open files,
    /// sockets): the call could not be started, so the provider was never
    /// reached and its state is left alone.
    OutOfResources,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::CircuitOpen(state) => write!(f, "circuit breaker is {state}"),
            RejectReason::BulkheadFull => f.write_str("bulkhead is full"),
            RejectReason::BulkheadTimeout => f.write_str("timed out waiting for a bulkhead slot"),
            RejectReason::BudgetExhausted => f.write_str("retry budget exhausted"),
            RejectReason::DeadlineExceeded => {
                f.write_str("deadline exceeded before the call started")
            }
            RejectReason::NoProvider => f.write_str("no provider is registered"),
            RejectReason::RateLimited => f.write_str("rate limit has no room"),
            RejectReason::Ejected => f.write_str("ejected as an outlier of its tier"),
            RejectReason::OutOfResources => f.write_str("this process is out of resources"),
        }
    }
}

/// A call palisade refused to send: our own fast-fail.
///
/// Every layer that fails fast returns this type (boxed as a [`BoxError`]),
/// so that outer layers and users recognise it with one downcast, and the
/// built-in classifiers map it to
/// [`FailureKind::Rejected`](crate::FailureKind::Rejected): a rejected call
/// never reached the provider, so it is not retried at once and does not
/// count against the provider's breaker, but a fallback chain moves on.
///
/// ```
/// use palisade_core::{BoxError, RejectReason, Rejected, CircuitState};
/// use std::time::Duration;
///
/// let err: BoxError = Rejected::new(RejectReason::CircuitOpen(CircuitState::Open))
///     .with_provider("openai")
///     .with_retry_after(Duration::from_secs(30))
///     .with_detail("5 consecutive failures")
///     .into();
/// let rejected = err.downcast_ref::<Rejected>().unwrap();
/// assert_eq!(rejected.retry_after(), Some(Duration::from_secs(30)));
/// assert_eq!(
///     err.to_string(),
///     "provider openai: circuit breaker is open (5 consecutive failures); retry after 30s"
/// );
/// ```
#[derive(Debug, Clone)]
pub struct Rejected {
    reason: RejectReason,
    provider: Option<ProviderId>,
    retry_after: Option<Duration>,
    detail: Option<std::borrow::Cow<'static, str>>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl PartialEq for Rejected {
    /// Equal when every field is, the [`source`](std::error::Error::source)
    /// compared by identity.
    fn eq(&self, other: &Self) -> bool {
        self.reason == other.reason
            && self.provider == other.provider
            && self.retry_after == other.retry_after
            && self.detail == other.detail
            && match (&self.source, &other.source) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for Rejected {}

impl Rejected {
    /// A rejection for `reason`, with no provider, wait hint or detail yet.
    #[inline]
    pub fn new(reason: RejectReason) -> Self {
        Rejected {
            reason,
            provider: None,
            retry_after: None,
            detail: None,
            source: None,
        }
    }

    /// Names the provider whose protection refused the call.
    #[inline]
    pub fn with_provider(mut self, provider: impl Into<ProviderId>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    /// Names the provider when one is known.
    #[inline]
    pub fn with_provider_opt(mut self, provider: Option<ProviderId>) -> Self {
        self.provider = provider;
        self
    }

    /// Says how long until a call is worth trying again.
    #[inline]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Adds a detail a person can act on (numbers, the rule that fired).
    #[inline]
    pub fn with_detail(mut self, detail: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Keeps the failure that came before the refusal as this error's
    /// [`source`](std::error::Error::source): a retry refused by a breaker
    /// that the earlier attempts opened still says what the provider did.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(Arc::from(source.into()));
        self
    }

    /// Why the call was refused.
    #[inline]
    pub fn reason(&self) -> RejectReason {
        self.reason
    }

    /// Whether the refusal is the request's deadline (too little of it
    /// left to start the call): a timeout to the caller (HTTP 504), not
    /// unavailability.
    #[inline]
    pub fn is_deadline(&self) -> bool {
        self.reason == RejectReason::DeadlineExceeded
    }

    /// The HTTP status a server should answer with when it passes this
    /// refusal on: 504 for the deadline, 429 for a rate limit, 503 for the
    /// rest (open breaker, full bulkhead, exhausted budget, no provider,
    /// this process out of resources).
    ///
    /// ```
    /// use palisade_core::{RejectReason, Rejected};
    ///
    /// assert_eq!(Rejected::new(RejectReason::DeadlineExceeded).http_status(), 504);
    /// assert_eq!(Rejected::new(RejectReason::RateLimited).http_status(), 429);
    /// assert_eq!(Rejected::new(RejectReason::BulkheadFull).http_status(), 503);
    /// ```
    pub fn http_status(&self) -> http::StatusCode {
        match self.reason {
            RejectReason::DeadlineExceeded => http::StatusCode::GATEWAY_TIMEOUT,
            RejectReason::RateLimited => http::StatusCode::TOO_MANY_REQUESTS,
            _ => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The provider whose protection refused the call, when known.
    #[inline]
    pub fn provider(&self) -> Option<&ProviderId> {
        self.provider.as_ref()
    }

    /// How long until a call is worth trying again, when known.
    #[inline]
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The detail, when one was given.
    #[inline]
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.provider {
            write!(f, "provider {p}: ")?;
        }
        write!(f, "{}", self.reason)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        if let Some(after) = self.retry_after {
            write!(f, "; retry after {after:?}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejected {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutScope {
    /// The whole request's deadline, covering every retry and backoff.
    Request,
    /// One attempt's timeout.
    Attempt,
    /// A streamed body's first frame did not arrive in time.
    FirstFrame,
    /// A streamed body went quiet between two frames for too long.
    Idle,
}

impl fmt::Display for TimeoutScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutScope::Request => "request deadline",
            TimeoutScope::Attempt => "attempt timeout",
            TimeoutScope::FirstFrame => "first-frame timeout",
            TimeoutScope::Idle => "idle timeout",
        })
    }
}

/// A palisade timeout fired. Classified as
/// [`FailureKind::Timeout`](crate::FailureKind::Timeout).
///
/// ```
/// use palisade_core::{Elapsed, TimeoutScope};
/// use std::time::Duration;
///
/// let e = Elapsed::new(TimeoutScope::Attempt, Duration::from_secs(10)).with_provider("local");
/// assert_eq!(e.to_string(), "provider local: attempt timeout fired after 10s");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elapsed {
    scope: TimeoutScope,
    after: Duration,
    provider: Option<ProviderId>,
}

impl Elapsed {
    /// A timeout of `scope` that fired after `after`.
    pub fn new(scope: TimeoutScope, after: Duration) -> Self {
        Elapsed {
            scope,
            after,
            provider: None,
        }
    }

    /// Names the provider that was being called.
    pub fn with_provider(mut self, provider: impl Into<ProviderId>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    /// Which timeout fired.
    pub fn scope(&self) -> TimeoutScope {
        self.scope
    }

    /// How long the guarded work had run when the timeout fired.
    pub fn after(&self) -> Duration {
        self.after
    }

    /// The provider that was being called, when known.
    pub fn provider(&self) -> Option<&ProviderId> {
        self.provider.as_ref()
    }

    /// The HTTP status a server should answer with when it passes this
    /// timeout on: 504 Gateway Timeout, whichever scope fired.
    pub fn http_status(&self) -> http::StatusCode {
        http::StatusCode::GATEWAY_TIMEOUT
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.provider {
            write!(f, "provider {p}: ")?;
        }
        write!(f, "{} fired after {:?}", self.scope, self.after)
    }
}

impl std::error::Error for Elapsed {}

/// One refused setting: where it is and what is wrong with it.
///
/// `path` is a dotted key path: a builder names its section and field
/// (`breaker.failure_rate`); the umbrella's config puts the provider in
/// front (`providers.openai.breaker.failure_rate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `providers.openai.breaker.failure_rate`.
    pub path: String,
    /// What is wrong, in words a person can act on.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A configuration refused: by a layer's builder, by a config section, or
/// by the umbrella's and the gateway's config files. One type across the
/// workspace, so a program that builds several layers, or reads a file,
/// handles every refusal alike.
///
/// A refused value lists every problem found at once, each with its path:
///
/// ```
/// use palisade_core::ConfigError;
///
/// let e = ConfigError::invalid("retry.max_attempts", "0 is not within 1..=100");
/// assert_eq!(e.to_string(), "invalid config: retry.max_attempts: 0 is not within 1..=100");
/// // A config file puts the section where it sits in front of the path.
/// let e = e.at("providers.openai");
/// assert_eq!(e.problems()[0].path, "providers.openai.retry.max_attempts");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not valid TOML / JSON for the schema (a syntax error, a
    /// wrong type, or an unknown key).
    #[error("cannot parse the config: {0}")]
    Parse(String),
    /// The values do not make sense; every problem is listed.
    #[error("invalid config: {}", list(.0))]
    Invalid(Vec<Problem>),
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn list(problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&p.to_string());
    }
    out
}

impl ConfigError {
    /// One refused value at `path`.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid(vec![Problem {
            path: path.into(),
            message: message.into(),
        }])
    }

    /// The problems, when values were refused (empty for a parse or read
    /// error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
            _ => &[],
        }
    }

    /// The same error with `prefix.` in front of every problem's path: what
    /// a config file does with a section's refusal.
    pub fn at(mut self, prefix: &str) -> Self {
        if let ConfigError::Invalid(problems) = &mut self {
            for p in problems {
                p.path = format!("{prefix}.{}", p.path);
            }
        }
        self
    }

    /// The same error with each path found in `renames` (as `(from, to)`)
    /// replaced: how a config section maps its builder's method names to
    /// its own keys (`breaker.open_duration` to `breaker.open_ms`).
    pub fn renamed(mut self, renames: &[(&str, &str)]) -> Self {
        if let ConfigError::Invalid(problems) = &mut self {
            for p in problems {
                if let Some((_, to)) = renames.iter().find(|(from, _)| *from == p.path) {
                    p.path = (*to).to_owned();
                }
            }
        }
        self
    }
}

/// Collects the problems of one component's settings, so a builder reports
/// all of them at once.
///
/// ```
/// use palisade_core::{ConfigError, Problems};
///
/// let mut problems = Problems::new("bulkhead");
/// problems.add("max_concurrent", "0 is not within 1..=4096");
/// problems.add("max_waiting", "9999 is not within 0..=4096");
/// let e = problems.finish().unwrap_err();
/// assert_eq!(e.problems().len(), 2);
/// assert_eq!(e.problems()[1].path, "bulkhead.max_waiting");
/// assert!(Problems::new("bulkhead").finish().is_ok());
///
/// // A section's own problems first, then its builder's.
/// let mut own = Problems::new("retry");
/// own.add("jitter", "\"wobbly\" is not a jitter");
/// let built: Result<(), _> = Err(ConfigError::invalid("retry.max_attempts", "0"));
/// let e = own.finish_with(built).unwrap_err();
/// let paths: Vec<&str> = e.problems().iter().map(|p| p.path.as_str()).collect();
/// assert_eq!(paths, ["retry.jitter", "retry.max_attempts"]);
/// assert_eq!(Problems::new("retry").finish_with(Ok::<_, ConfigError>(7)).unwrap(), 7);
/// ```
#[derive(Debug)]
pub struct Problems {
    component: &'static str,
    list: Vec<Problem>,
}

impl Problems {
    /// An empty list for `component` (the section name: `breaker`,
    /// `retry`...).
    pub fn new(component: &'static str) -> Self {
        Problems {
            component,
            list: Vec::new(),
        }
    }

    /// Records that `field` is wrong.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.list.push(Problem {
            path: format!("{}.{field}", self.component),
            message: message.into(),
        });
    }

    /// Records the problems of a part checked on its own (its paths kept).
    pub fn extend(&mut self, error: ConfigError) {
        match error {
            ConfigError::Invalid(p) => self.list.extend(p),
            other => self.list.push(Problem {
                path: self.component.to_owned(),
                message: other.to_string(),
            }),
        }
    }

    /// Whether nothing is wrong so far.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `result` if nothing was recorded, else every problem: those recorded
    /// first, then `result`'s own. How a config section reports its own
    /// checks (a name that is not one of the choices) together with its
    /// builder's.
    pub fn finish_with<T>(mut self, result: Result<T, ConfigError>) -> Result<T, ConfigError> {
        match result {
            Ok(value) if self.list.is_empty() => Ok(value),
            Ok(_) => Err(ConfigError::Invalid(self.list)),
            Err(e) => {
                self.extend(e);
                Err(ConfigError::Invalid(self.list))
            }
        }
    }

    /// `Ok` if nothing was recorded, else every problem.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.list))
        }
    }
}
