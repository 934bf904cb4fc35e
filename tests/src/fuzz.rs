//! Fuzz entry points: each takes arbitrary bytes and must never panic.
//! `fuzz/` runs them under libFuzzer (`cargo +nightly fuzz run NAME`);
//! `tests/tests/fuzz_smoke.rs` runs them on stable over seeded random and
//! mutated inputs in CI.

use std::time::{Duration, SystemTime};

use palisade_core::{
    classify_error_body, parse_retry_after, parse_retry_after_ms, BoxError, Classify,
    GrpcClassifier, HttpClassifier, Outcome,
};

/// A number from the first NUL-separated part of the input, to pick an
/// HTTP status with.
fn seed(part: Option<&[u8]>) -> u16 {
    part.map(|p| {
        p.iter()
            .fold(0u16, |a, b| a.wrapping_mul(31).wrapping_add(*b as u16))
    })
    .unwrap_or(0)
}

/// Whatever wait a classifier read from headers, it is capped.
fn assert_wait_capped(outcome: &Outcome) {
    if let Some(after) = outcome.as_failure().and_then(|f| f.kind.retry_after()) {
        assert!(
            after <= palisade_core::DEFAULT_MAX_RETRY_AFTER,
            "capped: {after:?}"
        );
    }
}

/// gRPC classification: the bytes become an HTTP status and the values of
/// `grpc-status`, `grpc-message` and `grpc-retry-pushback-ms` (split on
/// NUL). Any wait read must be capped.
pub fn grpc_headers(data: &[u8]) {
    let mut parts = data.split(|b| *b == 0);
    let status = seed(parts.next());
    // Mostly 200 (where the gRPC headers are read), sometimes anything.
    let status = if status.is_multiple_of(4) {
        100 + status % 500
    } else {
        200
    };
    let mut builder = http::Response::builder().status(status);
    for (name, value) in ["grpc-status", "grpc-message", "grpc-retry-pushback-ms"]
        .iter()
        .zip(parts.by_ref())
    {
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            builder = builder.header(*name, v);
        }
    }
    let Ok(res) = builder.body(()) else { return };
    assert_wait_capped(&Classify::<_, BoxError>::classify(
        &GrpcClassifier::new(),
        Ok(&res),
    ));
}

/// Header parsing and HTTP classification: the bytes become a status and a
/// few header values (split on NUL), and an error body.
pub fn headers(data: &[u8]) {
    let mut parts = data.split(|b| *b == 0);
    let status = seed(parts.next());
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let cap = Duration::from_secs(600);
    let mut builder = http::Response::builder().status(100 + status % 500);
    for (name, value) in ["retry-after", "retry-after-ms", "x-should-retry"]
        .iter()
        .zip(parts.by_ref())
    {
        if let Ok(text) = std::str::from_utf8(value) {
            let _ = parse_retry_after(text, now);
            let _ = parse_retry_after_ms(text).map(|d| d.min(cap));
        }
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            builder = builder.header(*name, v);
        }
    }
    let body: Vec<u8> = parts.flatten().copied().collect();
    let _ = classify_error_body(&body);
    if let Ok(res) = builder.body(body) {
        let classifier = HttpClassifier::new();
        assert_wait_capped(&Classify::<_, BoxError>::classify(&classifier, Ok(&res)));
        let _ = classifier.classify_buffered(&res);
    }
}

/// Config parsing: the bytes as TOML and as JSON. Either parses and
/// validates, or is refused with an error; never a panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = palisade::Config::from_toml(text) {
            for id in cfg.provider_order() {
                let _ = cfg.provider(&id);
            }
        }
        let _ = palisade::Config::from_json(text);
    }
}

/// `grpc-timeout` parsing and formatting round trip.
pub fn grpc_timeout(data: &[u8]) {
    if let Some(d) = palisade_deadline::parse_grpc_timeout(data) {
        let again = palisade_deadline::format_grpc_timeout(d);
        let back =
            palisade_deadline::parse_grpc_timeout(again.as_bytes()).expect("our own output parses");
        assert!(back <= d);
    }
}
