//! `cargo run --release -p benches --features fleet --bin fleet`: what
//! sharing a quota through Redis costs a call, and how often Redis is asked.
//!
//! A real `redis-server` on a free loopback port. Two limiters with the
//! same quota (large enough that no call is refused): one in-process, one
//! joined to a fleet (its calls spend leases on atomics). Each is driven
//! through `ready().call()` by 1 task and by 64 tasks; printed: the median
//! ns per call of 5 runs of 200 000 calls. Then the fleet's cost in Redis:
//! leases taken per 1 000 calls at 600 and 10 000 requests a minute shared
//! by 3 replicas (a lease is 1% of the quota split between them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_core::BoxError;
use palisade_ratelimit::{Quota, RateLimit, RateLimitLayer};
use palisade_redis::testing::Redis;
use palisade_redis::{Fleet, FleetSettings};
use tower::{service_fn, Layer, Service, ServiceExt};

type Req = http::Request<()>;

const CALLS: u64 = 200_000;

async fn run<S>(svc: S, tasks: u64) -> f64
where
    S: Service<Req, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let per = CALLS / tasks;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    svc.ready()
                        .await
                        .unwrap()
                        .call(http::Request::new(()))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    start.elapsed().as_nanos() as f64 / (per * tasks) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

type Limited = tower::util::BoxCloneSyncService<Req, (), BoxError>;

fn limited(layer: &RateLimitLayer) -> Limited {
    let svc: RateLimit<_, _, _> = layer.layer(service_fn(|_: Req| async { Ok::<_, BoxError>(()) }));
    Limited::new(svc)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let redis = Redis::start();
    let quota = Quota::per_minute(1_000_000_000);
    let local = RateLimitLayer::builder().quota(quota).build().unwrap();
    let shared = RateLimitLayer::builder().quota(quota).build().unwrap();
    let fleet = Fleet::connect(FleetSettings::new(redis.url())).unwrap();
    fleet.join("p", None, Some(&shared.handle()));
    fleet.ready().await;
    println!("| limiter | 1 task | 64 tasks |");
    println!("|---|---|---|");
    for (name, layer) in [("in-process", &local), ("fleet (lease path)", &shared)] {
        let mut row = Vec::new();
        for tasks in [1, 64] {
            let runs: Vec<f64> = {
                let mut v = Vec::new();
                for _ in 0..5 {
                    v.push(run(limited(layer), tasks).await);
                }
                v
            };
            row.push(median(runs));
        }
        println!("| {name} | {:.0} ns | {:.0} ns |", row[0], row[1]);
    }
    let s = fleet.snapshot();
    println!(
        "fleet limiter: {} leases for {} calls",
        s.providers["p"].top_ups,
        CALLS * 10
    );

    // Redis's part: leases per 1 000 calls, 3 replicas sharing a quota,
    // each asked for its third of the quota (so none is refused for long).
    for rpm in [600u64, 10_000] {
        let fleets: Vec<Fleet> = (0..3)
            .map(|i| {
                Fleet::connect(FleetSettings {
                    key_prefix: format!("bench{rpm}"),
                    replica_id: Some(format!("r{i}")),
                    heartbeat_ms: 100,
                    ..FleetSettings::new(redis.url())
                })
                .unwrap()
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let sent = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        // Kept to the end: a limiter's pool lives as long as it does.
        let mut layers = Vec::new();
        for f in &fleets {
            let layer = RateLimitLayer::builder()
                .quota(Quota::per_minute(rpm).burst(rpm / 60))
                .build()
                .unwrap();
            f.join("p", None, Some(&layer.handle()));
            f.ready().await;
            let svc = limited(&layer);
            layers.push(layer);
            let sent = sent.clone();
            let gap = Duration::from_secs_f64(60.0 / rpm as f64 * 3.0);
            tasks.push(tokio::spawn(async move {
                let start = Instant::now();
                let mut n = 0u32;
                while start.elapsed() < Duration::from_secs(6) {
                    if svc.clone().oneshot(http::Request::new(())).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                    tokio::time::sleep_until((start + gap * n).into()).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let leases: u64 = fleets
            .iter()
            .map(|f| f.snapshot().providers["p"].top_ups)
            .sum();
        let calls = sent.load(Ordering::Relaxed);
        println!(
            "{rpm} a minute, 3 replicas, 6 s: {calls} calls sent, {leases} leases = {:.0} per 1 000 calls (lease {} each)",
            leases as f64 * 1000.0 / calls.max(1) as f64,
            fleets[0].snapshot().providers["p"].quotas[0].lease
        );
    }
}
