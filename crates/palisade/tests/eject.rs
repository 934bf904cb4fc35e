//! Outlier ejection within a tier, on the paused clock, through the
//! router: a provider failing 20% of calls (under its breaker's 50%) is
//! ejected and traffic moves; with two of four failing and at most 25%
//! ejected, only one is; a tier left too thin ignores ejection; a slow
//! provider is ejected by latency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade::eject::{OutlierDetection, OutlierSection};
use palisade::{Config, Registry, Router};
use palisade_core::{Admission, BoxError, HttpClassifier};
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

type Req = http::Request<String>;
type Res = http::Response<String>;
type Svc = BoxCloneSyncService<Req, Res, BoxError>;

/// A provider failing one call in `every` (0: never), answering after
/// `delay`, counting its calls.
fn provider(every: u64, delay: Duration, calls: Arc<AtomicU64>) -> Svc {
    BoxCloneSyncService::new(tower::service_fn(move |_: Req| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let status = if every > 0 && n % every == 0 {
            500
        } else {
            200
        };
        async move {
            tokio::time::sleep(delay).await;
            Ok::<_, BoxError>(
                http::Response::builder()
                    .status(status)
                    .body(String::new())?,
            )
        }
    }))
}

struct Tier {
    router: Router<Svc, HttpClassifier, Req>,
    registry: Arc<Registry<Svc, HttpClassifier>>,
    calls: HashMap<&'static str, Arc<AtomicU64>>,
}

fn tier(behaviour: &[(&'static str, u64, u64)], strategy: &str) -> Tier {
    tier_with(behaviour, strategy, "")
}

/// [`tier`] with more of the `[router]` section.
fn tier_with(behaviour: &[(&'static str, u64, u64)], strategy: &str, router: &str) -> Tier {
    let names: Vec<String> = behaviour.iter().map(|(n, ..)| format!("\"{n}\"")).collect();
    let mut toml = format!(
        "[router]\ntiers = [[{}]]\nstrategy = \"{strategy}\"\nrequest_timeout_ms = 5000\nseed = 7\n{router}\n[defaults.retry]\nenabled = false\n",
        names.join(", ")
    );
    for (n, ..) in behaviour {
        toml.push_str(&format!("[providers.{n}]\n"));
    }
    let cfg = Config::from_toml(&toml).unwrap();
    let calls: HashMap<&'static str, Arc<AtomicU64>> = behaviour
        .iter()
        .map(|(n, ..)| (*n, Arc::default()))
        .collect();
    let router = palisade::RegistryBuilder::new(&cfg, HttpClassifier::new())
        .build_router(|p| {
            let (name, every, delay) = *behaviour.iter().find(|(n, ..)| *n == p.id).unwrap();
            provider(every, Duration::from_millis(delay), calls[name].clone())
        })
        .unwrap();
    let registry = router.registry().clone();
    Tier {
        router,
        registry,
        calls,
    }
}

fn fast_judging() -> OutlierSection {
    OutlierSection {
        interval_ms: 1_000,
        min_requests: 20,
        ..Default::default()
    }
}

/// `n` requests, one every 10 ms; every one must be answered.
async fn drive(t: &Tier, n: usize) {
    for _ in 0..n {
        let res = t.router.clone().oneshot(Req::default()).await.unwrap();
        assert_eq!(res.status(), 200, "fallback within the tier answers");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ejected(t: &Tier, id: &str) -> bool {
    t.registry.get(id).unwrap().ejection.refusing().is_some()
}

#[tokio::test(start_paused = true)]
async fn a_provider_failing_a_fifth_of_calls_is_ejected_and_traffic_moves() {
    let t = tier(
        &[("a", 5, 0), ("b", 0, 0), ("c", 0, 0), ("d", 0, 0)],
        "round_robin",
    );
    let _d = OutlierDetection::spawn(&t.registry, fast_judging()).unwrap();
    drive(&t, 110).await; // 1.1 s: one judgement, ~25 calls each
    assert!(ejected(&t, "a"), "a ejected at the first judgement");
    for other in ["b", "c", "d"] {
        assert!(!ejected(&t, other), "{other} kept");
    }
    let before = t.calls["a"].load(Ordering::SeqCst);
    drive(&t, 500).await; // 5 s more, within its 30 s ejection
    assert_eq!(
        t.calls["a"].load(Ordering::SeqCst),
        before,
        "no call to an ejected provider"
    );
    let breaker = t
        .registry
        .get("a")
        .unwrap()
        .handles
        .breaker
        .clone()
        .unwrap();
    assert_eq!(
        breaker.state(),
        palisade_core::CircuitState::Closed,
        "its breaker never opened"
    );
    let report = serde_json::to_value(t.registry.health()).unwrap();
    let a = report["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "a")
        .unwrap()
        .clone();
    assert_eq!(a["outlier"]["ejected"], true, "{a}");
    assert_eq!(a["outlier"]["times_ejected"], 1);
}

#[tokio::test(start_paused = true)]
async fn with_two_of_four_failing_and_a_quarter_allowed_only_one_is_ejected() {
    let t = tier(
        &[("a", 5, 0), ("b", 3, 0), ("c", 0, 0), ("d", 0, 0)],
        "round_robin",
    );
    let section = OutlierSection {
        max_ejection_percent: 25,
        ..fast_judging()
    };
    let _d = OutlierDetection::spawn(&t.registry, section).unwrap();
    drive(&t, 350).await;
    let out: Vec<&str> = ["a", "b", "c", "d"]
        .into_iter()
        .filter(|p| ejected(&t, p))
        .collect();
    assert_eq!(out, vec!["b"], "only the worst, b (a third failing)");
}

#[tokio::test(start_paused = true)]
async fn a_tier_left_too_thin_ignores_ejection() {
    // Two providers, panic below 100%: ejecting either leaves 50%.
    let t = tier(&[("a", 4, 0), ("b", 0, 0)], "round_robin");
    let section = OutlierSection {
        panic_threshold: 100,
        ..fast_judging()
    };
    let _d = OutlierDetection::spawn(&t.registry, section).unwrap();
    drive(&t, 110).await;
    let a = t.registry.get("a").unwrap().ejection.snapshot();
    assert_eq!(a.times_ejected, 1, "judged an outlier");
    assert!(a.tier_panicking);
    assert!(
        !ejected(&t, "a"),
        "but the tier is too thin: traffic spreads over all"
    );
    let before = t.calls["a"].load(Ordering::SeqCst);
    drive(&t, 100).await;
    assert!(t.calls["a"].load(Ordering::SeqCst) > before);
}

#[tokio::test(start_paused = true)]
async fn a_provider_several_times_slower_than_its_mates_is_ejected() {
    // No failures; c answers in 300 ms, the others in 20 ms. Round robin
    // keeps sending c its share; a percentile hedge (which would need far
    // more samples than this run gives to start hedging) makes the router
    // time every call, so each provider has a latency estimate.
    let t = tier_with(
        &[("a", 0, 20), ("b", 0, 20), ("c", 0, 300)],
        "round_robin",
        "[router.hedge]\npercentile = 0.99\nmin_samples = 1000000",
    );
    let _d = OutlierDetection::spawn(
        &t.registry,
        OutlierSection {
            min_requests: 3,
            ..fast_judging()
        },
    )
    .unwrap();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        // Boxed: a spawned task cannot name the router's future (see
        // Router::boxed).
        let r = t.router.clone().boxed();
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < Duration::from_millis(2_500) {
                r.clone().oneshot(Req::default()).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        ejected(&t, "c"),
        "{:?}",
        t.registry.get("c").unwrap().ejection.snapshot()
    );
    assert!(!ejected(&t, "a") && !ejected(&t, "b"));
}
