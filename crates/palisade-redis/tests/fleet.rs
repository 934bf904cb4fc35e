//! Replicas sharing providers through a real `redis-server` (started by
//! the tests, on loopback): quotas held fleet-wide, cooldowns and probes
//! fleet-wide, a retry budget fleet-wide, Redis killed and restarted
//! mid-run, replicas dying with quota or a probe lock. Real time: Redis
//! keeps its own clock.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_breaker::CircuitBreakerLayer;
use palisade_core::{BoxError, CircuitState, RejectReason, Rejected};
use palisade_ratelimit::{Quota, RateLimitLayer};
use palisade_redis::testing::Redis;
use palisade_redis::{Fleet, FleetSettings};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

/// Settings for the tests: Redis on loopback answers in well under a
/// millisecond, but these tests run beside each other on two cores, so a
/// command may wait its turn; 250 ms keeps a busy machine from reading as
/// Redis failing (the test that measures callers' waits uses the default).
fn settings(url: &str, replica: &str) -> FleetSettings {
    FleetSettings {
        replica_id: Some(replica.into()),
        heartbeat_ms: 200,
        retry_ms: 200,
        timeout_ms: 250,
        ..FleetSettings::new(url)
    }
}

/// The tests measure time on a real clock: one at a time, so one's load
/// does not show as another's delay.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits (polling every 5 ms, up to `within`) until `cond` holds.
async fn until(within: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if cond() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Three replicas connected and counting each other.
async fn three(url: &str, prefix: &str) -> Vec<Fleet> {
    let fleets: Vec<Fleet> = (0..3)
        .map(|i| {
            Fleet::connect(FleetSettings {
                key_prefix: prefix.into(),
                ..settings(url, &format!("r{i}"))
            })
            .unwrap()
        })
        .collect();
    let all = until(Duration::from_secs(5), || {
        fleets
            .iter()
            .all(|f| f.is_connected() && f.snapshot().replicas == 3)
    })
    .await;
    assert!(
        all.is_some(),
        "three replicas joined and counted each other"
    );
    fleets
}

/// Replicas `a` and `b` under `prefix`, `a` with `a_settings` applied,
/// both connected.
async fn two(
    url: &str,
    prefix: &str,
    a_settings: impl FnOnce(FleetSettings) -> FleetSettings,
) -> (Fleet, Fleet) {
    let make = |name: &str| FleetSettings {
        key_prefix: prefix.into(),
        ..settings(url, name)
    };
    let a = Fleet::connect(a_settings(make("a"))).unwrap();
    let b = Fleet::connect(make("b")).unwrap();
    until(Duration::from_secs(5), || {
        a.is_connected() && b.is_connected()
    })
    .await
    .expect("both replicas connected");
    (a, b)
}

type Req = http::Request<()>;
/// A service with its type erased (spawned tasks cannot name a closure's).
type Boxed = tower::util::BoxCloneSyncService<Req, (), BoxError>;

/// Each replica's limiter in front of one provider that counts what it
/// receives (and the tokens it was sent, by the weight header).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_send_a_minute_of_quota_not_three() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start();
    let fleets = three(&redis.url(), "quota").await;
    let received = Arc::new(AtomicU64::new(0));
    let tokens_received = Arc::new(AtomicU64::new(0));
    // Two providers: one with a request quota, one with requests and
    // tokens (calls weigh 100 to 190 tokens).
    let mut requests_only = Vec::new();
    let mut weighted = Vec::new();
    for fleet in &fleets {
        let limit = RateLimitLayer::builder()
            .provider("rpm")
            .quota(Quota::per_minute(600).burst(6))
            .build()
            .unwrap();
        let weigh = |r: &Req| r.headers()["w"].to_str().unwrap().parse::<u64>().unwrap();
        let tpm = RateLimitLayer::builder()
            .provider("tpm")
            .quota(Quota::per_minute(1_200).burst(12))
            .quota(Quota::tokens_per_minute(12_000).burst(400))
            .weigh(weigh)
            .build()
            .unwrap();
        fleet.join("rpm", None, Some(&limit.handle()));
        fleet.join("tpm", None, Some(&tpm.handle()));
        let r = received.clone();
        requests_only.push(Boxed::new(limit.layer(service_fn(move |_: Req| {
            r.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, BoxError>(()) }
        }))));
        let t = tokens_received.clone();
        weighted.push(Boxed::new(tpm.layer(service_fn(move |req: Req| {
            let w: u64 = req.headers()["w"].to_str().unwrap().parse().unwrap();
            t.fetch_add(w, Ordering::Relaxed);
            async { Ok::<_, BoxError>(()) }
        }))));
    }
    for fleet in &fleets {
        fleet.ready().await;
    }
    // Demand: each replica 10 calls a second to "rpm" (the fleet 1 800 a
    // minute, 3x the quota) and 600 tokens a second to "tpm" (36 000 a
    // minute, 3x its token quota), for one minute.
    let start = Instant::now();
    let minute = Duration::from_secs(60);
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, (svc, tsvc)) in requests_only.into_iter().zip(weighted).enumerate() {
        let refused = refused.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let at = start + Duration::from_millis(100 * n + 33 * i as u64);
                if at >= start + minute {
                    return;
                }
                tokio::time::sleep_until(at).await;
                match svc.clone().oneshot(http::Request::new(())).await {
                    Ok(()) => {}
                    Err(e) => {
                        let r = e.downcast_ref::<Rejected>().expect("only refusals");
                        assert_eq!(r.reason(), RejectReason::RateLimited);
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                for w in [100u64, 190, 150, 160] {
                    let req = http::Request::builder().header("w", w).body(()).unwrap();
                    let _ = tsvc.clone().oneshot(req).await;
                }
                n += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sent = received.load(Ordering::Relaxed);
    let tokens = tokens_received.load(Ordering::Relaxed);
    let commands: u64 = fleets.iter().map(|f| f.snapshot().redis_commands).sum();
    eprintln!(
        "fleet of 3, one minute, 3x demand: rpm quota 600 (burst 6) -> {sent} sent, {} refused; \
         tpm quota 12 000 tokens (burst 400) -> {tokens} tokens sent; {commands} Redis commands in all",
        refused.load(Ordering::Relaxed)
    );
    assert!(
        sent <= 606,
        "{sent} requests in a minute over a quota of 600"
    );
    assert!(
        sent >= 570,
        "{sent}: the fleet should use its quota, not starve"
    );
    assert!(
        tokens <= 12_000 + 400 + 120,
        "{tokens} tokens over 12 000 (+ burst 400, +1%)"
    );
    assert!(tokens >= 11_000, "{tokens}: the token quota should be used");
}

/// A provider that answers 429 with `Retry-After: 2` until `healthy_at`,
/// then 200 after `probe_delay`; it notes when each call arrived.
#[derive(Clone)]
struct Upstream {
    calls: Arc<Mutex<Vec<(usize, Instant)>>>,
    healthy_at: Arc<Mutex<Option<Instant>>>,
    probe_delay: Duration,
}

impl Upstream {
    fn service(
        &self,
        replica: usize,
    ) -> impl Service<
        Req,
        Response = http::Response<()>,
        Error = BoxError,
        Future = impl Future<Output = Result<http::Response<()>, BoxError>> + Send,
    > + Clone
           + Send {
        let me = self.clone();
        service_fn(move |_: Req| {
            let me = me.clone();
            async move {
                let now = Instant::now();
                me.calls.lock().unwrap().push((replica, now));
                let healthy = me.healthy_at.lock().unwrap().is_some_and(|at| now >= at);
                if healthy {
                    tokio::time::sleep(me.probe_delay).await;
                    Ok(http::Response::new(()))
                } else {
                    Ok(http::Response::builder()
                        .status(429)
                        .header("retry-after", "2")
                        .body(())
                        .unwrap())
                }
            }
        })
    }
}

use std::future::Future;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_seen_by_one_replica_holds_every_replica() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start();
    let fleets = three(&redis.url(), "cooldown").await;
    let upstream = Upstream {
        calls: Arc::default(),
        healthy_at: Arc::default(),
        probe_delay: Duration::from_millis(300),
    };
    let mut svcs = Vec::new();
    let mut handles = Vec::new();
    for (i, fleet) in fleets.iter().enumerate() {
        let breaker = CircuitBreakerLayer::http()
            .provider("p")
            .half_open_probes(1)
            .half_open_successes(1)
            .build()
            .unwrap();
        fleet.join("p", Some(&breaker.handle()), None);
        handles.push(breaker.handle());
        svcs.push(breaker.layer(upstream.service(i)));
    }
    // Replica 0 meets the 429 and opens for 2 s.
    let t0 = Instant::now();
    let res = svcs[0]
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    *upstream.healthy_at.lock().unwrap() = Some(t0 + Duration::from_millis(1_900));
    assert_eq!(handles[0].state(), CircuitState::Open);
    let reached = until(Duration::from_millis(500), || {
        handles[1..].iter().all(|h| h.state() == CircuitState::Open)
    })
    .await
    .expect("the other replicas open");
    eprintln!("cooldown reached the other replicas in {reached:?}");
    assert!(reached <= Duration::from_millis(100), "{reached:?}");
    for h in &handles[1..] {
        let left = h.open_remaining().unwrap();
        assert!(
            left > Duration::from_millis(1_800) && left <= Duration::from_secs(2),
            "until the same instant: {left:?}"
        );
    }
    // Every replica calls every 10 ms for 3 s.
    let mut tasks = Vec::new();
    for svc in svcs {
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while t0.elapsed() < Duration::from_secs(3) {
                let r = svc.clone().oneshot(http::Request::new(())).await;
                outcomes.push(r.is_ok());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            outcomes
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The first call (replica 0's 429) aside.
    let calls = upstream.calls.lock().unwrap()[1..].to_vec();
    let before_end: Vec<_> = calls
        .iter()
        .filter(|(_, at)| *at > t0 && *at < t0 + Duration::from_millis(1_990))
        .collect();
    assert_eq!(
        before_end.len(),
        0,
        "nothing sent during the cooldown: {before_end:?}"
    );
    // From the end of the cooldown until the probe's verdict (300 ms
    // later), exactly one probe, fleet-wide.
    let end = t0 + Duration::from_secs(2);
    let probing: Vec<_> = calls
        .iter()
        .filter(|(_, at)| {
            *at >= end - Duration::from_millis(150) && *at < end + Duration::from_millis(250)
        })
        .collect();
    assert_eq!(probing.len(), 1, "one probe for the fleet: {probing:?}");
    // Its success closed the provider for every replica: all send again.
    let after: std::collections::HashSet<usize> = calls
        .iter()
        .filter(|(_, at)| *at >= end + Duration::from_millis(400))
        .map(|(r, _)| *r)
        .collect();
    assert_eq!(
        after.len(),
        3,
        "every replica sends after the close: {after:?}"
    );
    for h in &handles {
        assert_eq!(h.state(), CircuitState::Closed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_costs_callers_nothing_and_the_fleet_rejoins() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut redis = Redis::start();
    let fleets = three(&redis.url(), "killed").await;
    let received = Arc::new(AtomicUsize::new(0));
    let mut svcs = Vec::new();
    for fleet in &fleets {
        // 6 000 a minute (100 a second), burst 60: alone, each replica gets
        // 33 a second, above the 20 a second it is asked for.
        let limit = RateLimitLayer::builder()
            .provider("p")
            .quota(Quota::per_minute(6_000).burst(60))
            .build()
            .unwrap();
        fleet.join("p", None, Some(&limit.handle()));
        let r = received.clone();
        svcs.push(Boxed::new(limit.layer(service_fn(move |_: Req| {
            r.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, BoxError>(()) }
        }))));
    }
    let other_limit = RateLimitLayer::builder()
        .provider("other")
        .quota(Quota::per_minute(6_000).burst(60))
        .build()
        .unwrap();
    fleets[1].join("other", None, Some(&other_limit.handle()));
    let other = Boxed::new(other_limit.layer(service_fn(|_: Req| async { Ok::<_, BoxError>(()) })));
    for fleet in &fleets {
        fleet.ready().await;
    }
    let start = Instant::now();
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for svc in svcs.clone() {
        let (slowest, errors) = (slowest.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < Duration::from_secs(4) {
                let t = Instant::now();
                if let Err(e) = svc.clone().oneshot(http::Request::new(())).await {
                    eprintln!("a caller saw {e} at {:?}", start.elapsed());
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                let took = t.elapsed();
                {
                    let mut s = slowest.lock().unwrap();
                    *s = (*s).max(took);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.kill();
    let alone = until(Duration::from_secs(2), || {
        fleets.iter().all(|f| !f.is_connected())
    })
    .await;
    assert!(alone.is_some(), "each replica notices Redis is gone");
    // Alone, each replica takes its third of a quota: 100 calls at once to
    // another provider with the same quota (idle until now) get a third of
    // its burst (20), not all of it.
    let at_once = {
        let mut ok = 0;
        for _ in 0..100 {
            if other.clone().oneshot(http::Request::new(())).await.is_ok() {
                ok += 1;
            }
        }
        ok
    };
    eprintln!("alone, 100 calls at once on one replica: {at_once} admitted");
    assert!(at_once >= 19, "a third of the burst of 60: {at_once}");
    assert!(at_once <= 20);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    redis.restart();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "no caller saw Redis fail"
    );
    let slowest = *slowest.lock().unwrap();
    assert!(
        slowest < Duration::from_millis(50),
        "no call waited on Redis: slowest {slowest:?}"
    );
    let rejoined = until(Duration::from_secs(3), || {
        fleets
            .iter()
            .all(|f| f.is_connected() && f.snapshot().replicas == 3)
    })
    .await;
    assert!(
        rejoined.is_some(),
        "every replica rejoins without a restart"
    );
    for f in &fleets {
        assert_eq!(f.snapshot().times_alone, 1);
    }
    // The shared limit holds again: one replica alone asked for 300 a
    // second for a second gets the fleet's quota (burst 60 + 100 a second,
    // plus what the others hold unspent at most), far more than its share
    // alone (20 + 33).
    tokio::time::sleep(Duration::from_millis(700)).await; // the bucket refills
    let busy = Instant::now();
    let mut ok = 0u32;
    while busy.elapsed() < Duration::from_secs(1) {
        if svcs[0]
            .clone()
            .oneshot(http::Request::new(()))
            .await
            .is_ok()
        {
            ok += 1;
        }
        tokio::time::sleep(Duration::from_micros(3_300)).await;
    }
    let secs = busy.elapsed().as_secs_f64();
    let bound = 60.0 + 100.0 * secs + 3.0 * 20.0 + 1.0;
    eprintln!("after rejoining, one busy replica: {ok} admitted in {secs:.2}s (fleet bound {bound:.0}, alone 53)");
    assert!(
        f64::from(ok) <= bound,
        "{ok} admitted: over the fleet's quota ({bound:.0})"
    );
    assert!(
        ok > 100,
        "{ok} admitted: the replica should draw on the fleet's quota again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_dies_holding_quota_or_the_probe_lock_blocks_nobody_for_long() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start();
    // Quota: 60 a minute, burst 3. Replica A leases all three (a lease of
    // half the quota, capped at the burst) and dies without giving back.
    let (a, b) = two(&redis.url(), "dies", |s| FleetSettings {
        overshoot: 0.5,
        ..s
    })
    .await;
    let quota = Quota::per_minute(60).burst(3);
    let la = RateLimitLayer::builder()
        .provider("p")
        .quota(quota)
        .build()
        .unwrap();
    let lb = RateLimitLayer::builder()
        .provider("p")
        .quota(quota)
        .build()
        .unwrap();
    a.join("p", None, Some(&la.handle()));
    let held = until(Duration::from_secs(2), || {
        a.snapshot().providers["p"].quotas[0].held == 3
    })
    .await;
    assert!(
        held.is_some(),
        "A leased the whole burst: {:?}",
        a.snapshot()
    );
    drop(la);
    drop(a);
    let died = Instant::now();
    b.join("p", None, Some(&lb.handle()));
    let svc = lb.layer(service_fn(|_: Req| async { Ok::<_, BoxError>(()) }));
    let mut first = None;
    while died.elapsed() < Duration::from_secs(4) {
        if svc.clone().oneshot(http::Request::new(())).await.is_ok() {
            first = Some(died.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = first.expect("B sends again");
    eprintln!("B's first call after A died holding the burst: {first:?}");
    assert!(
        first <= Duration::from_millis(1_100),
        "at most one unit's time (1 s), not A's lease: {first:?}"
    );

    // The probe lock: a replica that took it and died holds it until it
    // expires; B's breaker stays open until then, then probes.
    let breaker = CircuitBreakerLayer::http()
        .provider("q")
        .half_open_probes(1)
        .build()
        .unwrap();
    let h = breaker.handle();
    b.join("q", Some(&h), None);
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("SET")
        .arg("dies:probe:q")
        .arg("dead-replica")
        .arg("PX")
        .arg(1_500)
        .query_async(&mut conn)
        .await
        .unwrap();
    let opened = Instant::now();
    h.follow_open(Duration::from_millis(500));
    let probes = Arc::new(Mutex::new(Vec::new()));
    let p = probes.clone();
    let svc = breaker.layer(service_fn(move |_: Req| {
        p.lock().unwrap().push(opened.elapsed());
        async { Ok::<_, BoxError>(http::Response::new(())) }
    }));
    while opened.elapsed() < Duration::from_millis(2_500) {
        let _ = svc.clone().oneshot(http::Request::new(())).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let probes = probes.lock().unwrap().clone();
    let first = *probes.first().expect("B probes once the lock expires");
    eprintln!("B's probe after a dead replica's lock: {first:?}");
    assert!(
        first >= Duration::from_millis(1_400) && first <= Duration::from_millis(1_900),
        "not while the lock lasted, soon after: {first:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleets_retries_stay_within_its_ratio_of_the_fleets_requests() {
    let _one = ONE_AT_A_TIME.lock().await;
    use palisade_retry::RetryBudget;
    let mut redis = Redis::start();
    let (a, b) = two(&redis.url(), "budget", |s| s).await;
    // 20% of requests over 10 s, no floor.
    let budget_a = RetryBudget::ratio(0.2, Duration::from_secs(10), 0).unwrap();
    let budget_b = RetryBudget::ratio(0.2, Duration::from_secs(10), 0).unwrap();
    assert!(a.share_budget("llm", &budget_a));
    assert!(b.share_budget("llm", &budget_b));
    assert!(!b.share_budget("llm", &budget_b), "shared once");
    let bucket = RetryBudget::token_bucket(10, 1.0).unwrap();
    assert!(!a.share_budget("bucket", &bucket), "only ratio budgets");
    // A serves 100 requests; B none.
    for _ in 0..100 {
        budget_a.deposit();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // B retries on the fleet's requests: taking until refused 20 times in
    // a row (each refusal asks for a lease).
    let take_all = |budget: &RetryBudget| {
        let budget = budget.clone();
        async move {
            let (mut taken, mut refused) = (0, 0);
            while refused < 20 {
                if budget.try_withdraw() {
                    taken += 1;
                    refused = 0;
                } else {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            taken
        }
    };
    let by_b = take_all(&budget_b).await;
    let by_a = take_all(&budget_a).await;
    eprintln!("fleet budget 0.2 x 100 requests: B took {by_b}, A took {by_a}");
    assert_eq!(
        by_a + by_b,
        20,
        "the fleet's retries are 0.2 x its requests"
    );
    assert!(by_b >= 10, "B retried on A's requests: {by_b}");
    // Redis gone: each decides on its own requests (B has none).
    redis.kill();
    until(Duration::from_secs(3), || {
        !a.is_connected() && !b.is_connected()
    })
    .await
    .unwrap();
    assert!(
        !budget_b.try_withdraw(),
        "B alone has no requests to retry on"
    );
    assert!(budget_a.try_withdraw(), "A alone retries on its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_empty_window_seen_by_one_replica_stops_the_others() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start();
    let (a, b) = two(&redis.url(), "window", |s| s).await;
    // Limiters that only follow the provider's headers (no quota).
    let la = RateLimitLayer::http().provider("p").build().unwrap();
    let lb = RateLimitLayer::http().provider("p").build().unwrap();
    a.join("p", None, Some(&la.handle()));
    b.join("p", None, Some(&lb.handle()));
    a.ready().await;
    b.ready().await;
    until(Duration::from_secs(5), || {
        a.is_connected() && b.is_connected()
    })
    .await
    .unwrap();
    let svc = la.layer(service_fn(|_: Req| async {
        Ok::<_, BoxError>(
            http::Response::builder()
                .header("x-ratelimit-limit-requests", "100")
                .header("x-ratelimit-remaining-requests", "0")
                .header("x-ratelimit-reset-requests", "2s")
                .body(())
                .unwrap(),
        )
    }));
    assert!(lb.handle().wait().is_zero());
    svc.oneshot(http::Request::new(())).await.unwrap();
    let told = until(Duration::from_millis(500), || {
        lb.handle().wait() > Duration::from_millis(1_500)
    })
    .await
    .expect("B learns A's provider has nothing left");
    eprintln!("the provider's empty window reached B in {told:?}");
    assert!(told <= Duration::from_millis(100), "{told:?}");
    let hb = lb.layer(service_fn(|_: Req| async {
        Ok::<_, BoxError>(http::Response::new(()))
    }));
    let err = hb.oneshot(http::Request::new(())).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<Rejected>().unwrap().reason(),
        RejectReason::RateLimited
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_loses_everything_open_periods_are_told_again_and_nothing_stays_held() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut redis = Redis::start();
    let (a, b) = two(&redis.url(), "lost", |s| s).await;
    let make = || CircuitBreakerLayer::http().provider("p").build().unwrap();
    let (pa, pb) = (make(), make());
    a.join("p", Some(&pa.handle()), None);
    b.join("p", Some(&pb.handle()), None);
    // B also has provider q, held open by the fleet for 30 s.
    let qb = CircuitBreakerLayer::http().provider("q").build().unwrap();
    b.join("q", Some(&qb.handle()), None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A meets a 429 with Retry-After: 30; B follows.
    let svc = pa.layer(service_fn(|_: Req| async {
        Ok::<_, BoxError>(
            http::Response::builder()
                .status(429)
                .header("retry-after", "30")
                .body(())
                .unwrap(),
        )
    }));
    let _ = svc.oneshot(http::Request::new(())).await;
    until(Duration::from_millis(500), || {
        pb.handle().state() == CircuitState::Open
    })
    .await
    .expect("B follows A");
    qb.handle().follow_open(Duration::from_secs(30));
    // Redis restarts empty: every key and announcement is gone.
    redis.kill();
    until(Duration::from_secs(3), || {
        !a.is_connected() && !b.is_connected()
    })
    .await
    .unwrap();
    redis.restart();
    until(Duration::from_secs(3), || {
        a.is_connected() && b.is_connected()
    })
    .await
    .expect("both rejoin");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A told the fleet again: the open period is in Redis, and B keeps it.
    let mut conn = redis.connection().await;
    let left: i64 = redis::cmd("PTTL")
        .arg("lost:open:p")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left > 25_000, "A's open period announced again: {left} ms");
    assert_eq!(pb.handle().state(), CircuitState::Open);
    // Nobody in the fleet holds q open: B does not stay refusing it.
    assert_eq!(qb.handle().state(), CircuitState::Closed);
}
