//! A limiter sharing its quotas through a [`Pool`]: the pool decides while
//! it can, the limiter's own quotas cut to its share decide while it is
//! alone, and what a call took goes back to where it came from.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{BoxError, RejectReason, Rejected, TokenUsage};
use palisade_ratelimit::{Draw, Mode, Pool, Quota, RateLimitLayer};
use tower::{service_fn, Layer, ServiceExt};

/// A pool holding `held` requests; alone (share `alone`) when that is set.
#[derive(Debug, Default)]
struct Held {
    held: AtomicU64,
    alone: AtomicU32,
    given_back: AtomicU64,
    corrections: Mutex<Vec<(u64, u64)>>,
    exhausted: Mutex<Vec<Duration>>,
}

impl Pool for Held {
    fn take(&self, _tokens: u64) -> Draw {
        let share = self.alone.load(Ordering::Acquire);
        if share > 0 {
            return Draw::Alone { share };
        }
        match self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        {
            Ok(_) => Draw::Taken,
            Err(_) => Draw::Empty(Duration::from_millis(250)),
        }
    }
    fn peek(&self, _tokens: u64) -> Draw {
        let share = self.alone.load(Ordering::Acquire);
        if share > 0 {
            Draw::Alone { share }
        } else if self.held.load(Ordering::Acquire) > 0 {
            Draw::Taken
        } else {
            Draw::Empty(Duration::from_millis(250))
        }
    }
    fn give_back(&self, _tokens: u64) {
        self.given_back.fetch_add(1, Ordering::AcqRel);
        self.held.fetch_add(1, Ordering::AcqRel);
    }
    fn correct(&self, estimated: u64, used: u64) {
        self.corrections.lock().unwrap().push((estimated, used));
    }
    fn exhausted(&self, wait: Duration) {
        self.exhausted.lock().unwrap().push(wait);
    }
}

fn req() -> http::Request<String> {
    http::Request::new("x".repeat(400))
}

#[tokio::test(start_paused = true)]
async fn the_pool_decides_while_it_can() {
    let layer = RateLimitLayer::http()
        .provider("p")
        .quota(Quota::per_minute(600).burst(100))
        .build()
        .unwrap();
    let pool = Arc::new(Held::default());
    pool.held.store(3, Ordering::Release);
    let handle = layer.handle();
    assert!(handle.share(pool.clone()).is_ok());
    assert!(handle.share(pool.clone()).is_err(), "given once");
    assert!(handle.snapshot().shared);
    let svc = layer.layer(service_fn(|_: http::Request<String>| async {
        Ok::<_, BoxError>(http::Response::new(String::new()))
    }));
    for _ in 0..3 {
        svc.clone().oneshot(req()).await.unwrap();
    }
    // The quota alone has room for 97 more; the pool has none.
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    let refused = err.downcast_ref::<Rejected>().unwrap();
    assert_eq!(refused.reason(), RejectReason::RateLimited);
    assert_eq!(refused.retry_after(), Some(Duration::from_millis(250)));
    assert_eq!(handle.wait(), Duration::from_millis(250));
    // The limiter's own cells were not touched while the pool decided.
    assert_eq!(handle.snapshot().quotas[0].available, 100);
}

#[tokio::test(start_paused = true)]
async fn alone_the_limiter_takes_its_share_of_the_quota() {
    // 60 a minute, burst 12; three replicas: each alone gets a burst of 4
    // and one call every 3 s.
    let layer = RateLimitLayer::builder()
        .quota(Quota::per_minute(60).burst(12))
        .build()
        .unwrap();
    let pool = Arc::new(Held::default());
    pool.alone.store(3, Ordering::Release);
    layer.handle().share(pool.clone()).unwrap();
    let svc = layer.layer(service_fn(|_: http::Request<()>| async {
        Ok::<_, BoxError>(())
    }));
    let unit = || http::Request::new(());
    let mut sent = 0;
    for _ in 0..10 {
        if svc.clone().oneshot(unit()).await.is_ok() {
            sent += 1;
        }
    }
    assert_eq!(sent, 4, "a third of the burst");
    tokio::time::sleep(Duration::from_millis(2_900)).await;
    assert!(svc.clone().oneshot(unit()).await.is_err(), "not before 3 s");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(svc.clone().oneshot(unit()).await.is_ok(), "one after 3 s");
    // Back with the pool, the pool decides again.
    pool.alone.store(0, Ordering::Release);
    pool.held.store(1, Ordering::Release);
    assert!(svc.clone().oneshot(unit()).await.is_ok());
    assert!(svc.clone().oneshot(unit()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_call_never_sent_goes_back_to_the_pool() {
    // Waiting mode: the pool's room is taken, then the provider's own
    // window (learned from headers) makes the call wait; dropped while
    // waiting, it gives the pool its room back.
    let layer = RateLimitLayer::http()
        .quota(Quota::per_minute(600))
        .mode(Mode::Wait(Duration::from_secs(10)))
        .build()
        .unwrap();
    let pool = Arc::new(Held::default());
    pool.held.store(5, Ordering::Release);
    layer.handle().share(pool.clone()).unwrap();
    let svc = layer.layer(service_fn(|_: http::Request<String>| async {
        Ok::<_, BoxError>(
            http::Response::builder()
                .header("x-ratelimit-limit-requests", "100")
                .header("x-ratelimit-remaining-requests", "0")
                .header("x-ratelimit-reset-requests", "5s")
                .body(String::new())
                .unwrap(),
        )
    }));
    svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(
        pool.exhausted.lock().unwrap().as_slice(),
        &[Duration::from_secs(5)],
        "the provider's empty window is told to the pool"
    );
    let waiting = tokio::spawn(svc.clone().oneshot(req()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    waiting.abort();
    let _ = waiting.await;
    // Took one for the first call; the waiting call asked the pool, which
    // gave, then the window refused it and it went back at once.
    assert_eq!(pool.held.load(Ordering::Acquire), 4);
    assert!(pool.given_back.load(Ordering::Acquire) >= 1);
}

#[tokio::test(start_paused = true)]
async fn usage_corrects_the_pool_not_the_cells() {
    let layer = RateLimitLayer::http()
        .quota(Quota::tokens_per_minute(10_000))
        .weigh(|_: &http::Request<String>| 100)
        .build()
        .unwrap();
    let pool = Arc::new(Held::default());
    pool.held.store(5, Ordering::Release);
    layer.handle().share(pool.clone()).unwrap();
    let svc = layer.layer(service_fn(|_: http::Request<String>| async {
        let mut res = http::Response::new(String::new());
        res.extensions_mut().insert(TokenUsage(250));
        Ok::<_, BoxError>(res)
    }));
    svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(pool.corrections.lock().unwrap().as_slice(), &[(100, 250)]);
    assert_eq!(layer.handle().snapshot().quotas[0].available, 10_000);
}
