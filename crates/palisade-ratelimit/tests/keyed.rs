//! The keyed limiter: per-key counts on the paused clock, keyless requests,
//! eviction that keeps memory bounded under a million keys and changes no
//! decision, and many threads never exceeding any key's quota.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{BoxError, RejectReason, Rejected};
use palisade_ratelimit::{KeyedRateLimitLayer, Quota};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

/// A request: (key, payload); key 0 means "no key".
type Req = (u64, u64);

fn by_key(req: &Req) -> Option<u64> {
    (req.0 != 0).then_some(req.0)
}

fn ok() -> impl Service<
    Req,
    Response = u64,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<u64, BoxError>> + Send,
> + Clone
       + Send {
    service_fn(|req: Req| async move { Ok::<_, BoxError>(req.1) })
}

#[tokio::test(start_paused = true)]
async fn each_key_gets_its_own_quota_exactly() {
    let layer = KeyedRateLimitLayer::builder(by_key)
        .provider("p")
        .quota(Quota::per_minute(60).burst(5))
        .build()
        .unwrap();
    let svc = layer.layer(ok());
    let start = Instant::now();
    let mut admitted: HashMap<u64, u64> = HashMap::new();
    // Keys 1..=3 try every 100 ms for a minute (600 tries each).
    for i in 0..600u64 {
        tokio::time::sleep_until(start + Duration::from_millis(100 * i)).await;
        for key in 1..=3 {
            if svc.clone().oneshot((key, i)).await.is_ok() {
                *admitted.entry(key).or_default() += 1;
            }
        }
    }
    // Each: the burst of 5, then one a second from 1 s to 59 s.
    for key in 1..=3 {
        assert_eq!(admitted[&key], 5 + 59, "key {key}");
    }
    let s = layer.handle().snapshot();
    assert_eq!((s.admitted, s.refused), (3 * 64, 3 * (600 - 64)));
}

#[tokio::test(start_paused = true)]
async fn a_refusal_names_the_wait_for_that_key_and_spends_nothing() {
    let layer = KeyedRateLimitLayer::builder(by_key)
        .provider("p")
        .quota(Quota::per_second(1).burst(1))
        .quota(Quota::tokens_per_minute(60).burst(10))
        .weigh(|req: &Req| req.1)
        .build()
        .unwrap();
    let svc = layer.layer(ok());
    svc.clone().oneshot((7, 8)).await.unwrap();
    // 8 of 10 tokens and the one request are spent: a request for 3
    // tokens is refused (both quotas), and takes nothing.
    let err = svc.clone().oneshot((7, 3)).await.unwrap_err();
    let r = err.downcast_ref::<Rejected>().unwrap();
    assert_eq!(r.reason(), RejectReason::RateLimited);
    assert_eq!(r.provider().map(|p| p.as_str()), Some("p"));
    assert_eq!(r.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(layer.handle().available(&7), vec![0, 2]);
    tokio::time::advance(Duration::from_secs(1)).await;
    // A second later: the request quota is back, and 2 + 1 tokens.
    assert_eq!(layer.handle().available(&7), vec![1, 3]);
    svc.clone().oneshot((7, 3)).await.unwrap();
    assert_eq!(layer.handle().wait(&7), Duration::from_secs(1));
    assert_eq!(
        layer.handle().wait(&8),
        Duration::ZERO,
        "another key is untouched"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_key_pass_unlimited() {
    let layer = KeyedRateLimitLayer::builder(by_key)
        .quota(Quota::per_minute(1).burst(1))
        .build()
        .unwrap();
    let svc = layer.layer(ok());
    for i in 0..100 {
        svc.clone().oneshot((0, i)).await.unwrap();
    }
    assert_eq!(layer.handle().snapshot().keys, 0);
}

#[test]
fn a_keyed_builder_refuses_bad_settings_and_names_them() {
    let err = KeyedRateLimitLayer::builder(by_key)
        .build::<u64>()
        .unwrap_err();
    assert_eq!(err.problems()[0].path, "keyed_rate_limit.quotas");
    let err = KeyedRateLimitLayer::builder(by_key)
        .quota(Quota::per_minute(0))
        .quota(Quota::per_second(5).burst(0))
        .build::<u64>()
        .unwrap_err();
    let paths: Vec<_> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["keyed_rate_limit.quota", "keyed_rate_limit.burst"]);
}

#[tokio::test(start_paused = true)]
async fn a_million_distinct_keys_keep_memory_bounded() {
    // One request a second per key, burst 1: a key's bucket is full again
    // one second after its request. A hundred new keys every millisecond
    // (100 000 a second) for ten seconds.
    let layer = KeyedRateLimitLayer::builder(by_key)
        .quota(Quota::per_second(1).burst(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(ok());
    let mut most = 0;
    for ms in 0..10_000u64 {
        for k in 0..100u64 {
            let key = 1 + ms * 100 + k;
            svc.call((key, 0)).await.unwrap();
        }
        most = most.max(handle.snapshot().keys);
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    let s = handle.snapshot();
    assert_eq!(s.admitted, 1_000_000);
    // Held: the keys of the last second (100 000), plus the new keys a
    // sweep waits for (as many as the last one kept).
    assert!(most <= 2 * 100_000 + 4096 + 100, "held {most} keys at most");
    assert!(s.evicted >= 700_000, "evicted {}", s.evicted);
    // A second later every bucket is full: a sweep forgets them all.
    tokio::time::advance(Duration::from_secs(1)).await;
    handle.sweep();
    assert_eq!(handle.snapshot().keys, 0);
}

#[tokio::test(start_paused = true)]
async fn a_sweep_forgets_only_keys_whose_buckets_are_full() {
    let layer = KeyedRateLimitLayer::builder(by_key)
        .quota(Quota::per_minute(1).burst(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(ok());
    // Five thousand one-off keys over five seconds (sweeps run among them,
    // forgetting none: none has refilled yet) ...
    for key in 2..5_002 {
        svc.clone().oneshot((key, 0)).await.unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    assert_eq!(handle.snapshot().keys, 5_000);
    // ... a minute later all are full again; key 1 spends its quota now.
    tokio::time::advance(Duration::from_secs(60)).await;
    svc.clone().oneshot((1, 0)).await.unwrap();
    handle.sweep();
    let s = handle.snapshot();
    assert_eq!((s.keys, s.evicted), (1, 5_000));
    assert!(
        svc.clone().oneshot((1, 0)).await.is_err(),
        "key 1 still waits"
    );
    // A forgotten key starts full, as it would have been.
    svc.clone().oneshot((2, 0)).await.unwrap();
    assert!(svc.clone().oneshot((2, 0)).await.is_err());
    tokio::time::advance(Duration::from_secs(60)).await;
    svc.clone().oneshot((1, 0)).await.unwrap();
}

#[test]
fn many_threads_never_exceed_any_keys_quota() {
    // 64 tasks on 4 threads call 20 hot keys (a burst of 30 each, an hour
    // to refill) while adding one-off keys that make sweeps run.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let layer = KeyedRateLimitLayer::builder(by_key)
        .quota(
            Quota::new(
                palisade_ratelimit::Unit::Requests,
                30,
                Duration::from_secs(3600),
            )
            .burst(30),
        )
        .build()
        .unwrap();
    let sent: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let s = sent.clone();
    let provider = service_fn(move |req: Req| {
        *s.lock().unwrap().entry(req.0).or_default() += 1;
        async move { Ok::<_, BoxError>(req.1) }
    });
    // Boxed: the spawned future's type is then plainly 'static.
    let svc = tower::util::BoxCloneService::new(layer.layer(provider));
    let fresh = Arc::new(AtomicU64::new(1_000));
    rt.block_on(async {
        let tasks: Vec<_> = (0..64u64)
            .map(|t| {
                let svc = svc.clone();
                let fresh = fresh.clone();
                tokio::spawn(async move {
                    for i in 0..400u64 {
                        let key = if i % 2 == 0 {
                            1 + (t + i) % 20
                        } else {
                            fresh.fetch_add(1, Ordering::Relaxed)
                        };
                        let _ = svc.clone().oneshot((key, i)).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let sent = sent.lock().unwrap();
    for key in 1..=20 {
        assert_eq!(sent[&key], 30, "hot key {key}: exactly its burst");
    }
    // The one-off keys are still limited (an hour to refill): sweeps ran
    // among the callers and forgot none of them, nor a hot key.
    assert_eq!(layer.handle().snapshot().keys, 20 + 64 * 200);
    assert_eq!(layer.handle().snapshot().evicted, 0);
}

#[tokio::test(start_paused = true)]
async fn a_keys_tokens_are_corrected_by_what_its_answers_used() {
    use palisade_core::{HttpClassifier, TokenUsage, UsageLater};
    type HReq = http::Request<u64>;
    let key = |r: &HReq| {
        r.headers()
            .get("x-key")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let layer = KeyedRateLimitLayer::builder(key)
        .quota(Quota::tokens_per_minute(1000))
        .weigh(|r: &HReq| *r.body())
        .classifier(HttpClassifier::new())
        .build()
        .unwrap();
    // Whole answers report 3x what the request weighed; streams report
    // when they end.
    let provider = service_fn(|r: HReq| async move {
        let mut res = http::Response::new(());
        if r.headers().contains_key("x-stream") {
            res.extensions_mut().insert(UsageLater::new());
        } else {
            res.extensions_mut().insert(TokenUsage(*r.body() * 3));
        }
        Ok::<_, BoxError>(res)
    });
    let svc = layer.layer(provider);
    let req = |k: &str, tokens: u64, stream: bool| {
        let mut b = http::Request::builder().header("x-key", k);
        if stream {
            b = b.header("x-stream", "1");
        }
        b.body(tokens).unwrap()
    };
    let available = |k: &str| layer.handle().available(&k.to_owned())[0];
    svc.clone().oneshot(req("a", 100, false)).await.unwrap();
    assert_eq!(available("a"), 700, "estimated 100, used 300");
    let res = svc.clone().oneshot(req("a", 100, true)).await.unwrap();
    assert_eq!(available("a"), 600, "a stream: the estimate until it ends");
    res.extensions()
        .get::<UsageLater>()
        .unwrap()
        .report(Some(550));
    assert_eq!(available("a"), 150, "then what it used");
    // The key is out of tokens for a call of 200 now; another key is not.
    let err = svc.clone().oneshot(req("a", 200, false)).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<Rejected>().unwrap().reason(),
        RejectReason::RateLimited
    );
    assert_eq!(available("b"), 1000);
    // Used less than estimated: given back.
    let res = svc.clone().oneshot(req("b", 400, true)).await.unwrap();
    res.extensions()
        .get::<UsageLater>()
        .unwrap()
        .report(Some(100));
    assert_eq!(available("b"), 900);
}
