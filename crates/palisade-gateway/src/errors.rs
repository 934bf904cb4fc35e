//! What a caller gets when the gateway cannot answer: OpenAI-shaped error
//! bodies with the status that says whose fault it is.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use palisade_core::{BoxError, Elapsed, RejectReason, Rejected};
use palisade_fallback::{AllFailed, AttemptOutcome};

use crate::openai::ErrorBody;

/// `body` with `status`, as JSON.
pub(crate) fn error(status: StatusCode, body: ErrorBody) -> Response {
    (status, axum::Json(body)).into_response()
}

/// 404 for an endpoint the gateway does not have.
pub(crate) async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        ErrorBody::new(
            "invalid_request_error",
            Some("not_found"),
            "no such endpoint",
        ),
    )
}

/// Maps a routing failure to 502 / 503 / 504 with every provider's error.
pub(crate) fn upstream_error(e: &BoxError) -> Response {
    let mut providers = Vec::new();
    let (status, code) = if let Some(all) = e.downcast_ref::<AllFailed>() {
        for a in all.attempts() {
            providers.push(format!("{}: {}", a.provider, a.outcome));
        }
        let timed_out = all.attempts().iter().any(|a| {
            matches!(a.outcome, AttemptOutcome::DeadlineExceeded)
                || matches!(&a.outcome, AttemptOutcome::Error(e) if e.is::<Elapsed>())
        });
        if timed_out {
            (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
        } else if all.any_called() {
            (StatusCode::BAD_GATEWAY, "upstream_failed")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "no_provider_available")
        }
    } else if e.is::<Elapsed>() {
        (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
    } else if let Some(r) = e.downcast_ref::<Rejected>() {
        match r.reason() {
            RejectReason::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "no_provider_available"),
        }
    } else {
        (StatusCode::BAD_GATEWAY, "upstream_failed")
    };
    let mut body = ErrorBody::new("upstream_error", Some(code), e.to_string());
    body.error.providers = providers;
    error(status, body)
}
