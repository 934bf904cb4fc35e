//! [`BatchLayer`] and [`BatchHandle`].

use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use palisade_core::ConfigError;
use serde::Serialize;
use tower_layer::Layer;
use tower_service::Service;

use crate::batcher::Batcher;
use crate::service::{Batch, Counts, Shared};
use crate::settings::BatchSettings;

/// Gathers concurrent requests of one key (for embeddings: one model and
/// format) into one upstream call: a batch is sent when it holds
/// `max_items` inputs or `max_tokens` tokens, when `max_delay` has passed
/// since its first request, or earlier when a request's deadline leaves
/// less than `deadline_margin` after it. The answer is split back to each
/// caller in order; a failed call's error reaches every caller of the
/// batch (as a [`SharedError`](palisade_core::SharedError)); a caller that goes away while
/// waiting is left out of its batch. A request alone is sent as it is;
/// a request its [`Batcher`] does not key is passed straight through.
///
/// Put it outside the layers that retry and fall back: they then treat a
/// batch as one request.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade_batch::{BatchLayer, BatchSettings, OpenAiEmbeddings};
/// use palisade_core::{BoxError, WithDeadline};
/// use serde_json::{json, Value};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// // An embeddings API: one vector (here: the text's length) per input.
/// let calls = Arc::new(AtomicUsize::new(0));
/// let seen = calls.clone();
/// let api = service_fn(move |req: WithDeadline<Value>| {
///     seen.fetch_add(1, Ordering::SeqCst);
///     let inputs = req.get_ref()["input"].as_array().cloned().unwrap_or_default();
///     let data: Vec<Value> = inputs.iter().enumerate()
///         .map(|(i, t)| json!({"index": i, "embedding": [t.as_str().unwrap().len()]}))
///         .collect();
///     async move { Ok::<_, BoxError>(json!({"object": "list", "data": data})) }
/// });
/// let layer = BatchLayer::new(OpenAiEmbeddings, BatchSettings::default()).unwrap();
/// let svc = layer.layer(api);
/// let ask = |text: &str| svc.clone().oneshot(WithDeadline::new(json!({"model": "e", "input": [text]})));
/// let (a, b) = tokio::join!(ask("one"), ask("three"));
/// assert_eq!(a.unwrap()["data"][0]["embedding"][0], 3);
/// assert_eq!(b.unwrap()["data"][0]["embedding"][0], 5);
/// assert_eq!(calls.load(Ordering::SeqCst), 1, "one upstream call for both");
/// # }
/// ```
pub struct BatchLayer<B, Req> {
    batcher: B,
    settings: BatchSettings,
    counts: Arc<Counts>,
    _req: PhantomData<fn(Req)>,
}

impl<B: Clone, Req> Clone for BatchLayer<B, Req> {
    fn clone(&self) -> Self {
        BatchLayer {
            batcher: self.batcher.clone(),
            settings: self.settings,
            counts: self.counts.clone(),
            _req: PhantomData,
        }
    }
}

impl<B, Req> std::fmt::Debug for BatchLayer<B, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchLayer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<B, Req> BatchLayer<B, Req> {
    /// Batches with `batcher` on `settings`, if they are sound (every
    /// problem named).
    pub fn new(batcher: B, settings: BatchSettings) -> Result<Self, ConfigError> {
        settings.check()?;
        Ok(BatchLayer {
            batcher,
            settings,
            counts: Arc::default(),
            _req: PhantomData,
        })
    }

    /// The counts of every service it layers.
    pub fn handle(&self) -> BatchHandle {
        BatchHandle {
            counts: self.counts.clone(),
        }
    }
}

impl<S, B, Req> Layer<S> for BatchLayer<B, Req>
where
    S: Service<Req>,
    B: Batcher<Req, S::Response>,
{
    type Service = Batch<S, B, Req>;

    fn layer(&self, inner: S) -> Self::Service {
        Batch::new(
            inner,
            self.batcher.clone(),
            self.settings,
            Arc::new(Shared::new(self.counts.clone())),
        )
    }
}

/// A batcher's counts.
#[derive(Debug, Clone)]
pub struct BatchHandle {
    counts: Arc<Counts>,
}

/// What a batcher has done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct BatchSnapshot {
    /// Upstream calls made for batched requests (a request alone
    /// included).
    pub batches: u64,
    /// Requests sent in those calls.
    pub requests: u64,
    /// The most requests one call carried.
    pub largest: u64,
    /// Requests passed straight through (not keyed).
    pub passed: u64,
    /// Requests left out of their batch: their caller went away.
    pub gone: u64,
    /// Batches whose call failed (each of their callers got the error).
    pub failed: u64,
}

impl BatchHandle {
    /// The counts now.
    pub fn snapshot(&self) -> BatchSnapshot {
        let c = &self.counts;
        BatchSnapshot {
            batches: c.batches.get(),
            requests: c.requests.get(),
            largest: c.largest.load(Ordering::Relaxed),
            passed: c.passed.get(),
            gone: c.gone.get(),
            failed: c.failed.get(),
        }
    }
}
