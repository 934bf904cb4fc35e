//! Criterion micro-benchmarks of each palisade layer's own cost: calls
//! through `ready().await` and `call(..).await` on a current-thread tokio
//! runtime, over a service that answers at once, with criterion's
//! statistics (the side-by-side bench puts the same rows beside the peers').
//! Reference rows say what the pieces cost on this machine.
//!
//! Run with `cargo bench -p benches --bench layers`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use benches::{ours, Bare, Req};
use criterion::{criterion_group, criterion_main, Criterion};
use palisade_core::{RejectReason, Rejected};
use tower::Service;

/// Measures `iters` calls through `svc` inside the runtime, the way a
/// service is driven in production (and as the side-by-side harness does):
/// `ready().await`, then `call(..).await`.
fn bench_service<S>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    mut svc: S,
    expect_ok: bool,
) where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                benches::drive(&mut svc, iters, expect_ok).await;
                start.elapsed()
            })
        })
    });
}

fn layers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();

    bench_service(c, &rt, "bare", Bare, true);
    bench_service(c, &rt, "breaker/closed", ours::breaker_closed(), true);
    bench_service(
        c,
        &rt,
        "breaker/open (rejection)",
        ours::breaker_open(),
        false,
    );
    bench_service(c, &rt, "bulkhead", ours::bulkhead(), true);
    bench_service(c, &rt, "retry + ratio budget", ours::retry(), true);
    bench_service(c, &rt, "attempt timeout", ours::attempt_timeout(), true);
    bench_service(c, &rt, "request deadline", ours::deadline(), true);
    bench_service(c, &rt, "default stack", ours::stack(), true);

    // What the pieces cost on this machine, for reading the rows above.
    c.bench_function("reference/tokio Instant::now", |b| {
        b.iter(tokio::time::Instant::now)
    });
    let atomic = std::sync::atomic::AtomicU64::new(0);
    c.bench_function("reference/fetch_add", |b| {
        b.iter(|| atomic.fetch_add(1, std::sync::atomic::Ordering::AcqRel))
    });
    let striped = palisade_core::StripedCounter::default();
    c.bench_function("reference/StripedCounter::add", |b| {
        b.iter(|| striped.add(1))
    });
    c.bench_function("reference/std Instant::now", |b| {
        b.iter(std::time::Instant::now)
    });
    c.bench_function("reference/Box<Rejected> as BoxError", |b| {
        b.iter(|| {
            let e: palisade_core::BoxError = Box::new(
                Rejected::new(RejectReason::BulkheadFull)
                    .with_retry_after(black_box(Duration::from_secs(1))),
            );
            black_box(e)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = layers
}
criterion_main!(benches);
