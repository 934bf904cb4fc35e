//! The side-by-side harness: measures the success-path cost per call of
//! palisade's layers and their peers (tower, tower-resilience, failsafe) in
//! one process, and prints a table with medians and ratios.
//!
//! Each stack is measured through `ready().call()` against a bare service
//! that answers at once, in two modes:
//!
//! - one task on a current-thread runtime;
//! - 64 tasks on a 2-worker multi-thread runtime, each on its own clone.
//!
//! A measurement is the median ns/call of several runs.
#![allow(missing_docs, unreachable_pub)]

pub mod machine;
pub mod ours;
pub mod peers;
mod side_by_side;
pub mod turns;

pub use side_by_side::side_by_side;

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use palisade_core::WithDeadline;
use tower::{Service, ServiceExt};

/// The request every stack is called with.
pub type Req = WithDeadline<u64>;

/// The error the bare service declares (it never returns one).
#[derive(Debug, Clone)]
pub struct BenchError;

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bench error")
    }
}

impl std::error::Error for BenchError {}

/// A service that is always ready and answers at once: the floor every row
/// is compared to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bare;

impl Service<Req> for Bare {
    type Response = u64;
    type Error = BenchError;
    type Future = std::future::Ready<Result<u64, BenchError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BenchError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        std::future::ready(Ok(*req.get_ref()))
    }
}

/// A service whose answer is pending on the first poll (it wakes itself)
/// and ready on the second: the shape of a real network call, which makes
/// timeout layers arm their timers.
#[derive(Debug, Clone, Copy, Default)]
pub struct YieldOnce;

/// The future of [`YieldOnce`].
#[derive(Debug)]
pub struct YieldOnceFuture {
    value: u64,
    polled: bool,
}

impl Future for YieldOnceFuture {
    type Output = Result<u64, BenchError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.polled {
            return Poll::Ready(Ok(self.value));
        }
        self.polled = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Service<Req> for YieldOnce {
    type Response = u64;
    type Error = BenchError;
    type Future = YieldOnceFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BenchError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        YieldOnceFuture {
            value: *req.get_ref(),
            polled: false,
        }
    }
}

/// A service that always fails, for measuring rejection paths.
#[derive(Debug, Clone, Copy, Default)]
pub struct Failing;

impl Service<Req> for Failing {
    type Response = u64;
    type Error = BenchError;
    type Future = std::future::Ready<Result<u64, BenchError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BenchError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Req) -> Self::Future {
        std::future::ready(Err(BenchError))
    }
}

/// How much work one measurement does.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Calls per run (split across tasks in the 64-task mode).
    pub calls: u64,
    /// Runs per measurement; the median is reported.
    pub runs: usize,
    /// Tasks in the concurrent mode.
    pub tasks: u64,
    /// Rounds of the whole table; each figure is the median of its rounds.
    pub rounds: usize,
}

impl Settings {
    /// Reads `PALISADE_BENCH_CALLS`, `PALISADE_BENCH_RUNS` and
    /// `PALISADE_BENCH_ROUNDS` (defaults 200 000, 7 and 3).
    pub fn from_env() -> Self {
        let calls = std::env::var("PALISADE_BENCH_CALLS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000);
        let runs = std::env::var("PALISADE_BENCH_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(7);
        let rounds = std::env::var("PALISADE_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        Settings {
            calls,
            runs,
            tasks: 64,
            rounds,
        }
    }
}

/// Median ns/call in both modes.
#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    pub one_task: f64,
    pub many_tasks: f64,
}

type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Drives `calls` calls through `svc` (`ready().await`, then
/// `call(..).await`); panics when a call takes the other path than
/// `expect_ok` names, which would mean the row is not measuring what it
/// says.
pub async fn drive<S>(mut svc: S, calls: u64, expect_ok: bool)
where
    S: Service<Req>,
    S::Error: Debug,
{
    for i in 0..calls {
        let ready = svc.ready().await;
        let ready = match ready {
            Ok(r) => r,
            Err(e) => panic!("service not ready: {e:?}"),
        };
        let res = ready.call(WithDeadline::new(i)).await;
        if expect_ok {
            res.expect("success path must succeed");
        } else {
            assert!(res.is_err(), "rejection path must fail");
        }
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Measures the stack `make` builds. `make` is called inside the runtime,
/// once per run; `expect_ok` says whether calls must succeed (success path)
/// or fail (rejection path). `prime` runs once on each fresh service before
/// timing (for example to trip a breaker).
pub fn measure<S, F>(settings: &Settings, expect_ok: bool, make: F) -> Measurement
where
    F: Fn() -> S,
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Debug + Send,
{
    let one = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut samples = Vec::new();
    // warm-up run, not counted
    for run in 0..=settings.runs {
        let svc = one.block_on(async { make() });
        let start = Instant::now();
        one.block_on(drive(svc, settings.calls, expect_ok));
        let ns = start.elapsed().as_nanos() as f64 / settings.calls as f64;
        if run > 0 {
            samples.push(ns);
        }
    }
    let one_task = median(samples);

    let many = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let per_task = (settings.calls / settings.tasks).max(1);
    let total = per_task * settings.tasks;
    let mut samples = Vec::new();
    for run in 0..=settings.runs {
        let svc = many.block_on(async { make() });
        let start = Instant::now();
        many.block_on(async {
            let handles: Vec<_> = (0..settings.tasks)
                .map(|_| {
                    let fut: BoxFut = Box::pin(drive(svc.clone(), per_task, expect_ok));
                    tokio::spawn(fut)
                })
                .collect();
            for h in handles {
                h.await.unwrap();
            }
        });
        let ns = start.elapsed().as_nanos() as f64 / total as f64;
        if run > 0 {
            samples.push(ns);
        }
    }
    Measurement {
        one_task,
        many_tasks: median(samples),
    }
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Which comparison the row belongs to ("breaker", "stack"...).
    pub group: &'static str,
    /// Who made it: "palisade", "tower", "tower-resilience", "failsafe", "-".
    pub who: &'static str,
    /// What was measured.
    pub what: String,
    pub m: Measurement,
}

/// Renders rows as a markdown table with each row's ratio to the bare
/// service and, for palisade rows, the speed-up over the fastest and
/// slowest peer of the same group.
pub fn render(rows: &[Row], settings: &Settings) -> String {
    use std::fmt::Write;
    let bare = rows
        .iter()
        .find(|r| r.group == "bare")
        .map(|r| r.m)
        .expect("a bare row");
    let mut out = String::new();
    writeln!(
        out,
        "ns/call through ready().call(), median over {} rounds of the median of {} runs of {} calls; one task on a current-thread runtime, {} tasks on 2 workers\n",
        settings.rounds.max(1), settings.runs, settings.calls, settings.tasks
    )
    .unwrap();
    writeln!(
        out,
        "| group | who | stack | 1 task ns | ×bare | {} tasks ns | ×bare | palisade speed-up vs peers (1 task / {} tasks) |",
        settings.tasks, settings.tasks
    )
    .unwrap();
    writeln!(out, "|---|---|---|---:|---:|---:|---:|---|").unwrap();
    for r in rows {
        let mut vs = String::new();
        if r.who == "palisade" {
            for p in rows
                .iter()
                .filter(|p| p.group == r.group && p.who != "palisade")
            {
                write!(
                    vs,
                    "{} {:.1}× / {:.1}×; ",
                    p.who,
                    p.m.one_task / r.m.one_task,
                    p.m.many_tasks / r.m.many_tasks
                )
                .unwrap();
            }
        }
        writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.group,
            r.who,
            r.what,
            r.m.one_task,
            r.m.one_task / bare.one_task,
            r.m.many_tasks,
            r.m.many_tasks / bare.many_tasks,
            vs.trim_end_matches("; ")
        )
        .unwrap();
    }
    out
}

/// Time budget helper for stacks that take a timeout: long enough never to
/// fire during a benchmark.
pub const LONG: Duration = Duration::from_secs(3600);
