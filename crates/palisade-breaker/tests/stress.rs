//! Many threads hammering one breaker: the half-open bound holds and no
//! outcome is lost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_breaker::CircuitBreakerLayer;
use palisade_core::{BoxError, CircuitState};
use tower::{service_fn, Layer, Service, ServiceExt};

#[test]
fn half_open_bound_holds_under_contention() {
    const PERMITTED: usize = 4;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        for round in 0..20 {
            let in_flight = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            let inner = {
                let in_flight = in_flight.clone();
                let peak = peak.clone();
                service_fn(move |fail: bool| {
                    let in_flight = in_flight.clone();
                    let peak = peak.clone();
                    async move {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        if fail {
                            Err::<(), BoxError>(
                                std::io::Error::from(std::io::ErrorKind::ConnectionReset).into(),
                            )
                        } else {
                            Ok(())
                        }
                    }
                })
            };
            let layer = CircuitBreakerLayer::builder()
                .consecutive_failures(Some(1))
                .failure_rate(None)
                .open_duration(Duration::from_millis(1))
                .open_jitter(0.0)
                .half_open_probes(PERMITTED as u32)
                .half_open_successes(65_534)
                .build()
                .unwrap();
            let h = layer.handle();
            let svc = layer.layer(inner);
            svc.clone().oneshot(true).await.unwrap_err();
            assert_eq!(h.state(), CircuitState::Open);
            tokio::time::sleep(Duration::from_millis(2)).await;

            let admitted = Arc::new(AtomicUsize::new(0));
            let rejected = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let mut s = svc.clone();
                    let admitted = admitted.clone();
                    let rejected = rejected.clone();
                    tokio::spawn(async move {
                        for _ in 0..200 {
                            match s.ready().await.unwrap().call(false).await {
                                Ok(()) => admitted.fetch_add(1, Ordering::SeqCst),
                                Err(e) => {
                                    assert!(e.is_refused(), "only refusals fail here: {e}");
                                    rejected.fetch_add(1, Ordering::SeqCst)
                                }
                            };
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let m = h.snapshot();
            assert!(
                peak.load(Ordering::SeqCst) <= PERMITTED,
                "round {round}: {} probes at once",
                peak.load(Ordering::SeqCst)
            );
            assert_eq!(h.state(), CircuitState::HalfOpen);
            assert_eq!(m.probes_in_flight, 0, "every probe slot came back");
            // every admitted call was recorded as a success; every refused one as a rejection
            assert_eq!(m.successes as usize, admitted.load(Ordering::SeqCst));
            assert_eq!(m.rejected as usize, rejected.load(Ordering::SeqCst));
            assert_eq!(
                admitted.load(Ordering::SeqCst) + rejected.load(Ordering::SeqCst),
                64 * 200
            );
        }
    });
}

#[test]
fn closed_state_counts_every_outcome_under_contention() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    rt.block_on(async {
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(None)
            .failure_rate(Some(1.0))
            .count_window(1_000_000)
            .minimum_calls(1_000_000)
            .build()
            .unwrap();
        let h = layer.handle();
        let svc = layer.layer(service_fn(|i: u64| async move {
            if i % 4 == 0 {
                Err::<(), BoxError>(std::io::Error::from(std::io::ErrorKind::TimedOut).into())
            } else {
                Ok(())
            }
        }));
        let tasks: Vec<_> = (0..32u64)
            .map(|t| {
                let mut s = svc.clone();
                tokio::spawn(async move {
                    for i in 0..2_000u64 {
                        let _ = s.ready().await.unwrap().call(t * 2_000 + i).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let m = h.snapshot();
        assert_eq!(m.calls, 64_000);
        assert_eq!(m.failures, 16_000);
        assert_eq!(m.window_calls, 64_000);
        assert_eq!(m.failure_rate, 0.25);
        assert_eq!(h.state(), CircuitState::Closed);
    });
}

/// Under `HalfOpenRule::Rate`, 64 tasks on four threads race for the
/// probes and the verdict follows the probes' failure rate exactly, every
/// round: 4 of 8 failed re-opens it (for a minute, so exactly the 8 probes
/// reached the provider), 3 of 8 closes it.
#[test]
fn rated_probes_are_exactly_the_permitted_ones_under_contention() {
    use palisade_breaker::HalfOpenRule;
    const PERMITTED: usize = 8;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        for round in 0..40 {
            let failing = if round % 2 == 0 { 4 } else { 3 };
            let reached = Arc::new(AtomicUsize::new(0));
            let inner = {
                let reached = reached.clone();
                service_fn(move |trip: bool| {
                    let n = reached.fetch_add(1, Ordering::SeqCst);
                    async move {
                        tokio::task::yield_now().await;
                        if trip || (n >= 1 && n <= failing) {
                            Err::<(), BoxError>(
                                std::io::Error::from(std::io::ErrorKind::ConnectionReset).into(),
                            )
                        } else {
                            Ok(())
                        }
                    }
                })
            };
            let layer = CircuitBreakerLayer::builder()
                .consecutive_failures(Some(1))
                .failure_rate(Some(0.5))
                .count_window(PERMITTED)
                .minimum_calls(PERMITTED as u64)
                .open_duration(Duration::from_millis(1))
                .open_backoff(60_000.0, Duration::from_secs(60))
                .open_jitter(0.0)
                .half_open_probes(PERMITTED as u32)
                .half_open_rule(HalfOpenRule::Rate)
                .build()
                .unwrap();
            let h = layer.handle();
            let svc = layer.layer(inner);
            svc.clone().oneshot(true).await.unwrap_err();
            assert_eq!(h.state(), CircuitState::Open);
            // Wait out the 1 ms open period (the clock is real here: four
            // worker threads).
            while h.is_refusing() {
                tokio::task::yield_now().await;
            }
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let mut svc = svc.clone();
                    tokio::spawn(async move {
                        let svc = svc.ready().await.unwrap();
                        svc.call(false).await.is_ok()
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let reached = reached.load(Ordering::SeqCst);
            if failing * 2 >= PERMITTED {
                assert_eq!(h.state(), CircuitState::Open, "round {round}");
                // The tripping call, then exactly the permitted probes.
                assert_eq!(reached, 1 + PERMITTED, "round {round}");
            } else {
                assert_eq!(h.state(), CircuitState::Closed, "round {round}");
                assert!(reached > PERMITTED, "round {round}: {reached}");
            }
        }
    });
}
