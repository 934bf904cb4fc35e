//! Soak: many requests from many tasks through the router, with random
//! faults and random cancellations. Every request gets exactly one answer,
//! nothing is left held (bulkhead slots, breaker probes), and memory stays
//! bounded.
//!
//! CI runs 20 000 requests. The full million:
//!
//! ```sh
//! PALISADE_SOAK_REQUESTS=1000000 cargo test --release -p tests --test soak -- --nocapture
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::{Config, Registry, Router};
use palisade_core::{BoxError, HttpClassifier};
use tower::ServiceExt;

type Req = http::Request<String>;
type Res = http::Response<String>;
type Fut = Pin<Box<dyn Future<Output = Result<Res, BoxError>> + Send>>;

/// SplitMix64: a cheap, well-mixed hash of a counter, so each call's fate
/// is fixed by its number whatever thread runs it.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[derive(Clone, Debug)]
struct Flaky {
    salt: u64,
    counter: Arc<AtomicU64>,
}

impl tower::Service<Req> for Flaky {
    type Response = Res;
    type Error = BoxError;
    type Future = Fut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Req) -> Fut {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let roll = mix(n ^ self.salt) % 1000;
        Box::pin(async move {
            for _ in 0..(roll % 4) {
                tokio::task::yield_now().await;
            }
            let status = match roll {
                0..=849 => 200,
                850..=899 => 500,
                900..=929 => 503,
                930..=949 => 429,
                950..=959 => {
                    // A hang: only the attempt timeout ends it.
                    std::future::pending::<()>().await;
                    200
                }
                960..=979 => return Err("connection reset".into()),
                _ => 400,
            };
            let mut r = http::Response::builder()
                .status(status)
                .body(String::new())?;
            if status == 429 {
                r.headers_mut()
                    .insert("retry-after", http::HeaderValue::from_static("0"));
            }
            Ok(r)
        })
    }
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn soak() {
    let total: u64 = std::env::var("PALISADE_SOAK_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async move {
        let cfg = Config::from_toml(
            r#"
            [router]
            order = ["a", "b", "c"]
            request_timeout_ms = 2000
            [defaults.bulkhead]
            max_concurrent = 128
            max_waiting = 128
            max_wait_ms = 20
            [defaults.retry]
            max_attempts = 3
            backoff_base_ms = 1
            backoff_max_ms = 5
            min_attempt_time_ms = 1
            [defaults.breaker]
            consecutive_failures = 10
            failure_rate = 0.6
            window = 50
            minimum_calls = 20
            open_ms = 20
            max_open_ms = 100
            [defaults.timeout]
            attempt_ms = 15
            [providers.a]
            [providers.b]
            [providers.c]
            "#,
        )
        .unwrap();
        let registry = Arc::new(
            Registry::from_config(&cfg, HttpClassifier::new(), |p| Flaky {
                salt: mix(p.id.len() as u64 + p.id.as_bytes()[0] as u64),
                counter: Arc::default(),
            })
            .unwrap(),
        );
        let router = Router::new(
            registry.clone(),
            Duration::from_secs(2),
            HttpClassifier::new(),
        )
        .unwrap();

        let tasks = 256u64;
        let per_task = total / tasks;
        let answered = Arc::new(AtomicU64::new(0));
        let ok = Arc::new(AtomicU64::new(0));
        let cancelled = Arc::new(AtomicU64::new(0));
        let mut rss_after_warmup = None;
        let mut handles = Vec::new();
        for t in 0..tasks {
            let router = router.clone();
            let (answered, ok, cancelled) = (answered.clone(), ok.clone(), cancelled.clone());
            handles.push(tokio::spawn(async move {
                for i in 0..per_task {
                    let n = t * per_task + i;
                    let call: Fut = Box::pin(router.clone().oneshot(Req::default()));
                    if mix(n).is_multiple_of(100) {
                        // The caller gives up: drop the call mid-way.
                        let _ = tokio::time::timeout(Duration::from_millis(1), call).await;
                        cancelled.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    match call.await {
                        Ok(r) if r.status().is_success() => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            if std::env::var("SOAK_DEBUG").is_ok() && n % 5000 == 1 {
                                eprintln!("status {}", r.status());
                            }
                        }
                        Err(e) => {
                            if std::env::var("SOAK_DEBUG").is_ok() && n % 5000 == 1 {
                                eprintln!("err {e}");
                            }
                        }
                    }
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        // Sample memory once a tenth of the work is done.
        while answered.load(Ordering::Relaxed) + cancelled.load(Ordering::Relaxed) < total / 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        rss_after_warmup = rss_after_warmup.or_else(rss_bytes);
        for h in handles {
            h.await.unwrap();
        }
        let done = per_task * tasks;
        let (answered, ok, cancelled) = (
            answered.load(Ordering::Relaxed),
            ok.load(Ordering::Relaxed),
            cancelled.load(Ordering::Relaxed),
        );
        println!("soak: {done} requests, {answered} answered ({ok} ok), {cancelled} cancelled");
        assert_eq!(
            answered + cancelled,
            done,
            "every request got exactly one answer"
        );
        // Let cancelled calls' timers and probes settle, then nothing is held.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for id in registry.ids() {
            let h = registry.handles(id.as_str()).unwrap();
            let b = h.bulkhead.unwrap().snapshot();
            assert_eq!((b.in_flight, b.waiting), (0, 0), "{id}: bulkhead idle");
            let m = h.breaker.unwrap().snapshot();
            println!(
                "{id}: breaker {}, opened {} times, {} calls",
                m.state, m.times_opened, m.calls
            );
            assert_eq!(m.probes_in_flight, 0, "{id}: no probe slot held");
        }
        assert!(
            ok > answered / 2,
            "most requests succeed: {ok} of {answered}"
        );
        if let (Some(before), Some(after)) = (rss_after_warmup, rss_bytes()) {
            let growth = after.saturating_sub(before);
            println!(
                "rss after warm-up {} MiB, at the end {} MiB",
                before >> 20,
                after >> 20
            );
            assert!(growth < 64 << 20, "memory grew by {} MiB", growth >> 20);
        }
    });
}
