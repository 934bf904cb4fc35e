//! The cache's three uses (stale-if-error, fresh hits, coalescing) on
//! plain values, on tokio's paused clock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_cache::{hash_bytes, CacheLayer, CacheSettings, CloneRecord, Lookup, Replay};
use palisade_core::{classify_error, BoxError, Classified, FailureKind, SharedError};
use tower::{service_fn, Layer, Service, ServiceExt};

/// A provider: counts its calls, fails while `down`, answers `prompt!`
/// (or "caller error" for a prompt starting with `bad`), and holds every
/// call until `gate` opens.
#[derive(Clone, Default)]
struct Provider {
    calls: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
    gate: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Provider {
    fn service(
        &self,
    ) -> impl Service<String, Response = String, Error = BoxError, Future = impl Send> + Clone {
        let this = self.clone();
        service_fn(move |prompt: String| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                if let Some(mut gate) = this.gate.clone() {
                    let _ = gate.wait_for(|open| *open).await;
                }
                if prompt.starts_with("bad") {
                    return Err(Classified::new(
                        FailureKind::Client(http::StatusCode::BAD_REQUEST),
                        "caller error",
                    )
                    .into());
                }
                if this.down.load(Ordering::SeqCst) {
                    return Err::<String, BoxError>("every provider failed".into());
                }
                Ok(format!("{prompt}!"))
            }
        })
    }
}

fn keyer(p: &String) -> Option<Lookup> {
    if p.starts_with("no-store") {
        return None;
    }
    Some(Lookup {
        key: hash_bytes(p.as_bytes()),
        fresh: !p.starts_with("hot"),
        stream: p.starts_with("stream"),
    })
}

fn record() -> CloneRecord<String> {
    CloneRecord::<String>::new()
        .weigh(|s| s.len() as u64)
        .mark(|s, how| match how {
            Replay::Stale { .. } => s.push_str(" (stale)"),
            Replay::Fresh { .. } => s.push_str(" (hit)"),
            Replay::Copy => s.push_str(" (shared)"),
            Replay::Own => {}
        })
}

type Layered = CacheLayer<fn(&String) -> Option<Lookup>, CloneRecord<String>, String>;
// (The third parameter is what is stored: here the answer itself.)

fn layer(settings: CacheSettings) -> Layered {
    CacheLayer::builder(record())
        .settings(settings)
        .build(keyer as fn(&String) -> Option<Lookup>)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_is_answered_by_a_young_enough_stored_answer_marked_stale() {
    let p = Provider::default();
    let cache = layer(CacheSettings {
        max_stale_ms: 10_000,
        ..CacheSettings::default()
    });
    let svc = cache.layer(p.service());
    assert_eq!(svc.clone().oneshot("hi".into()).await.unwrap(), "hi!");
    p.down.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(
        svc.clone().oneshot("hi".into()).await.unwrap(),
        "hi! (stale)"
    );
    // A prompt never answered has nothing to stand in.
    let err = svc.clone().oneshot("new".into()).await.unwrap_err();
    assert_eq!(err.to_string(), "every provider failed");
    // Older than max_stale: the error.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(svc.clone().oneshot("hi".into()).await.is_err());
    let seen = cache.handle().snapshot();
    assert_eq!((seen.stale, seen.stored), (1, 1));
    // While the provider answers, nothing stale is served.
    p.down.store(false, Ordering::SeqCst);
    assert_eq!(svc.oneshot("hi".into()).await.unwrap(), "hi!");
}

#[tokio::test(start_paused = true)]
async fn errors_are_never_stored_and_a_callers_own_mistake_is_never_hidden() {
    let p = Provider::default();
    let cache = layer(CacheSettings::default());
    let svc = cache.layer(p.service());
    p.down.store(true, Ordering::SeqCst);
    assert!(svc.clone().oneshot("hi".into()).await.is_err());
    p.down.store(false, Ordering::SeqCst);
    assert_eq!(
        cache.handle().snapshot().stored,
        0,
        "the error was not stored"
    );
    // "bad..." answers once, then is the caller's error: not hidden by
    // the stored answer.
    let bad = |p: &Provider| p.calls.load(Ordering::SeqCst);
    let before = bad(&p);
    let err = svc.clone().oneshot("bad one".into()).await.unwrap_err();
    assert!(matches!(classify_error(&*err).kind, FailureKind::Client(_)));
    assert_eq!(bad(&p), before + 1);
    assert_eq!(cache.handle().snapshot().stale, 0);
}

#[tokio::test(start_paused = true)]
async fn fresh_answers_come_without_a_call_only_when_allowed_and_young() {
    let p = Provider::default();
    // Off by default: every request is a call.
    let off = layer(CacheSettings::default()).layer(p.service());
    off.clone().oneshot("hi".into()).await.unwrap();
    off.oneshot("hi".into()).await.unwrap();
    assert_eq!(p.calls.load(Ordering::SeqCst), 2);

    let p = Provider::default();
    let cache = layer(CacheSettings {
        fresh: true,
        ttl_ms: 1_000,
        ..CacheSettings::default()
    });
    let svc = cache.layer(p.service());
    assert_eq!(svc.clone().oneshot("hi".into()).await.unwrap(), "hi!");
    assert_eq!(svc.clone().oneshot("hi".into()).await.unwrap(), "hi! (hit)");
    assert_eq!(p.calls.load(Ordering::SeqCst), 1);
    // Past the ttl: a call again (and a new entry).
    tokio::time::advance(Duration::from_millis(1_001)).await;
    assert_eq!(svc.clone().oneshot("hi".into()).await.unwrap(), "hi!");
    assert_eq!(p.calls.load(Ordering::SeqCst), 2);
    // A request whose key forbids fresh hits (temperature > 0) calls.
    svc.clone().oneshot("hot".into()).await.unwrap();
    svc.clone().oneshot("hot".into()).await.unwrap();
    assert_eq!(p.calls.load(Ordering::SeqCst), 4);
    // no-store: passed by, never stored.
    svc.clone().oneshot("no-store x".into()).await.unwrap();
    svc.oneshot("no-store x".into()).await.unwrap();
    let seen = cache.handle().snapshot();
    assert_eq!((seen.bypassed, seen.hits), (2, 1));
    assert_eq!(p.calls.load(Ordering::SeqCst), 6);
}

fn gated() -> (Provider, tokio::sync::watch::Sender<bool>) {
    let (open, gate) = tokio::sync::watch::channel(false);
    (
        Provider {
            gate: Some(gate),
            ..Provider::default()
        },
        open,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_identical_requests_in_flight_make_one_call() {
    let (p, open) = gated();
    let cache = layer(CacheSettings::default());
    let svc = cache.layer(p.service());
    let callers: Vec<_> = (0..1_000)
        .map(|_| tokio::spawn(svc.clone().oneshot("same".to_string())))
        .collect();
    while cache.handle().snapshot().coalesced < 999 {
        tokio::task::yield_now().await;
    }
    open.send_replace(true);
    let mut shared = 0;
    for c in callers {
        let answer = c.await.unwrap().unwrap();
        assert!(answer.starts_with("same!"), "{answer}");
        shared += usize::from(answer.ends_with("(shared)"));
    }
    assert_eq!(shared, 999, "every caller but the first joined");
    assert_eq!(p.calls.load(Ordering::SeqCst), 1);
    let seen = cache.handle().snapshot();
    assert_eq!((seen.calls, seen.coalesced, seen.in_flight), (1, 999, 0));
}

#[tokio::test(start_paused = true)]
async fn the_shared_error_reaches_every_caller_and_classifies_as_the_original() {
    let (p, open) = gated();
    p.down.store(true, Ordering::SeqCst);
    let cache = layer(CacheSettings::default());
    let svc = cache.layer(p.service());
    let callers: Vec<_> = (0..5)
        .map(|_| tokio::spawn(svc.clone().oneshot("x".to_string())))
        .collect();
    tokio::task::yield_now().await;
    open.send_replace(true);
    for c in callers {
        let err = c.await.unwrap().unwrap_err();
        assert_eq!(
            SharedError::original(&*err).to_string(),
            "every provider failed"
        );
        assert!(err.is::<SharedError>());
    }
    assert_eq!(p.calls.load(Ordering::SeqCst), 1);

    // A caller's own mistake, shared, still classifies as one.
    let callers: Vec<_> = (0..3)
        .map(|_| tokio::spawn(svc.clone().oneshot("bad".to_string())))
        .collect();
    for c in callers {
        let err = c.await.unwrap().unwrap_err();
        assert!(matches!(classify_error(&*err).kind, FailureKind::Client(_)));
    }
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_goes_away_cancels_nothing_for_the_others() {
    let (p, open) = gated();
    let cache = layer(CacheSettings::default());
    let svc = cache.layer(p.service());
    // The first caller (whose request started the call) is dropped.
    let mut first = Box::pin(svc.clone().oneshot("q".to_string()));
    assert!(futures_poll(&mut first).is_none());
    let second = tokio::spawn(svc.clone().oneshot("q".to_string()));
    tokio::task::yield_now().await;
    drop(first);
    open.send_replace(true);
    assert_eq!(second.await.unwrap().unwrap(), "q! (shared)");
    assert_eq!(p.calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.handle().snapshot().stored, 1);
    // A request alone that goes away takes its call with it (nobody
    // wanted it), and leaves nothing to join.
    let (p, open) = gated();
    let cache = layer(CacheSettings::default());
    let svc = cache.layer(p.service());
    let mut lone = Box::pin(svc.clone().oneshot("r".to_string()));
    assert!(futures_poll(&mut lone).is_none());
    assert_eq!(cache.handle().snapshot().in_flight, 1);
    drop(lone);
    assert_eq!(cache.handle().snapshot().in_flight, 0);
    open.send_replace(true);
    assert_eq!(svc.oneshot("r".to_string()).await.unwrap(), "r!");
    assert_eq!(p.calls.load(Ordering::SeqCst), 2, "a call of its own");
}

/// Polls once.
fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    match std::pin::Pin::new(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

#[tokio::test(start_paused = true)]
async fn streams_are_not_coalesced() {
    let (p, open) = gated();
    let cache = layer(CacheSettings::default());
    let svc = cache.layer(p.service());
    let callers: Vec<_> = (0..3)
        .map(|_| tokio::spawn(svc.clone().oneshot("stream me".to_string())))
        .collect();
    tokio::task::yield_now().await;
    open.send_replace(true);
    for c in callers {
        c.await.unwrap().unwrap();
    }
    assert_eq!(p.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_stays_within_its_bytes_under_many_distinct_keys() {
    let p = Provider::default();
    let cache = layer(CacheSettings {
        max_bytes: 64 << 10,
        max_entry_bytes: 1 << 10,
        ..CacheSettings::default()
    });
    let svc = cache.layer(p.service());
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let svc = svc.clone();
            tokio::spawn(async move {
                for i in 0..125_000 {
                    svc.clone()
                        .oneshot(format!("prompt {t} {i}"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let seen = cache.handle().snapshot();
    assert_eq!(seen.stored, 1_000_000, "a million distinct keys");
    assert!(seen.bytes <= 64 << 10, "{seen:?}");
    assert!(seen.entries < 10_000, "{seen:?}");
    // Too large to keep: answered, not stored.
    let big = "x".repeat(2_000);
    assert_eq!(svc.oneshot(big.clone()).await.unwrap(), format!("{big}!"));
    assert_eq!(cache.handle().snapshot().too_large, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_on_few_keys_account_for_every_request() {
    let p = Provider::default();
    let cache = layer(CacheSettings {
        fresh: true,
        ..CacheSettings::default()
    });
    let svc = cache.layer(p.service());
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let svc = svc.clone();
            tokio::spawn(async move {
                for i in 0..500u32 {
                    let prompt = format!("k{}", (i + t) % 16);
                    let out = svc.clone().oneshot(prompt.clone()).await.unwrap();
                    assert!(out.starts_with(&format!("{prompt}!")), "{out}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let seen = cache.handle().snapshot();
    assert_eq!(
        seen.calls + seen.coalesced + seen.hits,
        64 * 500,
        "{seen:?}"
    );
    assert_eq!(seen.calls, p.calls.load(Ordering::SeqCst));
    assert!(seen.calls <= 64, "few calls for 16 keys: {seen:?}");
    assert_eq!(seen.in_flight, 0);
}

#[test]
fn bad_settings_are_refused_when_built() {
    let err = CacheLayer::builder(record())
        .settings(CacheSettings {
            fresh: true,
            ttl_ms: 0,
            max_bytes: 0,
            ..CacheSettings::default()
        })
        .build(keyer as fn(&String) -> Option<Lookup>)
        .unwrap_err();
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["cache.ttl_ms", "cache.max_bytes", "cache.max_entry_bytes"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_going_away_at_random_leave_no_one_hanging_and_nothing_in_flight() {
    // A provider that takes a few turns to answer.
    fn slow(
        calls: Arc<AtomicU64>,
    ) -> impl Service<String, Response = String, Error = BoxError, Future = impl Send> + Clone {
        service_fn(move |prompt: String| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                Ok(format!("{prompt}!"))
            }
        })
    }
    let calls = Arc::new(AtomicU64::new(0));
    let cache = layer(CacheSettings::default());
    let svc = cache.layer(slow(calls.clone()));
    let tasks: Vec<_> = (0..64u32)
        .map(|t| {
            let svc = svc.clone();
            tokio::spawn(async move {
                for i in 0..300u32 {
                    let prompt = format!("k{}", (i * 7 + t) % 8);
                    let mut fut = Box::pin(svc.clone().oneshot(prompt.clone()));
                    if (i + t) % 3 == 0 {
                        // Polled once, then gone.
                        let _ = futures_poll(&mut fut);
                        drop(fut);
                        continue;
                    }
                    let out = fut.await.unwrap();
                    assert!(out.starts_with(&format!("{prompt}!")), "{out}");
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("no caller hangs")
            .unwrap();
    }
    let seen = cache.handle().snapshot();
    assert_eq!(seen.in_flight, 0, "{seen:?}");
    assert_eq!(seen.calls, calls.load(Ordering::SeqCst));
    assert!(seen.coalesced > 0, "{seen:?}");
}
