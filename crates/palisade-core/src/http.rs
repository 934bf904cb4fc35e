//! The built-in classifier for HTTP responses from LLM providers.

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::classify::{classify_error, Classify, Failure, FailureKind, Outcome};
use crate::error::BoxError;

/// The `retry-after-ms` header OpenAI-style APIs send (milliseconds).
pub static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
/// The `x-should-retry` header (`true` / `false`) OpenAI- and Anthropic-style
/// APIs send to override the status rule.
pub static X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// The cap [`HttpClassifier`] puts on provider-given waits unless told
/// otherwise: 10 minutes.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Classifies `http::Response`s and client errors the way LLM providers mean
/// them.
///
/// | status | kind |
/// |---|---|
/// | 1xx–3xx | success |
/// | 429 | `RateLimited { retry_after }` |
/// | 503, 529 | `Overloaded { retry_after }` |
/// | other 5xx (and anything ≥ 600) | `Server(status)` |
/// | other 4xx | `Client(status)` |
///
/// Headers read:
///
/// - `retry-after-ms`: a non-negative number of milliseconds (fractions
///   allowed); preferred over `retry-after` when both are present.
/// - `Retry-After`: delta-seconds (`120`) or an HTTP-date, taken relative to
///   the system clock; a date in the past means "now" (zero).
/// - `x-should-retry: true|false`: overrides the retry row of the
///   [`Policy`](crate::Policy) for this response (see
///   [`Failure::retry_hint`]). Case-insensitive.
///
/// Values that are not valid (not UTF-8, negative, not a number, not a
/// date, NaN, infinite) are ignored as if absent; values above the cap
/// ([`DEFAULT_MAX_RETRY_AFTER`] unless set with
/// [`max_retry_after`](Self::max_retry_after)) are capped. Nothing here
/// panics on any input.
///
/// Errors are read with [`classify_error`].
///
/// ```
/// use palisade_core::{BoxError, Classify, FailureKind, HttpClassifier, Outcome};
/// use http::Response;
/// use std::time::Duration;
///
/// let c = HttpClassifier::new();
/// let res = Response::builder().status(429).header("retry-after", "7").body(()).unwrap();
/// assert_eq!(
///     Classify::<_, BoxError>::classify(&c, Ok(&res)),
///     Outcome::failure(FailureKind::RateLimited { retry_after: Some(Duration::from_secs(7)) })
/// );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HttpClassifier {
    /// Read by [`GrpcClassifier`](crate::GrpcClassifier) too, which caps
    /// its pushbacks with the same setting.
    pub(crate) max_retry_after: Duration,
}

impl Default for HttpClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClassifier {
    /// A classifier with the default cap on provider-given waits.
    pub const fn new() -> Self {
        HttpClassifier {
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }

    /// Caps every wait read from `Retry-After` / `retry-after-ms` at `max`.
    pub const fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// Classifies a status and headers, taking HTTP-dates relative to `now`.
    /// This is what the `Classify` impl calls with `SystemTime::now()`; call
    /// it directly for a fixed clock.
    pub fn classify_parts(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Outcome {
        self.classify_parts_with(status, headers, || now)
    }

    /// [`classify_parts`](Self::classify_parts), the clock read only for
    /// an answer whose `Retry-After` is read (a 429, 503 or 529): a
    /// success pays no clock read.
    pub(crate) fn classify_parts_with(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        clock: impl FnOnce() -> SystemTime,
    ) -> Outcome {
        let code = status.as_u16();
        if code < 400 {
            return Outcome::Success;
        }
        let kind = match code {
            429 => FailureKind::RateLimited {
                retry_after: self.retry_after_with(headers, clock),
            },
            503 | 529 => FailureKind::Overloaded {
                retry_after: self.retry_after_with(headers, clock),
            },
            400..=499 => FailureKind::Client(status),
            _ => FailureKind::Server(status),
        };
        let mut failure = Failure::new(kind);
        failure.retry_hint = should_retry(headers);
        Outcome::Failure(failure)
    }

    /// Classifies a response whose body is buffered, also reading an
    /// OpenAI- or Anthropic-style JSON error body (see [`classify_error_body`])
    /// to find context-length and content-filter errors.
    ///
    /// ```
    /// use palisade_core::{FailureKind, HttpClassifier, Outcome};
    /// use http::Response;
    ///
    /// let body = r#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
    /// let res = Response::builder().status(400).body(body).unwrap();
    /// assert_eq!(
    ///     HttpClassifier::new().classify_buffered(&res),
    ///     Outcome::failure(FailureKind::ContextLengthExceeded)
    /// );
    /// ```
    pub fn classify_buffered<B: AsRef<[u8]>>(&self, res: &Response<B>) -> Outcome {
        let outcome = self.classify_parts_with(res.status(), res.headers(), SystemTime::now);
        match outcome {
            Outcome::Failure(mut f)
                if matches!(f.kind, FailureKind::Client(_) | FailureKind::Server(_)) =>
            {
                if let Some(kind) = classify_error_body(res.body().as_ref()) {
                    f.kind = kind;
                }
                Outcome::Failure(f)
            }
            other => other,
        }
    }

    /// The provider-given wait in `headers`, capped; `None` when absent or
    /// invalid.
    pub fn retry_after(&self, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
        self.retry_after_with(headers, || now)
    }

    /// [`retry_after`](Self::retry_after), the clock read only for an
    /// HTTP-date.
    fn retry_after_with(
        &self,
        headers: &HeaderMap,
        clock: impl FnOnce() -> SystemTime,
    ) -> Option<Duration> {
        let ms = headers
            .get(&RETRY_AFTER_MS)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after_ms);
        let d = ms.or_else(|| {
            headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after_with(v, clock))
        })?;
        Some(d.min(self.max_retry_after))
    }
}

impl<B> Classify<Response<B>, BoxError> for HttpClassifier {
    fn served<'r>(&self, res: &'r mut Response<B>) -> Option<&'r mut crate::Served> {
        Some(crate::Served::in_response(res))
    }

    fn rate_info(&self, res: &Response<B>) -> crate::RateInfo {
        crate::RateInfo::from_response_with(res, SystemTime::now)
    }

    fn usage_later(&self, res: &Response<B>) -> Option<crate::UsageLater> {
        res.extensions().get::<crate::UsageLater>().cloned()
    }

    fn classify(&self, result: Result<&Response<B>, &BoxError>) -> Outcome {
        match result {
            Ok(res) => self.classify_parts_with(res.status(), res.headers(), SystemTime::now),
            Err(e) => Outcome::Failure(classify_error(&**e)),
        }
    }
}

/// Reads `x-should-retry`: `Some(true)` / `Some(false)`, `None` if absent or
/// anything else.
fn should_retry(headers: &HeaderMap) -> Option<bool> {
    let v = headers.get(&X_SHOULD_RETRY)?.to_str().ok()?.trim();
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// The longest wait a header can express before capping: anything longer is
/// clamped here first so arithmetic can never overflow (about 31 years).
const ABSURD: Duration = Duration::from_secs(1 << 30);

/// Parses a `Retry-After` value: delta-seconds or an HTTP-date relative to
/// `now`. Returns `None` for anything invalid, `Some(ZERO)` for a past date.
/// Huge values are clamped to about 31 years (callers cap further).
///
/// ```
/// use palisade_core::parse_retry_after;
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
/// assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after("-5", now), None);
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    parse_retry_after_with(value, || now)
}

/// [`parse_retry_after`], the clock read only for an HTTP-date.
pub(crate) fn parse_retry_after_with(
    value: &str,
    clock: impl FnOnce() -> SystemTime,
) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: delta-seconds. Too many digits to fit is absurd, clamp.
        return Some(match v.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs).min(ABSURD),
            Err(_) => ABSURD,
        });
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(clock())
            .unwrap_or(Duration::ZERO)
            .min(ABSURD),
    )
}

/// Parses a `retry-after-ms` value: a non-negative, finite number of
/// milliseconds, fractions allowed. `None` for anything else.
///
/// ```
/// use palisade_core::parse_retry_after_ms;
/// use std::time::Duration;
///
/// assert_eq!(parse_retry_after_ms("1500"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_retry_after_ms("2.5"), Some(Duration::from_micros(2500)));
/// assert_eq!(parse_retry_after_ms("NaN"), None);
/// assert_eq!(parse_retry_after_ms("-1"), None);
/// ```
pub fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    let v = value.trim();
    // Only plain decimal notation: no sign, no exponent, no "inf"/"nan".
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let ms: f64 = v.parse().ok()?;
    if !ms.is_finite() || ms < 0.0 {
        return None;
    }
    let secs = ms / 1000.0;
    if secs >= ABSURD.as_secs_f64() {
        return Some(ABSURD);
    }
    Some(Duration::from_secs_f64(secs))
}

/// Recognises an OpenAI- or Anthropic-style JSON error body that means the
/// prompt was too long for the model, or that a content filter refused it.
///
/// Looks at `error.code`, `error.type` and `error.message` of
/// `{"error": {...}}` bodies. Returns `None` for anything else, including
/// bodies that are not JSON. Bodies over 64 KiB are not parsed (error bodies
/// are small; a huge one is not worth the time).
///
/// ```
/// use palisade_core::{classify_error_body, FailureKind};
///
/// let anthropic = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 215000 tokens > 200000 maximum"}}"#;
/// assert_eq!(classify_error_body(anthropic), Some(FailureKind::ContextLengthExceeded));
/// let filtered = br#"{"error":{"code":"content_filter","message":"The response was filtered"}}"#;
/// assert_eq!(classify_error_body(filtered), Some(FailureKind::ContentFiltered));
/// assert_eq!(classify_error_body(b"<html>502</html>"), None);
/// ```
pub fn classify_error_body(body: &[u8]) -> Option<FailureKind> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Option<Detail>,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        #[serde(default, deserialize_with = "lenient_str")]
        code: Option<String>,
        #[serde(default, rename = "type", deserialize_with = "lenient_str")]
        kind: Option<String>,
        #[serde(default, deserialize_with = "lenient_str")]
        message: Option<String>,
    }
    fn lenient_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        // `code` is sometimes a number or null; only strings matter here.
        let v = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
        Ok(match v {
            serde_json::Value::String(s) => Some(s),
            _ => None,
        })
    }

    if body.len() > 64 * 1024 {
        return None;
    }
    let detail = serde_json::from_slice::<Envelope>(body).ok()?.error?;
    let code = detail.code.as_deref().unwrap_or("");
    let kind = detail.kind.as_deref().unwrap_or("");
    let message = detail.message.as_deref().unwrap_or("").to_ascii_lowercase();

    let context = code == "context_length_exceeded"
        || kind == "context_length_exceeded"
        || message.contains("maximum context length")
        || message.contains("prompt is too long")
        || message.contains("context window");
    if context {
        return Some(FailureKind::ContextLengthExceeded);
    }
    let filtered = matches!(code, "content_filter" | "content_policy_violation")
        || matches!(kind, "content_filter" | "content_policy_violation");
    if filtered {
        return Some(FailureKind::ContentFiltered);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    fn now() -> SystemTime {
        // Wed, 21 Oct 2015 07:28:00 GMT
        UNIX_EPOCH + Duration::from_secs(1_445_412_480)
    }

    #[test]
    fn the_clock_is_read_only_for_a_date_to_count_from() {
        let c = HttpClassifier::new();
        let reads = std::cell::Cell::new(0);
        let clock = || {
            reads.set(reads.get() + 1);
            now()
        };
        let none = headers(&[]);
        assert_eq!(
            c.classify_parts_with(StatusCode::OK, &none, clock),
            Outcome::Success
        );
        let secs = headers(&[("retry-after", b"3")]);
        c.classify_parts_with(StatusCode::TOO_MANY_REQUESTS, &secs, clock);
        c.classify_parts_with(StatusCode::BAD_GATEWAY, &secs, clock);
        assert_eq!(reads.get(), 0, "no date in sight");
        let date = headers(&[("retry-after", b"Wed, 21 Oct 2015 07:30:00 GMT")]);
        let out = c.classify_parts_with(StatusCode::SERVICE_UNAVAILABLE, &date, clock);
        assert_eq!(reads.get(), 1);
        assert_eq!(
            out.as_failure().unwrap().kind.retry_after(),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            crate::RateInfo::from_headers_with(&date, clock).retry_after,
            Some(Duration::from_secs(120))
        );
        assert_eq!(reads.get(), 2, "once for the rate too");
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    fn classify(status: u16, h: &[(&str, &[u8])]) -> Outcome {
        HttpClassifier::new().classify_parts(
            StatusCode::from_u16(status).unwrap(),
            &headers(h),
            now(),
        )
    }

    fn kind(o: Outcome) -> FailureKind {
        o.as_failure().expect("a failure").kind
    }

    #[test]
    fn status_table() {
        for ok in [100, 200, 201, 204, 301, 304, 399] {
            assert_eq!(classify(ok, &[]), Outcome::Success, "{ok}");
        }
        assert_eq!(
            kind(classify(429, &[])),
            FailureKind::RateLimited { retry_after: None }
        );
        assert_eq!(
            kind(classify(503, &[])),
            FailureKind::Overloaded { retry_after: None }
        );
        assert_eq!(
            kind(classify(529, &[])),
            FailureKind::Overloaded { retry_after: None }
        );
        for s in [500, 501, 502, 504, 599, 600, 999] {
            assert_eq!(
                kind(classify(s, &[])),
                FailureKind::Server(StatusCode::from_u16(s).unwrap())
            );
        }
        for c in [400, 401, 403, 404, 408, 409, 413, 422, 499] {
            assert_eq!(
                kind(classify(c, &[])),
                FailureKind::Client(StatusCode::from_u16(c).unwrap())
            );
        }
    }

    #[test]
    fn retry_after_delta_seconds() {
        assert_eq!(
            kind(classify(429, &[("retry-after", b"30")])),
            FailureKind::RateLimited {
                retry_after: Some(Duration::from_secs(30))
            }
        );
        assert_eq!(
            kind(classify(503, &[("retry-after", b" 0 ")])),
            FailureKind::Overloaded {
                retry_after: Some(Duration::ZERO)
            }
        );
    }

    #[test]
    fn retry_after_http_date_future_and_past() {
        assert_eq!(
            kind(classify(
                429,
                &[("retry-after", b"Wed, 21 Oct 2015 07:28:45 GMT")]
            )),
            FailureKind::RateLimited {
                retry_after: Some(Duration::from_secs(45))
            }
        );
        // past date: come back now
        assert_eq!(
            kind(classify(
                429,
                &[("retry-after", b"Tue, 20 Oct 2015 07:28:00 GMT")]
            )),
            FailureKind::RateLimited {
                retry_after: Some(Duration::ZERO)
            }
        );
        // obsolete RFC 850 and asctime forms are valid HTTP-dates too
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now()),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:30:00 2015", now()),
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn retry_after_ms_wins_and_parses_fractions() {
        assert_eq!(
            kind(classify(
                429,
                &[("retry-after", b"30"), ("retry-after-ms", b"250")]
            )),
            FailureKind::RateLimited {
                retry_after: Some(Duration::from_millis(250))
            }
        );
        assert_eq!(
            parse_retry_after_ms("0.5"),
            Some(Duration::from_micros(500))
        );
        assert_eq!(parse_retry_after_ms("0"), Some(Duration::ZERO));
        // an invalid ms header falls back to retry-after
        assert_eq!(
            kind(classify(
                429,
                &[("retry-after", b"3"), ("retry-after-ms", b"abc")]
            )),
            FailureKind::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
    }

    #[test]
    fn garbage_is_ignored() {
        for bad in [
            &b""[..],
            b"   ",
            b"-1",
            b"+5",
            b"1.5",
            b"1e3",
            b"soon",
            b"Wed, 32 Oct 2015 07:28:00 GMT",
            b"\xff\xfe",
            b"12 34",
        ] {
            assert_eq!(
                kind(classify(429, &[("retry-after", bad)])),
                FailureKind::RateLimited { retry_after: None },
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for bad in [
            "-1", "NaN", "nan", "inf", "infinity", "1e3", "", "..", "1.2.3", "0x10",
        ] {
            assert_eq!(parse_retry_after_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn huge_values_are_capped() {
        let cap = DEFAULT_MAX_RETRY_AFTER;
        assert_eq!(
            kind(classify(
                429,
                &[("retry-after", b"99999999999999999999999999999")]
            )),
            FailureKind::RateLimited {
                retry_after: Some(cap)
            }
        );
        assert_eq!(
            kind(classify(429, &[("retry-after", b"86400")])),
            FailureKind::RateLimited {
                retry_after: Some(cap)
            }
        );
        assert_eq!(
            kind(classify(
                503,
                &[("retry-after-ms", b"1000000000000000000000000000000")]
            )),
            FailureKind::Overloaded {
                retry_after: Some(cap)
            }
        );
        assert_eq!(
            kind(classify(
                429,
                &[("retry-after", b"Fri, 31 Dec 9999 23:59:59 GMT")]
            )),
            FailureKind::RateLimited {
                retry_after: Some(cap)
            }
        );
        let short = HttpClassifier::new().max_retry_after(Duration::from_secs(5));
        let h = headers(&[("retry-after", b"60")]);
        assert_eq!(short.retry_after(&h, now()), Some(Duration::from_secs(5)));
    }

    #[test]
    fn x_should_retry_overrides() {
        let o = classify(400, &[("x-should-retry", b"true")]);
        assert_eq!(o.as_failure().unwrap().retry_hint, Some(true));
        let o = classify(500, &[("x-should-retry", b"FALSE")]);
        assert_eq!(o.as_failure().unwrap().retry_hint, Some(false));
        let o = classify(500, &[("x-should-retry", b"maybe")]);
        assert_eq!(o.as_failure().unwrap().retry_hint, None);
        // a success stays a success whatever the header says
        assert_eq!(
            classify(200, &[("x-should-retry", b"true")]),
            Outcome::Success
        );
        let p = crate::Policy::default();
        assert!(p.retries(
            classify(400, &[("x-should-retry", b"true")])
                .as_failure()
                .unwrap()
        ));
    }

    #[test]
    fn body_detection() {
        let openai = br#"{"error":{"message":"This model's maximum context length is 4097 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        assert_eq!(
            classify_error_body(openai),
            Some(FailureKind::ContextLengthExceeded)
        );
        let numeric_code = br#"{"error":{"code":400,"message":"Please reduce the length: context window of this model is 8k"}}"#;
        assert_eq!(
            classify_error_body(numeric_code),
            Some(FailureKind::ContextLengthExceeded)
        );
        let policy = br#"{"error":{"type":"content_policy_violation","message":"no"}}"#;
        assert_eq!(
            classify_error_body(policy),
            Some(FailureKind::ContentFiltered)
        );
        for other in [
            &br#"{"error":{"message":"Invalid API key","type":"invalid_request_error"}}"#[..],
            b"{}",
            b"null",
            b"",
            b"{\"error\": 5}",
            b"\xff\x00garbage",
        ] {
            assert_eq!(classify_error_body(other), None);
        }
        let big = vec![b' '; 70 * 1024];
        assert_eq!(classify_error_body(&big), None);

        let res = Response::builder()
            .status(500)
            .body(Vec::from(&openai[..]))
            .unwrap();
        assert_eq!(
            HttpClassifier::new().classify_buffered(&res),
            Outcome::failure(FailureKind::ContextLengthExceeded)
        );
        let ok = Response::builder()
            .status(200)
            .body(String::from("context_length_exceeded"))
            .unwrap();
        assert_eq!(
            HttpClassifier::new().classify_buffered(&ok),
            Outcome::Success
        );
    }

    #[test]
    fn errors_go_through_classify_error() {
        let c = HttpClassifier::new();
        let e: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert_eq!(
            Classify::<Response<()>, BoxError>::classify(&c, Err(&e)),
            Outcome::failure(FailureKind::Connect)
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_respects_cap(bytes in proptest::collection::vec(any::<u8>(), 0..48), cap in 0u64..100_000) {
            let c = HttpClassifier::new().max_retry_after(Duration::from_millis(cap));
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                h.insert(RETRY_AFTER, v.clone());
                h.insert(RETRY_AFTER_MS.clone(), v.clone());
                h.insert(X_SHOULD_RETRY.clone(), v);
            }
            for status in [429u16, 503] {
                let o = c.classify_parts(StatusCode::from_u16(status).unwrap(), &h, now());
                if let Some(d) = o.as_failure().unwrap().kind.retry_after() {
                    prop_assert!(d <= Duration::from_millis(cap));
                }
            }
            let _ = classify_error_body(&bytes);
            if let Ok(s) = std::str::from_utf8(&bytes) {
                let _ = parse_retry_after(s, now());
                let _ = parse_retry_after_ms(s);
            }
        }

        #[test]
        fn delta_seconds_round_trip(secs in 0u64..1_000_000) {
            prop_assert_eq!(parse_retry_after(&secs.to_string(), now()), Some(Duration::from_secs(secs)));
        }

        #[test]
        fn http_date_round_trip(ahead in 0u64..10_000_000) {
            let at = now() + Duration::from_secs(ahead);
            let text = httpdate::fmt_http_date(at);
            prop_assert_eq!(parse_retry_after(&text, now()), Some(Duration::from_secs(ahead)));
        }
    }
}
