//! Cache scenarios (issue 20), on tokio's paused clock: palisade's router
//! over two providers, behind a cache, 100 requests/s for 60 s; 80% of the
//! prompts are from a popular set of 50, 20% are new (seeded). Every
//! provider is down from 10 s to 30 s. Prints its rows and asserts. (The
//! breakers' jitter is not seeded: the counts after the outage, while the
//! breakers are still open, vary a little from run to run.)

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade::{Config, Router};
use palisade_cache::{hash_bytes, CacheLayer, CacheSettings, CloneRecord, Lookup, Replay};
use palisade_core::{BoxError, HttpClassifier};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

type Req = http::Request<String>;
type Res = http::Response<String>;

fn provider(
    name: &'static str,
    down: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
) -> BoxCloneSyncService<Req, Res, BoxError> {
    BoxCloneSyncService::new(tower::service_fn(move |req: Req| {
        calls.fetch_add(1, Ordering::SeqCst);
        let down = down.load(Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(40)).await;
            if down {
                return Err::<Res, BoxError>(
                    std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
                );
            }
            Ok(http::Response::new(format!("{name}: {}", req.body())))
        }
    }))
}

/// What a request got.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Got {
    Answer,
    Stale,
    Error,
}

#[tokio::test(start_paused = true)]
async fn every_provider_down_for_20_s_with_a_warm_cache() {
    let down = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let cfg = Config::from_toml(
        r#"
[router]
order = ["primary", "secondary"]

[providers.primary]
[providers.secondary]
"#,
    )
    .unwrap();
    let router = Router::from_config(&cfg, HttpClassifier::new(), |p| {
        let name = if p.id.as_str() == "primary" {
            "primary"
        } else {
            "secondary"
        };
        provider(name, down.clone(), calls.clone())
    })
    .unwrap();
    let bodies = BoxCloneSyncService::new(router.map_response(|r: Res| r.into_body()));
    let cache = CacheLayer::builder(CloneRecord::<String>::new().weigh(|s| s.len() as u64).mark(
        |s, how| {
            if let Replay::Stale { .. } = how {
                s.insert_str(0, "[stale] ");
            }
        },
    ))
    .settings(CacheSettings {
        max_stale_ms: 600_000,
        ..CacheSettings::default()
    })
    .build(|r: &Req| Some(Lookup::new(hash_bytes(r.body().as_bytes()))))
    .unwrap();
    let svc = BoxCloneSyncService::new(cache.layer(bodies));

    let start = Instant::now();
    let mut seed: u64 = 0x5eed_cace;
    let mut handles = Vec::with_capacity(6_000);
    for i in 0..6_000u32 {
        let at = start.elapsed();
        down.store(
            (Duration::from_secs(10)..Duration::from_secs(30)).contains(&at),
            Ordering::SeqCst,
        );
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (seed >> 33) % 100;
        let (popular, prompt) = if r < 80 {
            (true, format!("popular {}", (seed >> 13) % 50))
        } else {
            (false, format!("new {i}"))
        };
        let svc = svc.clone();
        handles.push(tokio::spawn(async move {
            let got = match svc.oneshot(http::Request::new(prompt)).await {
                Ok(body) if body.starts_with("[stale] ") => Got::Stale,
                Ok(_) => Got::Answer,
                Err(_) => Got::Error,
            };
            (at, popular, got)
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut outcomes = Vec::with_capacity(6_000);
    for h in handles {
        outcomes.push(h.await.unwrap());
    }

    let count =
        |f: &dyn Fn(&(Duration, bool, Got)) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let secs = Duration::from_secs;
    let stale = count(&|o| o.2 == Got::Stale);
    let errors = count(&|o| o.2 == Got::Error);
    let popular_in_outage = count(&|o| o.1 && (secs(10)..secs(30)).contains(&o.0));
    let new_in_outage = count(&|o| !o.1 && (secs(10)..secs(30)).contains(&o.0));
    let stale_before = count(&|o| o.2 == Got::Stale && o.0 < secs(10));
    // After the outage, the breakers' open periods (up to 10 s) and a probe:
    // from then on every call is answered by a provider.
    let stale_after = count(&|o| o.2 == Got::Stale && o.0 >= secs(42));
    let errors_of_popular = count(&|o| o.1 && o.2 == Got::Error);
    let stale_in_outage = count(&|o| o.2 == Got::Stale && (secs(10)..secs(30)).contains(&o.0));
    let errors_in_outage = count(&|o| o.2 == Got::Error && (secs(10)..secs(30)).contains(&o.0));
    let stale_tail = count(&|o| o.2 == Got::Stale && (secs(30)..secs(42)).contains(&o.0));
    let errors_tail = count(&|o| o.2 == Got::Error && (secs(30)..secs(42)).contains(&o.0));
    println!("| scenario | requests | stale answers in the outage (popular requests) | errors in the outage (new prompts) | after it, breakers still open: stale / errors | errors for popular prompts | stale while providers answer | upstream calls |");
    println!(
        "| every provider down 20 s, warm cache | {} | {stale_in_outage} ({popular_in_outage}) | {errors_in_outage} ({new_in_outage}) | {stale_tail} / {errors_tail} | {errors_of_popular} | {} | {} |",
        outcomes.len(),
        stale_before + stale_after,
        calls.load(Ordering::SeqCst),
    );
    assert_eq!(stale_in_outage, popular_in_outage);
    assert_eq!(errors_in_outage, new_in_outage);
    assert_eq!(stale_before, 0, "nothing stale while the providers answer");
    assert_eq!(stale_after, 0, "nothing stale once they answer again");
    assert_eq!(
        errors_of_popular, 0,
        "every popular prompt was answered, stale in the outage"
    );
    assert!(
        stale >= popular_in_outage,
        "every popular request in the outage was answered stale"
    );
    assert!(
        errors >= new_in_outage,
        "a new prompt in the outage has nothing to stand in"
    );
    assert_eq!(count(&|o| o.2 == Got::Error && o.0 < secs(10)), 0);
    assert_eq!(count(&|o| o.2 == Got::Error && o.0 >= secs(42)), 0);
    let snap = cache.handle().snapshot();
    assert_eq!(snap.stale as usize, stale);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_identical_requests_at_once_make_one_upstream_call() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cfg = Config::from_toml("[providers.primary]").unwrap();
    let router = Router::from_config(&cfg, HttpClassifier::new(), |_| {
        provider("primary", Arc::new(AtomicBool::new(false)), calls.clone())
    })
    .unwrap();
    let bodies = BoxCloneSyncService::new(router.map_response(|r: Res| r.into_body()));
    let cache = CacheLayer::builder(CloneRecord::<String>::new())
        .build(|r: &Req| Some(Lookup::new(hash_bytes(r.body().as_bytes()))))
        .unwrap();
    let svc = BoxCloneSyncService::new(cache.layer(bodies));
    let started = Instant::now();
    let handles: Vec<_> = (0..1_000)
        .map(|_| tokio::spawn(svc.clone().oneshot(http::Request::new("same".to_string()))))
        .collect();
    for h in handles {
        assert_eq!(h.await.unwrap().unwrap(), "primary: same");
    }
    let snap = cache.handle().snapshot();
    println!(
        "| 1 000 identical requests at once | 1000 | {} upstream call(s) | {} joined | {:?} |",
        calls.load(Ordering::SeqCst),
        snap.coalesced,
        started.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(snap.coalesced, 999);
}
