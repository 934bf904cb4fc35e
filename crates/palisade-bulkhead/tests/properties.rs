//! Property test: random calls, cancellations, clock steps and resizes
//! against the bulkhead's invariants, on the paused clock; and a stress
//! test with many tasks on a multi-thread runtime.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_bulkhead::BulkheadLayer;
use palisade_core::BoxError;
use proptest::prelude::*;
use tower::{Layer, ServiceExt};

type BoxFut = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>>;

#[derive(Debug, Clone)]
enum Op {
    /// A call that takes this many ms at the provider.
    Call(u64),
    /// Cancel the n-th live call (modulo their count).
    Cancel(usize),
    /// Let this many ms pass.
    Advance(u64),
    /// Set the limit.
    Resize(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..20).prop_map(Op::Call),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => (0u64..10).prop_map(Op::Advance),
        1 => (1usize..6).prop_map(Op::Resize),
    ]
}

/// Counts a call out of the provider when dropped.
struct Out(Arc<AtomicUsize>);

impl Drop for Out {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn run(ops: Vec<Op>, max_waiting: usize, max_wait: Option<u64>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let layer = BulkheadLayer::builder()
            .max_concurrent(3)
            .max_waiting(max_waiting)
            .max_wait(max_wait.map(Duration::from_millis))
            .build()
            .unwrap();
        let handle = layer.handle();
        let now = Arc::new(AtomicUsize::new(0));
        let n2 = now.clone();
        let svc = layer.layer(tower::service_fn(move |ms: u64| {
            let now = n2.clone();
            now.fetch_add(1, Ordering::SeqCst);
            let out = Out(now);
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                drop(out);
                Ok::<_, BoxError>(())
            }
        }));
        let mut live = Vec::new();
        let mut limit = 3usize;
        let mut highest = 3usize;
        for op in ops {
            match op {
                Op::Call(ms) => live.push(tokio::spawn(svc.clone().oneshot(ms))),
                Op::Cancel(i) if !live.is_empty() => {
                    let t: tokio::task::JoinHandle<_> = live.swap_remove(i % live.len());
                    t.abort();
                }
                Op::Cancel(_) => {}
                Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                Op::Resize(n) => {
                    handle.set_max_concurrent(n).unwrap();
                    limit = n;
                    highest = highest.max(n);
                }
            }
            settle().await;
            live.retain(|t| !t.is_finished());
            let snap = handle.snapshot();
            let inner = now.load(Ordering::SeqCst);
            prop_assert_eq!(snap.in_flight, inner, "slots held = calls at the provider");
            prop_assert!(
                inner <= highest,
                "{} in flight, limit never above {}",
                inner,
                highest
            );
            prop_assert!(snap.waiting <= max_waiting);
            if snap.waiting > 0 {
                prop_assert!(snap.in_flight >= limit, "a call waits while a slot is free");
            }
            prop_assert!(snap.in_flight + snap.waiting <= live.len());
        }
        // Everything ends: back to idle, with the whole limit available.
        for t in &live {
            t.abort();
        }
        settle().await;
        let snap = handle.snapshot();
        prop_assert_eq!((snap.in_flight, snap.waiting), (0, 0));
        prop_assert_eq!(now.load(Ordering::SeqCst), 0);
        let burst: Vec<_> = (0..limit)
            .map(|_| tokio::spawn(svc.clone().oneshot(5)))
            .collect();
        settle().await;
        prop_assert_eq!(handle.snapshot().in_flight, limit, "every slot came back");
        prop_assert_eq!(handle.snapshot().waiting, 0);
        for t in burst {
            t.await.unwrap().unwrap();
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn invariants_hold_under_random_traffic(
        ops in proptest::collection::vec(op(), 1..80),
        max_waiting in 0usize..6,
        max_wait in proptest::option::of(1u64..15),
    ) {
        run(ops, max_waiting, max_wait)?;
    }
}

/// Many tasks on several threads, with cancellations and resizes racing
/// the calls: never more in flight than the highest limit, and idle after.
#[test]
fn stress_many_tasks_with_cancellation_and_resizes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let layer = BulkheadLayer::builder()
            .max_concurrent(8)
            .max_waiting(32)
            .build()
            .unwrap();
        let handle = layer.handle();
        let now = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let (n2, m2) = (now.clone(), max.clone());
        let svc = layer.layer(tower::service_fn(move |spin: u32| {
            let (now, max) = (n2.clone(), m2.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                // Counted out even when the call is cancelled mid-way.
                let _out = Out(now);
                for _ in 0..spin {
                    tokio::task::yield_now().await;
                }
                Ok::<_, BoxError>(())
            }
        }));
        let resizer = {
            let handle = handle.clone();
            tokio::spawn(async move {
                for i in 0..200usize {
                    handle.set_max_concurrent(2 + i % 7).unwrap();
                    tokio::task::yield_now().await;
                }
                handle.set_max_concurrent(8).unwrap();
            })
        };
        let mut tasks = Vec::new();
        for t in 0..64u32 {
            let svc = svc.clone();
            tasks.push(tokio::spawn(async move {
                let mut ok = 0u32;
                for i in 0..300u32 {
                    let mut call: BoxFut = Box::pin(svc.clone().oneshot((t + i) % 5));
                    if (t + i) % 11 == 0 {
                        // Give up after a few polls.
                        for _ in 0..2 {
                            if futures_poll(&mut call).is_ready() {
                                break;
                            }
                            tokio::task::yield_now().await;
                        }
                    } else if call.await.is_ok() {
                        ok += 1;
                    }
                }
                ok
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += t.await.unwrap();
        }
        resizer.await.unwrap();
        assert!(ok > 0);
        assert!(max.load(Ordering::SeqCst) <= 8, "highest limit is 8");
        let snap = handle.snapshot();
        assert_eq!((snap.in_flight, snap.waiting), (0, 0), "{snap:?}");
        assert!(
            snap.queued > 0 && snap.rejected > 0,
            "the queue was exercised: {snap:?}"
        );
        // All eight slots are back.
        let _held: Vec<_> = (0..8)
            .map(|_| svc.clone().oneshot(1_000_000))
            .map(Box::pin)
            .map(|mut f| {
                assert!(futures_poll(&mut f).is_pending());
                f
            })
            .collect();
        assert_eq!(handle.in_flight(), 8);
    });
}

fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(f).poll(&mut cx)
}
