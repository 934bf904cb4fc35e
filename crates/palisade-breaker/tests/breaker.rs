//! Behaviour of the circuit breaker on tokio's paused clock.

mod common;

use std::time::Duration;

use common::*;
use palisade_breaker::{
    BreakerError, CircuitBreaker, CircuitBreakerLayer, ReadinessMode, TransitionReason,
};
use palisade_core::{BoxError, CircuitState, HttpClassifier, RejectReason, Rejected};
use tokio::time::{advance, Instant};
use tower::{Layer, Service, ServiceExt};

type Svc = CircuitBreaker<Provider, HttpClassifier>;

fn base() -> palisade_breaker::Builder<HttpClassifier> {
    CircuitBreakerLayer::builder()
        .provider("p")
        .classifier(HttpClassifier::new())
        .consecutive_failures(None)
        .failure_rate(None)
        .open_jitter(0.0)
        .half_open_probes(1)
        .half_open_successes(1)
}

fn make(b: palisade_breaker::Builder<HttpClassifier>) -> (Svc, Provider) {
    let p = Provider::default();
    (b.build().unwrap().layer(p.clone()), p)
}

/// One call; `Ok(status)` if it reached the provider, `Err(rejection)` if the
/// breaker refused it.
async fn call(svc: &mut Svc, c: Call) -> Result<u16, Rejected> {
    match svc.ready().await.unwrap().call(c).await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(BreakerError::Refused(r)) => Err(r.into()),
        Err(e) => panic!("only rejections fail here, got {e}"),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_at_exactly_n() {
    let (mut svc, p) = make(base().consecutive_failures(Some(3)));
    let h = svc.handle();
    for _ in 0..2 {
        call(&mut svc, FAIL).await.unwrap();
    }
    assert_eq!(
        h.state(),
        CircuitState::Closed,
        "N-1 failures must not trip"
    );
    // a success in between resets the run
    call(&mut svc, OK).await.unwrap();
    for _ in 0..2 {
        call(&mut svc, FAIL).await.unwrap();
    }
    assert_eq!(h.state(), CircuitState::Closed);
    call(&mut svc, FAIL).await.unwrap();
    assert_eq!(h.state(), CircuitState::Open, "N failures trip");
    assert_eq!(
        h.snapshot().last_transition.reason,
        TransitionReason::ConsecutiveFailures {
            count: 3,
            threshold: 3
        }
    );
    let before = p.calls();
    let rej = call(&mut svc, OK).await.unwrap_err();
    assert_eq!(
        p.calls(),
        before,
        "open breaker must not touch the provider"
    );
    assert_eq!(rej.reason(), RejectReason::CircuitOpen(CircuitState::Open));
    assert_eq!(rej.provider().unwrap().as_str(), "p");
    assert_eq!(rej.retry_after(), Some(secs(30)));
}

#[tokio::test(start_paused = true)]
async fn failure_rate_boundary_and_minimum_calls() {
    // window of 10, rate 0.5, at least 10 calls
    let b = base()
        .failure_rate(Some(0.5))
        .count_window(10)
        .minimum_calls(10);
    let (mut svc, _) = make(b.clone());
    let h = svc.handle();
    // 9 failures: below minimum_calls, no trip
    for _ in 0..9 {
        call(&mut svc, FAIL).await.unwrap();
    }
    assert_eq!(
        h.state(),
        CircuitState::Closed,
        "rate rules wait for minimum_calls"
    );
    // a 10th call that succeeds does not trip (a success never trips) ...
    call(&mut svc, OK).await.unwrap();
    assert_eq!(h.state(), CircuitState::Closed);
    // ... the next failure does: window = 9 failures of 10
    call(&mut svc, FAIL).await.unwrap();
    assert_eq!(h.state(), CircuitState::Open);

    // exactly at the threshold: 5 of 10 trips; 4 of 10 does not
    let (mut svc, _) = make(b.clone());
    let h = svc.handle();
    for _ in 0..6 {
        call(&mut svc, OK).await.unwrap();
    }
    for _ in 0..4 {
        call(&mut svc, FAIL).await.unwrap();
    }
    assert_eq!(h.snapshot().failure_rate, 0.4);
    assert_eq!(h.state(), CircuitState::Closed, "40% < 50%");
    call(&mut svc, FAIL).await.unwrap(); // window now 5 OK + 5 FAIL
    assert_eq!(h.state(), CircuitState::Open, "50% >= 50%");
    match h.snapshot().last_transition.reason {
        TransitionReason::FailureRate {
            rate,
            threshold,
            calls,
        } => {
            assert_eq!((rate, threshold, calls), (0.5, 0.5, 10));
        }
        other => panic!("unexpected reason {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_failures() {
    let b = base()
        .failure_rate(Some(0.5))
        .time_window(secs(10), 10)
        .minimum_calls(4);
    let (mut svc, _) = make(b);
    let h = svc.handle();
    for _ in 0..3 {
        call(&mut svc, FAIL).await.unwrap();
    }
    // those three age out of the 10 s window
    advance(secs(10)).await;
    call(&mut svc, OK).await.unwrap();
    call(&mut svc, OK).await.unwrap();
    call(&mut svc, OK).await.unwrap();
    call(&mut svc, FAIL).await.unwrap();
    assert_eq!(h.snapshot().window_calls, 4);
    assert_eq!(
        h.state(),
        CircuitState::Closed,
        "1 of 4 recent calls failed"
    );
    // had the old three still counted, 5 of 8 would trip here
    call(&mut svc, FAIL).await.unwrap();
    assert_eq!(
        h.state(),
        CircuitState::Closed,
        "2 of 5 recent calls is 40%"
    );
    call(&mut svc, FAIL).await.unwrap();
    assert_eq!(h.state(), CircuitState::Open, "3 of 6 is 50%");
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_the_slow_rule() {
    let b = base()
        .slow_calls(0.5, secs(5))
        .count_window(4)
        .minimum_calls(4);
    let (mut svc, _) = make(b);
    let h = svc.handle();
    call(&mut svc, OK).await.unwrap();
    call(&mut svc, OK).await.unwrap();
    call(&mut svc, slow(200, Duration::from_millis(4999)))
        .await
        .unwrap();
    assert_eq!(
        h.snapshot().slow_calls,
        0,
        "just under the threshold is not slow"
    );
    call(&mut svc, slow(200, secs(5))).await.unwrap();
    assert_eq!(h.snapshot().slow_calls, 1);
    assert_eq!(h.state(), CircuitState::Closed, "1 of 4 slow");
    call(&mut svc, slow(200, secs(6))).await.unwrap();
    assert_eq!(
        h.state(),
        CircuitState::Open,
        "2 of 4 slow, successes or not"
    );
    assert!(matches!(
        h.snapshot().last_transition.reason,
        TransitionReason::SlowCallRate { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn retry_after_cooldown_is_exact_and_capped() {
    let (mut svc, p) = make(
        base()
            .consecutive_failures(Some(100))
            .retry_after_cooldown(true, secs(60)),
    );
    let h = svc.handle();
    call(&mut svc, rate_limited(7)).await.unwrap();
    assert_eq!(h.state(), CircuitState::Open);
    assert_eq!(
        h.snapshot().last_transition.reason,
        TransitionReason::Cooldown {
            retry_after: secs(7)
        }
    );
    advance(Duration::from_millis(6999)).await;
    let rej = call(&mut svc, OK).await.unwrap_err();
    assert_eq!(rej.retry_after(), Some(Duration::from_millis(1)));
    advance(Duration::from_millis(1)).await;
    let before = p.calls();
    assert_eq!(
        call(&mut svc, OK).await,
        Ok(200),
        "exactly at 7 s a probe goes through"
    );
    assert_eq!(p.calls(), before + 1);
    assert_eq!(h.state(), CircuitState::Closed);

    // a 1000 s wait is capped at the configured 60 s
    call(&mut svc, rate_limited(1000)).await.unwrap();
    assert_eq!(h.open_remaining(), Some(secs(60)));
    advance(secs(60)).await;
    assert_eq!(call(&mut svc, OK).await, Ok(200));

    // switched off, a 429 is just not counted
    let (mut svc, _) = make(
        base()
            .consecutive_failures(Some(1))
            .retry_after_cooldown(false, secs(60)),
    );
    call(&mut svc, rate_limited(7)).await.unwrap();
    assert_eq!(svc.handle().state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn open_duration_grows_caps_and_resets_after_close() {
    let b = base()
        .consecutive_failures(Some(1))
        .open_duration(secs(10))
        .open_backoff(2.0, secs(35));
    let (mut svc, _) = make(b);
    let h = svc.handle();
    call(&mut svc, FAIL).await.unwrap();
    assert_eq!(h.open_remaining(), Some(secs(10)));
    for expect in [20, 35, 35] {
        advance(h.open_remaining().unwrap()).await;
        call(&mut svc, FAIL).await.unwrap(); // the probe fails: re-trip
        assert_eq!(h.state(), CircuitState::Open);
        assert_eq!(h.open_remaining(), Some(secs(expect)));
    }
    advance(secs(35)).await;
    call(&mut svc, OK).await.unwrap(); // probe succeeds: close
    assert_eq!(h.state(), CircuitState::Closed);
    call(&mut svc, FAIL).await.unwrap();
    assert_eq!(
        h.open_remaining(),
        Some(secs(10)),
        "back to base after a close"
    );
    assert_eq!(h.snapshot().times_opened, 5);
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_within_bounds_and_varies() {
    let mut seen = std::collections::HashSet::new();
    for seed in 0..50 {
        let b = base()
            .consecutive_failures(Some(1))
            .open_duration(secs(100))
            .open_jitter(0.2)
            .jitter_seed(seed);
        let (mut svc, _) = make(b);
        call(&mut svc, FAIL).await.unwrap();
        let d = svc.handle().open_remaining().unwrap();
        assert!(
            d <= secs(100) && d >= secs(80),
            "{d:?} outside [80 s, 100 s]"
        );
        seen.insert(d.as_millis());
    }
    assert!(
        seen.len() > 40,
        "jitter should spread replicas, got {} distinct",
        seen.len()
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_exactly_the_permitted_probes_through() {
    let b = base()
        .consecutive_failures(Some(1))
        .half_open_probes(3)
        .half_open_successes(3)
        .open_duration(secs(1));
    let (mut svc, p) = make(b);
    let h = svc.handle();
    call(&mut svc, FAIL).await.unwrap();
    advance(secs(1)).await;
    let before = p.calls();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let mut s = svc.clone();
        tasks.push(tokio::spawn(async move {
            // probes take a while, so they overlap
            call(&mut s, slow(200, secs(2))).await
        }));
    }
    let mut ok = 0;
    let mut rejected = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(r) => {
                assert_eq!(
                    r.reason(),
                    RejectReason::CircuitOpen(CircuitState::HalfOpen)
                );
                rejected += 1;
            }
        }
    }
    assert_eq!(
        p.calls() - before,
        3,
        "exactly the permitted probes reach the provider"
    );
    assert_eq!((ok, rejected), (3, 97));
    assert_eq!(h.state(), CircuitState::Closed, "3 successes close it");
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_and_an_ignored_one_frees_its_slot() {
    let b = base()
        .consecutive_failures(Some(1))
        .half_open_successes(2)
        .open_duration(secs(1));
    let (mut svc, _) = make(b);
    let h = svc.handle();
    call(&mut svc, FAIL).await.unwrap();
    advance(secs(1)).await;
    // a 400 is the caller's fault: says nothing about the provider
    call(&mut svc, BAD_REQUEST).await.unwrap();
    assert_eq!(h.state(), CircuitState::HalfOpen);
    assert_eq!(h.snapshot().probes_in_flight, 0);
    call(&mut svc, OK).await.unwrap();
    assert_eq!(h.state(), CircuitState::HalfOpen, "1 of 2 successes");
    call(&mut svc, FAIL).await.unwrap();
    assert_eq!(h.state(), CircuitState::Open);
    assert!(matches!(
        h.snapshot().last_transition.reason,
        TransitionReason::ProbeFailed { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_slot_and_counts_as_neither() {
    let (mut svc, p) = make(base().consecutive_failures(Some(1)).open_duration(secs(1)));
    let h = svc.handle();
    call(&mut svc, FAIL).await.unwrap();
    advance(secs(1)).await;
    let fut = svc.ready().await.unwrap().call(slow(200, secs(60)));
    assert_eq!(h.snapshot().probes_in_flight, 1);
    // the only slot is taken
    assert!(call(&mut svc, OK).await.is_err());
    drop(fut);
    assert_eq!(h.snapshot().probes_in_flight, 0);
    assert_eq!(
        h.state(),
        CircuitState::HalfOpen,
        "neither success nor failure"
    );
    assert_eq!(h.snapshot().abandoned, 1);
    let before = p.calls();
    assert_eq!(call(&mut svc, OK).await, Ok(200));
    assert_eq!(p.calls(), before + 1);
    assert_eq!(h.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_max_wait_reopens() {
    let b = base()
        .consecutive_failures(Some(1))
        .open_duration(secs(1))
        .half_open_max_wait(Some(secs(5)));
    let (mut svc, _) = make(b);
    let h = svc.handle();
    call(&mut svc, FAIL).await.unwrap();
    advance(secs(1)).await;
    let stuck = svc.ready().await.unwrap().call(slow(200, secs(600)));
    advance(secs(5)).await;
    let rej = call(&mut svc, OK).await.unwrap_err();
    assert_eq!(rej.reason(), RejectReason::CircuitOpen(CircuitState::Open));
    assert_eq!(
        h.snapshot().last_transition.reason,
        TransitionReason::HalfOpenTimeout { waited: secs(5) }
    );
    drop(stuck);
}

#[tokio::test(start_paused = true)]
async fn force_open_disable_and_reset() {
    let (mut svc, p) = make(base().consecutive_failures(Some(2)));
    let h = svc.handle();
    let mut changes = h.subscribe();

    h.force_open();
    changes.changed().await.unwrap();
    assert_eq!(changes.borrow().to, CircuitState::ForcedOpen);
    let rej = call(&mut svc, OK).await.unwrap_err();
    assert_eq!(
        rej.reason(),
        RejectReason::CircuitOpen(CircuitState::ForcedOpen)
    );
    advance(secs(3600)).await;
    assert!(call(&mut svc, OK).await.is_err(), "forced open stays open");

    h.disable();
    assert_eq!(h.state(), CircuitState::Disabled);
    for _ in 0..10 {
        call(&mut svc, FAIL).await.unwrap();
    }
    assert_eq!(h.state(), CircuitState::Disabled, "disabled never trips");
    assert_eq!(h.snapshot().failures, 10, "but still records");

    h.reset();
    assert_eq!(h.state(), CircuitState::Closed);
    assert_eq!(h.snapshot().consecutive_failures, 0);
    call(&mut svc, FAIL).await.unwrap();
    assert_eq!(h.state(), CircuitState::Closed, "reset cleared the counts");
    call(&mut svc, FAIL).await.unwrap();
    assert_eq!(h.state(), CircuitState::Open);
    assert_eq!(p.calls(), 12);
    assert_eq!(h.snapshot().rejected, 2);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_readiness_does_not_touch_the_inner_service_while_open() {
    let (mut svc, p) = make(base().consecutive_failures(Some(1)));
    call(&mut svc, FAIL).await.unwrap();
    let polls = p.ready_polls.load(std::sync::atomic::Ordering::SeqCst);
    let rej = call(&mut svc, OK).await.unwrap_err();
    assert_eq!(rej.reason(), RejectReason::CircuitOpen(CircuitState::Open));
    assert_eq!(
        p.ready_polls.load(std::sync::atomic::Ordering::SeqCst),
        polls
    );
}

#[tokio::test(start_paused = true)]
async fn load_balancer_mode_parks_until_the_open_period_ends() {
    let b = base()
        .consecutive_failures(Some(1))
        .open_duration(secs(10))
        .readiness(ReadinessMode::LoadBalancer);
    let (mut svc, _) = make(b);
    let h = svc.handle();
    call(&mut svc, FAIL).await.unwrap();
    let start = Instant::now();
    let mut ready =
        tokio_test::task::spawn(async { std::future::poll_fn(|cx| svc.poll_ready(cx)).await });
    tokio_test::assert_pending!(ready.poll());
    advance(Duration::from_millis(9999)).await;
    tokio_test::assert_pending!(ready.poll());
    advance(Duration::from_millis(1)).await;
    assert!(
        ready.is_woken(),
        "the timer wakes the task when the period ends"
    );
    tokio_test::assert_ready_ok!(ready.poll());
    drop(ready);
    assert_eq!(start.elapsed(), secs(10));
    assert_eq!(call(&mut svc, OK).await, Ok(200));
    assert_eq!(h.state(), CircuitState::Closed);

    // forced open fails readiness rather than parking forever
    h.force_open();
    let err = std::future::poll_fn(|cx| svc.poll_ready(cx))
        .await
        .unwrap_err();
    assert!(err.is_refused());
    let boxed: BoxError = err.into();
    assert!(boxed.downcast_ref::<Rejected>().is_some());
}

#[test]
fn invalid_configs_are_refused_naming_the_field() {
    let cases: Vec<(&str, palisade_breaker::Builder<_>)> = vec![
        (
            "failure_rate",
            CircuitBreakerLayer::builder().failure_rate(Some(0.0)),
        ),
        (
            "failure_rate",
            CircuitBreakerLayer::builder().failure_rate(Some(f64::NAN)),
        ),
        (
            "slow_call_rate",
            CircuitBreakerLayer::builder().slow_calls(2.0, secs(1)),
        ),
        (
            "consecutive_failures",
            CircuitBreakerLayer::builder().consecutive_failures(Some(0)),
        ),
        (
            "count_window",
            CircuitBreakerLayer::builder().count_window(0),
        ),
        (
            "time_window",
            CircuitBreakerLayer::builder().time_window(secs(10), 0),
        ),
        (
            "time_window",
            CircuitBreakerLayer::builder().time_window(Duration::ZERO, 4),
        ),
        (
            "minimum_calls",
            CircuitBreakerLayer::builder().minimum_calls(0),
        ),
        (
            "minimum_calls",
            CircuitBreakerLayer::builder()
                .count_window(10)
                .minimum_calls(11),
        ),
        (
            "open_duration",
            CircuitBreakerLayer::builder().open_duration(Duration::ZERO),
        ),
        (
            "open_backoff",
            CircuitBreakerLayer::builder().open_backoff(0.5, secs(600)),
        ),
        (
            "open_backoff",
            CircuitBreakerLayer::builder().open_backoff(2.0, secs(1)),
        ),
        (
            "open_jitter",
            CircuitBreakerLayer::builder().open_jitter(1.0),
        ),
        (
            "open_jitter",
            CircuitBreakerLayer::builder().open_jitter(-0.1),
        ),
        (
            "half_open_probes",
            CircuitBreakerLayer::builder().half_open_probes(0),
        ),
        (
            "half_open_successes",
            CircuitBreakerLayer::builder().half_open_successes(0),
        ),
        (
            "half_open_max_wait",
            CircuitBreakerLayer::builder().half_open_max_wait(Some(Duration::ZERO)),
        ),
        (
            "rules",
            CircuitBreakerLayer::builder()
                .consecutive_failures(None)
                .failure_rate(None)
                .retry_after_cooldown(false, secs(1)),
        ),
    ];
    for (field, b) in cases {
        let err = b.build().unwrap_err();
        assert_eq!(err.problems()[0].path, format!("breaker.{field}"), "{err}");
        assert!(err.to_string().contains(field));
    }
}

/// Successes in Closed are counted by the count window's cursor; every
/// other outcome by its own counter. The snapshot must add them up exactly,
/// with a count window, with a time window and with no window at all,
/// across a trip, half-open probes and a close.
#[tokio::test(start_paused = true)]
async fn metrics_count_every_outcome_exactly() {
    let configs = [
        base()
            .failure_rate(Some(0.9))
            .count_window(5)
            .minimum_calls(5),
        base()
            .failure_rate(Some(0.9))
            .time_window(secs(10), 5)
            .minimum_calls(5),
        base(),
    ];
    for (i, b) in configs.into_iter().enumerate() {
        let (mut svc, _) = make(b.consecutive_failures(Some(3)).open_duration(secs(5)));
        let h = svc.handle();
        // 12 successes wrap a 5-call window more than twice
        for _ in 0..12 {
            assert_eq!(call(&mut svc, OK).await, Ok(200));
        }
        for _ in 0..2 {
            assert_eq!(call(&mut svc, BAD_REQUEST).await, Ok(400));
        }
        for _ in 0..3 {
            assert_eq!(call(&mut svc, FAIL).await, Ok(500));
        }
        assert_eq!(h.state(), CircuitState::Open, "config {i}");
        assert!(call(&mut svc, OK).await.is_err());
        advance(secs(5)).await;
        // one probe succeeds and closes it, then one more success
        assert_eq!(call(&mut svc, OK).await, Ok(200));
        assert_eq!(h.state(), CircuitState::Closed, "config {i}");
        assert_eq!(call(&mut svc, OK).await, Ok(200));

        let m = h.snapshot();
        assert_eq!(m.successes, 14, "config {i}: {m:?}");
        assert_eq!(m.failures, 3, "config {i}");
        assert_eq!(m.ignored, 2, "config {i}");
        assert_eq!(m.calls, 19, "config {i}");
        assert_eq!(m.rejected, 1, "config {i}");
    }
}

/// A Retry-After arriving while open (from a call admitted before the trip)
/// extends the open period in place. Refusals made before the extension
/// must not leave the old deadline behind: every later refusal reports the
/// new one, and the breaker probes exactly when it ends.
#[tokio::test(start_paused = true)]
async fn an_open_period_extended_in_place_is_honoured_exactly() {
    let (svc, p) = make(
        base()
            .consecutive_failures(Some(100))
            .retry_after_cooldown(true, secs(600)),
    );
    let h = svc.handle();
    // A slow call is admitted while closed ...
    let mut late = svc.clone();
    let slow_429 = Call {
        status: 429,
        retry_after: Some(30),
        delay: secs(2),
    };
    let pending = tokio::spawn(async move { late.ready().await.unwrap().call(slow_429).await });
    tokio::task::yield_now().await;
    // ... then a 429 opens the breaker for 10 s.
    let mut svc = svc;
    call(&mut svc, rate_limited(10)).await.unwrap();
    assert_eq!(h.state(), CircuitState::Open);
    // Refusals now, against the 10 s deadline.
    advance(secs(1)).await;
    for _ in 0..3 {
        let rej = call(&mut svc, OK).await.unwrap_err();
        assert_eq!(rej.retry_after(), Some(secs(9)));
    }
    // At 2 s the slow call answers 429 with 30 s: open until 32 s.
    advance(secs(1)).await;
    assert_eq!(pending.await.unwrap().unwrap().status(), 429);
    assert_eq!(h.open_remaining(), Some(secs(30)));
    // At 15 s (past the first deadline) calls are still refused, naming
    // the new deadline.
    advance(secs(13)).await;
    let rej = call(&mut svc, OK).await.unwrap_err();
    assert_eq!(rej.retry_after(), Some(secs(17)));
    let before = p.calls();
    advance(Duration::from_millis(16_999)).await;
    assert!(
        call(&mut svc, OK).await.is_err(),
        "still open 1 ms before 32 s"
    );
    advance(Duration::from_millis(1)).await;
    assert_eq!(call(&mut svc, OK).await, Ok(200), "probes exactly at 32 s");
    assert_eq!(p.calls(), before + 1);
}

/// Two breakers refusing on the same thread do not mix up their deadlines
/// (the per-thread conversion cache is keyed by breaker): here both store
/// the same deadline relative to their own creation, 50 s apart.
#[tokio::test(start_paused = true)]
async fn breakers_on_one_thread_keep_their_own_deadlines() {
    let cooldown = || {
        base()
            .consecutive_failures(Some(100))
            .retry_after_cooldown(true, secs(600))
    };
    let (mut early, early_p) = make(cooldown());
    call(&mut early, rate_limited(100)).await.unwrap(); // open until 100 s
    advance(secs(50)).await;
    let (mut late, _) = make(cooldown());
    call(&mut late, rate_limited(100)).await.unwrap(); // open until 150 s
    advance(secs(70)).await; // 120 s
    let rej = call(&mut late, OK).await.unwrap_err();
    assert_eq!(rej.retry_after(), Some(secs(30)));
    let before = early_p.calls();
    assert_eq!(
        call(&mut early, OK).await,
        Ok(200),
        "the early one's open period ended at 100 s"
    );
    assert_eq!(early_p.calls(), before + 1);
}

#[tokio::test(start_paused = true)]
async fn following_a_peer_opens_exactly_closes_cleanly_and_never_grows() {
    let b = base()
        .consecutive_failures(Some(1))
        .open_duration(secs(10))
        .open_backoff(2.0, secs(60));
    let (mut svc, p) = make(b);
    let h = svc.handle();
    let mut changes = h.subscribe();
    // Another replica's breaker opened for 2 s: refuse until then, exactly.
    assert!(h.follow_open(secs(2)));
    assert_eq!(h.open_remaining(), Some(secs(2)));
    assert_eq!(
        changes.borrow_and_update().reason,
        TransitionReason::Peer {
            retry_after: secs(2)
        }
    );
    assert!(call(&mut svc, OK).await.is_err());
    // A shorter one does not cut it; a longer one extends it.
    assert!(h.follow_open(secs(1)));
    assert_eq!(h.open_remaining(), Some(secs(2)));
    assert!(h.follow_open(secs(3)));
    assert_eq!(h.open_remaining(), Some(secs(3)));
    // Then it probes as usual, and the peer's trip did not grow the period.
    advance(secs(3)).await;
    call(&mut svc, FAIL).await.unwrap();
    assert_eq!(h.open_remaining(), Some(secs(10)), "its own first trip");
    // The peer's probes succeeded: closed for everyone.
    assert!(h.follow_close());
    assert_eq!(h.state(), CircuitState::Closed);
    assert_eq!(
        changes.borrow_and_update().reason,
        TransitionReason::PeerClosed
    );
    assert!(!h.follow_close(), "already closed");
    assert_eq!(call(&mut svc, OK).await, Ok(200));
    assert_eq!(p.calls(), 2);
    // An operator's choice stands.
    h.force_open();
    assert!(!h.follow_open(secs(1)));
    assert!(!h.follow_close());
    assert_eq!(h.state(), CircuitState::ForcedOpen);
}
