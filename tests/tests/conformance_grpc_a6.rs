//! Conformance with gRFC A6 ("gRPC Retry Design": retry throttling and
//! server pushback) and grpc-go's implementation of it
//! (`stream.go`, `clientStream.shouldRetry`; `retry_test.go`).
//!
//! A RetryLayer with [`GrpcClassifier`] and a token-bucket budget over a
//! scripted gRPC server on tokio's paused clock. Replies are trailers-only
//! responses: HTTP 200 with `grpc-status` (and `grpc-retry-pushback-ms`)
//! in the headers, as a server refusing a call sends them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;
use palisade_core::{BoxError, GrpcClassifier, WithDeadline};
use palisade_retry::{Backoff, BudgetSnapshot, Jitter, RetryBudget, RetryLayer};
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

type Req = WithDeadline<u32>;
/// A gRPC status and the `grpc-retry-pushback-ms` values to send with it.
type Reply<'a> = (&'a str, &'a [&'a str]);
type OwnedReply = (String, Vec<String>);

const UNAVAILABLE: &str = "14";
const INVALID_ARGUMENT: &str = "3";
const OK: &str = "0";

/// A gRPC server answering from a script (the last reply repeats), logging
/// when each call arrived.
#[derive(Clone)]
struct Server {
    replies: Arc<Mutex<VecDeque<OwnedReply>>>,
    calls: Arc<Mutex<Vec<Instant>>>,
}

impl Server {
    fn new(replies: &[Reply<'_>]) -> Self {
        let owned = replies
            .iter()
            .map(|(s, p)| (s.to_string(), p.iter().map(|p| p.to_string()).collect()))
            .collect();
        Server {
            replies: Arc::new(Mutex::new(owned)),
            calls: Arc::default(),
        }
    }

    fn reply(&self) -> Response<()> {
        self.calls.lock().unwrap().push(Instant::now());
        let mut q = self.replies.lock().unwrap();
        let (status, pushbacks) = if q.len() > 1 {
            q.pop_front().unwrap()
        } else {
            q.front().unwrap().clone()
        };
        let mut res = Response::builder().header("grpc-status", status);
        for p in pushbacks {
            res = res.header("grpc-retry-pushback-ms", p);
        }
        res.body(()).unwrap()
    }

    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// When each call arrived, in ms from `start`.
    fn times(&self, start: Instant) -> Vec<u64> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .map(|t| (*t - start).as_millis() as u64)
            .collect()
    }
}

/// Sends one request through a retry layer over `server`; returns the
/// gRPC status of the answer the caller got.
async fn call(server: &Server, budget: &RetryBudget, backoff: Backoff) -> String {
    let layer = RetryLayer::builder()
        .classifier(GrpcClassifier::new())
        .budget(budget.clone())
        .max_attempts(5)
        .backoff(backoff)
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let s = server.clone();
    let svc = layer.layer(service_fn(move |_: Req| {
        let res = s.reply();
        async move { Ok::<_, BoxError>(res) }
    }));
    let res = svc.oneshot(WithDeadline::new(0)).await.unwrap();
    res.headers()["grpc-status"].to_str().unwrap().to_owned()
}

fn tokens(budget: &RetryBudget) -> f64 {
    match budget.snapshot() {
        BudgetSnapshot::TokenBucket { tokens, .. } => tokens,
        other => panic!("not a token bucket: {other:?}"),
    }
}

fn constant() -> Backoff {
    Backoff::constant(Duration::from_millis(100))
}

/// A6 "Throttling Retry Attempts and Hedged RPCs": every failed attempt
/// with a retryable status takes a token; once `token_count` ≤
/// `max_tokens / 2`, no more retries. (grpc-go `TestRetryThrottling`
/// takes the same steps with max 10, ratio 0.5.)
#[tokio::test(start_paused = true)]
async fn a6_throttling_stops_retries_at_half_the_bucket() {
    let budget = RetryBudget::token_bucket(10, 0.5).unwrap();
    let server = Server::new(&[(UNAVAILABLE, &[])]);
    // Attempts 1..=5 each fail: 10 → 5 tokens; retries were allowed while
    // more than 5 remained, so the fifth attempt happens and then stops.
    assert_eq!(call(&server, &budget, constant()).await, UNAVAILABLE);
    assert_eq!(server.calls(), 5);
    assert_eq!(tokens(&budget), 5.0);
    // Throttled now: one attempt, no retry, one more token gone.
    assert_eq!(call(&server, &budget, constant()).await, UNAVAILABLE);
    assert_eq!(server.calls(), 6);
    assert_eq!(tokens(&budget), 4.0);
}

/// A6 "Pushback": a server that answers a retryable status with a
/// negative pushback asks the client not to retry, and grpc-go counts it as
/// a failure for throttling (`cs.retryThrottler.throttle() // This counts
/// as a failure for throttling.`). Before the fix the early return skipped
/// the token, so a server saying "stop" never drained the bucket.
#[tokio::test(start_paused = true)]
async fn a6_negative_pushback_is_not_retried_and_counts_for_throttling() {
    let budget = RetryBudget::token_bucket(10, 0.5).unwrap();
    let server = Server::new(&[(UNAVAILABLE, &["-1"])]);
    for n in 1..=5 {
        assert_eq!(call(&server, &budget, constant()).await, UNAVAILABLE);
        assert_eq!(server.calls(), n, "not retried");
    }
    assert_eq!(tokens(&budget), 5.0, "each one took a token");
    // The bucket is at half: an ordinary retryable failure is now throttled.
    let plain = Server::new(&[(UNAVAILABLE, &[])]);
    call(&plain, &budget, constant()).await;
    assert_eq!(plain.calls(), 1, "throttled: no retry");
}

/// A6: "If the value for pushback is negative or unparseable, then it will
/// be seen as the server asking the client not to retry at all." grpc-go
/// also takes a token for it.
#[tokio::test(start_paused = true)]
async fn a6_unparseable_pushback_means_do_not_retry() {
    for junk in ["soon", "1.5", "", "99999999999999999999999"] {
        let budget = RetryBudget::token_bucket(10, 0.5).unwrap();
        let server = Server::new(&[(UNAVAILABLE, &[junk]), (OK, &[])]);
        assert_eq!(call(&server, &budget, constant()).await, UNAVAILABLE);
        assert_eq!(server.calls(), 1, "{junk:?}: not retried");
        assert_eq!(tokens(&budget), 9.0, "{junk:?}: counted for throttling");
    }
}

/// grpc-go `shouldRetry`: "Server retry pushback specified multiple values
/// (%q); not retrying." (and a token taken).
#[tokio::test(start_paused = true)]
async fn grpc_go_two_pushback_values_mean_do_not_retry() {
    let budget = RetryBudget::token_bucket(10, 0.5).unwrap();
    let server = Server::new(&[(UNAVAILABLE, &["10", "20"]), (OK, &[])]);
    assert_eq!(call(&server, &budget, constant()).await, UNAVAILABLE);
    assert_eq!(server.calls(), 1);
    assert_eq!(tokens(&budget), 9.0);
}

/// A6: a valid pushback is the delay before the next attempt, and "the
/// backoff resets": grpc-go's `numRetriesSincePushback` is zeroed, so the
/// attempt after a pushed-back one that fails again waits the initial
/// backoff, not the backoff of its attempt number.
#[tokio::test(start_paused = true)]
async fn a6_a_pushback_resets_the_backoff() {
    let budget = RetryBudget::unlimited();
    let server = Server::new(&[
        (UNAVAILABLE, &[]),
        (UNAVAILABLE, &[]),
        (UNAVAILABLE, &["500"]),
        (UNAVAILABLE, &[]),
        (OK, &[]),
    ]);
    let start = Instant::now();
    let backoff = Backoff::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(60));
    assert_eq!(call(&server, &budget, backoff).await, OK);
    // 1 s, 2 s (exponential), 0.5 s (the pushback), then 1 s again: the
    // backoff started over (by attempt number it would have been 8 s).
    assert_eq!(server.times(start), vec![0, 1000, 3000, 3500, 4500]);
}

/// A6: only failures with a retryable status count for throttling; the
/// caller's own error (INVALID_ARGUMENT) neither retries nor takes a token,
/// even with a "do not retry" pushback.
#[tokio::test(start_paused = true)]
async fn a6_non_retryable_statuses_take_no_token() {
    let budget = RetryBudget::token_bucket(10, 0.5).unwrap();
    let server = Server::new(&[(INVALID_ARGUMENT, &[])]);
    call(&server, &budget, constant()).await;
    let pushed = Server::new(&[(INVALID_ARGUMENT, &["-1"])]);
    call(&pushed, &budget, constant()).await;
    assert_eq!(server.calls() + pushed.calls(), 2, "no retries");
    assert_eq!(tokens(&budget), 10.0);
}

/// A6: a success puts back `token_ratio` tokens, capped at `max_tokens`.
#[tokio::test(start_paused = true)]
async fn a6_successes_refill_by_the_token_ratio() {
    let budget = RetryBudget::token_bucket(10, 0.5).unwrap();
    let failing = Server::new(&[(UNAVAILABLE, &["-1"])]);
    for _ in 0..4 {
        call(&failing, &budget, constant()).await;
    }
    assert_eq!(tokens(&budget), 6.0);
    let ok = Server::new(&[(OK, &[])]);
    call(&ok, &budget, constant()).await;
    assert_eq!(tokens(&budget), 6.5);
    for _ in 0..20 {
        call(&ok, &budget, constant()).await;
    }
    assert_eq!(tokens(&budget), 10.0, "capped");
}

/// Deliberate difference: grpc-go accepts a `tokenRatio` above
/// `maxTokens` (one success refills the bucket); palisade refuses it,
/// naming the field: a bucket that one success refills never throttles
/// anything a success follows, which is not what anyone configuring
/// throttling means.
#[test]
fn deliberate_a_token_ratio_above_max_tokens_is_refused() {
    let err = RetryBudget::token_bucket(10, 11.0).unwrap_err();
    assert_eq!(err.problems()[0].path, "retry.budget.token_ratio");
}
