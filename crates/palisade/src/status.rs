//! [`http_status`]: the one mapping from palisade's errors to the HTTP
//! status a server passes on.

use palisade_core::{Elapsed, Rejected};
use palisade_fallback::AllFailed;
use palisade_retry::{RetryStopped, StopReason};

/// The HTTP status a server should answer with when a call through
/// palisade failed with `err`:
///
/// | error | status |
/// |---|---|
/// | [`Elapsed`] (any timeout scope) | 504 |
/// | [`Rejected`] for the deadline | 504 |
/// | [`Rejected`] by a rate limit | 429 |
/// | [`Rejected`] otherwise (open breaker, full bulkhead, budget, no provider) | 503 |
/// | [`RetryStopped`] because the deadline was too close | 504 |
/// | [`RetryStopped`] otherwise | the status of its last error |
/// | [`AllFailed`] | [`AllFailed::http_status`]: 504 / 502 / 429 / 503 |
/// | anything else (the provider's own error: a connection refused...) | 502 |
///
/// ```
/// use palisade::http_status;
/// use palisade_core::{BoxError, Elapsed, RejectReason, Rejected, TimeoutScope};
/// use std::time::Duration;
///
/// let deadline: BoxError = Rejected::new(RejectReason::DeadlineExceeded).into();
/// assert_eq!(http_status(&*deadline), 504);
/// let timeout: BoxError = Elapsed::new(TimeoutScope::Attempt, Duration::from_secs(20)).into();
/// assert_eq!(http_status(&*timeout), 504);
/// let refused: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
/// assert_eq!(http_status(&*refused), 502);
/// ```
pub fn http_status(err: &(dyn std::error::Error + 'static)) -> http::StatusCode {
    if let Some(all) = err.downcast_ref::<AllFailed>() {
        return all.http_status();
    }
    if let Some(e) = err.downcast_ref::<Elapsed>() {
        return e.http_status();
    }
    if let Some(r) = err.downcast_ref::<Rejected>() {
        return r.http_status();
    }
    if let Some(stopped) = err.downcast_ref::<RetryStopped>() {
        return match stopped.reason() {
            StopReason::DeadlineTooClose { .. } => http::StatusCode::GATEWAY_TIMEOUT,
            _ => http_status(&**stopped.last_error()),
        };
    }
    http::StatusCode::BAD_GATEWAY
}
