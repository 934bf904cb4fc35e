//! `palisade-gateway`: serve (default) or run the chaos demo.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

use palisade_gateway::traces::Traces;
use palisade_gateway::{Gateway, GatewayConfig};

/// See the `mimalloc` feature.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: palisade_gateway::Allocator = palisade_gateway::Allocator;

/// An OpenAI-compatible gateway that keeps answering when LLM providers
/// fail: palisade's router over real HTTP.
#[derive(Debug, Parser)]
#[command(
    name = "palisade-gateway",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: serve.
    #[command(flatten)]
    serve: Serve,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve (the default when no subcommand is given).
    Serve(Serve),
    /// Check a config without starting anything: every problem with its key
    /// path and exit code 1, or a summary and exit code 0.
    Check {
        /// The TOML config to check (default: the embedded one).
        #[arg(long, env = "PALISADE_CONFIG", value_name = "FILE")]
        config: Option<String>,
    },
    /// A scripted outage under load, with and without palisade (a slow tail,
    /// then down, then 429 with Retry-After, then recovery, then the
    /// provider's own 600 requests/min limit): prints a table and writes a
    /// timeline SVG.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct Serve {
    /// Where to listen [default: the config's, 127.0.0.1:8080 in the
    /// embedded one].
    #[arg(long, env = "PALISADE_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// A TOML config [default: the embedded config with four simulated
    /// providers, two of them balanced in the first tier].
    #[arg(long, env = "PALISADE_CONFIG", value_name = "FILE")]
    config: Option<String>,
    /// How log lines are written.
    #[arg(long, env = "PALISADE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Which log lines are written: a level (error, warn, info, debug,
    /// trace, off) or directives like RUST_LOG's
    /// (warn,palisade_gateway::access=info) [default: RUST_LOG, else the
    /// config's gateway.log, else info].
    #[arg(long, env = "PALISADE_LOG_LEVEL", value_name = "FILTER", value_parser = log_level)]
    log_level: Option<String>,
    /// Export traces over OTLP/gRPC to this collector (e.g.
    /// http://127.0.0.1:4317) [default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    /// or OTEL_EXPORTER_OTLP_ENDPOINT; no traces when neither is set].
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// How long the scripted run lasts, in seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: Option<u64>,
    /// Concurrent callers on each side.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    workers: Option<u64>,
    /// Where to write the timeline [default: palisade-demo.svg].
    #[arg(long, value_name = "FILE")]
    svg: Option<std::path::PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&format!("cannot start the runtime: {e}")),
    };
    let done = match cli.command {
        None => rt.block_on(run(cli.serve)),
        Some(Command::Serve(serve)) => rt.block_on(run(serve)),
        Some(Command::Check { config }) => check(config),
        Some(Command::Demo(args)) => {
            init_logs(log_filter(None, None, "off"), LogFormat::Text, None);
            rt.block_on(demo(args))
        }
    };
    if let Err(e) = done {
        fail(&e);
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("palisade-gateway: {msg}");
    std::process::exit(2);
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum LogFormat {
    /// Human-readable, colored on a terminal.
    Text,
    /// One JSON object per line: time, level, target, the event's fields
    /// and its spans' (the request id among them), for log shippers.
    Json,
}

/// `--log-level`'s parser: the filter is checked whole here, so a bad one
/// is refused naming the flag.
fn log_level(s: &str) -> Result<String, String> {
    palisade_gateway::logs::parse_filter(s).map(|_| s.to_owned())
}

/// Which lines are logged: `--log-level` (checked by clap), else
/// `RUST_LOG` (one it cannot read is said and passed over), else the
/// config's `gateway.log` (checked with the config), else `default`.
fn log_filter(
    flag: Option<&str>,
    config: Option<&str>,
    default: &str,
) -> tracing_subscriber::EnvFilter {
    use palisade_gateway::logs::parse_filter;
    if let Some(Ok(f)) = flag.map(parse_filter) {
        return f;
    }
    if let Ok(env) = std::env::var("RUST_LOG") {
        if !env.trim().is_empty() {
            match tracing_subscriber::EnvFilter::builder().parse(&env) {
                Ok(f) => return f,
                Err(e) => eprintln!(
                    "palisade-gateway: RUST_LOG={env:?} is not a log filter ({e}); not used"
                ),
            }
        }
    }
    if let Some(Ok(f)) = config.map(parse_filter) {
        return f;
    }
    tracing_subscriber::EnvFilter::new(default)
}

/// Logs to stderr, filtered by `filter` ([`log_filter`]); a storm of one
/// event is cut to ten a second, then summarised
/// ([`StormFilter`](palisade_gateway::logs::StormFilter)). With `traces`,
/// spans (at `info`, whatever the filter says) also go out over OTLP.
fn init_logs(filter: tracing_subscriber::EnvFilter, format: LogFormat, traces: Option<&Traces>) {
    use palisade_gateway::logs::{StormFilter, Summaries};
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::prelude::*;
    let (lines, summaries) = match format {
        LogFormat::Text => (
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .boxed(),
            Summaries::Text,
        ),
        LogFormat::Json => (
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_writer(std::io::stderr)
                .boxed(),
            Summaries::Json,
        ),
    };
    let storms = StormFilter::new(
        10,
        std::time::Duration::from_secs(1),
        summaries,
        std::io::stderr,
    );
    let _ = tracing_subscriber::registry()
        .with(traces.map(Traces::layer))
        .with(lines.with_filter(filter.and(storms)))
        .try_init();
}

async fn run(serve: Serve) -> Result<(), String> {
    let Serve {
        listen,
        config,
        log_format,
        log_level,
        otlp_endpoint,
    } = serve;
    let cfg = match &config {
        Some(path) => GatewayConfig::from_path(path).map_err(|e| e.to_string())?,
        #[cfg(feature = "sim")]
        None => GatewayConfig::embedded(),
        #[cfg(not(feature = "sim"))]
        None => return Err("this build has no simulator: give --config".into()),
    };
    let traces = Traces::from_env(otlp_endpoint.as_deref()).map_err(|e| e.to_string())?;
    let filter = log_filter(log_level.as_deref(), cfg.gateway.log.as_deref(), "info");
    init_logs(filter, log_format, traces.as_ref());
    // Up to the hard limit, so that max_connections can be held (a soft
    // limit of 1024 holds some 500 streams); `warnings` says when even
    // the hard one is short.
    match palisade_gateway::raise_open_files_limit() {
        Ok((before, after)) if after.soft > before.soft => {
            tracing::info!(
                from = before.soft,
                to = after.soft,
                "raised the open-file limit"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(
            limit = palisade_gateway::open_files_limit().soft,
            error = %e,
            "cannot raise the open-file limit"
        ),
    }
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    let models: Vec<String> = cfg.models().keys().cloned().collect();
    let mut gw = Gateway::bind(cfg, listen)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(path) = &config {
        gw = gw.reload_from(path);
    }
    let addr = gw.local_addr().map_err(|e| e.to_string())?;
    // The SIGHUP handler is in place before the banner says we listen: a
    // SIGHUP arriving before it would end the process (its default action).
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let hup = signal(SignalKind::hangup()).map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
        tokio::spawn(reload_on_hup(hup, gw.reloader(), config.clone()));
    }
    println!("palisade-gateway listening on http://{addr}");
    #[cfg(feature = "sim")]
    for (id, sim) in gw.sims() {
        println!("  simulated provider {id:<10} on {}", sim.base_url());
    }
    println!("models: {}", models.join(", "));
    if traces.is_some() {
        println!("traces: exported over OTLP/gRPC (OTEL_* variables apply)");
    }
    println!();
    println!("try:");
    println!(
        "  curl -s http://{addr}/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}]}}'",
        models.first().map(String::as_str).unwrap_or("gpt-4o-mini")
    );
    println!("  curl -s http://{addr}/health");
    println!("  curl -s http://{addr}/metrics");
    gw.serve(shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    if let Some(t) = traces {
        t.shutdown();
    }
    println!("palisade-gateway: stopped");
    Ok(())
}

/// `check [--config FILE]`: loads and checks a config, builds nothing,
/// and exits: 1 with every problem, 0 with a summary.
fn check(config: Option<String>) -> ! {
    let loaded = match &config {
        Some(path) => GatewayConfig::from_path(path),
        #[cfg(feature = "sim")]
        None => Ok(GatewayConfig::embedded()),
        #[cfg(not(feature = "sim"))]
        None => fail("this build has no embedded config: give --config"),
    };
    let name = config.as_deref().unwrap_or("the embedded config");
    match loaded {
        Ok(cfg) => {
            for w in cfg.warnings() {
                println!("warning: {w}");
            }
            let tiers: Vec<String> = cfg
                .palisade
                .provider_tiers()
                .into_iter()
                .map(|(ids, strategy)| match ids.len() {
                    1 => ids[0].clone(),
                    _ => format!("[{}] ({strategy})", ids.join(", ")),
                })
                .collect();
            println!(
                "{name} is valid: {} upstream{}, models {}; tried in order {}",
                cfg.upstreams.len(),
                if cfg.upstreams.len() == 1 { "" } else { "s" },
                cfg.models().keys().cloned().collect::<Vec<_>>().join(", "),
                tiers.join(" > ")
            );
            // What else runs, when the file turns it on.
            let checked: Vec<String> = cfg
                .palisade
                .providers
                .keys()
                .chain(
                    cfg.upstreams
                        .keys()
                        .filter(|id| !cfg.palisade.providers.contains_key(*id)),
                )
                .filter(|id| {
                    cfg.palisade
                        .provider(id)
                        .map_or(cfg.palisade.defaults_settings().health_check.enabled, |p| {
                            p.layers.health_check.enabled
                        })
                })
                .cloned()
                .collect();
            if !checked.is_empty() {
                println!("  health checks: {}", checked.join(", "));
            }
            if cfg.palisade.router.outlier.is_some() {
                println!("  outlier ejection: on, in tiers of two or more");
            }
            if let Some(fleet) = &cfg.palisade.fleet {
                println!(
                    "  fleet: shared through {} (prefix {:?})",
                    fleet.redis_url, fleet.key_prefix
                );
            }
            if cfg.gateway.chaos_endpoint {
                println!("  chaos endpoint: on (/admin/chaos)");
            }
            if let Some(c) = &cfg.cache {
                println!(
                    "  cache: stale answers {}, fresh hits {}, coalescing {}, {} MiB",
                    if c.stale_if_error {
                        format!("up to {} s old", c.max_stale_ms / 1000)
                    } else {
                        "off".into()
                    },
                    if c.fresh {
                        format!("for {} s", c.ttl_ms / 1000)
                    } else {
                        "off".into()
                    },
                    if c.coalesce { "on" } else { "off" },
                    c.max_bytes >> 20
                );
            }
            if let Some(b) = &cfg.batch {
                println!(
                    "  batching (/v1/embeddings): up to {} inputs, {} ms",
                    b.max_items, b.max_delay_ms
                );
            }
            std::process::exit(0)
        }
        Err(e) => {
            match e.problems() {
                [] => eprintln!("{name}: {e}"),
                problems => {
                    eprintln!("{name} has {} problem(s):", problems.len());
                    for p in problems {
                        eprintln!("  {p}");
                    }
                }
            }
            std::process::exit(1)
        }
    }
}

/// On each SIGHUP, reads the config file again and applies it; a config
/// with problems, or one changing what needs a restart, is refused and the
/// running one keeps serving.
#[cfg(unix)]
async fn reload_on_hup(
    mut hup: tokio::signal::unix::Signal,
    reloader: palisade_gateway::Reloader,
    path: Option<String>,
) {
    while hup.recv().await.is_some() {
        let Some(path) = &path else {
            tracing::warn!("SIGHUP: nothing to reload, the gateway runs its embedded config");
            continue;
        };
        match reloader.reload_file(std::path::Path::new(path)).await {
            Ok(done) => tracing::info!(
                kept = ?done.kept, replaced = ?done.replaced, added = ?done.added, removed = ?done.removed,
                "SIGHUP: {path} reloaded"
            ),
            Err(e) => tracing::warn!("SIGHUP: {e}"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    println!("palisade-gateway: shutting down, finishing requests in flight");
}

#[cfg(not(feature = "sim"))]
async fn demo(_: DemoArgs) -> Result<(), String> {
    Err("the demo needs the simulator: build with the `sim` feature (on by default)".into())
}

#[cfg(feature = "sim")]
async fn demo(args: DemoArgs) -> Result<(), String> {
    let mut opts = palisade_gateway::demo::DemoOptions::default();
    if let Some(s) = args.seconds {
        opts.duration = std::time::Duration::from_secs(s);
    }
    if let Some(w) = args.workers {
        opts.workers = usize::try_from(w).map_err(|_| format!("--workers: {w} is too many"))?;
    }
    if let Some(svg) = args.svg {
        opts.svg = Some(svg);
    }
    println!(
        "palisade demo: {} s, {} workers through palisade and {} straight to the primary",
        opts.duration.as_secs(),
        opts.workers,
        opts.workers
    );
    let report = palisade_gateway::demo::run(opts.clone())
        .await
        .map_err(|e| e.to_string())?;
    println!();
    print!("{}", report.table);
    if let Some(path) = &opts.svg {
        println!("\ntimeline written to {}", path.display());
    }
    Ok(())
}
