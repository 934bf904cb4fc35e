//! Balancing and hedging scenarios (issue 19), seeded, on tokio's paused
//! clock: the router built from config, providers with seeded latencies,
//! an open-loop load. Each prints its row and asserts its bound.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::{Config, Router};
use palisade_core::{BoxError, HttpClassifier};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

type Req = http::Request<String>;
type Res = http::Response<String>;
type Svc = BoxCloneSyncService<Req, Res, BoxError>;

/// A deployment: `slow_share` of its calls take `slow`, the others
/// `fast_lo..fast_hi` ms, drawn from a seeded generator.
#[derive(Clone, Copy)]
struct Shape {
    fast_lo: u64,
    fast_hi: u64,
    slow_share: f64,
    slow: u64,
}

struct Deployment {
    calls: AtomicUsize,
    live: AtomicU32,
    rng: Mutex<u64>,
    shape: Shape,
}

impl Deployment {
    fn latency(&self) -> Duration {
        let mut s = self.rng.lock().unwrap();
        *s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (*s >> 11) as f64 / (1u64 << 53) as f64;
        let ms = if r < self.shape.slow_share {
            self.shape.slow
        } else {
            let u = (r - self.shape.slow_share) / (1.0 - self.shape.slow_share);
            self.shape.fast_lo + ((self.shape.fast_hi - self.shape.fast_lo) as f64 * u) as u64
        };
        Duration::from_millis(ms)
    }
}

struct Live(Arc<Deployment>);
impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

fn service(d: Arc<Deployment>, name: String) -> Svc {
    BoxCloneSyncService::new(tower::service_fn(move |_: Req| {
        d.calls.fetch_add(1, Ordering::SeqCst);
        d.live.fetch_add(1, Ordering::SeqCst);
        let wait = d.latency();
        let live = Live(d.clone());
        let name = name.clone();
        async move {
            let _live = live;
            tokio::time::sleep(wait).await;
            Ok::<_, BoxError>(http::Response::new(name))
        }
    }))
}

struct Run {
    latencies: Vec<Duration>,
    deployments: Vec<(String, Arc<Deployment>)>,
    router: Router<Svc, HttpClassifier, Req>,
    max_spread: u32,
}

impl Run {
    fn calls(&self, name: &str) -> usize {
        let d = &self.deployments.iter().find(|(n, _)| n == name).unwrap().1;
        d.calls.load(Ordering::SeqCst)
    }

    /// Calls made beyond one per request (hedges), as a share of requests.
    fn extra_calls(&self) -> f64 {
        let calls: usize = self.deployments.iter().map(|(n, _)| self.calls(n)).sum();
        calls as f64 / self.latencies.len() as f64 - 1.0
    }

    /// Every call has ended: none is left running (losers were dropped).
    fn assert_none_left(&self, why: &str) {
        for (name, d) in &self.deployments {
            assert_eq!(d.live.load(Ordering::SeqCst), 0, "{name}: {why}");
        }
    }

    fn p(&self, q: f64) -> Duration {
        let mut v = self.latencies.clone();
        v.sort_unstable();
        v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
    }
}

/// Sends `n` requests, one every `every`, through a router built from
/// `toml` over deployments of the given shapes; waits for all.
async fn run(toml: &str, shapes: &[(&str, Shape)], n: usize, every: Duration) -> Run {
    let cfg = Config::from_toml(toml).unwrap();
    let deployments: Vec<(String, Arc<Deployment>)> = shapes
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let d = Deployment {
                calls: AtomicUsize::new(0),
                live: AtomicU32::new(0),
                rng: Mutex::new(0x5eed + i as u64 * 7919),
                shape: *shape,
            };
            (name.to_string(), Arc::new(d))
        })
        .collect();
    let router = Router::from_config(&cfg, HttpClassifier::new(), |p| {
        let d = deployments.iter().find(|(n, _)| *n == p.id).unwrap();
        service(d.1.clone(), d.0.clone())
    })
    .unwrap();
    // Boxed at the spawn boundary (rust-lang/rust#64552).
    let boxed = router.clone().boxed();
    let mut handles = Vec::with_capacity(n);
    let mut max_spread = 0;
    let loads: Vec<_> = deployments
        .iter()
        .map(|(name, _)| router.registry().get(name).unwrap().load.clone())
        .collect();
    for _ in 0..n {
        let r = boxed.clone();
        handles.push(tokio::spawn(async move {
            let t0 = Instant::now();
            r.oneshot(Req::new(String::new()))
                .await
                .map(|_| t0.elapsed())
        }));
        tokio::task::yield_now().await;
        let counts: Vec<u32> = loads.iter().map(|l| l.in_flight()).collect();
        let spread = counts.iter().max().unwrap() - counts.iter().min().unwrap();
        max_spread = max_spread.max(spread);
        tokio::time::sleep(every).await;
    }
    let mut latencies = Vec::with_capacity(n);
    for h in handles {
        latencies.push(h.await.unwrap().expect("every request is answered"));
    }
    Run {
        latencies,
        deployments,
        router,
        max_spread,
    }
}

const FAST: Shape = Shape {
    fast_lo: 200,
    fast_hi: 300,
    slow_share: 0.0,
    slow: 0,
};
/// p99 5 s, p95 300 ms.
const HEAVY_TAIL: Shape = Shape {
    fast_lo: 200,
    fast_hi: 300,
    slow_share: 0.04,
    slow: 5000,
};

fn three(strategy: &str, hedge: &str) -> String {
    format!(
        r#"
        [router]
        tiers = [["a", "b", "tail"]]
        strategy = "{strategy}"
        seed = 7
        {hedge}
        [defaults.retry]
        enabled = false
        [defaults.timeout]
        attempt_ms = 10000
        [defaults.bulkhead]
        max_concurrent = 1000
        [providers.a]
        [providers.b]
        [providers.tail]
        "#
    )
}

fn row(name: &str, r: &Run, extra: f64) {
    let total: usize = r.deployments.iter().map(|(n, _)| r.calls(n)).sum();
    println!(
        "| {name} | {} | {} / {} / {} | {:.1}% | {} ms | {} ms | {:.1}% |",
        r.latencies.len(),
        r.calls("a"),
        r.calls("b"),
        r.calls("tail"),
        100.0 * (r.calls("a") + r.calls("b")) as f64 / total as f64,
        r.p(0.5).as_millis(),
        r.p(0.99).as_millis(),
        100.0 * extra,
    );
}

#[tokio::test(start_paused = true)]
async fn p2c_over_peak_ewma_keeps_traffic_off_a_heavy_tail() {
    let shapes = [("a", FAST), ("b", FAST), ("tail", HEAVY_TAIL)];
    let r = run(
        &three("peak_ewma", ""),
        &shapes,
        10_000,
        Duration::from_millis(10),
    )
    .await;
    row("p2c / peak-EWMA, heavy tail", &r, 0.0);
    let fast = (r.calls("a") + r.calls("b")) as f64 / 10_000.0;
    assert!(fast >= 0.8, "{fast}");
    r.assert_none_left("calls ended");
}

#[tokio::test(start_paused = true)]
async fn hedging_at_p95_holds_the_callers_p99_near_the_fast_ones() {
    let shapes = [("a", FAST), ("b", FAST), ("tail", HEAVY_TAIL)];
    let hedge = "[router.hedge]\npercentile = 0.95\nmin_samples = 20";
    let r = run(
        &three("peak_ewma", hedge),
        &shapes,
        10_000,
        Duration::from_millis(10),
    )
    .await;
    let extra = r.extra_calls();
    row("p2c + hedge at p95, heavy tail", &r, extra);
    let calls: usize = r.deployments.iter().map(|(n, _)| r.calls(n)).sum();
    let fast = (r.calls("a") + r.calls("b")) as f64 / calls as f64;
    assert!(fast >= 0.8, "{fast}");
    let fast_p99 = Duration::from_millis(300);
    assert!(r.p(0.99) <= fast_p99 * 3 / 2, "caller p99 {:?}", r.p(0.99));
    assert!(extra <= 0.10, "extra requests {extra}");
    let s = r.router.hedge_policy().unwrap().handle().snapshot();
    assert!(s.won > 0 && s.sent as f64 <= 0.1 * 10_000.0, "{s:?}");
    r.assert_none_left("losers were dropped");
}

#[tokio::test(start_paused = true)]
async fn hedging_alone_cuts_the_tail_under_round_robin() {
    // Round robin sends a third of the traffic to the heavy tail (1.3% of
    // all calls take 5 s): hedges bring those back to about p95 + a fast
    // answer.
    let shapes = [("a", FAST), ("b", FAST), ("tail", HEAVY_TAIL)];
    let hedge = "[router.hedge]\npercentile = 0.95\nmin_samples = 20";
    let r = run(
        &three("round_robin", hedge),
        &shapes,
        10_000,
        Duration::from_millis(10),
    )
    .await;
    let extra = r.extra_calls();
    row("round robin + hedge at p95, heavy tail", &r, extra);
    assert!(
        r.p(0.99) <= Duration::from_millis(700),
        "caller p99 {:?}",
        r.p(0.99)
    );
    assert!(extra <= 0.10, "extra requests {extra}");
    let plain = run(
        &three("round_robin", ""),
        &shapes,
        10_000,
        Duration::from_millis(10),
    )
    .await;
    row("round robin, heavy tail", &plain, 0.0);
    assert_eq!(plain.p(0.99), Duration::from_millis(5000));
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_token_is_raced_and_one_answer_delivered() {
    // "ttft" answers (its first token, behind a first-frame gate) after
    // 4 s; "quick" after 200 ms. Round robin starts on "ttft".
    let slow = Shape {
        fast_lo: 4000,
        fast_hi: 4000,
        slow_share: 0.0,
        slow: 0,
    };
    let quick = Shape {
        fast_lo: 200,
        fast_hi: 200,
        slow_share: 0.0,
        slow: 0,
    };
    let toml = r#"
        [router]
        tiers = [["ttft", "quick"]]
        strategy = "round_robin"
        seed = 1
        [router.hedge]
        delay_ms = 500
        [defaults.retry]
        enabled = false
        [defaults.timeout]
        attempt_ms = 10000
        [providers.ttft]
        [providers.quick]
    "#;
    let r = run(toml, &[("ttft", slow), ("quick", quick)], 1, Duration::ZERO).await;
    assert_eq!(
        r.latencies[0],
        Duration::from_millis(700),
        "hedge delay + the quick TTFT"
    );
    assert_eq!((r.calls("ttft"), r.calls("quick")), (1, 1));
    r.assert_none_left("the losing stream was dropped");
    let s = r.router.hedge_policy().unwrap().handle().snapshot();
    assert_eq!((s.sent, s.won, s.wasted), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn round_robin_and_weights_share_within_one_percent() {
    let toml = r#"
        [router]
        tiers = [["a", "b", "c"]]
        strategy = "round_robin"
        [defaults.retry]
        enabled = false
        [defaults.bulkhead]
        max_concurrent = 1000
        [providers.a]
        weight = 5
        [providers.b]
        weight = 3
        [providers.c]
        weight = 2
    "#;
    let shapes = [("a", FAST), ("b", FAST), ("c", FAST)];
    let r = run(toml, &shapes, 10_000, Duration::from_millis(1)).await;
    for (name, w) in [("a", 0.5), ("b", 0.3), ("c", 0.2)] {
        let share = r.calls(name) as f64 / 10_000.0;
        assert!((share - w).abs() <= 0.01, "{name}: {share}");
    }
    let toml = toml
        .replace("round_robin", "random")
        .replace("[router]", "[router]\nseed = 3");
    let r = run(&toml, &shapes, 10_000, Duration::from_millis(1)).await;
    for (name, w) in [("a", 0.5), ("b", 0.3), ("c", 0.2)] {
        let share = r.calls(name) as f64 / 10_000.0;
        assert!((share - w).abs() <= 0.01, "random {name}: {share}");
    }
}

#[tokio::test(start_paused = true)]
async fn least_in_flight_keeps_counts_within_one() {
    let toml = r#"
        [router]
        tiers = [["a", "b", "c"]]
        strategy = "least_in_flight"
        [defaults.retry]
        enabled = false
        [defaults.bulkhead]
        max_concurrent = 1000
        [providers.a]
        [providers.b]
        [providers.c]
    "#;
    let even = Shape {
        fast_lo: 250,
        fast_hi: 250,
        slow_share: 0.0,
        slow: 0,
    };
    let shapes = [("a", even), ("b", even), ("c", even)];
    let r = run(toml, &shapes, 3_000, Duration::from_millis(7)).await;
    assert!(r.max_spread <= 1, "in-flight spread {}", r.max_spread);
}
