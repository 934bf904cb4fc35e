//! `palisade-gateway`: serve (default) or run the chaos demo.

use std::net::SocketAddr;

use palisade_gateway::{Gateway, GatewayConfig};

const USAGE: &str = "\
usage: palisade-gateway [--listen ADDR] [--config FILE] [--log-format text|json]
       palisade-gateway check [--config FILE]
       palisade-gateway demo [--seconds N] [--workers N] [--svg FILE]

  --listen ADDR   where to listen (env PALISADE_LISTEN; default 127.0.0.1:8080)
  --config FILE   a TOML config (env PALISADE_CONFIG; default: the embedded
                  config with four simulated providers, two of them
                  balanced in the first tier)
  --log-format F  `text` (default: human-readable, colored on a terminal)
                  or `json` (one JSON object per line, for log shippers;
                  env PALISADE_LOG_FORMAT); levels by RUST_LOG (default info)

  check           checks a config (default: the embedded one) without
                  starting anything: prints every problem with its key
                  path and exits 1, or a summary and exits 0

  demo            a scripted outage (a slow tail, then down, then 429 with
                  Retry-After, then recovery, then the provider's own 600
                  requests/min limit with x-ratelimit headers) under load,
                  with and without palisade; prints a table and writes a
                  timeline SVG (default palisade-demo.svg)
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&format!("cannot start the runtime: {e}")),
    };
    if let Err(e) = rt.block_on(run(args)) {
        fail(&e);
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("palisade-gateway: {msg}");
    std::process::exit(2);
}

/// Logs to stderr, filtered by `RUST_LOG` (default `default`: `info` when
/// serving, nothing in the demo, whose table is the output).
/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LogFormat {
    /// Human-readable, colored on a terminal.
    Text,
    /// One JSON object per line: time, level, target, the event's fields
    /// and its spans' (the request id among them).
    Json,
}

impl LogFormat {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("--log-format {other:?}: use text or json")),
        }
    }
}

fn init_logs(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

async fn run(args: Vec<String>) -> Result<(), String> {
    let mut listen = std::env::var("PALISADE_LISTEN").ok();
    let mut config = std::env::var("PALISADE_CONFIG").ok();
    let mut log_format = match std::env::var("PALISADE_LOG_FORMAT") {
        Ok(f) => LogFormat::parse(&f)?,
        Err(_) => LogFormat::Text,
    };
    match args.first().map(String::as_str) {
        Some("demo") => {
            init_logs("off", log_format);
            return demo(args[1..].to_vec()).await;
        }
        Some("check") => check(&args[1..], config),
        _ => {}
    }
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => listen = Some(it.next().ok_or("--listen needs an address")?),
            "--config" => config = Some(it.next().ok_or("--config needs a file")?),
            "--log-format" => {
                log_format = LogFormat::parse(&it.next().ok_or("--log-format needs text or json")?)?
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let cfg = match &config {
        Some(path) => GatewayConfig::from_path(path).map_err(|e| e.to_string())?,
        #[cfg(feature = "sim")]
        None => GatewayConfig::embedded(),
        #[cfg(not(feature = "sim"))]
        None => {
            return Err(format!(
                "this build has no simulator: give --config\n{USAGE}"
            ))
        }
    };
    let listen: Option<SocketAddr> = match listen {
        Some(l) => Some(
            l.parse()
                .map_err(|_| format!("{l:?} is not an address like 127.0.0.1:8080"))?,
        ),
        None => None,
    };
    init_logs("info", log_format);
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
    println!("palisade-gateway listening on http://{addr}");
    #[cfg(feature = "sim")]
    for (id, sim) in gw.sims() {
        println!("  simulated provider {id:<10} on {}", sim.base_url());
    }
    println!("models: {}", models.join(", "));
    println!();
    println!("try:");
    println!(
        "  curl -s http://{addr}/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}]}}'",
        models.first().map(String::as_str).unwrap_or("gpt-4o-mini")
    );
    println!("  curl -s http://{addr}/health");
    println!("  curl -s http://{addr}/metrics");
    #[cfg(unix)]
    tokio::spawn(reload_on_hup(gw.reloader(), config.clone()));
    gw.serve(shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    println!("palisade-gateway: stopped");
    Ok(())
}

/// `check [--config FILE]`: loads and checks a config, builds nothing,
/// and exits: 1 with every problem, 0 with a summary.
fn check(args: &[String], mut config: Option<String>) -> ! {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => match it.next() {
                Some(path) => config = Some(path.clone()),
                None => fail("--config needs a file"),
            },
            other => fail(&format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
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
                "{name} is valid: {} upstreams, models {}; tried in order {}",
                cfg.upstreams.len(),
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
async fn reload_on_hup(reloader: palisade_gateway::Reloader, path: Option<String>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
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
async fn demo(_: Vec<String>) -> Result<(), String> {
    Err("the demo needs the simulator: build with the `sim` feature (on by default)".into())
}

#[cfg(feature = "sim")]
async fn demo(args: Vec<String>) -> Result<(), String> {
    let mut opts = palisade_gateway::demo::DemoOptions::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--seconds" => {
                let v = value("--seconds")?;
                let s: u64 = v
                    .parse()
                    .map_err(|_| format!("--seconds: {v:?} is not a number"))?;
                if s == 0 {
                    return Err("--seconds: use at least 1".into());
                }
                opts.duration = std::time::Duration::from_secs(s);
            }
            "--workers" => {
                let v = value("--workers")?;
                opts.workers = v
                    .parse()
                    .ok()
                    .filter(|w| *w > 0)
                    .ok_or(format!("--workers: {v:?} is not a positive number"))?;
            }
            "--svg" => opts.svg = Some(value("--svg")?.into()),
            other => return Err(format!("unknown demo argument {other:?}\n{USAGE}")),
        }
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
