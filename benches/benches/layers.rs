//! Criterion micro-benchmarks of each palisade layer's own cost, outside
//! any runtime: one `ready().call()` driven to completion with
//! `now_or_never` over a service that answers at once. These isolate the
//! layer from the scheduler (the side-by-side bench measures inside tokio,
//! against the peers).
//!
//! Run with `cargo bench -p benches --bench layers`.

use std::hint::black_box;
use std::time::Duration;

use benches::{ours, Bare, Req};
use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use palisade_core::{RejectReason, Rejected, WithDeadline};
use tower::{Service, ServiceExt};

fn one_call<S>(svc: &mut S, i: u64) -> bool
where
    S: Service<Req>,
{
    let ready = svc.ready().now_or_never().expect("ready at once");
    let Ok(ready) = ready else { return false };
    ready
        .call(WithDeadline::new(i))
        .now_or_never()
        .expect("answers at once")
        .is_ok()
}

fn bench_service<S: Service<Req>>(c: &mut Criterion, name: &str, mut svc: S, expect_ok: bool) {
    let mut i = 0u64;
    c.bench_function(name, |b| {
        b.iter(|| {
            i += 1;
            let ok = one_call(&mut svc, black_box(i));
            assert_eq!(ok, expect_ok, "{name}: wrong path measured");
        })
    });
}

fn layers(c: &mut Criterion) {
    // Layers that arm timers or read tokio's clock need a runtime context.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();

    bench_service(c, "bare", Bare, true);
    bench_service(c, "breaker/closed", ours::breaker_closed(), true);
    bench_service(c, "breaker/open (rejection)", ours::breaker_open(), false);
    bench_service(c, "bulkhead", ours::bulkhead(), true);
    bench_service(c, "retry + ratio budget", ours::retry(), true);
    bench_service(c, "attempt timeout", ours::attempt_timeout(), true);
    bench_service(c, "request deadline", ours::deadline(), true);
    bench_service(c, "default stack", ours::stack(), true);

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
