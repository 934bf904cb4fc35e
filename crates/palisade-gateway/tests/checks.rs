//! Knowing health in the gateway, over real loopback sockets: a checked
//! provider that goes down is taken out of rotation by the checks alone,
//! with no user request sent to it, and is back as soon as a check passes;
//! a provider failing more than its tier mates is ejected from the tier.

mod common;

use std::time::{Duration, Instant};

use common::Running;

const CONFIG: &str = r#"
[gateway]
listen = "127.0.0.1:0"

[upstreams.primary]
models = { "m" = "p-model" }
simulated = { latency_ms = 2, tokens = 3, token_interval_ms = 1 }

[upstreams.secondary]
models = { "m" = "s-model" }
simulated = { latency_ms = 2, tokens = 3, token_interval_ms = 1 }

[palisade.router]
order = ["primary", "secondary"]

[palisade.providers.primary.health_check]
enabled = true
interval_ms = 100
timeout_ms = 500
unhealthy_threshold = 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_provider_is_taken_out_and_brought_back_by_its_checks() {
    let gw = Running::start(CONFIG).await;

    // Healthy and idle: checks pass.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let p = gw.provider("primary").await;
    assert_eq!(p["health_check"]["last"], "passed", "{p}");

    // Down, with no user traffic: two failed checks open its breaker.
    gw.sims["primary"].set_faults(|f| f.down = true);
    let start = Instant::now();
    loop {
        let p = gw.provider("primary").await;
        if p["breaker"]["state"] == "open" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "not opened: {p}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = gw.sims["primary"].requests();
    assert_eq!(gw.chat().await, (200, "secondary".to_string()));
    // Only checks reached the primary (at most a couple in the meantime).
    assert!(gw.sims["primary"].requests() <= before + 2);

    // Back: a passed check moves it to half-open at once (not after its
    // 30 s open period).
    gw.sims["primary"].set_faults(|f| f.down = false);
    let back = Instant::now();
    loop {
        let p = gw.provider("primary").await;
        if p["breaker"]["state"] == "half_open" {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(2), "not back: {p}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "primary probing again {:?} after it came back",
        back.elapsed()
    );
}

const TIER: &str = r#"
[gateway]
listen = "127.0.0.1:0"

[upstreams.a]
models = { "m" = "a-model" }
simulated = { latency_ms = 1, tokens = 2, token_interval_ms = 1, error_rate = 0.4 }

[upstreams.b]
models = { "m" = "b-model" }
simulated = { latency_ms = 1, tokens = 2, token_interval_ms = 1 }

[upstreams.c]
models = { "m" = "c-model" }
simulated = { latency_ms = 1, tokens = 2, token_interval_ms = 1 }

[palisade.router]
tiers = [["a", "b", "c"]]
strategy = "round_robin"

# Judged on success rate alone: on a loaded machine a 1 ms provider's
# latency can triple by chance, and a mate ejected for that would fill the
# tier's ejection cap before `a` is judged.
[palisade.router.outlier]
interval_ms = 300
min_requests = 10
latency_factor = 0

[palisade.defaults.retry]
enabled = false

# Ejection is what is tested: the breaker must not take `a` out first (five
# failures in a row, or a bad window, would, and an open breaker leaves the
# judge no calls to count).
[palisade.defaults.breaker]
consecutive_failures = 1000
failure_rate = 1.0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_failing_more_than_its_tier_mates_is_ejected_by_the_gateway() {
    let gw = Running::start(TIER).await;
    let start = Instant::now();
    let mut a = serde_json::Value::Null;
    while start.elapsed() < Duration::from_secs(10) {
        // Eight at a time, so that `a` has its ten calls in each judgement
        // however slow the machine.
        let answers = futures_util::future::join_all((0..8).map(|_| gw.chat())).await;
        for (status, _) in answers {
            assert_eq!(status, 200, "the tier answers every request");
        }
        a = gw.provider("a").await;
        if a["outlier"]["ejected"] == true {
            break;
        }
    }
    assert_eq!(
        a["outlier"]["ejected"], true,
        "a (40% errors) ejected from its tier: {a}"
    );
    let before = gw.sims["a"].requests();
    for _ in 0..30 {
        let (status, who) = gw.chat().await;
        assert_eq!(status, 200);
        assert_ne!(who, "a");
    }
    assert_eq!(
        gw.sims["a"].requests(),
        before,
        "no call to the ejected provider"
    );
}
