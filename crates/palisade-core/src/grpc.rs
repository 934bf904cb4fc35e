//! The built-in classifier for gRPC responses (tonic channels and any other
//! gRPC-over-HTTP/2 client that is a tower service).

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName};
use http::{Response, StatusCode};

use crate::classify::{classify_error, Classify, Failure, FailureKind, Outcome};
use crate::error::BoxError;
use crate::http::HttpClassifier;

/// The `grpc-status` header (or trailer): the call's status code.
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The `grpc-message` header (or trailer): the status message,
/// percent-encoded.
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// The `grpc-retry-pushback-ms` header (or trailer) of gRPC's retry design
/// (gRFC A6): how long the server asks the client to wait before retrying,
/// in milliseconds; a negative value asks it not to retry at all.
pub static GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// Classifies the `http::Response`s of a gRPC channel (a tonic `Channel`,
/// say) by their gRPC status, so a breaker or retry in front of a gRPC
/// client sees failures that travel as HTTP 200.
///
/// A gRPC call that fails before sending a message (the usual way a server
/// refuses: overloaded, rate limited, bad request) answers with a
/// *trailers-only* response: HTTP 200 whose headers carry `grpc-status`.
/// This classifier reads that status:
///
/// | gRPC status | kind |
/// |---|---|
/// | `OK`, or no `grpc-status` header (it will come in the trailers) | success |
/// | `RESOURCE_EXHAUSTED` (8) | `RateLimited { retry_after }` |
/// | `UNAVAILABLE` (14) | `Overloaded { retry_after }` |
/// | `DEADLINE_EXCEEDED` (4) | `Timeout` |
/// | `UNKNOWN` (2), `INTERNAL` (13), `DATA_LOSS` (15), codes above 16 | `Server(500)` |
/// | `INVALID_ARGUMENT` (3), `FAILED_PRECONDITION` (9), `OUT_OF_RANGE` (11) | `Client(400)`, or `ContextLengthExceeded` / `ContentFiltered` when `grpc-message` says so |
/// | `UNAUTHENTICATED` (16), `PERMISSION_DENIED` (7) | `Client(401)`, `Client(403)` |
/// | `NOT_FOUND` (5), `UNIMPLEMENTED` (12) | `Client(404)` |
/// | `ALREADY_EXISTS` (6), `ABORTED` (10) | `Client(409)` (so `ABORTED` is retried, as gRPC advises) |
/// | `CANCELLED` (1) | `Client(499)`: the caller gave up |
///
/// The client-side statuses map to the HTTP statuses gRPC's own mapping
/// pairs them with, so the default [`Policy`](crate::Policy) treats them as
/// it treats HTTP: never retried or counted against the provider, except
/// 409.
///
/// `grpc-retry-pushback-ms` gives the wait (capped, as
/// [`HttpClassifier`]'s). As gRFC A6 says, a pushback that is negative,
/// not a number, or given more than once asks the client not to retry:
/// it sets [`Failure::retry_hint`] to "do not retry" (the retry layer still
/// counts such a failure against a token-bucket budget, as A6 asks). A
/// response whose HTTP status is not 200 is a transport failure and is
/// read as [`HttpClassifier`] reads it (429, 503...). Other garbage values
/// (an unknown `grpc-status`, a `grpc-message` that is not text) are
/// ignored; nothing here panics on any input. Errors are read with [`classify_error`].
///
/// Statuses that arrive in trailers, after a streamed body, are beyond any
/// layer that looks at the response head; they reach the caller as the
/// call's `Status`.
///
/// ```
/// use palisade_core::{BoxError, Classify, FailureKind, GrpcClassifier, Outcome};
/// use http::Response;
/// use std::time::Duration;
///
/// let c = GrpcClassifier::new();
/// let res = Response::builder()
///     .header("grpc-status", "8")
///     .header("grpc-retry-pushback-ms", "1500")
///     .body(())
///     .unwrap();
/// assert_eq!(
///     Classify::<_, BoxError>::classify(&c, Ok(&res)),
///     Outcome::failure(FailureKind::RateLimited { retry_after: Some(Duration::from_millis(1500)) })
/// );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct GrpcClassifier {
    /// Reads non-200 responses, and holds the cap on waits.
    http: HttpClassifier,
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcClassifier {
    /// A classifier with the default cap on server-given waits.
    pub const fn new() -> Self {
        GrpcClassifier {
            http: HttpClassifier::new(),
        }
    }

    /// Caps every wait read from `grpc-retry-pushback-ms` (and, for non-200
    /// responses, `Retry-After`) at `max`.
    pub const fn max_retry_after(mut self, max: Duration) -> Self {
        self.http = self.http.max_retry_after(max);
        self
    }

    /// Classifies an HTTP status and the response headers.
    pub fn classify_parts(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        if status != StatusCode::OK {
            return self
                .http
                .classify_parts_with(status, headers, SystemTime::now);
        }
        let Some(code) = grpc_status(headers) else {
            return Outcome::Success;
        };
        let pushback = pushback(headers);
        let retry_after = pushback.and_then(|p| p.map(|d| d.min(self.http.max_retry_after)));
        let kind = match code {
            0 => return Outcome::Success,
            1 => FailureKind::Client(client_closed()),
            2 | 13 | 15 => FailureKind::Server(StatusCode::INTERNAL_SERVER_ERROR),
            3 | 9 | 11 => {
                message_kind(headers).unwrap_or(FailureKind::Client(StatusCode::BAD_REQUEST))
            }
            4 => FailureKind::Timeout,
            5 | 12 => FailureKind::Client(StatusCode::NOT_FOUND),
            6 | 10 => FailureKind::Client(StatusCode::CONFLICT),
            7 => FailureKind::Client(StatusCode::FORBIDDEN),
            8 => FailureKind::RateLimited { retry_after },
            14 => FailureKind::Overloaded { retry_after },
            16 => FailureKind::Client(StatusCode::UNAUTHORIZED),
            _ => FailureKind::Server(StatusCode::INTERNAL_SERVER_ERROR),
        };
        let mut failure = Failure::new(kind);
        if pushback == Some(None) {
            failure.retry_hint = Some(false);
        }
        Outcome::Failure(failure)
    }
}

impl<B> Classify<Response<B>, BoxError> for GrpcClassifier {
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
            Ok(res) => self.classify_parts(res.status(), res.headers()),
            Err(e) => Outcome::Failure(classify_error(&**e)),
        }
    }
}

/// `grpc-status` as a number; `None` when absent or not a number.
fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(&GRPC_STATUS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `grpc-retry-pushback-ms`: `None` when absent, `Some(Some(wait))` for
/// one non-negative number of milliseconds, and `Some(None)` ("do not
/// retry") for anything else: a negative value, one that is not a number,
/// or more than one value (gRFC A6; grpc-go does the same).
fn pushback(headers: &HeaderMap) -> Option<Option<Duration>> {
    let mut values = headers.get_all(&GRPC_RETRY_PUSHBACK_MS).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some(None);
    }
    let ms = first
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok());
    Some(
        ms.and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis),
    )
}

/// HTTP 499 (client closed request), which `StatusCode` has no constant for.
fn client_closed() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

/// What an invalid-argument status's message says, when it is one of the
/// LLM failures that another provider may not share.
fn message_kind(headers: &HeaderMap) -> Option<FailureKind> {
    // Percent-encoding leaves letters, digits, spaces and `_` alone, so the
    // phrases below match the raw value.
    let msg = headers
        .get(&GRPC_MESSAGE)?
        .to_str()
        .ok()?
        .to_ascii_lowercase();
    const CONTEXT: [&str; 5] = [
        "context_length_exceeded",
        "context length",
        "context window",
        "maximum context",
        "too many tokens",
    ];
    const FILTER: [&str; 3] = ["content_filter", "content filter", "content policy"];
    if CONTEXT.iter().any(|p| msg.contains(p)) {
        Some(FailureKind::ContextLengthExceeded)
    } else if FILTER.iter().any(|p| msg.contains(p)) {
        Some(FailureKind::ContentFiltered)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Policy, DEFAULT_MAX_RETRY_AFTER};

    fn classify(headers: &[(&str, &[u8])]) -> Outcome {
        let mut res = Response::builder();
        for (k, v) in headers {
            res = res.header(*k, *v);
        }
        let res = res.body(()).unwrap();
        Classify::<_, BoxError>::classify(&GrpcClassifier::new(), Ok(&res))
    }

    fn kind(code: &str) -> Option<FailureKind> {
        classify(&[("grpc-status", code.as_bytes())])
            .as_failure()
            .map(|f| f.kind)
    }

    #[test]
    fn every_status_code_maps_as_documented() {
        use FailureKind::*;
        let table = [
            ("0", None),
            ("1", Some(Client(StatusCode::from_u16(499).unwrap()))),
            ("2", Some(Server(StatusCode::INTERNAL_SERVER_ERROR))),
            ("3", Some(Client(StatusCode::BAD_REQUEST))),
            ("4", Some(Timeout)),
            ("5", Some(Client(StatusCode::NOT_FOUND))),
            ("6", Some(Client(StatusCode::CONFLICT))),
            ("7", Some(Client(StatusCode::FORBIDDEN))),
            ("8", Some(RateLimited { retry_after: None })),
            ("9", Some(Client(StatusCode::BAD_REQUEST))),
            ("10", Some(Client(StatusCode::CONFLICT))),
            ("11", Some(Client(StatusCode::BAD_REQUEST))),
            ("12", Some(Client(StatusCode::NOT_FOUND))),
            ("13", Some(Server(StatusCode::INTERNAL_SERVER_ERROR))),
            ("14", Some(Overloaded { retry_after: None })),
            ("15", Some(Server(StatusCode::INTERNAL_SERVER_ERROR))),
            ("16", Some(Client(StatusCode::UNAUTHORIZED))),
            ("17", Some(Server(StatusCode::INTERNAL_SERVER_ERROR))),
            (" 14 ", Some(Overloaded { retry_after: None })),
        ];
        for (code, want) in table {
            assert_eq!(kind(code), want, "grpc-status {code:?}");
        }
    }

    #[test]
    fn the_default_policy_treats_statuses_as_their_http_twins() {
        let p = Policy::default();
        let failure = |code: &str| {
            *classify(&[("grpc-status", code.as_bytes())])
                .as_failure()
                .unwrap()
        };
        // Transient server-side trouble: retried and counted.
        for code in ["14", "13", "4"] {
            assert!(p.retries(&failure(code)), "{code} retried");
            assert!(p.counts_for_breaker(&failure(code)), "{code} counted");
        }
        // The caller's own fault: neither.
        for code in ["3", "5", "7", "12", "16", "1"] {
            assert!(!p.retries(&failure(code)), "{code} not retried");
            assert!(!p.counts_for_breaker(&failure(code)), "{code} not counted");
        }
        // ABORTED: retried, as gRPC advises, not counted against the server.
        assert!(p.retries(&failure("10")));
        assert!(!p.counts_for_breaker(&failure("10")));
    }

    #[test]
    fn pushback_is_the_wait_capped_and_negative_means_do_not_retry() {
        let out = classify(&[("grpc-status", b"14"), ("grpc-retry-pushback-ms", b"250")]);
        assert_eq!(
            out.as_failure().unwrap().kind,
            FailureKind::Overloaded {
                retry_after: Some(Duration::from_millis(250))
            }
        );
        let out = classify(&[
            ("grpc-status", b"8"),
            ("grpc-retry-pushback-ms", b"999999999999"),
        ]);
        assert_eq!(
            out.as_failure().unwrap().kind.retry_after(),
            Some(DEFAULT_MAX_RETRY_AFTER)
        );
        let out = classify(&[("grpc-status", b"14"), ("grpc-retry-pushback-ms", b"-1")]);
        let f = out.as_failure().unwrap();
        assert_eq!(f.retry_hint, Some(false));
        assert!(!Policy::default().retries(f));
        assert_eq!(f.kind.retry_after(), None);
        // Two values: do not retry (grpc-go), whatever they say.
        let out = classify(&[
            ("grpc-status", b"14"),
            ("grpc-retry-pushback-ms", b"10"),
            ("grpc-retry-pushback-ms", b"20"),
        ]);
        let f = out.as_failure().unwrap();
        assert_eq!(f.retry_hint, Some(false));
        assert_eq!(f.kind.retry_after(), None);
    }

    #[test]
    fn garbage_status_is_ignored_and_garbage_pushback_means_do_not_retry() {
        assert_eq!(classify(&[("grpc-status", b"banana")]), Outcome::Success);
        assert_eq!(classify(&[("grpc-status", b"\xff\xfe")]), Outcome::Success);
        assert_eq!(classify(&[("grpc-status", b"-3")]), Outcome::Success);
        assert_eq!(classify(&[]), Outcome::Success, "status comes in trailers");
        for junk in [
            &b"soon"[..],
            b"",
            b"1.5",
            b"\xff",
            b"99999999999999999999999",
        ] {
            let out = classify(&[("grpc-status", b"14"), ("grpc-retry-pushback-ms", junk)]);
            let f = out.as_failure().unwrap();
            assert_eq!(f.kind.retry_after(), None);
            assert_eq!(
                f.retry_hint,
                Some(false),
                "gRFC A6: unparseable = do not retry"
            );
        }
        let c = GrpcClassifier::new();
        let msg = Response::builder()
            .header("grpc-status", "3")
            .header("grpc-message", &b"\xff\xfe"[..])
            .body(())
            .unwrap();
        assert_eq!(
            Classify::<_, BoxError>::classify(&c, Ok(&msg))
                .as_failure()
                .unwrap()
                .kind,
            FailureKind::Client(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn an_invalid_argument_names_llm_failures_from_its_message() {
        let out = classify(&[
            ("grpc-status", b"3"),
            (
                "grpc-message",
                b"This model's maximum context length is 8192 tokens",
            ),
        ]);
        assert_eq!(
            out.as_failure().unwrap().kind,
            FailureKind::ContextLengthExceeded
        );
        let out = classify(&[
            ("grpc-status", b"9"),
            ("grpc-message", b"blocked by the Content Filter"),
        ]);
        assert_eq!(out.as_failure().unwrap().kind, FailureKind::ContentFiltered);
        // Only invalid-argument-like statuses are read that way.
        let out = classify(&[("grpc-status", b"13"), ("grpc-message", b"context length")]);
        assert!(matches!(
            out.as_failure().unwrap().kind,
            FailureKind::Server(_)
        ));
    }

    #[test]
    fn a_non_200_response_is_a_transport_failure_read_as_http() {
        let res = Response::builder()
            .status(503)
            .header("retry-after", "3")
            .header("grpc-status", "0")
            .body(())
            .unwrap();
        assert_eq!(
            Classify::<_, BoxError>::classify(&GrpcClassifier::new(), Ok(&res)),
            Outcome::failure(FailureKind::Overloaded {
                retry_after: Some(Duration::from_secs(3))
            })
        );
        let capped = GrpcClassifier::new().max_retry_after(Duration::from_secs(1));
        let res = Response::builder()
            .header("grpc-status", "8")
            .header("grpc-retry-pushback-ms", "5000")
            .body(())
            .unwrap();
        assert_eq!(
            Classify::<_, BoxError>::classify(&capped, Ok(&res))
                .as_failure()
                .unwrap()
                .kind
                .retry_after(),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn errors_are_read_like_any_other() {
        let io: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        let out = Classify::<Response<()>, BoxError>::classify(&GrpcClassifier::new(), Err(&io));
        assert_eq!(out.as_failure().unwrap().kind, FailureKind::Connect);
    }
}
