//! `cargo run --release -p benches --features gateway --bin gateway`: how
//! much palisade-gateway adds over a bare HTTP forwarder, the floor for any
//! gateway on this machine.
//!
//! One simulated OpenAI-compatible upstream (no added latency) on loopback;
//! in front of it, on loopback too:
//!
//! - **direct**: the client calls the upstream itself;
//! - **bare forwarder**: a hyper server that sends each request to the
//!   upstream through a pooled hyper client and streams the answer back,
//!   parsing nothing;
//! - **palisade-gateway**: the gateway with that one upstream (as a real
//!   `base_url`) and its default resilience stack;
//! - **palisade-gateway, served_headers off**: the same with
//!   `served_headers = false`, whose answers do not say who served them
//!   (no `x-palisade-provider`, `-attempts`, `-fallbacks`,
//!   `x-upstream-request-id`): what those headers cost, the gateway's to
//!   write and the client's to read.
//!
//! Each is driven closed-loop (each connection sends its next request when
//! its answer has been read in full) with 1 and 32 connections, whole
//! answers and streams, for `PALISADE_GW_BENCH_SECS` seconds each (default
//! 5), in four placements (`PALISADE_GW_BENCH_PLACES`, default
//! `apart,process,shared,one-cpu`), a table each:
//!
//! - **apart**: the load, the upstream and each target each a process of
//!   its own, as a client, a gateway and a provider are (this binary re-run
//!   with `--upstream-child`, `--forwarder-child` / `--gateway-child`, and
//!   for each slice of load `--drive-child ... latencies`);
//! - **process**: the forwarder and each gateway run as a process of their
//!   own (this binary re-run with `--forwarder-child` / `--gateway-child`),
//!   on a runtime of their own, as they are deployed; the load and the
//!   upstream run in this process, on its runtime;
//! - **shared**: every target runs in this process, on the one runtime the
//!   load and the upstream run on, so each request's work crosses the same
//!   two worker threads as the load's and the upstream's;
//! - **one-cpu**: as apart, every process held to one CPU (this process's
//!   threads are, while the table runs, and the processes it starts
//!   inherit it): no request waits for another CPU to wake, and a target's
//!   throughput is the inverse of the three processes' CPU time a request.
//!
//! The targets take turns: each row's time is cut into
//! `PALISADE_GW_BENCH_ROUNDS` slices (default 24), and a round runs one
//! slice of each target, so that the machine's slow and fast spells fall on
//! all of them alike. Printed: requests/s, p50 and p99 latency (for
//! streams, time to the first body byte too) over all of a row's slices,
//! the latency each target adds over a direct call (its p50 and p99 less
//! the direct call's), the ratios to the forwarder (throughput, p50, added
//! p50) and to the direct call (throughput), and, each round's throughput
//! divided by the forwarder's in the same round, the median of those
//! ratios with the interval that holds the true median with 95%
//! probability (`benches::turns`: a host busy for a few rounds moves it by
//! a place, not by its size) and their lowest and highest (how much the
//! machine moved a single round). Read from `/proc` around each slice
//! (`benches::machine`): the target's own CPU time a request (its
//! process's threads', when it has a process of its own: apart, process
//! and one-cpu; in those tables the direct row's is the upstream's), and
//! its ratio to the forwarder's; the share
//! of the machine's CPU time its host stole while the row ran; and the
//! function-call interrupts a request (one CPU waking a task on another,
//! on this VM mostly a halted CPU the host must wake).
//!
//! Then memory: the gateway runs in a process of its own (this binary,
//! re-run with `--gateway-child`), and its resident memory is read from
//! `/proc` before and after 5 000 idle client connections, then 10 000
//! streams in progress (each also holding its upstream connection). Each
//! stream is two open files in the gateway and two here (the client's end
//! and the simulated upstream's): the bench raises its open-file limit
//! (soft to hard, and the hard one to 32 768 where it may, as root), the
//! child inheriting it, and opens fewer streams when the limit cannot hold
//! 10 000, saying so beside the figure scaled to 10 000. Skipped with
//! `PALISADE_GW_BENCH_MEMORY=0`.
//!
//! `PALISADE_GW_BENCH_PROMPT_BYTES` pads the user's message to that many
//! bytes (default: "hello"), for the cost of a long prompt.
//!
//! `PALISADE_GW_BENCH_ROWS` runs only the rows whose label ("shared whole
//! 32 palisade-gateway": placement, answer, connections, target) contains
//! it, for profiling one row (`shared whole 32 palisade`; `shared whole 32
//! palisade-gateway$` for the label that ends so, without the
//! served_headers off target);
//! ratios then need the forwarder's and the direct call's rows to have
//! run (`-` otherwise).
//!
//! `PALISADE_GW_BENCH_DECILES=1` also prints each row's latency deciles
//! (10% to 90%, µs) under the table: the fastest answers show what a
//! target's own work costs, the middle ones what the machine's wake-ups
//! add to it.
//!
//! For profiling one side alone under an outside load:
//! `gateway --gateway-child UPSTREAM_URL [CONFIG]` (CONFIG: lines added
//! to the gateway's `[gateway]` table) and `gateway --forwarder-child
//! UPSTREAM_URL` each print their address and serve until killed;
//! `gateway --upstream-child` does the same for the simulated upstream, and
//! `gateway --drive-child URL CONNECTIONS SECONDS whole|stream
//! [latencies]` is the load alone, printing how many answers it read (a
//! target's CPU time a request is then its process's, from `/proc`, over
//! that count) and, with `latencies`, each answer's latency and time to
//! its first byte in ns, a line each (the apart placement's load).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use benches::machine::Usage;
use benches::turns::Median;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

// The allocator palisade-gateway's binary runs on, so that the gateway
// measured here is the one that ships (the forwarder and the direct calls
// run on it too).
#[global_allocator]
static ALLOC: palisade_gateway::Allocator = palisade_gateway::Allocator;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

const WHOLE: &str = r#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#;
const STREAM: &str =
    r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hello"}]}"#;

fn client() -> HttpClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(c)
}

/// The bare forwarder: every request goes to `upstream` unchanged and its
/// answer comes back as it streams.
async fn forwarder(upstream: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Incoming>();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (client, upstream) = (client.clone(), upstream.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let (client, upstream) = (client.clone(), upstream.clone());
                    async move {
                        let (mut parts, body) = req.into_parts();
                        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                        parts.uri = format!("{upstream}{path}").parse().unwrap();
                        parts.headers.remove(hyper::header::HOST);
                        let res = match client
                            .request(hyper::Request::from_parts(parts, body))
                            .await
                        {
                            Ok(res) => res.map(|b| b.boxed()),
                            Err(_) => hyper::Response::builder()
                                .status(502)
                                .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
                                .unwrap(),
                        };
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// What one run measured: its answers' latencies (to the last byte and to
/// the first body byte), sorted, over `secs`.
struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
    first_p50: Duration,
    lat: Vec<Duration>,
    first: Vec<Duration>,
    secs: f64,
    /// The target's process's CPU time and the machine's steal and
    /// wake-ups over the run (no CPU time when the target shares this
    /// process).
    usage: Usage,
}

impl Run {
    fn new(mut lat: Vec<Duration>, mut first: Vec<Duration>, secs: f64) -> Run {
        lat.sort();
        first.sort();
        let pct = |v: &[Duration], p: f64| {
            v.get(((v.len().max(1) - 1) as f64 * p) as usize)
                .copied()
                .unwrap_or_default()
        };
        Run {
            rps: lat.len() as f64 / secs,
            p50: pct(&lat, 0.5),
            p99: pct(&lat, 0.99),
            first_p50: pct(&first, 0.5),
            lat,
            first,
            secs,
            usage: Usage::default(),
        }
    }

    /// The runs as one: every answer of each, over their time together.
    fn pool(runs: &[Run]) -> Run {
        let mut pooled = Run::new(
            runs.iter().flat_map(|r| r.lat.iter().copied()).collect(),
            runs.iter().flat_map(|r| r.first.iter().copied()).collect(),
            runs.iter().map(|r| r.secs).sum(),
        );
        if let Some((first, rest)) = runs.split_first() {
            pooled.usage = rest.iter().fold(first.usage, |u, r| u.add(&r.usage));
        }
        pooled
    }

    /// The target's CPU time a request, µs, when its process was read.
    fn cpu_us(&self) -> Option<f64> {
        let n = self.lat.len();
        self.usage
            .cpu_ns
            .filter(|_| n > 0)
            .map(|ns| ns as f64 / n as f64 / 1e3)
    }
}

/// `conns` connections, each sending `body` to `url` closed-loop for
/// `secs`; latency to the last byte, and to the first body byte.
async fn drive(url: &str, body: &'static str, conns: usize, secs: Duration) -> Run {
    let end = Instant::now() + secs;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        // A client per connection: its pool holds the one connection.
        let (client, url) = (client(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut first = Vec::new();
            while Instant::now() < end {
                let t0 = Instant::now();
                let req = hyper::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .unwrap();
                let res = client.request(req).await.expect("answered");
                assert!(res.status().is_success(), "{}", res.status());
                let mut b = res.into_body();
                let mut seen_first = false;
                while let Some(frame) = b.frame().await {
                    frame.expect("body");
                    if !seen_first {
                        first.push(t0.elapsed());
                        seen_first = true;
                    }
                }
                lat.push(t0.elapsed());
            }
            (lat, first)
        }));
    }
    let mut lat = Vec::new();
    let mut first = Vec::new();
    for t in tasks {
        let (l, f) = t.await.unwrap();
        lat.extend(l);
        first.extend(f);
    }
    Run::new(lat, first, secs.as_secs_f64())
}

/// A target of the load: its name, the URL it is called at, and its
/// process when it has one of its own (its CPU time is then read).
struct Target {
    name: &'static str,
    url: String,
    pid: Option<u32>,
}

/// [`drive`] here, or (`apart`) in a process of its own: this binary
/// re-run with `--drive-child URL CONNS SECS KIND latencies`, its answers'
/// latencies read back from its output.
async fn load(
    apart: bool,
    target: &Target,
    kind: &str,
    body: &'static str,
    conns: usize,
    secs: Duration,
) -> Run {
    let before = Usage::read(target.pid);
    let mut run = drive_load(apart, &target.url, kind, body, conns, secs).await;
    run.usage = Usage::read(target.pid).since(&before);
    run
}

/// [`load`]'s answers, without the readings of the machine around them.
async fn drive_load(
    apart: bool,
    url: &str,
    kind: &str,
    body: &'static str,
    conns: usize,
    secs: Duration,
) -> Run {
    if !apart {
        return drive(url, body, conns, secs).await;
    }
    let args = [
        "--drive-child".to_owned(),
        url.to_owned(),
        conns.to_string(),
        secs.as_secs_f64().to_string(),
        kind.to_owned(),
        "latencies".to_owned(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "the load's process failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines().skip(1);
    let mut read = || -> Vec<Duration> {
        lines
            .next()
            .unwrap_or_default()
            .split_ascii_whitespace()
            .map(|n| Duration::from_nanos(n.parse().unwrap()))
            .collect()
    };
    let (lat, first) = (read(), read());
    Run::new(lat, first, secs.as_secs_f64())
}

/// `v` with one decimal, or `-` when there is none.
fn shown_1(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.1}"))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The simulated upstream every target calls: no added latency, eight
/// tokens an answer, all at once.
async fn upstream() -> palisade_sim::SimHandle {
    sim("upstream", 8, 0).await
}

/// A simulated upstream answering at once with `tokens` tokens, one every
/// `token_interval_ms`.
async fn sim(name: &str, tokens: u32, token_interval_ms: u64) -> palisade_sim::SimHandle {
    palisade_sim::spawn(
        name,
        palisade_sim::Faults {
            latency_ms: 0,
            tokens,
            token_interval_ms,
            ..palisade_sim::Faults::default()
        },
    )
    .await
    .unwrap()
}

/// A gateway on loopback with the one upstream at `base` (model `m`),
/// `extra` added to its `[gateway]` table; bound, not yet serving.
async fn gateway(base: &str, extra: &str) -> palisade_gateway::Gateway {
    let cfg = format!(
        r#"
        [gateway]
        listen = "127.0.0.1:0"
        {extra}
        [upstreams.upstream]
        models = {{ "m" = "m" }}
        base_url = "{base}"
        "#
    );
    palisade_gateway::Gateway::bind(
        palisade_gateway::GatewayConfig::from_toml(&cfg).unwrap(),
        None,
    )
    .await
    .unwrap()
}

/// What the memory table's gateway child adds to its config: client
/// connections may idle for two minutes, and 12 000 connections and calls
/// may be in progress.
const MEMORY_EXTRA: &str =
    "header_timeout_ms = 120000\nmax_connections = 12000\n[palisade.defaults.bulkhead]\nmax_concurrent = 12000";

/// The child: a gateway on `base` with `extra` in its `[gateway]` table,
/// its address on stdout, serving until killed.
async fn gateway_child(base: &str, extra: &str) {
    let gw = gateway(base, extra).await;
    println!("{}", gw.local_addr().unwrap());
    let _ = gw.serve(std::future::pending()).await;
}

/// Child processes of this binary, killed when this is dropped (at the
/// end of the run, or when it panics).
#[derive(Default)]
struct Children(Vec<std::process::Child>);

impl Children {
    /// Runs this binary with `args` and returns the first line it prints
    /// (its address).
    fn start(&mut self, args: &[&str]) -> String {
        self.start_pid(args).0
    }

    /// [`start`](Self::start), and the child's process id.
    fn start_pid(&mut self, args: &[&str]) -> (String, u32) {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let pid = child.id();
        self.0.push(child);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(!line.trim().is_empty(), "{args:?} printed no address");
        (line.trim().to_owned(), pid)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A process's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Opens a streaming request on a connection of its own and reads until
/// its first token; the connection is kept open, the stream in progress.
async fn open_stream(addr: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{STREAM}",
        STREAM.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(5).any(|w| w == b"data:") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the first token");
        seen.extend_from_slice(&buf[..n]);
        assert!(
            !seen.starts_with(b"HTTP/1.1 ") || seen.starts_with(b"HTTP/1.1 200"),
            "refused: {}",
            String::from_utf8_lossy(&seen)
        );
    }
    conn
}

/// A gateway child on `base`, warmed by one stream through it (so its
/// pool and buffers exist): the child, its pid, its address and its
/// resident memory then.
async fn warm_child(base: &str) -> (Children, u32, String, u64) {
    let mut child = Children::default();
    let addr = child.start(&["--gateway-child", base, MEMORY_EXTRA]);
    let pid = child.0[0].id();
    drop(open_stream(&addr).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warm = rss_kib(pid);
    (child, pid, addr, warm)
}

/// The gateway's memory per idle connection and per stream in progress,
/// each in a gateway process of its own: memory freed by the first would
/// stay with the allocator and serve the second unseen.
async fn memory() {
    // Streams that last: a token every 100 ms, a thousand of them.
    let upstream = sim("slow", 1_000, 100).await;
    let base = upstream.base_url();

    let (child, pid, addr, idle_before) = warm_child(&base).await;
    const IDLE: usize = 5_000;
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with_idle = rss_kib(pid);
    drop(child);
    drop(idle);

    let (child, pid, addr, streams_before) = warm_child(&base).await;
    let streams_n = streams_to_open();
    let mut streams = Vec::with_capacity(streams_n);
    while streams.len() < streams_n {
        let opened: Vec<_> = (0..200.min(streams_n - streams.len()))
            .map(|_| {
                let addr = addr.clone();
                tokio::spawn(async move { open_stream(&addr).await })
            })
            .collect();
        for o in opened {
            streams.push(o.await.unwrap());
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with_streams = rss_kib(pid);
    drop(child);
    drop(streams);

    let per = |after: u64, before: u64, n: usize| {
        after.saturating_sub(before) as f64 * 1024.0 / n.max(1) as f64
    };
    println!("\nmemory of the gateway process (resident, from /proc), one upstream; a fresh process for each state\n");
    println!("| state | resident KiB | growth | per connection / stream |");
    println!("|---|---:|---:|---:|");
    println!("| serving, warm | {idle_before} | | |");
    println!(
        "| + {IDLE} idle client connections | {with_idle} | {} KiB | {:.1} KiB |",
        with_idle.saturating_sub(idle_before),
        per(with_idle, idle_before, IDLE) / 1024.0
    );
    println!("| serving, warm (another process) | {streams_before} | | |");
    println!(
        "| + {streams_n} streams in progress (each with its upstream connection) | {with_streams} | {} KiB | {:.1} KiB |",
        with_streams.saturating_sub(streams_before),
        per(with_streams, streams_before, streams_n) / 1024.0
    );
    if streams_n < STREAMS {
        println!(
            "| 10 000 streams, at that rate (the open-file limit, {}, holds {streams_n}) | | {:.0} MiB | |",
            palisade_gateway::open_files_limit().soft,
            per(with_streams, streams_before, streams_n) * STREAMS as f64 / 1024.0 / 1024.0
        );
    }
}

/// The streams the memory table opens when the open-file limit allows.
const STREAMS: usize = 10_000;

/// Raises this process's open-file limit as far as it may (the hard one
/// to 32 768 where it is lower and this process may raise it, as root;
/// then the soft one to the hard one), for the memory table's streams;
/// the gateway child inherits it.
fn raise_open_files() {
    let hard = palisade_gateway::open_files_limit().hard;
    if hard < 32_768 {
        let wanted = rustix::process::Rlimit {
            current: Some(32_768),
            maximum: Some(32_768),
        };
        // Refused without the privilege: the hard limit stays.
        let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, wanted);
    }
    let _ = palisade_gateway::raise_open_files_limit();
}

/// [`STREAMS`], or as many as the open-file limit holds: each stream is
/// two files here and two in the gateway child, with 500 kept for the
/// rest (the 5 000 idle connections are closed before).
fn streams_to_open() -> usize {
    let limit = palisade_gateway::open_files_limit().soft;
    (limit.saturating_sub(500) / 2).min(STREAMS as u64) as usize
}

/// The speed rows' settings.
struct Bench<'a> {
    /// `PALISADE_GW_BENCH_ROWS`: the rows whose label holds it.
    only: &'a str,
    rounds: u32,
    secs: Duration,
    /// Each answer's kind and the request that asks for it.
    bodies: [(&'static str, &'static str); 2],
}

impl Bench<'_> {
    /// The table of `targets` placed as `placement` says: every row whose
    /// label (`"{placement} {answer} {connections} {target}"`) the
    /// filter lets through, the targets taking turns.
    async fn table(&self, placement: &str, targets: &[Target]) {
        let heading = match placement {
            "apart" => "the load, the upstream and each target each a process of its own",
            "one-cpu" => "as apart, every process on one CPU",
            "process" => "each target a process of its own (as deployed); the load and the upstream in this one",
            _ => "every target in this process, on the one runtime the load and the upstream run on",
        };
        // Each slice of load a process of its own.
        let apart = matches!(placement, "apart" | "one-cpu");
        let mut printed = false;
        let deciles = std::env::var("PALISADE_GW_BENCH_DECILES").is_ok_and(|v| v == "1");
        let mut shown_deciles = Vec::new();
        for (kind, body) in self.bodies {
            for conns in [1, 32] {
                let chosen: Vec<_> = targets
                    .iter()
                    .filter(|t| {
                        let label = format!("{placement} {kind} {conns} {}", t.name);
                        // A filter ending in `$` must end the label too.
                        match self.only.strip_suffix('$') {
                            Some(end) => label.ends_with(end),
                            None => label.contains(self.only),
                        }
                    })
                    .collect();
                if chosen.is_empty() {
                    continue;
                }
                for target in &chosen {
                    // Warm the pools and the upstream.
                    let _ =
                        load(apart, target, kind, body, conns, Duration::from_millis(300)).await;
                }
                // The targets take turns, a slice each per round, so that a
                // change in what the machine's neighbours take falls on all of
                // them alike.
                let mut runs: Vec<(&str, Vec<Run>)> =
                    chosen.iter().map(|t| (t.name, Vec::new())).collect();
                for _ in 0..self.rounds {
                    for (target, (_, slices)) in chosen.iter().zip(&mut runs) {
                        let slice = self.secs / self.rounds;
                        slices.push(load(apart, target, kind, body, conns, slice).await);
                    }
                }
                let pooled: Vec<(&str, Run, &[Run])> = runs
                    .iter()
                    .map(|(name, slices)| (*name, Run::pool(slices), slices.as_slice()))
                    .collect();
                let fwd = pooled.iter().find(|(name, ..)| *name == "bare forwarder");
                let direct = pooled.iter().find(|(name, ..)| *name == "direct");
                for (name, r, slices) in &pooled {
                    let ratio = |f: &dyn Fn(&Run) -> f64| {
                        fwd.map_or("-".to_owned(), |(_, fwd, _)| {
                            format!("{:.2}", f(r) / f(fwd))
                        })
                    };
                    // What a target adds to a direct call: its percentile
                    // less the direct call's (`-` without the direct row).
                    let added =
                        |p: &dyn Fn(&Run) -> Duration| direct.map(|(_, d, _)| us(p(r)) - us(p(d)));
                    let shown = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
                    let added_ratio = match (added(&|r| r.p50), fwd, direct) {
                        (Some(mine), Some((_, f, _)), Some((_, d, _))) if *name != "direct" => {
                            format!("{:.2}", mine / (us(f.p50) - us(d.p50)))
                        }
                        _ => "-".to_owned(),
                    };
                    let vs_direct =
                        direct.map_or("-".to_owned(), |(_, d, _)| format!("{:.2}", r.rps / d.rps));
                    // The throughput ratio of each round alone: how far the
                    // machine moved it.
                    let (middle, spread) =
                        fwd.map_or(("-".to_owned(), "-".to_owned()), |(_, _, fwd_slices)| {
                            let each: Vec<f64> = slices
                                .iter()
                                .zip(*fwd_slices)
                                .map(|(s, f)| s.rps / f.rps)
                                .collect();
                            let lo = each.iter().copied().fold(f64::INFINITY, f64::min);
                            let hi = each.iter().copied().fold(0.0, f64::max);
                            let middle = match Median::of(&each) {
                                Some(Median {
                                    median,
                                    interval: Some((low, high)),
                                }) => format!("{median:.2} ({low:.2}-{high:.2})"),
                                Some(m) => format!("{:.2}", m.median),
                                None => "-".to_owned(),
                            };
                            (middle, format!("{lo:.2}-{hi:.2}"))
                        });
                    // The target's own CPU time a request (its process's, all
                    // threads), when it has a process of its own.
                    let cpu = shown_1(r.cpu_us());
                    let cpu_ratio = match (r.cpu_us(), fwd.and_then(|(_, f, _)| f.cpu_us())) {
                        (Some(mine), Some(theirs)) if theirs > 0.0 => {
                            format!("{:.2}", mine / theirs)
                        }
                        _ => "-".to_owned(),
                    };
                    if !printed {
                        println!("\n{placement}: {heading}\n");
                        println!("| answer | connections | target | req/s | p50 µs | p99 µs | added p50 µs | added p99 µs | first byte p50 µs | req/s vs forwarder | median turn (95%) | each turn | p50 vs forwarder | added p50 vs forwarder | req/s vs direct | CPU µs a request | CPU vs forwarder | steal | wake-up IPIs a request |");
                        println!(
                            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
                        );
                        printed = true;
                    }
                    if deciles {
                        let at = |i: usize| {
                            let n = r.lat.len().max(1) - 1;
                            us(r.lat.get(n * i / 10).copied().unwrap_or_default())
                        };
                        let each: Vec<String> = (1..10).map(|i| format!("{:.0}", at(i))).collect();
                        shown_deciles.push(format!(
                            "{placement} {kind} {conns} {name}: {}",
                            each.join(" ")
                        ));
                    }
                    println!(
                        "| {kind} | {conns} | {name} | {:.0} | {:.0} | {:.0} | {} | {} | {:.0} | {} | {middle} | {spread} | {} | {added_ratio} | {vs_direct} | {cpu} | {cpu_ratio} | {:.0}% | {:.1} |",
                        r.rps,
                        us(r.p50),
                        us(r.p99),
                        shown(added(&|r| r.p50)),
                        shown(added(&|r| r.p99)),
                        us(r.first_p50),
                        ratio(&|r| r.rps),
                        ratio(&|r| us(r.p50)),
                        r.usage.steal_share() * 100.0,
                        r.usage.ipis as f64 / r.lat.len().max(1) as f64,
                    );
                }
            }
        }
        if !shown_deciles.is_empty() {
            println!("\nlatency deciles, 10% to 90% (µs):\n");
            for line in shown_deciles {
                println!("- {line}");
            }
        }
    }
}

/// A longer prompt, when asked for: the user's message padded with words
/// to `PALISADE_GW_BENCH_PROMPT_BYTES` bytes (the simulated upstream reads
/// it too).
fn prompt() -> Option<String> {
    std::env::var("PALISADE_GW_BENCH_PROMPT_BYTES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map(|n| "lorem ipsum dolor sit amet ".repeat(n / 27 + 1)[..n].to_owned())
}

/// The requests for a whole answer and for a stream, with `prompt` (see
/// [`prompt`]; the load's child process reads the same variable) as the
/// user's message when one is asked for.
fn bodies(prompt: Option<&str>) -> (&'static str, &'static str) {
    match prompt {
        Some(p) => (
            &*WHOLE.replace("hello", p).leak(),
            &*STREAM.replace("hello", p).leak(),
        ),
        None => (WHOLE, STREAM),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag] = args.as_slice() {
        if flag == "--upstream-child" {
            // The simulated upstream alone: its base URL on stdout.
            println!("{}", upstream().await.base_url());
            std::future::pending::<()>().await;
        }
    }
    if let [_, flag, url, conns, secs, kind, more @ ..] = args.as_slice() {
        if flag == "--drive-child" && more.len() <= 1 {
            // The load alone, so that a target's own process can be
            // measured: `conns` connections for `secs` seconds, `whole` or
            // `stream` answers; the answers counted on stdout, then with
            // `latencies` their latencies and first bytes (ns) on a line
            // each.
            let (whole, stream) = bodies(prompt().as_deref());
            let body = if kind == "stream" { stream } else { whole };
            let secs = Duration::from_secs_f64(secs.parse().expect("seconds"));
            let run = drive(url, body, conns.parse().expect("connections"), secs).await;
            println!("{}", run.lat.len());
            if more.first().is_some_and(|m| m == "latencies") {
                let ns = |v: &[Duration]| {
                    v.iter()
                        .map(|d| d.as_nanos().to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                println!("{}", ns(&run.lat));
                println!("{}", ns(&run.first));
            }
            return;
        }
    }
    if let [_, flag, base, extra @ ..] = args.as_slice() {
        if flag == "--gateway-child" && extra.len() <= 1 {
            // CONFIG, when given: lines added to its `[gateway]` table.
            gateway_child(base, extra.first().map_or("", String::as_str)).await;
            return;
        }
    }
    if let [_, flag, base] = args.as_slice() {
        if flag == "--forwarder-child" {
            // The bare forwarder alone, for profiling beside a gateway
            // child: its address on stdout, serving until killed.
            println!("{}", forwarder(base.clone()).await);
            std::future::pending::<()>().await;
        }
    }
    let secs = Duration::from_secs(
        std::env::var("PALISADE_GW_BENCH_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5),
    );
    let upstream = upstream().await;
    let base = upstream.base_url();
    let only = std::env::var("PALISADE_GW_BENCH_ROWS").unwrap_or_default();
    let rounds = std::env::var("PALISADE_GW_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|&r| r > 0)
        .unwrap_or(24);
    let prompt = prompt();
    let (whole, stream) = bodies(prompt.as_deref());
    println!(
        "closed loop, {} s per row in {rounds} turns; one simulated upstream with no added latency; all on loopback",
        secs.as_secs()
    );
    if let Some(p) = &prompt {
        println!("the user's message: {} bytes", p.len());
    }
    let placements = std::env::var("PALISADE_GW_BENCH_PLACES")
        .unwrap_or_else(|_| "apart,process,shared,one-cpu".to_owned());
    let bench = Bench {
        only: &only,
        rounds,
        secs,
        bodies: [("whole", whole), ("stream", stream)],
    };
    let mut children = Children::default();
    for placement in placements.split(',').map(str::trim) {
        // On one CPU: this process's threads, and so every process it
        // starts from now on, may run on one CPU only, until the table is
        // done.
        let pinned = match placement {
            "one-cpu" => match OneCpu::pin() {
                Ok(pinned) => Some(pinned),
                // A container may forbid it: the other tables stand.
                Err(e) => {
                    eprintln!("one-cpu placement skipped: this process cannot hold its threads to one CPU ({e})");
                    continue;
                }
            },
            _ => None,
        };
        // Apart, the upstream too is a process of its own.
        let (base, upstream_pid) = match placement {
            "apart" | "one-cpu" => {
                let (url, pid) = children.start_pid(&["--upstream-child"]);
                (url, Some(pid))
            }
            _ => (base.clone(), None),
        };
        // Each target, and its process when it has one.
        let (fwd, gw, quiet) = match placement {
            // A client, a gateway and a provider: each a process; or, as
            // deployed, the forwarder and each gateway a process of its
            // own, on its own runtime, the load and the upstream here.
            "apart" | "process" | "one-cpu" => {
                let own = |(addr, pid): (String, u32)| (addr, Some(pid));
                (
                    own(children.start_pid(&["--forwarder-child", &base])),
                    own(children.start_pid(&["--gateway-child", &base, ""])),
                    own(children.start_pid(&["--gateway-child", &base, "served_headers = false"])),
                )
            }
            // Every target in this process, on the runtime the load and
            // the upstream run on.
            "shared" => {
                let fwd = forwarder(base.clone()).await;
                let gw = gateway(&base, "").await;
                let gw_addr = gw.local_addr().unwrap();
                tokio::spawn(gw.serve(std::future::pending()));
                let quiet = gateway(&base, "served_headers = false").await;
                let quiet_addr = quiet.local_addr().unwrap();
                tokio::spawn(quiet.serve(std::future::pending()));
                (
                    (fwd.to_string(), None),
                    (gw_addr.to_string(), None),
                    (quiet_addr.to_string(), None),
                )
            }
            other => {
                panic!("PALISADE_GW_BENCH_PLACES: {other:?} is none of apart, process, shared, one-cpu")
            }
        };
        let path = "/v1/chat/completions";
        let at = |name, (addr, pid): (String, Option<u32>)| Target {
            name,
            url: format!("http://{addr}{path}"),
            pid,
        };
        let targets = [
            Target {
                name: "direct",
                url: format!("{base}{path}"),
                pid: upstream_pid,
            },
            at("bare forwarder", fwd),
            at("palisade-gateway", gw),
            at("palisade-gateway, served_headers off", quiet),
        ];
        bench.table(placement, &targets).await;
        drop(pinned);
    }
    drop(children);
    if std::env::var("PALISADE_GW_BENCH_MEMORY").as_deref() != Ok("0") {
        raise_open_files();
        memory().await;
    }
}

/// This process's threads held to one CPU (the first they may run on),
/// and with them every process started from one of them while this
/// lives (a child inherits its parent thread's CPUs); dropped, the threads
/// may run where they could before.
struct OneCpu {
    before: Vec<(rustix::process::Pid, rustix::thread::CpuSet)>,
}

impl OneCpu {
    fn pin() -> std::io::Result<OneCpu> {
        use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
        let mine = sched_getaffinity(None)?;
        let first = (0..CpuSet::MAX_CPU)
            .find(|&c| mine.is_set(c))
            .ok_or_else(|| std::io::Error::other("this thread may run on no CPU"))?;
        let mut one = CpuSet::new();
        one.set(first);
        let mut pinned = OneCpu { before: Vec::new() };
        for tid in threads()? {
            // A thread that ended meanwhile is not there to pin.
            let Ok(before) = sched_getaffinity(Some(tid)) else {
                continue;
            };
            if sched_setaffinity(Some(tid), &one).is_ok() {
                pinned.before.push((tid, before));
            }
        }
        Ok(pinned)
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        for (tid, before) in &self.before {
            let _ = rustix::thread::sched_setaffinity(Some(*tid), before);
        }
    }
}

/// This process's threads (see [`benches::machine::threads`]).
fn threads() -> std::io::Result<Vec<rustix::process::Pid>> {
    Ok(benches::machine::threads("self")?
        .into_iter()
        .filter_map(|tid| rustix::process::Pid::from_raw(i32::try_from(tid).ok()?))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPUs a thread may run on, as `/proc` lists them.
    fn allowed(tid: rustix::process::Pid) -> String {
        let status =
            std::fs::read_to_string(format!("/proc/self/task/{}/status", tid.as_raw_nonzero()))
                .unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("Cpus_allowed_list:"))
            .unwrap();
        line.split_whitespace().nth(1).unwrap().to_owned()
    }

    #[test]
    fn every_thread_and_child_runs_on_one_cpu_until_unpinned() {
        // Another thread, made before pinning, is pinned too.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let before: Vec<_> = threads()
            .unwrap()
            .into_iter()
            .map(|t| (t, allowed(t)))
            .collect();
        assert!(before.len() >= 2);
        let pinned = OneCpu::pin().unwrap();
        let first = before[0].1.split([',', '-']).next().unwrap().to_owned();
        for (tid, _) in &before {
            assert_eq!(allowed(*tid), first, "thread {tid:?}");
        }
        // A child started now inherits it.
        let child = std::process::Command::new("cat")
            .arg("/proc/self/status")
            .output()
            .unwrap();
        let child = String::from_utf8(child.stdout).unwrap();
        assert!(
            child
                .lines()
                .any(|l| l == format!("Cpus_allowed_list:\t{first}")),
            "{child}"
        );
        drop(pinned);
        for (tid, was) in &before {
            assert_eq!(&allowed(*tid), was, "thread {tid:?}");
        }
        tx.send(()).unwrap();
        other.join().unwrap().unwrap();
    }
}
