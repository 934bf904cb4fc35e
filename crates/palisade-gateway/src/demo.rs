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
/// breaker state, as a self-contained SVG drawn with `plotters`.
fn svg(
    with: &[Sample],
    without: &[Sample],
    breaker: &[(Duration, CircuitState)],
    duration: Duration,
) -> String {
    let mut out = String::new();
    if let Err(e) = draw(&mut out, with, without, breaker, duration) {
        tracing::warn!("cannot draw the timeline: {e}");
    }
    out
}

/// The success rate of each second that has samples, at its middle.
fn per_second(samples: &[Sample], secs: usize) -> Vec<(f64, f64)> {
    let mut tally = vec![(0u32, 0u32); secs];
    for s in samples {
        if let Some(t) = tally.get_mut(s.at.as_secs() as usize) {
            t.0 += u32::from(s.ok);
            t.1 += 1;
        }
    }
    tally
        .iter()
        .enumerate()
        .filter(|(_, (_, n))| *n > 0)
        .map(|(b, (ok, n))| (b as f64 + 0.5, f64::from(*ok) / f64::from(*n)))
        .collect()
}

fn draw(
    out: &mut String,
    with: &[Sample],
    without: &[Sample],
    breaker: &[(Duration, CircuitState)],
    duration: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let secs = duration.as_secs_f64().max(1.0);
    let buckets = (secs.ceil() as usize).max(1);
    let blue = RGBColor(0x1e, 0x88, 0xe5);
    let grey = RGBColor(0x88, 0x88, 0x88);
    let phase_colours = [
        RGBColor(0xee, 0xf7, 0xee),
        RGBColor(0xf3, 0xee, 0xfb),
        RGBColor(0xfb, 0xe9, 0xe9),
        RGBColor(0xfd, 0xf3, 0xe1),
        RGBColor(0xee, 0xf7, 0xee),
        RGBColor(0xe9, 0xee, 0xfb),
    ];
    let root = SVGBackend::with_string(out, (900, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, band) = root.split_vertically(330);

    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!("success rate per second over {secs:.0} s"),
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..secs, 0.0..1.12)?;
    chart.draw_series(PHASES.iter().enumerate().map(|(i, (_, start))| {
        let end = PHASES.get(i + 1).map_or(1.0, |p| p.1);
        Rectangle::new(
            [(start * secs, 0.0), (end * secs, 1.12)],
            phase_colours[i].filled(),
        )
    }))?;
    // Phase names at two heights, so that long ones do not run together.
    chart.draw_series(PHASES.iter().enumerate().map(|(i, (name, start))| {
        let y = if i % 2 == 0 { 1.1 } else { 1.05 };
        Text::new(
            *name,
            (start * secs + secs * 0.004, y),
            ("sans-serif", 11)
                .into_font()
                .color(&RGBColor(0x55, 0x55, 0x55)),
        )
    }))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_labels(3)
        .y_max_light_lines(0)
        .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
        .x_label_formatter(&|t| format!("{t:.0}"))
        .x_desc("seconds")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            per_second(without, buckets),
            grey.stroke_width(2),
        ))?
        .label("without: straight to the primary")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            per_second(with, buckets),
            blue.stroke_width(3),
        ))?
        .label("with palisade")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(3)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(0xcc, 0xcc, 0xcc))
        .draw()?;

    // The primary's breaker, as a band under the plot on the same time
    // axis.
    let mut strip = ChartBuilder::on(&band)
        .margin_left(12 + 48)
        .margin_right(12)
        .build_cartesian_2d(0.0..secs, 0.0..1.0)?;
    strip.draw_series(breaker.windows(2).map(|pair| {
        let (t0, st) = pair[0];
        let colour = match st {
            CircuitState::Closed | CircuitState::Disabled => RGBColor(0x4c, 0xaf, 0x50),
            CircuitState::HalfOpen => RGBColor(0xff, 0xb3, 0x00),
            CircuitState::Open | CircuitState::ForcedOpen => RGBColor(0xe5, 0x39, 0x35),
        };
        Rectangle::new(
            [(t0.as_secs_f64(), 0.55), (pair[1].0.as_secs_f64(), 0.9)],
            colour.filled(),
        )
    }))?;
    strip.draw_series(std::iter::once(Text::new(
        "primary's breaker: green closed, amber half-open, red open",
        (0.0, 0.35),
        ("sans-serif", 12),
    )))?;
    root.present()?;
    Ok(())
}
