//! Active health checks on tokio's paused clock: recovery seen without
//! waiting out the open period, an outage seen before a user's call fails,
//! no checks while traffic shows the provider healthy, the task ending with
//! its provider, bad settings named.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade::check::{HealthCheck, HealthCheckSettings};
use palisade_breaker::{BreakerHandle, CircuitBreakerLayer};
use palisade_core::{BoxError, CircuitState};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

/// A provider down in [from, to) after `start`; counts the calls that
/// reached it while down, and every call.
#[derive(Clone)]
struct Provider {
    start: Instant,
    down: (Duration, Duration),
    calls: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Provider {
    fn new(down: (u64, u64)) -> Self {
        Provider {
            start: Instant::now(),
            down: (Duration::from_secs(down.0), Duration::from_secs(down.1)),
            calls: Arc::default(),
            failed: Arc::default(),
        }
    }

    fn is_down(&self) -> bool {
        let t = self.start.elapsed();
        t >= self.down.0 && t < self.down.1
    }

    fn service(
        &self,
    ) -> impl Service<
        (),
        Response = (),
        Error = BoxError,
        Future = impl Future<Output = Result<(), BoxError>> + Send,
    > + Clone
           + Send
           + 'static {
        let p = self.clone();
        service_fn(move |()| {
            let down = p.is_down();
            p.calls.fetch_add(1, Ordering::Relaxed);
            if down {
                p.failed.fetch_add(1, Ordering::Relaxed);
            }
            async move {
                if down {
                    Err::<(), BoxError>("connection refused".into())
                } else {
                    Ok(())
                }
            }
        })
    }
}

fn breaker() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .provider("primary")
        .consecutive_failures(Some(3))
        .failure_rate(None)
        .open_duration(Duration::from_secs(30))
        .open_jitter(0.0)
        .half_open_probes(1)
        .half_open_successes(1)
        .build()
        .unwrap()
}

fn every_second() -> HealthCheckSettings {
    HealthCheckSettings {
        enabled: true,
        interval_ms: 1_000,
        jitter: 0.0,
        ..Default::default()
    }
}

/// User traffic every `gap` until `until`; returns when the breaker
/// closed again after the provider came back at `back` (if it did).
async fn traffic(
    handle: &BreakerHandle,
    svc: impl Service<(), Response = (), Error = palisade_breaker::BreakerError> + Clone,
    gap: Duration,
    until: Duration,
    back: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut closed_at = None;
    while start.elapsed() < until {
        let _ = svc.clone().oneshot(()).await;
        if closed_at.is_none() && start.elapsed() >= back && handle.state() == CircuitState::Closed
        {
            closed_at = Some(start.elapsed() - back);
        }
        tokio::time::sleep(gap).await;
    }
    closed_at
}

#[tokio::test(start_paused = true)]
async fn a_recovered_provider_is_back_in_two_seconds_not_its_open_period() {
    // Down from 10 s to 30 s; users call every 500 ms.
    let gap = Duration::from_millis(500);
    let (until, back) = (Duration::from_secs(60), Duration::from_secs(30));

    let without = {
        let p = Provider::new((10, 30));
        let layer = breaker();
        let h = layer.handle();
        traffic(&h, layer.layer(p.service()), gap, until, back).await
    };

    let p = Provider::new((10, 30));
    let layer = breaker();
    let h = layer.handle();
    let check = HealthCheck::new(every_second(), p.service(), || ())
        .spawn(&h)
        .unwrap();
    let with = traffic(&h, layer.layer(p.service()), gap, until, back)
        .await
        .expect("recovered");
    eprintln!(
        "closed again after the provider came back: with checks {with:?}, without {without:?}"
    );
    assert!(with <= Duration::from_secs(2), "{with:?}");
    let without = without.expect("recovered in the end");
    assert!(
        without >= Duration::from_secs(5),
        "without checks, the open period decides: {without:?}"
    );
    assert!(check.snapshot().passed >= 1);
}

#[tokio::test(start_paused = true)]
async fn an_outage_is_seen_before_a_user_call_fails_when_checks_outpace_traffic() {
    // Down from 11 s; users call every 5 s; checks every second open the
    // breaker after two failures (at 13 s).
    let p = Provider::new((11, 1_000));
    let layer = breaker();
    let h = layer.handle();
    let settings = HealthCheckSettings {
        unhealthy_threshold: 2,
        ..every_second()
    };
    let checks = Provider {
        calls: Arc::default(),
        failed: Arc::default(),
        ..p.clone()
    };
    let check = HealthCheck::new(settings, checks.service(), || ())
        .spawn(&h)
        .unwrap();
    let svc = layer.layer(p.service());
    let mut refused = 0;
    for _ in 0..6 {
        if let Err(palisade_breaker::BreakerError::Refused(_)) = svc.clone().oneshot(()).await {
            refused += 1;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert_eq!(
        p.failed.load(Ordering::Relaxed),
        0,
        "no user call reached the provider while it was down"
    );
    assert_eq!(refused, 3, "the calls at 15, 20 and 25 s went elsewhere");
    assert!(check.snapshot().failed >= 2);
    assert_eq!(h.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn healthy_traffic_makes_checks_unnecessary() {
    let p = Provider::new((1_000, 1_001));
    let layer = breaker();
    let h = layer.handle();
    let probes = Provider {
        calls: Arc::default(),
        ..p.clone()
    };
    let check = HealthCheck::new(every_second(), probes.service(), || ())
        .spawn(&h)
        .unwrap();
    let svc = layer.layer(p.service());
    for _ in 0..100 {
        svc.clone().oneshot(()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = check.snapshot();
    // The first tick has no earlier count to compare with; after that,
    // traffic proves the provider healthy every second.
    assert!(probes.calls.load(Ordering::Relaxed) <= 1, "{s:?}");
    assert!(s.skipped >= 8, "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn the_check_ends_with_its_provider_and_bad_settings_are_named() {
    let p = Provider::new((0, 1_000));
    let layer = breaker();
    let check = HealthCheck::new(every_second(), p.service(), || ())
        .spawn(&layer.handle())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let sent = check.snapshot().sent;
    assert_eq!(sent, 3);
    drop(layer);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        check.snapshot().sent,
        sent,
        "no check after the breaker is gone"
    );
    assert_eq!(p.calls.load(Ordering::Relaxed), 3);

    let bad = HealthCheckSettings {
        interval_ms: 0,
        jitter: 2.0,
        unhealthy_threshold: 0,
        ..Default::default()
    };
    let err = HealthCheck::new(bad, p.service(), || ())
        .spawn(&breaker().handle())
        .unwrap_err()
        .to_string();
    for key in [
        "health_check.interval_ms",
        "health_check.jitter",
        "health_check.unhealthy_threshold",
    ] {
        assert!(err.contains(key), "{key} in {err}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_checks_of_kept_providers_and_stops_those_of_removed_ones() {
    use palisade::{Config, RegistryBuilder};
    use palisade_core::{ErrorClassifier, WithDeadline};

    let v1 = Config::from_toml(
        "[defaults.health_check]\nenabled = true\ninterval_ms = 1000\njitter = 0.0\n[providers.a]\n[providers.b]\n[providers.c]",
    )
    .unwrap();
    let make = |_: &palisade::ProviderSettings| {
        service_fn(|_: WithDeadline<()>| async { Ok::<_, BoxError>(()) })
    };
    let registry = RegistryBuilder::new(&v1, ErrorClassifier)
        .build(make)
        .unwrap();
    let probes = Arc::new(AtomicU64::new(0));
    let start = |registry: &palisade::Registry<_, ErrorClassifier>| {
        let probes = probes.clone();
        registry.start_checks(move |_, settings| {
            let probes = probes.clone();
            Some(HealthCheck::new(
                settings,
                service_fn(move |()| {
                    probes.fetch_add(1, Ordering::Relaxed);
                    async { Err::<(), BoxError>("down".into()) }
                }),
                || (),
            ))
        })
    };
    assert_eq!(start(&registry).len(), 3);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let a_before = registry.check("a").unwrap();
    assert_eq!(a_before.snapshot().sent, 2);
    let c_before = registry.check("c").unwrap();

    // v2: a kept as it is, b changed, c removed.
    let v2 = Config::from_toml(
        "[defaults.health_check]\nenabled = true\ninterval_ms = 1000\njitter = 0.0\n[providers.a]\n[providers.b.breaker]\nopen_ms = 1000",
    )
    .unwrap();
    RegistryBuilder::new(&v2, ErrorClassifier)
        .reconcile(&registry, make, |_| false)
        .unwrap();
    assert_eq!(
        start(&registry),
        vec!["a".into(), "b".into()] as Vec<palisade_core::ProviderId>
    );
    assert_eq!(
        registry.check("a").unwrap().snapshot().sent,
        2,
        "a's check runs on, counts and all"
    );
    assert_eq!(
        registry.check("b").unwrap().snapshot().sent,
        0,
        "b's is new"
    );
    assert!(registry.check("c").is_none());
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(a_before.snapshot().sent, 3, "the same task");
    let c_sent = c_before.snapshot().sent;
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert_eq!(
        c_before.snapshot().sent,
        c_sent,
        "the removed provider's check stopped"
    );
}
