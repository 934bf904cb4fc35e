//! A deterministic scenario simulator: palisade's `Router` over simulated
//! providers, driven by a steady stream of requests on tokio's paused clock
//! with seeded randomness, replaying named failure scenarios and measuring
//! what a caller and an operator would see.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::{Config, Registry, Router};
use palisade_core::{BoxError, CircuitState, HttpClassifier};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// What a simulated provider does at some moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Answers 200 after its base latency.
    Healthy,
    /// Answers 503 at once.
    Down,
    /// Answers 500 with this probability, else healthy.
    Brownout(f64),
    /// Answers 200, but only after this long.
    Slow(Duration),
    /// Answers 429 with this `Retry-After`.
    RateLimited(Duration),
    /// Accepts the call and never answers (a stalled stream).
    Hang,
}

/// A named scenario: what the primary does when; the secondary stays
/// healthy throughout.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name.
    pub name: &'static str,
    /// `(from, fault)` steps for the primary, from the start of the run.
    pub primary: Vec<(Duration, Fault)>,
    /// When the primary's trouble starts.
    pub fault_start: Duration,
    /// When it is healthy again for good.
    pub fault_end: Duration,
    /// How long the run lasts.
    pub duration: Duration,
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

impl Scenario {
    fn simple(name: &'static str, fault: Fault) -> Self {
        Scenario {
            name,
            primary: vec![
                (s(0), Fault::Healthy),
                (s(10), fault),
                (s(30), Fault::Healthy),
            ],
            fault_start: s(10),
            fault_end: s(30),
            duration: s(60),
        }
    }

    /// The standard set.
    pub fn all() -> Vec<Scenario> {
        let mut flapping = vec![(s(0), Fault::Healthy)];
        for i in 0..10 {
            let at = s(10 + 2 * i);
            flapping.push((
                at,
                if i % 2 == 0 {
                    Fault::Down
                } else {
                    Fault::Healthy
                },
            ));
        }
        flapping.push((s(30), Fault::Healthy));
        vec![
            Scenario::simple("full outage", Fault::Down),
            Scenario::simple("brownout (50% errors)", Fault::Brownout(0.5)),
            Scenario::simple("latency spike (3 s)", Fault::Slow(s(3))),
            Scenario::simple("429 storm (Retry-After 3 s)", Fault::RateLimited(s(3))),
            Scenario {
                name: "flapping (2 s down, 2 s up)",
                primary: flapping,
                fault_start: s(10),
                fault_end: s(30),
                duration: s(60),
            },
            Scenario::simple("stalled streams (hang)", Fault::Hang),
        ]
    }

    fn fault_at(&self, t: Duration) -> Fault {
        self.primary
            .iter()
            .rev()
            .find(|(from, _)| t >= *from)
            .map_or(Fault::Healthy, |(_, f)| *f)
    }
}

type Req = http::Request<String>;
type Res = http::Response<String>;
type Fut = Pin<Box<dyn Future<Output = Result<Res, BoxError>> + Send>>;

/// A simulated provider: a tower service answering by its schedule.
#[derive(Clone, Debug)]
pub struct SimProvider {
    name: &'static str,
    latency: Duration,
    scenario: Option<Arc<Scenario>>,
    start: Instant,
    rng: Arc<Mutex<SmallRng>>,
    calls: Arc<AtomicU64>,
    faulty_calls: Arc<AtomicU64>,
}

impl tower::Service<Req> for SimProvider {
    type Response = Res;
    type Error = BoxError;
    type Future = Fut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Req) -> Fut {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let fault = match &self.scenario {
            Some(s) => s.fault_at(self.start.elapsed()),
            None => Fault::Healthy,
        };
        if fault != Fault::Healthy {
            self.faulty_calls.fetch_add(1, Ordering::Relaxed);
        }
        let roll: f64 = self.rng.lock().unwrap_or_else(|e| e.into_inner()).random();
        let (name, latency) = (self.name, self.latency);
        Box::pin(async move {
            let reply = |status: u16| {
                http::Response::builder()
                    .status(status)
                    .body(name.to_owned())
            };
            match fault {
                Fault::Healthy => {
                    tokio::time::sleep(latency).await;
                    Ok(reply(200)?)
                }
                Fault::Down => Ok(reply(503)?),
                Fault::Brownout(p) if roll < p => {
                    tokio::time::sleep(latency).await;
                    Ok(reply(500)?)
                }
                Fault::Brownout(_) => {
                    tokio::time::sleep(latency).await;
                    Ok(reply(200)?)
                }
                Fault::Slow(d) => {
                    tokio::time::sleep(d).await;
                    Ok(reply(200)?)
                }
                Fault::RateLimited(after) => {
                    let mut r = reply(429)?;
                    r.headers_mut()
                        .insert("retry-after", http::HeaderValue::from(after.as_secs()));
                    Ok(r)
                }
                Fault::Hang => std::future::pending().await,
            }
        })
    }
}

/// The resilience settings every scenario runs with (`SEED` is replaced
/// by the run's seed).
pub const CONFIG: &str = r#"
[router]
order = ["primary", "secondary"]
request_timeout_ms = 10000

[defaults.bulkhead]
max_concurrent = 200
max_waiting = 0

[defaults.retry]
max_attempts = 3
backoff_base_ms = 50
backoff_max_ms = 400
budget_ratio = 0.2
budget_min_per_sec = 1
budget_ttl_secs = 10
jitter_seed = SEED

[defaults.breaker]
consecutive_failures = 5
failure_rate = 0.5
window = 20
minimum_calls = 10
open_ms = 5000
max_open_ms = 10000
half_open_probes = 1
jitter_seed = SEED

[defaults.timeout]
attempt_ms = 1000

[providers.primary]
[providers.secondary]
"#;

/// What one scenario showed.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub name: &'static str,
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed for the caller.
    pub errors: u64,
    /// From the fault's start to the primary's breaker first opening.
    pub time_to_detect: Option<Duration>,
    /// From the fault's end to the primary's breaker closed again.
    pub time_to_recover: Option<Duration>,
    /// Calls the primary received while faulty.
    pub calls_to_faulty: u64,
    /// Attempts per request that reached a provider through retry: 1 +
    /// retries / requests.
    pub amplification: f64,
    /// Retries made, over all providers.
    pub retries: u64,
    /// Retries the budgets refused.
    pub budget_refusals: u64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// Requests per second the driver sends.
pub const RATE: u64 = 100;

/// Runs `scenario` on a paused-clock runtime with `seed`.
pub fn run(scenario: &Scenario, seed: u64) -> ScenarioReport {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(drive(scenario.clone(), seed))
}

async fn drive(scenario: Scenario, seed: u64) -> ScenarioReport {
    let scenario = Arc::new(scenario);
    let start = Instant::now();
    let cfg = Config::from_toml(&CONFIG.replace("SEED", &(seed | 1).to_string())).expect("valid");
    let mut seeds = SmallRng::seed_from_u64(seed);
    let calls_primary = Arc::new(AtomicU64::new(0));
    let faulty = Arc::new(AtomicU64::new(0));
    let registry = Arc::new(
        Registry::from_config(&cfg, HttpClassifier::new(), |p| SimProvider {
            name: if p.id == "primary" {
                "primary"
            } else {
                "secondary"
            },
            latency: Duration::from_millis(if p.id == "primary" { 40 } else { 70 }),
            scenario: (p.id == "primary").then(|| scenario.clone()),
            start,
            rng: Arc::new(Mutex::new(SmallRng::seed_from_u64(seeds.random()))),
            calls: if p.id == "primary" {
                calls_primary.clone()
            } else {
                Arc::default()
            },
            faulty_calls: if p.id == "primary" {
                faulty.clone()
            } else {
                Arc::default()
            },
        })
        .expect("valid"),
    );
    let router = Router::new(
        registry.clone(),
        Duration::from_millis(cfg.router.request_timeout_ms),
        HttpClassifier::new(),
    )
    .expect("valid");
    let breaker = registry
        .handles("primary")
        .and_then(|h| h.breaker)
        .expect("the primary has a breaker");

    // Watch the primary's breaker every 10 ms.
    let watch = {
        let scenario = scenario.clone();
        tokio::spawn(async move {
            let (mut detect, mut recover) = (None, None);
            let mut t = Duration::ZERO;
            while t < scenario.duration + s(15) {
                let st = breaker.state();
                if detect.is_none() && t >= scenario.fault_start && st == CircuitState::Open {
                    detect = Some(t - scenario.fault_start);
                }
                if recover.is_none() && t >= scenario.fault_end && st == CircuitState::Closed {
                    recover = Some(t - scenario.fault_end);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                t = start.elapsed();
            }
            (detect, recover)
        })
    };

    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let total = scenario.duration.as_secs() * RATE;
    let gap = Duration::from_secs(1) / RATE as u32;
    for i in 0..total {
        let at = start + gap * i as u32;
        let call: Fut = {
            use tower::ServiceExt;
            Box::pin(router.clone().oneshot(Req::default()))
        };
        let (latencies, errors) = (latencies.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let t0 = Instant::now();
            let ok = matches!(call.await, Ok(r) if r.status().is_success());
            if !ok {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(t0.elapsed());
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let (time_to_detect, time_to_recover) = watch.await.unwrap_or((None, None));

    let mut retries = 0;
    let mut budget_refusals = 0;
    for id in registry.ids() {
        if let Some(r) = registry.handles(id.as_str()).and_then(|h| h.retry) {
            let st = r.snapshot();
            retries += st.retries;
            budget_refusals += st.budget_refusals;
        }
    }
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    lat.sort();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    ScenarioReport {
        name: scenario.name,
        requests: total,
        errors: errors.load(Ordering::Relaxed),
        time_to_detect,
        time_to_recover,
        calls_to_faulty: faulty.load(Ordering::Relaxed),
        amplification: 1.0 + retries as f64 / total as f64,
        retries,
        budget_refusals,
        p50: pct(0.5),
        p99: pct(0.99),
    }
}

/// The reports as a markdown table.
pub fn table(reports: &[ScenarioReport]) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| scenario | requests | errors seen | time to detect | time to recover | calls to faulty primary | retry amplification | budget refusals | p50 | p99 |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let d = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
    for r in reports {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {:.3} | {} | {:.0} ms | {:.0} ms |",
            r.name,
            r.requests,
            r.errors,
            d(r.time_to_detect),
            d(r.time_to_recover),
            r.calls_to_faulty,
            r.amplification,
            r.budget_refusals,
            r.p50.as_secs_f64() * 1000.0,
            r.p99.as_secs_f64() * 1000.0
        );
    }
    t
}
