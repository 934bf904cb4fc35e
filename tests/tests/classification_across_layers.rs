//! Errors produced by one layer are classified correctly by the layers and
//! classifiers around it.

use std::time::Duration;

use palisade_breaker::CircuitBreakerLayer;
use palisade_core::{classify_error, BoxError, CircuitState, FailureKind, Policy, RejectReason};
use tower::{service_fn, ServiceBuilder, ServiceExt};

/// tower's own timeout inside the breaker: its `Elapsed` error is read as a
/// Timeout, which the breaker counts; the breaker's own rejection is read
/// as Rejected by whatever sits outside, which the default policy falls back
/// on but never retries or counts.
#[tokio::test(start_paused = true)]
async fn timeouts_trip_the_breaker_and_rejections_classify_as_ours() {
    let breaker = CircuitBreakerLayer::builder()
        .provider("slow")
        .consecutive_failures(Some(2))
        .build()
        .unwrap();
    let handle = breaker.handle();
    let svc = ServiceBuilder::new()
        .layer(breaker)
        .timeout(Duration::from_secs(1))
        .service(service_fn(|_: ()| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, BoxError>(())
        }));

    for _ in 0..2 {
        let err: BoxError = svc.clone().oneshot(()).await.unwrap_err().into();
        assert_eq!(classify_error(&*err).kind, FailureKind::Timeout);
    }
    assert_eq!(handle.state(), CircuitState::Open);

    let err: BoxError = svc.clone().oneshot(()).await.unwrap_err().into();
    let failure = classify_error(&*err);
    assert_eq!(
        failure.kind,
        FailureKind::Rejected(RejectReason::CircuitOpen(CircuitState::Open))
    );
    let policy = Policy::default();
    assert!(policy.falls_back(&failure));
    assert!(!policy.retries(&failure));
    assert!(!policy.counts_for_breaker(&failure));
}
