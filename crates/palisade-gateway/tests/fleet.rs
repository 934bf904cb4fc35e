//! Two gateways sharing their providers through a real `redis-server`
//! (started by the test on loopback): a provider's `Retry-After` met by one
//! gateway keeps the other away from it too, `/health` shows the fleet, and
//! with Redis killed both keep answering, alone, and say so.

mod common;

use std::time::{Duration, Instant};

use common::Running;
use palisade_redis::testing::Redis;

fn config(redis: &str, replica: &str) -> String {
    format!(
        r#"
[gateway]
listen = "127.0.0.1:0"

[upstreams.primary]
models = {{ "m" = "p-model" }}
simulated = {{ latency_ms = 2, tokens = 3, token_interval_ms = 1 }}

[upstreams.secondary]
models = {{ "m" = "s-model" }}
simulated = {{ latency_ms = 2, tokens = 3, token_interval_ms = 1 }}

[palisade.router]
order = ["primary", "secondary"]

[palisade.defaults.retry]
enabled = false

[palisade.fleet]
redis_url = "{redis}"
replica_id = "{replica}"
heartbeat_ms = 200
retry_ms = 200
"#
    )
}

async fn until(within: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_keep_away_from_a_provider_together_and_carry_on_without_redis() {
    let mut redis = Redis::start();
    let a = Running::start(&config(&redis.url(), "gw-a")).await;
    let b = Running::start(&config(&redis.url(), "gw-b")).await;
    assert!(
        until(Duration::from_secs(5), async || {
            let h = b.json("/health").await;
            h["fleet"]["connected"] == true && h["fleet"]["replicas"] == 2
        })
        .await,
        "both gateways joined: {}",
        b.json("/health").await["fleet"]
    );
    assert_eq!(b.chat().await, (200, "primary".to_string()));
    let metrics = b.text("/metrics").await;
    for line in ["palisade_fleet_connected 1", "palisade_fleet_replicas 2"] {
        assert!(metrics.contains(line), "{line} in /metrics:\n{metrics}");
    }

    // A's primary answers 429 with Retry-After: 3; A falls back, and B
    // keeps away from its primary until the same end.
    a.sims["primary"].set_faults(|f| f.rate_limit_secs = Some(3));
    assert_eq!(a.chat().await, (200, "secondary".to_string()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = b.sims["primary"].requests();
    for _ in 0..20 {
        assert_eq!(b.chat().await, (200, "secondary".to_string()));
    }
    assert_eq!(
        b.sims["primary"].requests(),
        before,
        "B sent nothing to the provider A was told to keep away from"
    );
    let breaker = &b.json("/health").await["providers"];
    assert!(breaker.to_string().contains("open"), "{breaker}");

    // Redis killed: both answer every request, and say they are alone.
    redis.kill();
    a.sims["primary"].set_faults(|f| f.rate_limit_secs = None);
    for _ in 0..20 {
        assert_eq!(a.chat().await.0, 200);
        assert_eq!(b.chat().await.0, 200);
    }
    assert!(
        until(Duration::from_secs(3), async || {
            b.json("/health").await["fleet"]["connected"] == false
        })
        .await
    );
    let h = b.json("/health").await;
    assert!(
        h["recommendations"]
            .to_string()
            .contains("Redis does not answer"),
        "{h}"
    );
    // Back: both rejoin without a restart.
    redis.restart();
    assert!(
        until(Duration::from_secs(5), async || {
            a.json("/health").await["fleet"]["connected"] == true
                && b.json("/health").await["fleet"]["connected"] == true
        })
        .await,
        "both rejoined"
    );
}
