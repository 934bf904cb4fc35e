//! Notes shared by replicas through a real `redis-server` (started by the
//! test on loopback): what one writes the others read, for the time given,
//! removed for all; nothing waits while Redis is gone, and the notes work
//! again when it is back.

use std::time::Duration;

use palisade_redis::testing::Redis;
use palisade_redis::{Fleet, FleetSettings};
use tokio::time::Instant;

fn replica(url: &str, prefix: &str, id: &str) -> Fleet {
    Fleet::connect(FleetSettings {
        replica_id: Some(id.into()),
        key_prefix: prefix.into(),
        heartbeat_ms: 200,
        retry_ms: 100,
        timeout_ms: 250,
        ..FleetSettings::new(url)
    })
    .unwrap()
}

/// Polls `cond` every 5 ms for up to five seconds.
async fn eventually(mut cond: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_replica_notes_the_others_read_until_removed_or_expired() {
    let redis = Redis::start();
    let (a, b) = (
        replica(&redis.url(), "p", "a"),
        replica(&redis.url(), "p", "b"),
    );
    let other_fleet = replica(&redis.url(), "q", "c");
    for f in [&a, &b, &other_fleet] {
        f.ready().await;
    }
    let ttl = Duration::from_secs(3600);
    let (on_a, on_b) = (a.notes("responses", ttl), b.notes("responses", ttl));
    // More than one pipeline's worth, written at once.
    for i in 0..600 {
        on_a.put(&format!("resp_{i}"), &format!("east {i}"));
    }
    assert!(
        eventually(async || on_b.get("resp_599").await.is_some()).await,
        "the last note reached b: {:?}",
        on_a.snapshot()
    );
    for i in (0..600).step_by(37) {
        assert_eq!(
            on_b.get(&format!("resp_{i}")).await,
            Some(format!("east {i}"))
        );
    }
    assert_eq!(on_a.snapshot().written, 600);
    assert_eq!(on_a.snapshot().dropped, 0);
    // Kept for the time given, under the fleet's prefix and the kind.
    let mut raw = redis.connection().await;
    let left: i64 = redis::cmd("PTTL")
        .arg("p:notes:responses:resp_3")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(left > 3_590_000 && left <= 3_600_000, "{left} ms left");
    // Another kind, or another fleet's prefix, sees none of them.
    assert_eq!(b.notes("other", ttl).get("resp_3").await, None);
    let elsewhere = other_fleet.notes("responses", ttl);
    assert_eq!(elsewhere.get("resp_3").await, None);
    assert_eq!(elsewhere.snapshot().missed, 1);
    // Written again, a note takes the new text; removed, it is gone for all.
    on_b.put("resp_3", "west");
    assert!(eventually(async || on_a.get("resp_3").await.as_deref() == Some("west")).await);
    on_a.remove("resp_3");
    assert!(eventually(async || on_b.get("resp_3").await.is_none()).await);
    // A name too long is neither written nor asked for.
    let long = "x".repeat(600);
    on_a.put(&long, "east");
    on_a.put("resp_after_long", "east");
    assert!(eventually(async || on_b.get("resp_after_long").await.is_some()).await);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("p:notes:responses:x*")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    assert_eq!(on_b.get(&long).await, None);
    // A short time to live expires.
    let brief = a.notes("brief", Duration::from_millis(150));
    brief.put("n", "1");
    assert!(eventually(async || brief.get("n").await.is_some()).await);
    assert!(eventually(async || brief.get("n").await.is_none()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_nothing_waits_and_the_notes_work_again_when_it_is_back() {
    let mut redis = Redis::start();
    let (a, b) = (
        replica(&redis.url(), "p", "a"),
        replica(&redis.url(), "p", "b"),
    );
    a.ready().await;
    b.ready().await;
    let ttl = Duration::from_secs(60);
    let (on_a, on_b) = (a.notes("responses", ttl), b.notes("responses", ttl));
    on_a.put("resp_1", "east");
    assert!(eventually(async || on_b.get("resp_1").await.is_some()).await);

    redis.kill();
    // The first command to find it gone waits its timeout at most; after
    // that the link is down and nothing is asked.
    let started = Instant::now();
    assert_eq!(on_b.get("resp_1").await, None);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(eventually(async || !b.is_connected()).await);
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(on_b.get("resp_1").await, None);
    }
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    // Writes are dropped, counted, and never wait.
    assert!(eventually(async || !a.is_connected()).await);
    let dropped = on_a.snapshot().dropped;
    for i in 0..10 {
        on_a.put(&format!("resp_gone_{i}"), "east");
    }
    assert_eq!(on_a.snapshot().dropped, dropped + 10);

    // Back (empty): both rejoin, and notes are written and read again.
    redis.restart();
    assert!(eventually(async || a.is_connected() && b.is_connected()).await);
    on_a.put("resp_2", "west");
    assert!(eventually(async || on_b.get("resp_2").await.as_deref() == Some("west")).await);
    assert_eq!(on_b.get("resp_1").await, None, "Redis came back empty");
}
