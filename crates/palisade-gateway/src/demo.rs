//! `palisade-gateway demo`: a scripted outage against simulated providers
//! under concurrent load, measured with and without palisade.
//!
//! Three simulated providers run on loopback: two deployments of the
//! primary model in one balanced tier (`primary` and `primary-b`,
//! p2c over peak-EWMA latency, late calls hedged to the other), and a
//! `secondary` behind them. Workers send chat completions the whole time,
//! half through the gateway and half straight to the primary, as an
//! application without palisade would; each side has its own copy of the
//! primary, so one side's load does not spend the other's quota. The
//! primary is healthy, then grows a heavy tail (one call in five takes
//! [`SLOW_MS`] more), then goes down, then rate-limits with `Retry-After`,
//! then recovers, then enforces its own limit of
//! [`DemoOptions::primary_rpm`] requests a minute, publishing OpenAI's
//! `x-ratelimit-*` headers: palisade balances away from the slow tail and
//! hedges what is late, fails over while the primary is down, and paces
//! itself by the headers where the direct side gets 429s. At the end the
//! demo prints a table (requests, errors the caller saw, answers by
//! provider, hedges that won, p50/p99 latency overall and in the slow-tail
//! phase, 429s from the primary's own limit) and writes a timeline chart as
//! SVG.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_core::CircuitState;

use crate::app::Gateway;
use crate::config::GatewayConfig;
use palisade_sim::SimHandle;

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Length of the whole scenario.
    pub duration: Duration,
    /// Concurrent workers on each side (with and without palisade).
    pub workers: usize,
    /// Where to write the SVG timeline.
    pub svg: Option<std::path::PathBuf>,
    /// Whether to draw live progress.
    pub progress: bool,
    /// The primary's own limit in the last phase, in requests per minute
    /// (its bucket holds a minute's worth): below what the workers send
    /// in that phase, so it is reached.
    pub primary_rpm: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            duration: Duration::from_secs(60),
            workers: 8,
            svg: Some("palisade-demo.svg".into()),
            progress: true,
            primary_rpm: 600,
        }
    }
}

/// How much longer the primary's slow calls take in the slow-tail phase.
pub const SLOW_MS: u64 = 1500;

/// The providers that answer, as the simulator names them in its answers.
const PROVIDERS: [&str; 3] = ["primary", "primary-b", "secondary"];

/// One request's record.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    latency: Duration,
    ok: bool,
    /// Index in [`PROVIDERS`] of the provider that answered.
    by: Option<usize>,
    hedged: bool,
}

/// One side's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct SideSummary {
    /// Requests sent.
    pub requests: usize,
    /// Requests the caller saw fail.
    pub errors: usize,
    /// Requests answered by a provider other than the primary (its twin
    /// deployment or the secondary).
    pub failovers: usize,
    /// Answers by `primary`, `primary-b` and `secondary`.
    pub by_provider: [usize; 3],
    /// Answers that came from a hedge (`x-palisade-hedged`).
    pub hedged: usize,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// 99th percentile latency of the requests sent in the slow-tail phase.
    pub tail_p99: Duration,
    /// Requests the primary refused for being over its own limit.
    pub primary_429s: u64,
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Through palisade.
    pub with: SideSummary,
    /// Straight to the primary.
    pub without: SideSummary,
    /// The table as text.
    pub table: String,
    /// The SVG chart.
    pub svg: String,
}

const PHASES: [(&str, f64); 6] = [
    ("healthy", 0.0),
    ("primary slow tail", 0.12),
    ("primary down", 0.3),
    ("primary rate-limits (429, Retry-After: 2)", 0.45),
    ("primary recovered", 0.6),
    ("primary enforces its own limit (x-ratelimit headers)", 0.75),
];

/// The slow-tail phase's index in [`PHASES`].
const TAIL: usize = 1;

fn phase_at(frac: f64) -> usize {
    PHASES
        .iter()
        .rposition(|(_, start)| frac >= *start)
        .unwrap_or(0)
}

fn apply_phase(primary: &SimHandle, phase: usize, rpm: u64) {
    primary.set_faults(|f| {
        f.slow_rate = if phase == TAIL { 0.2 } else { 0.0 };
        f.slow_ms = SLOW_MS;
        f.down = phase == 2;
        f.rate_limit_secs = (phase == 3).then_some(2);
        f.requests_per_minute = (phase == 5).then_some(rpm);
    });
}

const DEMO_CONFIG: &str = r#"
[gateway]
listen = "127.0.0.1:0"

[upstreams.primary]
models = { "gpt-4o-mini" = "primary-large" }
simulated = { latency_ms = 20, jitter_ms = 20, tokens = 8 }

[upstreams.primary-b]
models = { "gpt-4o-mini" = "primary-large-b" }
simulated = { latency_ms = 25, jitter_ms = 20, tokens = 8 }

[upstreams.secondary]
models = { "gpt-4o-mini" = "secondary-large" }
simulated = { latency_ms = 45, jitter_ms = 30, tokens = 8 }

[palisade.router]
tiers = [["primary", "primary-b"], ["secondary"]]
strategy = "peak_ewma"
request_timeout_ms = 5000

# Fixed, so even a short run hedges from its start (a percentile needs
# samples first); a late call goes to the tier's other deployment.
[palisade.router.hedge]
delay_ms = 150
budget_ratio = 0.25

[palisade.defaults.breaker]
consecutive_failures = 5
open_ms = 3000
max_open_ms = 6000

[palisade.defaults.retry]
max_attempts = 2
backoff_base_ms = 50
backoff_max_ms = 200
"#;

const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;

/// Runs the scenario and returns what it measured.
pub async fn run(opts: DemoOptions) -> Result<DemoReport, palisade_core::BoxError> {
    let cfg = GatewayConfig::from_toml(DEMO_CONFIG)?;
    let gw = Gateway::bind(cfg, None).await?;
    let gateway_url = format!("http://{}/v1/chat/completions", gw.local_addr()?);
    let primary = gw.sims()["primary"].clone();
    // The direct side's own copy of the primary, with the same faults.
    let direct = palisade_sim::spawn("primary", primary.faults()).await?;
    let direct_url = format!("{}/v1/chat/completions", direct.base_url());
    let registry = gw.registry();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gw.serve(async move {
        let _ = stop_rx.await;
    }));

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let start = Instant::now();
    let end = start + opts.duration;
    let with: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let without: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let mut workers = Vec::new();
    for i in 0..opts.workers * 2 {
        let through_palisade = i % 2 == 0;
        let url = if through_palisade {
            gateway_url.clone()
        } else {
            direct_url.clone()
        };
        let out = if through_palisade {
            with.clone()
        } else {
            without.clone()
        };
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            while Instant::now() < end {
                let t0 = Instant::now();
                let req = http::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(BODY.as_bytes())));
                let Ok(req) = req else { break };
                let (ok, by, hedged) = match client.request(req).await {
                    Ok(res) => {
                        let ok = res.status().is_success();
                        let hedged = res.headers().contains_key(crate::HEDGED_HEADER);
                        let body = res
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let by = serde_json::from_slice::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|v| PROVIDERS.iter().position(|p| v["provider"] == *p))
                            .filter(|_| ok);
                        (ok, by, hedged)
                    }
                    Err(_) => (false, None, false),
                };
                out.lock().unwrap_or_else(|e| e.into_inner()).push(Sample {
                    at: t0 - start,
                    latency: t0.elapsed(),
                    ok,
                    by,
                    hedged,
                });
                // A steady trickle, not a hot loop.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(opts.duration.as_millis() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {elapsed:>3} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let mut phase = usize::MAX;
    let mut breaker_track: Vec<(Duration, CircuitState)> = Vec::new();
    while Instant::now() < end {
        let frac = start.elapsed().as_secs_f64() / opts.duration.as_secs_f64();
        let now_phase = phase_at(frac);
        if now_phase != phase {
            phase = now_phase;
            apply_phase(&primary, phase, opts.primary_rpm);
            apply_phase(&direct, phase, opts.primary_rpm);
            if let Some(b) = &bar {
                b.println(format!(
                    "{:>5.1}s  phase: {}",
                    start.elapsed().as_secs_f64(),
                    PHASES[phase].0
                ));
            }
        }
        let state = registry
            .handles("primary")
            .and_then(|h| h.breaker)
            .map_or(CircuitState::Closed, |b| b.state());
        breaker_track.push((start.elapsed(), state));
        if let Some(b) = &bar {
            let rate = |v: &Arc<Mutex<Vec<Sample>>>| {
                let v = v.lock().unwrap_or_else(|e| e.into_inner());
                let recent: Vec<_> = v.iter().rev().take(200).collect();
                if recent.is_empty() {
                    100.0
                } else {
                    100.0 * recent.iter().filter(|s| s.ok).count() as f64 / recent.len() as f64
                }
            };
            b.set_position(start.elapsed().as_millis() as u64);
            b.set_message(format!(
                "primary breaker {:<9} | ok with palisade {:>5.1}% | without {:>5.1}%",
                state.to_string(),
                rate(&with),
                rate(&without)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in workers {
        let _ = w.await;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let _ = stop_tx.send(());
    let _ = server.await;

    let with = std::mem::take(&mut *with.lock().unwrap_or_else(|e| e.into_inner()));
    let without = std::mem::take(&mut *without.lock().unwrap_or_else(|e| e.into_inner()));
    let tail = (
        opts.duration.mul_f64(PHASES[TAIL].1),
        opts.duration.mul_f64(PHASES[TAIL + 1].1),
    );
    let (sw, so) = (
        summarise(&with, primary.rate_limited(), tail),
        summarise(&without, direct.rate_limited(), tail),
    );
    let table = table(&sw, &so);
    let svg = svg(&with, &without, &breaker_track, opts.duration);
    if let Some(path) = &opts.svg {
        std::fs::write(path, &svg)?;
    }
    Ok(DemoReport {
        with: sw,
        without: so,
        table,
        svg,
    })
}

fn summarise(samples: &[Sample], primary_429s: u64, tail: (Duration, Duration)) -> SideSummary {
    let pct = |samples: &mut dyn Iterator<Item = &Sample>, p: f64| {
        let mut lat: Vec<Duration> = samples.map(|s| s.latency).collect();
        lat.sort();
        if lat.is_empty() {
            Duration::ZERO
        } else {
            lat[((lat.len() - 1) as f64 * p).round() as usize]
        }
    };
    let mut by_provider = [0; 3];
    for i in samples.iter().filter_map(|s| s.by) {
        by_provider[i] += 1;
    }
    SideSummary {
        requests: samples.len(),
        errors: samples.iter().filter(|s| !s.ok).count(),
        failovers: by_provider[1] + by_provider[2],
        by_provider,
        hedged: samples.iter().filter(|s| s.hedged).count(),
        p50: pct(&mut samples.iter(), 0.5),
        p99: pct(&mut samples.iter(), 0.99),
        tail_p99: pct(
            &mut samples.iter().filter(|s| s.at >= tail.0 && s.at < tail.1),
            0.99,
        ),
        primary_429s,
    }
}

fn table(with: &SideSummary, without: &SideSummary) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| | requests | errors the caller saw | answered by primary / primary-b / secondary | hedges won | p50 | p99 | p99 in the slow-tail phase | 429s from the primary's own limit |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (name, s) in [
        ("with palisade", with),
        ("without (straight to the primary)", without),
    ] {
        let _ = writeln!(
            t,
            "| {name} | {} | {} ({:.1}%) | {} / {} / {} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {} |",
            s.requests,
            s.errors,
            100.0 * s.errors as f64 / s.requests.max(1) as f64,
            s.by_provider[0],
            s.by_provider[1],
            s.by_provider[2],
            s.hedged,
            ms(s.p50),
            ms(s.p99),
            ms(s.tail_p99),
            s.primary_429s
        );
    }
    t
}

/// Success rate per second for both sides, the phases, and the primary's
/// breaker state, as a self-contained SVG.
fn svg(
    with: &[Sample],
    without: &[Sample],
    breaker: &[(Duration, CircuitState)],
    duration: Duration,
) -> String {
    let (w, h, left, top, plot_w, plot_h) = (900.0, 360.0, 60.0, 30.0, 800.0, 240.0);
    let secs = duration.as_secs_f64().max(1.0);
    let x = |t: f64| left + plot_w * (t / secs).min(1.0);
    let y = |rate: f64| top + plot_h * (1.0 - rate);
    let buckets = (secs.ceil() as usize).max(1);
    let series = |samples: &[Sample]| -> String {
        let mut pts = Vec::new();
        for b in 0..buckets {
            let in_b: Vec<_> = samples
                .iter()
                .filter(|s| s.at.as_secs_f64() >= b as f64 && s.at.as_secs_f64() < (b + 1) as f64)
                .collect();
            if in_b.is_empty() {
                continue;
            }
            let rate = in_b.iter().filter(|s| s.ok).count() as f64 / in_b.len() as f64;
            pts.push(format!("{:.1},{:.1}", x(b as f64 + 0.5), y(rate)));
        }
        pts.join(" ")
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    // Phases.
    let colours = [
        "#eef7ee", "#f3eefb", "#fbe9e9", "#fdf3e1", "#eef7ee", "#e9eefb",
    ];
    for (i, (name, start)) in PHASES.iter().enumerate() {
        let end = PHASES.get(i + 1).map_or(1.0, |p| p.1);
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{top}" width="{:.1}" height="{plot_h}" fill="{}"/><text x="{:.1}" y="{}" fill="#555">{}</text>"##,
            x(start * secs),
            x(end * secs) - x(start * secs),
            colours[i],
            x(start * secs) + 4.0,
            top - 8.0,
            name
        );
    }
    // Breaker state band under the plot.
    for pair in breaker.windows(2) {
        let (t0, st) = pair[0];
        let t1 = pair[1].0;
        let colour = match st {
            CircuitState::Closed | CircuitState::Disabled => "#4caf50",
            CircuitState::HalfOpen => "#ffb300",
            CircuitState::Open | CircuitState::ForcedOpen => "#e53935",
        };
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{}" width="{:.1}" height="12" fill="{colour}"/>"#,
            x(t0.as_secs_f64()),
            top + plot_h + 20.0,
            (x(t1.as_secs_f64()) - x(t0.as_secs_f64())).max(0.5)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="{}">primary's breaker: green closed, amber half-open, red open</text>"#,
        top + plot_h + 50.0
    );
    // Axes.
    for (rate, label) in [(0.0, "0%"), (0.5, "50%"), (1.0, "100%")] {
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ccc"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            left + plot_w,
            y(rate),
            y(rate),
            left - 6.0,
            y(rate) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#1e88e5" stroke-width="2.5"/>"##,
        series(with)
    );
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#888" stroke-width="2" stroke-dasharray="5,4"/>"##,
        series(without)
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" fill="#1e88e5">with palisade</text><text x="{}" y="{}" fill="#888">without: straight to the primary</text>"##,
        left + 10.0,
        h - 15.0,
        left + 150.0,
        h - 15.0
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\">success rate per second over {:.0} s</text>",
        left + 480.0,
        h - 15.0,
        secs
    );
    s.push_str("</svg>\n");
    s
}
