//! Bulkheads that hold a call's slot until its streamed body ends, through
//! the whole stack, the registry and the router.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use palisade::{Config, ProviderStack, Registry, RegistryBuilder, Router};
use palisade_bulkhead::{OnBodyEnd, OnResponse, PermitBody, ReleaseMode};
use palisade_core::{BoxError, HttpClassifier};
use tokio::sync::oneshot;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

type Req = http::Request<String>;
type Res = http::Response<Gated>;
type Svc = BoxCloneSyncService<Req, Res, BoxError>;

/// A streamed body that sends one chunk, then ends only when its gate
/// opens (or its sender is dropped): a provider still streaming.
struct Gated {
    first: Option<Bytes>,
    gate: Option<oneshot::Receiver<()>>,
}

impl Body for Gated {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        match self.gate.as_mut() {
            Some(gate) => {
                let _ = std::task::ready!(Pin::new(gate).poll(cx));
                self.gate = None;
                Poll::Ready(None)
            }
            None => Poll::Ready(None),
        }
    }
}

/// A provider whose every answer streams until the test opens its gate.
#[derive(Clone)]
struct Streaming {
    name: &'static str,
    gates: Arc<std::sync::Mutex<Vec<oneshot::Sender<()>>>>,
    calls: Arc<AtomicUsize>,
}

impl Streaming {
    fn new(name: &'static str) -> Self {
        Streaming {
            name,
            gates: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn svc(&self) -> Svc {
        let me = self.clone();
        BoxCloneSyncService::new(tower::service_fn(move |_: Req| {
            let me = me.clone();
            async move {
                me.calls.fetch_add(1, Ordering::SeqCst);
                let (tx, rx) = oneshot::channel();
                me.gates.lock().unwrap().push(tx);
                Ok::<_, BoxError>(http::Response::new(Gated {
                    first: Some(Bytes::from(me.name)),
                    gate: Some(rx),
                }))
            }
        }))
    }

    /// Ends every stream in progress.
    fn finish_all(&self) {
        for tx in self.gates.lock().unwrap().drain(..) {
            let _ = tx.send(());
        }
    }
}

const ONE_SLOT: &str = r#"
[router]
order = ["primary", "secondary"]
request_timeout_ms = 5000
[defaults.retry]
enabled = false
[providers.primary.bulkhead]
max_concurrent = 1
max_waiting = 0
[providers.secondary]
"#;

type Routed<M> = (
    Router<Svc, HttpClassifier, Req, M>,
    Arc<Registry<Svc, HttpClassifier, M>>,
);

fn router<M>(primary: &Streaming, secondary: &Streaming) -> Routed<M>
where
    M: ReleaseMode<Res> + Default,
{
    let cfg = Config::from_toml(ONE_SLOT).unwrap();
    let registry = Arc::new(
        RegistryBuilder::new(&cfg, HttpClassifier::new())
            .release_mode(M::default())
            .build(|p| match p.id.as_str() {
                "primary" => primary.svc(),
                _ => secondary.svc(),
            })
            .unwrap(),
    );
    let router = Router::new(
        registry.clone(),
        Duration::from_secs(5),
        HttpClassifier::new(),
    )
    .unwrap();
    (router, registry)
}

async fn first_chunk<B>(body: &mut B) -> Bytes
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
        .await
        .expect("a frame")
        .expect("no error");
    frame.into_data().expect("data")
}

/// Sends one request through the router and hands back the answer's body.
async fn ask<M, B>(router: &Router<Svc, HttpClassifier, Req, M>) -> B
where
    M: ReleaseMode<Res, Response = http::Response<B>>,
{
    router
        .clone()
        .oneshot(Req::default())
        .await
        .unwrap()
        .into_body()
}

fn in_flight<M>(registry: &Registry<Svc, HttpClassifier, M>) -> usize {
    registry
        .handles("primary")
        .unwrap()
        .bulkhead
        .unwrap()
        .snapshot()
        .in_flight
}

#[tokio::test(start_paused = true)]
async fn a_stream_holds_its_slot_until_its_body_ends() {
    let (primary, secondary) = (Streaming::new("primary"), Streaming::new("secondary"));
    let (router, registry) = router::<OnBodyEnd>(&primary, &secondary);

    // The first request streams from the primary and keeps its one slot ...
    let mut first = ask(&router).await;
    assert_eq!(first_chunk(&mut first).await, "primary");
    assert!(first.holds_permit());
    assert_eq!(in_flight(&registry), 1);

    // ... so a second one, while it streams, falls back to the secondary.
    let mut second = ask(&router).await;
    assert_eq!(first_chunk(&mut second).await, "secondary");
    assert!(
        second.holds_permit(),
        "a slot of the secondary's own bulkhead"
    );
    assert_eq!(primary.calls.load(Ordering::SeqCst), 1);

    // When the first stream ends, its slot comes back ...
    primary.finish_all();
    while std::future::poll_fn(|cx| Pin::new(&mut first).poll_frame(cx))
        .await
        .is_some()
    {}
    assert!(!first.holds_permit());
    assert_eq!(in_flight(&registry), 0);

    // ... and the primary takes the next request again.
    let mut third = ask(&router).await;
    assert_eq!(first_chunk(&mut third).await, "primary");
    // Dropping a stream half-way gives its slot back too.
    drop(third);
    assert_eq!(in_flight(&registry), 0);
    secondary.finish_all();
}

/// The contrast that makes the test above mean something: freeing the slot
/// at the response head lets a second stream onto the primary while the
/// first is still running.
#[tokio::test(start_paused = true)]
async fn released_at_the_response_head_a_second_stream_gets_in() {
    let (primary, secondary) = (Streaming::new("primary"), Streaming::new("secondary"));
    let (router, registry) = router::<OnResponse>(&primary, &secondary);
    let mut first = ask(&router).await;
    assert_eq!(first_chunk(&mut first).await, "primary");
    assert_eq!(in_flight(&registry), 0);
    let mut second = ask(&router).await;
    assert_eq!(first_chunk(&mut second).await, "primary");
    assert_eq!(primary.calls.load(Ordering::SeqCst), 2);
    primary.finish_all();
}

/// With the bulkhead switched off the stack's type is the same and its
/// bodies hold nothing.
#[tokio::test(start_paused = true)]
async fn without_a_bulkhead_the_body_holds_nothing() {
    let cfg = Config::from_toml("[providers.p.bulkhead]\nenabled = false\n").unwrap();
    let p = Streaming::new("p");
    let stack = ProviderStack::builder(&cfg.provider("p").unwrap(), p.svc(), HttpClassifier::new())
        .release_mode(OnBodyEnd)
        .build()
        .unwrap();
    assert!(stack.handles.bulkhead.is_none());
    let res: http::Response<PermitBody<Gated>> =
        stack.service.oneshot(Req::default()).await.unwrap();
    assert!(!res.body().holds_permit());
    p.finish_all();
}
