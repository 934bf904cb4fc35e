//! A router built from TOML, and the health report a person (or `/health`)
//! reads: the primary browns out, its breaker opens, traffic moves to the
//! backup, and the report says so in words and numbers.
//!
//! Run with `cargo run -p examples --example toml_router`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use palisade::prelude::*;
use palisade::{Config, Router};
use tower::{service_fn, ServiceExt};

const CONFIG: &str = r#"
[router]
order = ["primary", "backup"]
request_timeout_ms = 30000

# Every provider gets these unless it says otherwise.
[defaults.retry]
max_attempts = 2
backoff_base_ms = 50

[defaults.breaker]
consecutive_failures = 4
open_ms = 30000

[defaults.bulkhead]
max_concurrent = 16

[providers.primary]
rate_limit = { requests_per_minute = 600 }

[providers.backup]
large_context = true
"#;

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), BoxError> {
    let cfg = Config::from_toml(CONFIG)?;
    let brownout = Arc::new(AtomicBool::new(false));
    let router = Router::from_config(&cfg, HttpClassifier::new(), |p| {
        let (name, brownout) = (p.id.clone(), brownout.clone());
        service_fn(move |_: http::Request<String>| {
            let failing = name == "primary" && brownout.load(Ordering::SeqCst);
            let answer = format!("answered by {name}");
            async move {
                let status = if failing { 503 } else { 200 };
                Ok::<_, BoxError>(http::Response::builder().status(status).body(answer)?)
            }
        })
    })?;

    for phase in ["healthy", "primary browning out"] {
        brownout.store(phase != "healthy", Ordering::SeqCst);
        for _ in 0..4 {
            let res = router
                .clone()
                .oneshot(http::Request::new(String::new()))
                .await?;
            let served = res
                .extensions()
                .get::<Served>()
                .cloned()
                .unwrap_or_default();
            println!(
                "{phase}: {} ({} call(s) there, {} provider(s) before it)",
                res.body(),
                served.attempts,
                served.fallbacks
            );
        }
    }

    let report = router.registry().health();
    println!("\nstatus: {}", report.status);
    for r in &report.recommendations {
        println!("recommendation: {r}");
    }
    println!("\nas JSON:\n{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
