//! Registry, Router and health, on the paused clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade::health::{overall_status, ProviderHealth};
use palisade::{Config, HealthStatus, Provider, ProviderStack, Registry, Router};
use palisade_core::{BoxError, HttpClassifier, ProviderId};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

type Req = http::Request<String>;
type Res = http::Response<String>;
type Svc = BoxCloneSyncService<Req, Res, BoxError>;
type Fut = Pin<Box<dyn Future<Output = Result<Res, BoxError>> + Send>>;

/// A fake provider answering `status` with its name after `delay`,
/// counting calls.
fn fake(name: &str, status: u16, delay: Duration, calls: Arc<AtomicUsize>) -> Svc {
    let name = name.to_owned();
    BoxCloneSyncService::new(tower::service_fn(move |_: Req| {
        calls.fetch_add(1, Ordering::SeqCst);
        let name = name.clone();
        async move {
            tokio::time::sleep(delay).await;
            Ok::<_, BoxError>(http::Response::builder().status(status).body(name)?)
        }
    }))
}

struct Setup {
    router: Router<Svc, HttpClassifier, Req>,
    registry: Arc<Registry<Svc, HttpClassifier>>,
    calls: Vec<Arc<AtomicUsize>>,
}

fn setup(toml: &str, behaviour: &[(&str, u16, u64)]) -> Setup {
    let cfg = Config::from_toml(toml).unwrap();
    let calls: Vec<Arc<AtomicUsize>> = behaviour.iter().map(|_| Arc::default()).collect();
    let registry = Arc::new(
        Registry::from_config(&cfg, HttpClassifier::new(), |p| {
            let i = behaviour.iter().position(|(n, ..)| *n == p.id).unwrap();
            let (name, status, delay) = behaviour[i];
            fake(name, status, Duration::from_millis(delay), calls[i].clone())
        })
        .unwrap(),
    );
    let router = Router::new(
        registry.clone(),
        Duration::from_millis(cfg.router.request_timeout_ms),
        HttpClassifier::new(),
    )
    .unwrap();
    Setup {
        router,
        registry,
        calls,
    }
}

const TWO: &str = r#"
[router]
order = ["primary", "secondary"]
request_timeout_ms = 2000
[defaults.retry]
enabled = false
[providers.primary]
[providers.secondary]
"#;

#[tokio::test(start_paused = true)]
async fn the_router_skips_an_open_provider_without_calling_it() {
    let s = setup(TWO, &[("primary", 200, 0), ("secondary", 200, 0)]);
    let res = s.router.clone().oneshot(Req::default()).await.unwrap();
    assert_eq!(res.body(), "primary");
    s.registry
        .handles("primary")
        .unwrap()
        .breaker
        .unwrap()
        .force_open();
    let res = s.router.clone().oneshot(Req::default()).await.unwrap();
    assert_eq!(res.body(), "secondary");
    assert_eq!(
        s.calls[0].load(Ordering::SeqCst),
        1,
        "not called while open"
    );
}

#[tokio::test(start_paused = true)]
async fn a_provider_with_no_rate_limit_room_is_skipped_at_no_added_latency() {
    let cfg = TWO.replace(
        "[providers.primary]\n",
        "[providers.primary.rate_limit]\nrequests_per_minute = 1\n",
    );
    let s = setup(&cfg, &[("primary", 200, 0), ("secondary", 200, 0)]);
    let res = s.router.clone().oneshot(Req::default()).await.unwrap();
    assert_eq!(res.body(), "primary");
    let start = Instant::now();
    let res = s.router.clone().oneshot(Req::default()).await.unwrap();
    assert_eq!(res.body(), "secondary");
    assert_eq!(start.elapsed(), Duration::ZERO, "no wait for the primary");
    assert_eq!(
        s.calls[0].load(Ordering::SeqCst),
        1,
        "not called without room"
    );
    let limit = s.registry.handles("primary").unwrap().rate_limit.unwrap();
    assert_eq!(
        limit.snapshot().refused,
        0,
        "skipped before the limiter was asked"
    );
    // The health report names it, with its wait.
    let report = s.registry.health();
    assert!(
        report
            .recommendations
            .iter()
            .any(|r| r.starts_with("primary: rate limited by the configured quota")),
        "{:?}",
        report.recommendations
    );
}

#[tokio::test(start_paused = true)]
async fn the_router_meets_the_request_deadline() {
    let s = setup(TWO, &[("primary", 200, 10_000), ("secondary", 200, 10_000)]);
    let start = Instant::now();
    let err = s.router.oneshot(Req::default()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(2000));
    // The primary's attempt was cut at the deadline, and the secondary was
    // not started after it: the chain's error says both.
    let all = err
        .downcast_ref::<palisade_fallback::AllFailed>()
        .expect("the chain's report");
    let e = all.attempts()[0].outcome.to_string();
    assert_eq!(e, "provider primary: request deadline fired after 2s");
    assert!(matches!(
        all.attempts()[1].outcome,
        palisade_fallback::AttemptOutcome::DeadlineExceeded
    ));
    assert_eq!(
        palisade_core::classify_error(&*err).kind,
        palisade_core::FailureKind::Timeout
    );
}

#[tokio::test(start_paused = true)]
async fn the_order_is_settable_at_runtime() {
    let s = setup(TWO, &[("primary", 200, 0), ("secondary", 200, 0)]);
    s.registry.set_order(vec![
        ProviderId::from("secondary"),
        ProviderId::from("primary"),
    ]);
    let res = s.router.oneshot(Req::default()).await.unwrap();
    assert_eq!(res.body(), "secondary");
}

#[tokio::test(start_paused = true)]
async fn a_shared_budget_is_one_budget_for_every_provider() {
    let shared = TWO
        .replace(
            "request_timeout_ms = 2000\n",
            "request_timeout_ms = 2000\nshare_retry_budget = true\n",
        )
        .replace("[defaults.retry]\nenabled = false\n", "");
    assert_ne!(shared, TWO);
    let s = setup(&shared, &[("primary", 200, 0), ("secondary", 200, 0)]);
    let a = s
        .registry
        .handles("primary")
        .unwrap()
        .retry
        .unwrap()
        .budget();
    let b = s
        .registry
        .handles("secondary")
        .unwrap()
        .retry
        .unwrap()
        .budget();
    s.router.clone().oneshot(Req::default()).await.unwrap();
    // One deposit (the request went to the primary), seen through both.
    assert_eq!(a.snapshot(), b.snapshot());
    let own = setup(
        &TWO.replace("[defaults.retry]\nenabled = false\n", ""),
        &[("primary", 200, 0), ("secondary", 200, 0)],
    );
    own.router.clone().oneshot(Req::default()).await.unwrap();
    let a = own
        .registry
        .handles("primary")
        .unwrap()
        .retry
        .unwrap()
        .budget();
    let b = own
        .registry
        .handles("secondary")
        .unwrap()
        .retry
        .unwrap()
        .budget();
    assert_ne!(
        a.snapshot(),
        b.snapshot(),
        "separate budgets differ after one request"
    );
}

#[tokio::test(start_paused = true)]
async fn no_provider_is_a_clear_refusal() {
    let registry: Arc<Registry<Svc, HttpClassifier>> = Arc::new(Registry::new());
    let router = Router::new(registry, Duration::from_secs(1), HttpClassifier::new()).unwrap();
    let err = router.oneshot(Req::default()).await.unwrap_err();
    assert_eq!(err.to_string(), "no provider is registered");
}

#[tokio::test(start_paused = true)]
async fn replacing_a_provider_under_load_loses_no_request() {
    let s = setup(TWO, &[("primary", 200, 50), ("secondary", 200, 50)]);
    let cfg = Config::from_toml(TWO).unwrap();
    let mut tasks = Vec::new();
    for i in 0..400u64 {
        let call: Fut = Box::pin(s.router.clone().oneshot(Req::default()));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i)).await;
            call.await
        }));
    }
    // Swap the primary three times while requests are in flight.
    let replacements = Arc::new(AtomicUsize::new(0));
    for round in 0..3u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stack = ProviderStack::build(
            &cfg.provider("primary").unwrap(),
            fake(
                "primary-v2",
                200,
                Duration::from_millis(50),
                replacements.clone(),
            ),
            HttpClassifier::new(),
            None,
        )
        .unwrap();
        let old = s.registry.insert(Provider::new(stack));
        assert!(old.is_some(), "round {round} replaced one");
    }
    let mut v2 = 0;
    for t in tasks {
        let res = t.await.unwrap().expect("no request lost");
        assert_eq!(res.status(), 200);
        if res.body() == "primary-v2" {
            v2 += 1;
        }
    }
    assert!(v2 > 0, "later requests reached the replacement");
    assert!(
        s.calls[0].load(Ordering::SeqCst) > 0,
        "earlier ones the original"
    );
}

#[tokio::test(start_paused = true)]
async fn health_reports_the_open_breaker_and_recommends() {
    let s = setup(TWO, &[("primary", 503, 0), ("secondary", 200, 0)]);
    assert_eq!(s.registry.health().status, HealthStatus::Healthy);
    // Five 503s trip the primary (consecutive_failures = 5 by default).
    for _ in 0..5 {
        s.router.clone().oneshot(Req::default()).await.unwrap();
    }
    let report = s.registry.health();
    assert_eq!(report.providers[0].status, HealthStatus::Critical);
    assert_eq!(report.providers[1].status, HealthStatus::Healthy);
    assert_eq!(report.status, HealthStatus::Degraded, "failing over");
    let b = &report.providers[0].layer("breaker").unwrap().detail;
    assert_eq!(
        (&b["state"], &b["times_opened"]),
        (&serde_json::json!("open"), &serde_json::json!(1))
    );
    assert!(
        report.recommendations[0].starts_with("primary: circuit open after closed -> open"),
        "{:?}",
        report.recommendations
    );
    assert!(report.recommendations[0].ends_with("traffic goes to secondary"));
    // It serialises, and renders as Prometheus text.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["status"], "degraded");
    assert_eq!(json["providers"][0]["breaker"]["state"], "open");
    assert_eq!(
        json["providers"][0]["breaker"]["last_transition"],
        "closed -> open (5 consecutive failures (threshold 5))"
    );
    no_debug_text_or_raw_durations(&json);
    let text = report.prometheus_text();
    assert!(
        text.contains("palisade_breaker_state{provider=\"primary\"} 2"),
        "{text}"
    );
    assert!(text.contains("# TYPE palisade_breaker_opened_total counter"));
}

#[tokio::test(start_paused = true)]
async fn every_layers_health_fields_are_the_documented_ones() {
    let cfg = r#"
        [router]
        order = ["primary"]
        [defaults.rate_limit]
        requests_per_minute = 600
        [providers.primary]
    "#;
    let s = setup(cfg, &[("primary", 200, 0)]);
    s.router.clone().oneshot(Req::default()).await.unwrap();
    let json = serde_json::to_value(s.registry.health()).unwrap();
    no_debug_text_or_raw_durations(&json);
    let keys = |layer: &str| -> Vec<String> {
        let mut k: Vec<String> = json["providers"][0][layer]
            .as_object()
            .unwrap_or_else(|| panic!("no {layer}"))
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        keys("breaker"),
        [
            "failure_rate",
            "last_transition",
            "open_remaining_ms",
            "slow_call_rate",
            "state",
            "times_opened",
            "window_calls"
        ]
    );
    assert_eq!(
        keys("bulkhead"),
        [
            "in_flight",
            "max_concurrent",
            "max_waiting",
            "mean_wait_ms",
            "peak_in_flight",
            "provider",
            "queued",
            "rejected",
            "timed_out",
            "waiting"
        ]
    );
    assert_eq!(
        keys("retry"),
        [
            "attempts",
            "budget",
            "budget_refusals",
            "deadline_stops",
            "exhausted",
            "provider",
            "provider_calls",
            "refused",
            "requests",
            "retries"
        ]
    );
    assert_eq!(
        keys("rate_limit"),
        [
            "admitted",
            "in_flight",
            "provider",
            "provider_requests",
            "provider_tokens",
            "quotas",
            "refused",
            "shared",
            "wait_ms",
            "waited"
        ]
    );
    let quota = &json["providers"][0]["rate_limit"]["quotas"][0];
    let mut k: Vec<&String> = quota.as_object().unwrap().keys().collect();
    k.sort();
    assert_eq!(k, ["amount", "available", "burst", "period_ms", "unit"]);
}

/// No duration as serde's `{"secs", "nanos"}`, no Rust `Debug` text
/// (`Name { field: .. }`) anywhere in a health report's JSON.
fn no_debug_text_or_raw_durations(v: &serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            assert!(
                !(m.contains_key("secs") || m.contains_key("nanos")),
                "a raw Duration: {v}"
            );
            m.values().for_each(no_debug_text_or_raw_durations);
        }
        serde_json::Value::Array(a) => a.iter().for_each(no_debug_text_or_raw_durations),
        serde_json::Value::String(s) => {
            assert!(
                !s.contains(" { ") && !s.contains("secs"),
                "Debug text? {s:?}"
            )
        }
        _ => {}
    }
}

fn with(statuses: &[HealthStatus]) -> Vec<ProviderHealth> {
    statuses
        .iter()
        .enumerate()
        .map(|(i, s)| ProviderHealth {
            id: ProviderId::from(format!("p{i}").as_str()),
            status: *s,
            layers: Vec::new(),
        })
        .collect()
}

#[test]
fn overall_rules_at_their_boundaries() {
    use HealthStatus::*;
    assert_eq!(overall_status(&[]), Critical);
    assert_eq!(overall_status(&with(&[Critical, Critical])), Critical);
    assert_eq!(
        overall_status(&with(&[Critical, Healthy, Healthy])),
        Degraded,
        "first down"
    );
    assert_eq!(overall_status(&with(&[Degraded, Healthy])), Degraded);
    assert_eq!(
        overall_status(&with(&[Healthy, Critical])),
        Degraded,
        "half critical"
    );
    assert_eq!(
        overall_status(&with(&[Healthy, Critical, Healthy])),
        Warning,
        "a third"
    );
    assert_eq!(overall_status(&with(&[Healthy, Warning])), Warning);
    assert_eq!(overall_status(&with(&[Healthy, Healthy])), Healthy);
}

#[cfg(feature = "metrics")]
#[tokio::test(start_paused = true)]
async fn metrics_are_exported_through_the_facade() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let s = setup(TWO, &[("primary", 503, 0), ("secondary", 200, 0)]);
    for _ in 0..5 {
        s.router.clone().oneshot(Req::default()).await.unwrap();
    }
    metrics::with_local_recorder(&recorder, || s.registry.export_metrics());
    let found = snapshotter.snapshot().into_vec();
    let value = |name: &str, provider: &str| {
        found
            .iter()
            .find(|(k, ..)| {
                k.key().name() == name
                    && k.key()
                        .labels()
                        .any(|l| l.key() == "provider" && l.value() == provider)
            })
            .map(|(_, _, _, v)| v)
    };
    assert_eq!(
        value("palisade_breaker_state", "primary"),
        Some(&DebugValue::Gauge(2.0.into()))
    );
    assert_eq!(
        value("palisade_breaker_opened_total", "primary"),
        Some(&DebugValue::Counter(1))
    );
}

/// The boxed router can be awaited inside `tokio::spawn` (the unboxed one
/// cannot, a rustc limitation the `boxed` docs explain) and fails over
/// there as it does in place.
#[tokio::test(start_paused = true)]
async fn the_boxed_router_can_be_awaited_inside_a_spawned_task() {
    let s = setup(TWO, &[("primary", 503, 0), ("secondary", 200, 0)]);
    let router = s.router.clone().boxed();
    let task = tokio::spawn(async move { router.oneshot(Req::default()).await });
    let res = task.await.unwrap().unwrap();
    assert_eq!(res.body(), "secondary");
}

#[tokio::test(start_paused = true)]
async fn health_shows_balanced_providers_load_and_what_hedging_did() {
    let cfg = Config::from_toml(
        r#"
        [router]
        tiers = [["slow", "fast"], ["spare"]]
        strategy = "round_robin"
        [router.hedge]
        delay_ms = 100
        budget_ratio = 1.0
        [defaults.retry]
        enabled = false
        [providers.slow]
        [providers.fast]
        [providers.spare]
        "#,
    )
    .unwrap();
    let delays = [("slow", 1000u64), ("fast", 50), ("spare", 10)];
    let router: Router<Svc, HttpClassifier, Req> =
        Router::from_config(&cfg, HttpClassifier::new(), |p| {
            let (name, d) = *delays.iter().find(|(n, _)| *n == p.id).unwrap();
            fake(name, 200, Duration::from_millis(d), Arc::default())
        })
        .unwrap();
    // Round robin: "slow" first, hedged at 100 ms to "fast" (the hedge's
    // pick takes the next turn), which wins; so again for the second.
    for _ in 0..2 {
        let res = router.clone().oneshot(Req::default()).await.unwrap();
        assert_eq!(res.body(), "fast");
        let served = res.extensions().get::<palisade_core::Served>().unwrap();
        assert!(served.hedged, "{served:?}");
        assert_eq!(served.provider.as_ref().unwrap().as_str(), "fast");
    }
    let report = router.registry().health();
    let hedge = report.hedge.expect("the router hedges");
    assert_eq!(
        (hedge.hedgeable, hedge.sent, hedge.won, hedge.wasted),
        (2, 2, 2, 2)
    );
    let json = serde_json::to_value(&report).unwrap();
    no_debug_text_or_raw_durations(&json);
    assert_eq!(json["hedge"]["sent"], 2);
    let mut keys: Vec<&String> = json["providers"][0]["balance"]
        .as_object()
        .expect("a balanced provider shows its load")
        .keys()
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["first_token_ms", "in_flight", "latency_ms", "weight"]
    );
    assert!(
        json["providers"][2].get("balance").is_none(),
        "a tier of one has no balancer"
    );
    // Round robin with a fixed hedge delay reads no latency, so none is
    // measured: the report says so (null) rather than show the guess.
    assert!(json["providers"][0]["balance"]["latency_ms"].is_null());
    assert!(json["providers"][0]["balance"]["first_token_ms"].is_null());
    let text = report.prometheus_text();
    assert!(text.contains("palisade_hedge_sent_total 2\n"), "{text}");
    assert!(text.contains("palisade_hedge_won_total 2\n"), "{text}");
    assert!(
        text.contains("palisade_balance_in_flight{provider=\"fast\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE palisade_balance_latency_seconds gauge"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn with_a_shared_retry_budget_hedges_spend_it() {
    // Round robin sends a request to "slow" first and its hedge (at 100 ms)
    // to "fast", a turn each, so the next request starts at "slow" again.
    // With one retry budget for everything (one retry a second, next to
    // nothing per request), the first request's hedge is paid for and the
    // second's is not (it waits for "slow"; the third then starts at
    // "fast"). With the hedge's own budget (10%, and one a second over
    // 10 s), all three are hedged.
    for (shared, sent, no_budget) in [(true, 1, 1), (false, 3, 0)] {
        let cfg = Config::from_toml(&format!(
            r#"
            [router]
            tiers = [["slow", "fast"]]
            strategy = "round_robin"
            share_retry_budget = {shared}
            [router.hedge]
            delay_ms = 100
            [defaults.retry]
            enabled = false
            budget_ratio = 0.01
            budget_min_per_sec = 1
            budget_ttl_secs = 1
            [providers.slow]
            [providers.fast]
            "#
        ))
        .unwrap();
        let delays = [("slow", 1000u64), ("fast", 50)];
        let router: Router<Svc, HttpClassifier, Req> =
            Router::from_config(&cfg, HttpClassifier::new(), |p| {
                let (name, d) = *delays.iter().find(|(n, _)| *n == p.id).unwrap();
                fake(name, 200, Duration::from_millis(d), Arc::default())
            })
            .unwrap();
        assert_eq!(router.registry().shared_budget().is_some(), shared);
        for _ in 0..3 {
            router.clone().oneshot(Req::default()).await.unwrap();
        }
        let h = router.registry().health().hedge.unwrap();
        assert_eq!(h.sent, sent, "shared: {shared}: {h:?}");
        assert_eq!(h.no_budget, no_budget, "shared: {shared}: {h:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_reconciled_registry_keeps_unchanged_providers_state_and_rebuilds_the_rest() {
    let v1 = Config::from_toml(
        r#"
        [router]
        order = ["primary", "secondary"]
        [defaults.retry]
        enabled = false
        [defaults.breaker]
        consecutive_failures = 2
        open_ms = 60000
        [providers.primary]
        [providers.secondary]
        "#,
    )
    .unwrap();
    let calls: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::default()).collect();
    let behaviour = [("primary", 503u16), ("secondary", 200), ("third", 200)];
    let make = |p: &palisade::ProviderSettings| {
        let i = behaviour.iter().position(|(n, _)| *n == p.id).unwrap();
        fake(
            behaviour[i].0,
            behaviour[i].1,
            Duration::ZERO,
            calls[i].clone(),
        )
    };
    let router: Router<Svc, HttpClassifier, Req> =
        Router::from_config(&v1, HttpClassifier::new(), make).unwrap();
    // Two 503s open the primary's breaker.
    for _ in 0..2 {
        router.clone().oneshot(Req::default()).await.unwrap();
    }
    let registry = router.registry().clone();
    let breaker = |id: &str| registry.handles(id).unwrap().breaker.unwrap().state();
    assert_eq!(breaker("primary"), palisade_core::CircuitState::Open);
    let secondary_before = registry.get("secondary").unwrap();

    // v2: primary unchanged, secondary's settings changed, a third added.
    let v2 = Config::from_toml(
        r#"
        [router]
        order = ["primary", "secondary", "third"]
        [defaults.retry]
        enabled = false
        [defaults.breaker]
        consecutive_failures = 2
        open_ms = 60000
        [providers.primary]
        [providers.secondary]
        weight = 3
        [providers.third]
        "#,
    )
    .unwrap();
    let done = palisade::RegistryBuilder::new(&v2, HttpClassifier::new())
        .reconcile(&registry, make, |_| false)
        .unwrap();
    let ids = |v: &[ProviderId]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&done.kept), ["primary"]);
    assert_eq!(ids(&done.replaced), ["secondary"]);
    assert_eq!(ids(&done.added), ["third"]);
    assert!(done.removed.is_empty());
    assert_eq!(
        breaker("primary"),
        palisade_core::CircuitState::Open,
        "state kept"
    );
    assert!(!Arc::ptr_eq(
        &secondary_before,
        &registry.get("secondary").unwrap()
    ));
    assert_eq!(registry.order(), ["primary", "secondary", "third"]);
    // The router follows: the open primary is skipped without a call.
    let before = calls[0].load(Ordering::SeqCst);
    let res = router.clone().oneshot(Req::default()).await.unwrap();
    assert_eq!(res.body(), "secondary");
    assert_eq!(calls[0].load(Ordering::SeqCst), before);

    // `rebuild` forces a new stack (a new service behind unchanged settings).
    let done = palisade::RegistryBuilder::new(&v2, HttpClassifier::new())
        .reconcile(&registry, make, |id| id == "primary")
        .unwrap();
    assert_eq!(ids(&done.replaced), ["primary"]);
    assert_eq!(
        breaker("primary"),
        palisade_core::CircuitState::Closed,
        "a new stack"
    );

    // A config with a problem, or one switching the shared budget,
    // changes nothing.
    let bad = Config::from_toml(
        "[router]\norder = [\"primary\"]\n[providers.primary.breaker]\nfailure_rate = 7",
    )
    .err();
    assert!(bad.is_some());
    let switch = Config::from_toml(
        "[router]\norder = [\"primary\"]\nshare_retry_budget = true\n[providers.primary]",
    )
    .unwrap();
    let err = palisade::RegistryBuilder::new(&switch, HttpClassifier::new())
        .reconcile(&registry, make, |_| false)
        .unwrap_err();
    assert!(
        err.to_string().contains("router.share_retry_budget"),
        "{err}"
    );
    assert_eq!(
        registry.order(),
        ["primary", "secondary", "third"],
        "unchanged"
    );
}
