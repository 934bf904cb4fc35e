//! Conformance with Resilience4j's circuit breaker
//! (`io.github.resilience4j.circuitbreaker.internal.CircuitBreakerStateMachine`
//! and its `CircuitBreakerStateMachineTest`), on tokio's paused clock.
//!
//! Each test states the Resilience4j behaviour it mirrors (the state
//! machine's method or state class, and the setting involved). Where
//! palisade differs on purpose, the test is named `deliberate_...` and says
//! why; README's "Differences from Resilience4j, gRFC A6 and tower" lists
//! them all.

use std::time::Duration;

use http::Response;
use palisade_breaker::{BreakerHandle, CircuitBreakerLayer, HalfOpenRule, TransitionReason};
use palisade_core::{BoxError, CircuitState, HttpClassifier};
use tower::{service_fn, util::BoxCloneSyncService, Layer, ServiceExt};

/// (status, how long the provider takes to answer)
type Call = (u16, Duration);
type Svc = BoxCloneSyncService<Call, Response<()>, BoxError>;

const SEC: Duration = Duration::from_secs(1);

/// A provider that answers `status` after `delay`, behind `builder`'s
/// breaker, reading HTTP statuses.
fn breaker(
    builder: palisade_breaker::Builder<palisade_core::ErrorClassifier>,
) -> (Svc, BreakerHandle) {
    let layer = builder
        .classifier(HttpClassifier::new())
        .open_jitter(0.0)
        .build()
        .unwrap();
    let handle = layer.handle();
    let provider = service_fn(|(status, delay): Call| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, BoxError>(Response::builder().status(status).body(()).unwrap())
    });
    let svc = layer.layer(provider).map_err(BoxError::from);
    (BoxCloneSyncService::new(svc), handle)
}

async fn send(svc: &Svc, status: u16, delay: Duration) -> Result<u16, BoxError> {
    svc.clone()
        .oneshot((status, delay))
        .await
        .map(|r| r.status().as_u16())
}

/// `CircuitBreakerStateMachine.onError` with an ignored exception
/// (`ignoreExceptions`): the permission is released and nothing is
/// recorded, however long the call took, so five slow ignored calls leave
/// it Closed with 0 failed and 0 slow calls. Here the ignored outcome is
/// the caller's own 4xx. Before the fix each one counted as slow and the
/// fifth opened the breaker ("5 calls, 5 slow").
#[tokio::test(start_paused = true)]
async fn ignored_calls_are_not_recorded_even_when_slow() {
    let (svc, h) = breaker(
        CircuitBreakerLayer::builder()
            .consecutive_failures(None)
            .failure_rate(Some(0.5))
            .slow_calls(0.5, SEC)
            .count_window(5)
            .minimum_calls(5),
    );
    for _ in 0..5 {
        assert_eq!(send(&svc, 400, 2 * SEC).await.unwrap(), 400);
    }
    let m = h.snapshot();
    assert_eq!(m.state, CircuitState::Closed);
    assert_eq!((m.window_calls, m.failures, m.slow_calls), (0, 0, 0));
    assert_eq!(m.ignored, 5);
    // The same five calls, answered 200 slowly, do open it: the slow-call
    // rule is on and only the ignored outcome was exempt.
    for _ in 0..5 {
        send(&svc, 200, 2 * SEC).await.unwrap();
    }
    assert_eq!(h.state(), CircuitState::Open);
}

/// `CircuitBreakerStateMachine.HalfOpenState` with
/// `maxWaitDurationInHalfOpenState`: once the wait is over the breaker is
/// Open, whether or not a call arrives to notice. palisade needs no timer
/// for it: the state is brought up to date when it is read.
#[tokio::test(start_paused = true)]
async fn half_open_past_its_max_wait_reports_open_without_traffic() {
    let (svc, h) = breaker(
        CircuitBreakerLayer::builder()
            .consecutive_failures(Some(1))
            .open_duration(10 * SEC)
            .half_open_probes(1)
            .half_open_max_wait(Some(5 * SEC)),
    );
    send(&svc, 500, Duration::ZERO).await.unwrap();
    assert_eq!(h.state(), CircuitState::Open);
    tokio::time::advance(10 * SEC).await;
    // A probe that never answers keeps it half-open.
    let stuck = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, 200, 3600 * SEC).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(h.state(), CircuitState::HalfOpen);
    tokio::time::advance(4 * SEC).await;
    assert_eq!(h.state(), CircuitState::HalfOpen, "4 s of 5");
    tokio::time::advance(SEC).await;
    assert_eq!(h.state(), CircuitState::Open, "no call needed to notice");
    assert!(matches!(
        h.snapshot().last_transition.reason,
        TransitionReason::HalfOpenTimeout { .. }
    ));
    stuck.abort();
}

/// `CircuitBreakerStateMachine.transitionToMetricsOnlyState`: entering
/// METRICS_ONLY starts a fresh record (a new `CircuitBreakerMetrics`).
/// palisade's Disabled does the same: the window and the failure streak
/// are cleared.
#[tokio::test(start_paused = true)]
async fn disabling_clears_the_window_as_metrics_only_does() {
    let (svc, h) = breaker(
        CircuitBreakerLayer::builder()
            .consecutive_failures(Some(10))
            .failure_rate(Some(0.5))
            .count_window(10)
            .minimum_calls(10),
    );
    for _ in 0..4 {
        send(&svc, 500, Duration::ZERO).await.unwrap();
    }
    let before = h.snapshot();
    assert_eq!((before.window_calls, before.consecutive_failures), (4, 4));
    h.disable();
    let after = h.snapshot();
    assert_eq!(after.state, CircuitState::Disabled);
    assert_eq!((after.window_calls, after.consecutive_failures), (0, 0));
    // Calls in Disabled are recorded afresh and never trip it.
    for _ in 0..12 {
        send(&svc, 500, Duration::ZERO).await.unwrap();
    }
    let m = h.snapshot();
    assert_eq!(m.state, CircuitState::Disabled);
    assert_eq!(m.window_calls, 10);
    assert_eq!(m.failure_rate, 1.0);
}

/// `CircuitBreakerStateMachine.HalfOpenState` (Resilience4j's only rule):
/// `permittedNumberOfCallsInHalfOpenState` calls are let through, then their
/// failure rate is held against `failureRateThreshold`: at or above it the
/// breaker re-opens, below it closes. palisade offers it as
/// `HalfOpenRule::Rate`.
#[tokio::test(start_paused = true)]
async fn half_open_rate_rule_judges_the_permitted_calls_as_a_window() {
    let build = || {
        breaker(
            CircuitBreakerLayer::builder()
                .consecutive_failures(Some(1))
                .failure_rate(Some(0.5))
                .count_window(4)
                .minimum_calls(4)
                .open_duration(SEC)
                .half_open_probes(4)
                .half_open_rule(HalfOpenRule::Rate),
        )
    };
    // One failure of four: 25% < 50%, so it closes.
    let (svc, h) = build();
    send(&svc, 500, Duration::ZERO).await.unwrap();
    tokio::time::advance(SEC).await;
    for (i, status) in [500, 200, 200].into_iter().enumerate() {
        send(&svc, status, Duration::ZERO).await.unwrap();
        assert_eq!(h.state(), CircuitState::HalfOpen, "after probe {}", i + 1);
    }
    send(&svc, 200, Duration::ZERO).await.unwrap();
    assert_eq!(h.state(), CircuitState::Closed);

    // Two failures of four: 50% ≥ 50%, so it re-opens, and only after the
    // fourth probe (the default rule would have re-opened at the first).
    let (svc, h) = build();
    send(&svc, 500, Duration::ZERO).await.unwrap();
    tokio::time::advance(SEC).await;
    for status in [500, 500, 200] {
        send(&svc, status, Duration::ZERO).await.unwrap();
        assert_eq!(h.state(), CircuitState::HalfOpen);
    }
    send(&svc, 200, Duration::ZERO).await.unwrap();
    assert_eq!(h.state(), CircuitState::Open);
    assert!(matches!(
        h.snapshot().last_transition.reason,
        TransitionReason::FailureRate { calls: 4, .. }
    ));
}

/// `HalfOpenState.tryAcquirePermission`: no more than the permitted number
/// of calls in half-open, in total: the fifth call is refused while the
/// four probes are judged. An ignored probe (`releasePermission`) gives its
/// place to another.
#[tokio::test(start_paused = true)]
async fn half_open_rate_rule_admits_exactly_the_permitted_calls() {
    let (svc, h) = breaker(
        CircuitBreakerLayer::builder()
            .consecutive_failures(Some(1))
            .failure_rate(Some(0.5))
            .count_window(4)
            .minimum_calls(4)
            .open_duration(SEC)
            .half_open_probes(2)
            .half_open_rule(HalfOpenRule::Rate),
    );
    send(&svc, 500, Duration::ZERO).await.unwrap();
    tokio::time::advance(SEC).await;
    send(&svc, 200, Duration::ZERO).await.unwrap();
    // An ignored probe frees its place...
    send(&svc, 404, Duration::ZERO).await.unwrap();
    assert_eq!(h.state(), CircuitState::HalfOpen);
    // ...so one more probe is admitted, and the pair is judged.
    let slow_probe = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, 200, 10 * SEC).await }
    });
    tokio::task::yield_now().await;
    let refused = send(&svc, 200, Duration::ZERO).await.unwrap_err();
    assert!(refused.to_string().contains("half-open"), "{refused}");
    tokio::time::advance(10 * SEC).await;
    slow_probe.await.unwrap().unwrap();
    assert_eq!(h.state(), CircuitState::Closed);
}

/// Deliberate difference: in Resilience4j a *successful* call that
/// completes a window whose failure rate is above the threshold opens the
/// breaker (`CircuitBreakerMetrics.onSuccess` checks the rate too). In
/// palisade a success never trips it: the provider just answered well, and
/// opening on it would refuse a provider at the moment it shows it works.
/// The next failure is judged against the same window.
#[tokio::test(start_paused = true)]
async fn deliberate_a_success_never_trips_the_breaker() {
    let (svc, h) = breaker(
        CircuitBreakerLayer::builder()
            .consecutive_failures(None)
            .failure_rate(Some(0.5))
            .count_window(4)
            .minimum_calls(4),
    );
    for status in [500, 500, 500] {
        send(&svc, status, Duration::ZERO).await.unwrap();
    }
    send(&svc, 200, Duration::ZERO).await.unwrap();
    assert_eq!(h.state(), CircuitState::Closed, "75% failed, but a success");
    send(&svc, 500, Duration::ZERO).await.unwrap();
    assert_eq!(h.state(), CircuitState::Open, "the next failure trips it");
}

/// Deliberate difference: under the default `HalfOpenRule::AnyFailure`,
/// one failed probe re-opens at once (Resilience4j waits for the whole set
/// of permitted calls; `HalfOpenRule::Rate` does that).
#[tokio::test(start_paused = true)]
async fn deliberate_by_default_any_failed_probe_reopens() {
    let (svc, h) = breaker(
        CircuitBreakerLayer::builder()
            .consecutive_failures(Some(1))
            .open_duration(SEC)
            .half_open_probes(4)
            .half_open_successes(4),
    );
    send(&svc, 500, Duration::ZERO).await.unwrap();
    tokio::time::advance(SEC).await;
    send(&svc, 200, Duration::ZERO).await.unwrap();
    send(&svc, 500, Duration::ZERO).await.unwrap();
    assert_eq!(h.state(), CircuitState::Open);
}

/// Deliberate difference: Resilience4j has an opt-in
/// `automaticTransitionFromOpenToHalfOpenEnabled` (a timer per breaker);
/// palisade has no timer: Open becomes HalfOpen when the first call after
/// the open period arrives, and until then the breaker reports Open with
/// `open_remaining` at zero.
#[tokio::test(start_paused = true)]
async fn deliberate_open_to_half_open_waits_for_a_call() {
    let (svc, h) = breaker(
        CircuitBreakerLayer::builder()
            .consecutive_failures(Some(1))
            .open_duration(SEC),
    );
    send(&svc, 500, Duration::ZERO).await.unwrap();
    tokio::time::advance(5 * SEC).await;
    assert_eq!(h.state(), CircuitState::Open);
    assert_eq!(h.open_remaining(), Some(Duration::ZERO));
    assert!(!h.is_refusing(), "a call now would be let through");
    send(&svc, 200, Duration::ZERO).await.unwrap();
    assert_ne!(h.state(), CircuitState::Open);
}

/// Deliberate difference: Resilience4j clamps `minimumNumberOfCalls` to the
/// sliding window's size; palisade refuses the config, naming the field,
/// since such a rate rule could never fire as written.
#[test]
fn deliberate_minimum_calls_above_the_window_is_refused() {
    let err = CircuitBreakerLayer::builder()
        .count_window(10)
        .minimum_calls(20)
        .build()
        .unwrap_err();
    assert_eq!(err.problems()[0].path, "breaker.minimum_calls");
}
