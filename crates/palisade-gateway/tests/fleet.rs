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
{}"#,
        tail(redis, replica)
    )
}

/// Retries off, and the fleet on `redis` as `replica`, quick to notice
/// Redis gone and back.
fn tail(redis: &str, replica: &str) -> String {
    format!(
        r#"
[palisade.defaults.retry]
enabled = false

[palisade.fleet]
redis_url = "{redis}"
replica_id = "{replica}"
heartbeat_ms = 200
retry_ms = 200
timeout_ms = 250
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

/// The state of `provider`'s breaker in `r`'s `/health`.
async fn breaker_state(r: &Running, provider: &str) -> String {
    let h = r.json("/health").await;
    let found = h["providers"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["id"] == provider));
    found.map_or_else(
        || panic!("{provider} in /health: {h}"),
        |p| {
            p["breaker"]["state"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        },
    )
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

    assert_eq!(breaker_state(&b, "primary").await, "closed");

    // A's primary answers 429 with Retry-After: 3; A falls back, and B
    // keeps away from its primary until the same end.
    a.sims["primary"].set_faults(|f| f.rate_limit_secs = Some(3));
    assert_eq!(a.chat().await, (200, "secondary".to_string()));
    // B hears of it through Redis: its breaker for the primary opens
    // though B itself never met the 429.
    assert!(
        until(Duration::from_secs(5), async || {
            breaker_state(&b, "primary").await == "open"
        })
        .await,
        "B heard of A's Retry-After: {}",
        b.json("/health").await["providers"]
    );
    let before = b.sims["primary"].requests();
    for _ in 0..20 {
        assert_eq!(b.chat().await, (200, "secondary".to_string()));
    }
    assert_eq!(
        b.sims["primary"].requests(),
        before,
        "B sent nothing to the provider A was told to keep away from"
    );

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

/// A gateway of a fleet with client keys `a` and `b`, its two providers
/// balanced turn about: simulated here, or (`at`) those at these addresses.
fn keyed(redis: &str, replica: &str, at: Option<(String, String)>) -> String {
    let upstream = |name: &str, addr: Option<&String>| {
        match addr {
        Some(addr) => format!(
            "[upstreams.{name}]\nmodels = {{ \"m\" = \"m\" }}\nbase_url = \"http://{addr}/v1\"\n"
        ),
        None => format!(
            "[upstreams.{name}]\nmodels = {{ \"m\" = \"m\" }}\nsimulated = {{ latency_ms = 1, tokens = 2 }}\n"
        ),
    }
    };
    format!(
        r#"
[gateway]
listen = "127.0.0.1:0"

[gateway.auth]
keys = [
  # sha256 of "client-a-secret"
  {{ id = "a", sha256 = "dc9bd1cfb2a24027fa7b694afa718b9d0d343855917ea049dc192e4cdd2b1d04" }},
  # sha256 of "client-b-secret"
  {{ id = "b", sha256 = "4ac2cabcc8d1bc2deb7f60567d9bb8bb7b3bc06aca588c5259889573232228f5" }},
]

{}
{}
[palisade.router]
tiers = [["east", "west"]]
strategy = "round_robin"
{}"#,
        upstream("east", at.as_ref().map(|a| &a.0)),
        upstream("west", at.as_ref().map(|a| &a.1)),
        tail(redis, replica),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_made_through_one_gateway_is_continued_and_read_through_another() {
    let redis = Redis::start();
    let a = Running::start(&keyed(&redis.url(), "gw-a", None)).await;
    // b calls the very providers a does.
    let sims = (
        a.sim("east").addr().to_string(),
        a.sim("west").addr().to_string(),
    );
    let b = Running::start(&keyed(&redis.url(), "gw-b", Some(sims))).await;
    let alice = [("authorization", "Bearer client-a-secret")];
    let bob = [("authorization", "Bearer client-b-secret")];

    let (status, body, h) = a
        .post_to("/v1/responses", r#"{"model":"m","input":"hi"}"#, &alice)
        .await;
    assert_eq!(status, 200, "{body}");
    let at = h["x-palisade-provider"].to_str().unwrap().to_owned();
    let other = if at == "east" { "west" } else { "east" };
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = a.sim(other).requests();
    // b never saw it; through the fleet's notes it reads it where it lives
    // (until the note is written, b refuses it: its maker unknown).
    let path = format!("/v1/responses/{id}");
    assert!(
        until(Duration::from_secs(5), async || {
            b.send_with("GET", &path, "", &alice).await.0 == 200
        })
        .await,
        "b read {id} back"
    );
    let (status, body, h) = b.send_with("GET", &path, "", &alice).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h["x-palisade-provider"], at.as_str());
    // Continued through b, turn about balanced: always where it lives.
    let next = format!(r#"{{"model":"m","input":"more","previous_response_id":"{id}"}}"#);
    for _ in 0..4 {
        let (status, body, h) = b.post_to("/v1/responses", &next, &alice).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(h["x-palisade-provider"], at.as_str());
    }
    // Another key, through b: as if it did not exist.
    let (status, _, _) = b.send_with("GET", &path, "", &bob).await;
    assert_eq!(status, 404);
    let (status, body, _) = b.post_to("/v1/responses", &next, &bob).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("previous_response_not_found"), "{body}");
    assert_eq!(a.sim(other).requests(), before, "{other} was never asked");

    // A response b made, continued through a.
    let (_, body, h) = b
        .post_to("/v1/responses", r#"{"model":"m","input":"hello"}"#, &alice)
        .await;
    let made_at = h["x-palisade-provider"].to_str().unwrap().to_owned();
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let next = format!(r#"{{"model":"m","input":"more","previous_response_id":"{id}"}}"#);
    assert!(
        until(Duration::from_secs(5), async || {
            let (status, _, h) = a.post_to("/v1/responses", &next, &alice).await;
            status == 200 && h["x-palisade-provider"] == made_at.as_str()
        })
        .await
    );
    for _ in 0..4 {
        let (status, body, h) = a.post_to("/v1/responses", &next, &alice).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(h["x-palisade-provider"], made_at.as_str());
    }
    // Deleted through a: b, which learned of it from the fleet, is told
    // so by its provider.
    let path = format!("/v1/responses/{id}");
    let (status, _, _) = a.send_with("DELETE", &path, "", &alice).await;
    assert_eq!(status, 200);
    let (status, _, _) = b.send_with("GET", &path, "", &alice).await;
    assert_eq!(status, 404);
    // What the notes did, in /metrics (an id nobody has: looked up, missed).
    let (status, _, _) = b
        .send_with("GET", "/v1/responses/resp_nowhere_9", "", &alice)
        .await;
    assert_eq!(status, 404);
    let metrics = b.text("/metrics").await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in:\n{metrics}"))
    };
    assert!(value("palisade_fleet_response_notes_written_total") >= 1.0);
    assert!(value("palisade_fleet_response_notes_found_total") >= 1.0);
    assert!(value("palisade_fleet_response_notes_missed_total") >= 1.0);
    assert_eq!(value("palisade_fleet_response_notes_dropped_total"), 0.0);
    assert!(value("palisade_gateway_response_ids") >= 2.0);
}
