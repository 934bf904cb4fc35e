//! What a caller gets when the gateway cannot answer: OpenAI-shaped error
//! bodies with the status that says whose fault it is.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use palisade_core::{BoxError, Rejected};
use palisade_fallback::AllFailed;

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

/// Maps a routing failure to its status ([`palisade::http_status`]: 502 /
/// 503 / 504, 429 when every provider is out of quota) with every
/// provider's error, and `Retry-After` when palisade knows when a provider
/// will take calls again.
pub(crate) fn upstream_error(e: &BoxError) -> Response {
    // A coalesced request's error is the shared call's.
    // A coalesced or batched request's error is the shared call's (a
    // batch inside a coalesced call: twice).
    let e = palisade_core::SharedError::original(palisade_core::SharedError::original(&**e));
    let status = palisade::http_status(e);
    let code = match status {
        StatusCode::GATEWAY_TIMEOUT => "upstream_timeout",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "no_provider_available",
        _ => "upstream_failed",
    };
    let mut providers = Vec::new();
    let mut retry_after = None;
    if let Some(all) = e.downcast_ref::<AllFailed>() {
        for a in all.attempts() {
            providers.push(format!("{}: {}", a.provider, a.outcome));
        }
        retry_after = all.retry_after();
    } else if let Some(r) = e.downcast_ref::<Rejected>() {
        retry_after = r.retry_after();
    }
    let mut body = ErrorBody::new("upstream_error", Some(code), e.to_string());
    body.error.providers = providers;
    let mut res = error(status, body);
    let headers = res.headers_mut();
    if let Some(after) = retry_after.filter(|_| status != StatusCode::BAD_GATEWAY) {
        // Whole seconds, rounded up, as `Retry-After` takes; and exact, in
        // the header the OpenAI SDKs read first.
        let secs = after.as_millis().div_ceil(1000).max(1) as u64;
        headers.insert(axum::http::header::RETRY_AFTER, secs.into());
        headers.insert(RETRY_AFTER_MS, (after.as_millis().max(1) as u64).into());
    }
    // Every provider failed after palisade's own retries and fallbacks, or
    // the caller's deadline passed: the SDKs' retries would only repeat
    // that (they read `x-should-retry` before the status). A 429 or 503
    // with a time to wait is left to them.
    if matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
    ) {
        headers.insert(SHOULD_RETRY, axum::http::HeaderValue::from_static("false"));
    }
    res
}

/// The exact wait, in ms, that the OpenAI SDKs read before `Retry-After`.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";
/// `false` when the caller should not retry (the OpenAI SDKs obey it).
pub const SHOULD_RETRY: &str = "x-should-retry";
