//! What a call's result means: [`Outcome`], [`FailureKind`] and the
//! [`Classify`] trait every layer uses to read results.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

use http::StatusCode;

use crate::error::{BoxError, Elapsed, RejectReason, Rejected};

/// What kind of failure a call ended in.
///
/// One vocabulary for every layer: the breaker, retry and fallback layers
/// each decide what to do from the kind (through a [`Policy`](crate::Policy)),
/// so a user classifies results once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The call took too long (ours or the transport's timeout).
    Timeout,
    /// The provider could not be reached: refused, reset, DNS, TLS.
    Connect,
    /// The provider said "too many requests" (HTTP 429), maybe with how long
    /// to wait.
    RateLimited {
        /// How long the provider asked us to wait, already capped.
        retry_after: Option<Duration>,
    },
    /// The provider said it is overloaded (HTTP 503, Anthropic's 529), maybe
    /// with how long to wait.
    Overloaded {
        /// How long the provider asked us to wait, already capped.
        retry_after: Option<Duration>,
    },
    /// Any other server-side error status (5xx).
    Server(StatusCode),
    /// A client-side error status (4xx other than 429): usually the caller's
    /// own fault.
    Client(StatusCode),
    /// The prompt does not fit the model's context window. Retrying the same
    /// provider is pointless; a provider with a larger window may succeed.
    ContextLengthExceeded,
    /// The provider's content filter refused the prompt or the completion.
    ContentFiltered,
    /// A palisade layer refused the call without sending it.
    Rejected(RejectReason),
    /// Anything else.
    Other,
}

impl FailureKind {
    /// The wait the provider asked for, if this kind carries one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FailureKind::RateLimited { retry_after } | FailureKind::Overloaded { retry_after } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The HTTP status behind this kind, for `Server` and `Client`.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            FailureKind::Server(s) | FailureKind::Client(s) => Some(*s),
            _ => None,
        }
    }

    /// The kind without its data, as used to key a [`Policy`](crate::Policy).
    pub fn class(&self) -> FailureClass {
        match self {
            FailureKind::Timeout => FailureClass::Timeout,
            FailureKind::Connect => FailureClass::Connect,
            FailureKind::RateLimited { .. } => FailureClass::RateLimited,
            FailureKind::Overloaded { .. } => FailureClass::Overloaded,
            FailureKind::Server(_) => FailureClass::Server,
            FailureKind::Client(_) => FailureClass::Client,
            FailureKind::ContextLengthExceeded => FailureClass::ContextLengthExceeded,
            FailureKind::ContentFiltered => FailureClass::ContentFiltered,
            FailureKind::Rejected(_) => FailureClass::Rejected,
            FailureKind::Other => FailureClass::Other,
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Timeout => f.write_str("timeout"),
            FailureKind::Connect => f.write_str("connect error"),
            FailureKind::RateLimited { retry_after: None } => f.write_str("rate limited"),
            FailureKind::RateLimited {
                retry_after: Some(d),
            } => {
                write!(f, "rate limited (retry after {d:?})")
            }
            FailureKind::Overloaded { retry_after: None } => f.write_str("overloaded"),
            FailureKind::Overloaded {
                retry_after: Some(d),
            } => {
                write!(f, "overloaded (retry after {d:?})")
            }
            FailureKind::Server(s) => write!(f, "server error {}", s.as_u16()),
            FailureKind::Client(s) => write!(f, "client error {}", s.as_u16()),
            FailureKind::ContextLengthExceeded => f.write_str("context length exceeded"),
            FailureKind::ContentFiltered => f.write_str("content filtered"),
            FailureKind::Rejected(r) => write!(f, "rejected: {r}"),
            FailureKind::Other => f.write_str("other error"),
        }
    }
}

/// [`FailureKind`] without its data: the key of a [`Policy`](crate::Policy)
/// row.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// [`FailureKind::Timeout`].
    Timeout,
    /// [`FailureKind::Connect`].
    Connect,
    /// [`FailureKind::RateLimited`].
    RateLimited,
    /// [`FailureKind::Overloaded`].
    Overloaded,
    /// [`FailureKind::Server`].
    Server,
    /// [`FailureKind::Client`].
    Client,
    /// [`FailureKind::ContextLengthExceeded`].
    ContextLengthExceeded,
    /// [`FailureKind::ContentFiltered`].
    ContentFiltered,
    /// [`FailureKind::Rejected`].
    Rejected,
    /// [`FailureKind::Other`].
    Other,
}

impl FailureClass {
    /// Every class, in declaration order.
    pub const ALL: [FailureClass; 10] = [
        FailureClass::Timeout,
        FailureClass::Connect,
        FailureClass::RateLimited,
        FailureClass::Overloaded,
        FailureClass::Server,
        FailureClass::Client,
        FailureClass::ContextLengthExceeded,
        FailureClass::ContentFiltered,
        FailureClass::Rejected,
        FailureClass::Other,
    ];
}

/// A failed call: its [`FailureKind`] plus the provider's own word on
/// whether to retry (`x-should-retry`), which overrides the retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Failure {
    /// What kind of failure it was.
    pub kind: FailureKind,
    /// `Some(true|false)` when the provider said whether a retry may help.
    pub retry_hint: Option<bool>,
}

impl Failure {
    /// A failure of `kind` with no retry hint.
    pub const fn new(kind: FailureKind) -> Self {
        Failure {
            kind,
            retry_hint: None,
        }
    }

    /// Sets the provider's retry hint.
    pub const fn with_retry_hint(mut self, retry: bool) -> Self {
        self.retry_hint = Some(retry);
        self
    }
}

impl From<FailureKind> for Failure {
    fn from(kind: FailureKind) -> Self {
        Failure::new(kind)
    }
}

/// What a call's result means to the resilience layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call did what was asked.
    Success,
    /// The call failed, in the way described.
    Failure(Failure),
}

impl Outcome {
    /// A failure outcome of `kind`.
    pub const fn failure(kind: FailureKind) -> Self {
        Outcome::Failure(Failure::new(kind))
    }

    /// `true` for [`Outcome::Success`].
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// The failure, if this is one.
    pub fn as_failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Success => None,
            Outcome::Failure(f) => Some(f),
        }
    }
}

/// Decides what a call's result means.
///
/// Every palisade layer that reacts to results (breaker, retry, fallback)
/// takes a `Classify`, so one classifier configures them all. Layers convert
/// the inner service's error into a [`BoxError`] before asking, which is the
/// default `Err` type here.
///
/// Closures taking `Result<&Res, &Err>` implement it:
///
/// ```
/// use palisade_core::{BoxError, Classify, FailureKind, Outcome};
///
/// let classify = |r: Result<&u16, &BoxError>| match r {
///     Ok(200) => Outcome::Success,
///     Ok(_) => Outcome::failure(FailureKind::Other),
///     Err(_) => Outcome::failure(FailureKind::Connect),
/// };
/// assert_eq!(classify.classify(Ok(&200)), Outcome::Success);
/// assert!(!classify.classify(Ok(&500)).is_success());
/// ```
///
/// For HTTP responses use [`HttpClassifier`](crate::HttpClassifier); for any
/// other response type where only errors are failures, [`ErrorClassifier`].
pub trait Classify<Res, Err = BoxError> {
    /// Classifies one result.
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome;

    /// What a response says about the provider's rate limits, for a rate
    /// limiter that paces itself by them. Nothing by default; the HTTP and
    /// gRPC classifiers read the providers' headers
    /// ([`RateInfo::from_response`](crate::RateInfo::from_response)).
    fn rate_info(&self, _res: &Res) -> crate::RateInfo {
        crate::RateInfo::default()
    }

    /// The per-call record ([`Served`](crate::Served)) on a response, for
    /// layers to fill in; `None` (the default) when the response type has
    /// nowhere to carry it. The HTTP and gRPC classifiers keep it in the
    /// response's extensions.
    fn served<'r>(&self, _res: &'r mut Res) -> Option<&'r mut crate::Served> {
        None
    }

    /// Where a streamed response's usage will be reported when the stream
    /// ends ([`UsageLater`](crate::UsageLater)), for layers that charge
    /// tokens to settle then rather than at the response's head; `None`
    /// (the default) when the usage, if any, comes with the response. The
    /// HTTP and gRPC classifiers find it in the response's extensions, where
    /// the service that made the stream put it.
    fn usage_later(&self, _res: &Res) -> Option<crate::UsageLater> {
        None
    }
}

impl<F, Res, Err> Classify<Res, Err> for F
where
    F: Fn(Result<&Res, &Err>) -> Outcome,
{
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome {
        self(result)
    }
}

/// The classifier for services whose responses are all successes and whose
/// errors say what went wrong: `Ok` is [`Outcome::Success`], `Err` is read
/// by [`classify_error`].
///
/// ```
/// use palisade_core::{BoxError, Classify, ErrorClassifier, FailureKind, Outcome};
/// use std::io;
///
/// let c = ErrorClassifier;
/// let refused: BoxError = io::Error::from(io::ErrorKind::ConnectionRefused).into();
/// assert_eq!(Classify::<&str>::classify(&c, Err(&refused)), Outcome::failure(FailureKind::Connect));
/// assert_eq!(Classify::<&str>::classify(&c, Ok(&"fine")), Outcome::Success);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorClassifier;

impl<Res> Classify<Res, BoxError> for ErrorClassifier {
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => Outcome::Failure(classify_error(&**e)),
        }
    }
}

/// Reads an error (and its `source()` chain) into a [`Failure`].
///
/// The first error in the chain it recognises decides:
///
/// | error | kind |
/// |---|---|
/// | [`Rejected`] | `Rejected(reason)` |
/// | [`Classified`] | the kind it carries |
/// | [`Elapsed`], `tokio::time::error::Elapsed`, `tower::timeout::error::Elapsed` | `Timeout` |
/// | `io::Error` `TimedOut` | `Timeout` |
/// | `io::Error` refused, reset, aborted, not connected, broken pipe, address unavailable | `Connect` |
///
/// An error it does not recognise anywhere in the chain is `Other`. Errors
/// that only wrap another (such as the retry layer's "budget exhausted after
/// N attempts") are looked through, so the last real error decides.
/// Chains are followed at most 32 levels deep, so a cyclic or absurd chain
/// cannot hang the caller.
pub fn classify_error(err: &(dyn StdError + 'static)) -> Failure {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    let mut depth = 0;
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<Rejected>() {
            return Failure::new(FailureKind::Rejected(r.reason()));
        }
        if let Some(c) = e.downcast_ref::<Classified>() {
            return c.failure;
        }
        if e.is::<Elapsed>()
            || e.is::<tokio::time::error::Elapsed>()
            || e.is::<tower::timeout::error::Elapsed>()
        {
            return Failure::new(FailureKind::Timeout);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(kind) = io_kind(io.kind()) {
                return Failure::new(kind);
            }
        }
        depth += 1;
        if depth >= 32 {
            break;
        }
        cur = e.source();
    }
    Failure::new(FailureKind::Other)
}

fn io_kind(kind: io::ErrorKind) -> Option<FailureKind> {
    use io::ErrorKind::*;
    match kind {
        TimedOut => Some(FailureKind::Timeout),
        ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | BrokenPipe
        | AddrNotAvailable => Some(FailureKind::Connect),
        _ => None,
    }
}

/// An error tagged with the failure it stands for.
///
/// Use it where a service knows what went wrong but its error type does not
/// say so in a way [`classify_error`] recognises, for example an HTTP client
/// adapter that turns a 503 into an error, or a DNS failure. The built-in
/// classifiers read the tag and never look further down.
///
/// ```
/// use palisade_core::{classify_error, BoxError, Classified, FailureKind};
///
/// let err: BoxError = Classified::new(FailureKind::Connect, "dns lookup failed").into();
/// assert_eq!(classify_error(&*err).kind, FailureKind::Connect);
/// assert_eq!(err.to_string(), "connect error: dns lookup failed");
/// ```
#[derive(Debug)]
pub struct Classified {
    failure: Failure,
    source: BoxError,
}

impl Classified {
    /// Tags `source` as a failure of `failure`.
    pub fn new(failure: impl Into<Failure>, source: impl Into<BoxError>) -> Self {
        Classified {
            failure: failure.into(),
            source: source.into(),
        }
    }

    /// The failure this error stands for.
    pub fn failure(&self) -> Failure {
        self.failure
    }

    /// The error that was tagged.
    pub fn inner(&self) -> &BoxError {
        &self.source
    }

    /// Unwraps the tagged error.
    pub fn into_inner(self) -> BoxError {
        self.source
    }
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.failure.kind, self.source)
    }
}

impl StdError for Classified {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CircuitState, TimeoutScope};

    #[derive(Debug)]
    struct Wrap(BoxError);
    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl StdError for Wrap {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn recognises_our_own_errors() {
        let r: BoxError = Rejected::new(RejectReason::CircuitOpen(CircuitState::Open)).into();
        assert_eq!(
            classify_error(&*r).kind,
            FailureKind::Rejected(RejectReason::CircuitOpen(CircuitState::Open))
        );
        let t: BoxError = Elapsed::new(TimeoutScope::Request, Duration::from_secs(1)).into();
        assert_eq!(classify_error(&*t).kind, FailureKind::Timeout);
    }

    #[test]
    fn looks_through_wrappers() {
        let inner: BoxError = io::Error::from(io::ErrorKind::ConnectionReset).into();
        let outer = Wrap(Box::new(Wrap(inner)));
        assert_eq!(classify_error(&outer).kind, FailureKind::Connect);
        let plain: BoxError = "boom".into();
        assert_eq!(classify_error(&Wrap(plain)).kind, FailureKind::Other);
    }

    #[test]
    fn io_kinds() {
        let t = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(classify_error(&t).kind, FailureKind::Timeout);
        let other = io::Error::other("x");
        assert_eq!(classify_error(&other).kind, FailureKind::Other);
    }

    #[tokio::test]
    async fn tokio_elapsed_is_a_timeout() {
        tokio::time::pause();
        let e = tokio::time::timeout(Duration::from_millis(1), std::future::pending::<()>())
            .await
            .unwrap_err();
        assert_eq!(classify_error(&e).kind, FailureKind::Timeout);
        let tower: BoxError = tower::timeout::error::Elapsed::new().into();
        assert_eq!(classify_error(&*tower).kind, FailureKind::Timeout);
    }

    #[test]
    fn kind_accessors() {
        let k = FailureKind::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(k.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(k.class(), FailureClass::RateLimited);
        assert_eq!(k.to_string(), "rate limited (retry after 2s)");
        assert_eq!(
            FailureKind::Server(StatusCode::BAD_GATEWAY).status(),
            Some(StatusCode::BAD_GATEWAY)
        );
        assert_eq!(FailureKind::Timeout.status(), None);
    }
}
