//! [`Batch`]: the service a [`BatchLayer`](crate::BatchLayer) wraps around
//! another, and what its clones share.

use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};

use dashmap::DashMap;
use palisade_core::{BoxError, HasDeadline, StripedCounter};
use tokio::sync::{mpsc, oneshot};
use tower_service::Service;

use crate::batcher::Batcher;
use crate::future::ResponseFuture;
use crate::settings::BatchSettings;
use crate::worker::{self, Item};

/// What a batcher has done.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) batches: StripedCounter,
    pub(crate) requests: StripedCounter,
    pub(crate) passed: StripedCounter,
    pub(crate) gone: StripedCounter,
    pub(crate) failed: StripedCounter,
    pub(crate) largest: AtomicU64,
}

/// What a batcher's clones share: the queue of each key's worker.
pub(crate) struct Shared<K, Req, Res> {
    pub(crate) queues: DashMap<K, mpsc::UnboundedSender<Item<Req, Res>>>,
    pub(crate) counts: Arc<Counts>,
}

impl<K: Hash + Eq, Req, Res> Shared<K, Req, Res> {
    pub(crate) fn new(counts: Arc<Counts>) -> Self {
        Shared {
            queues: DashMap::new(),
            counts,
        }
    }
}

/// Gathers its inner service's requests into batches (see
/// [`BatchLayer`](crate::BatchLayer)). Always ready: a request waits in its
/// batch, and the inner service's readiness is awaited for each call it
/// makes.
pub struct Batch<S, B, Req>
where
    S: Service<Req>,
    B: Batcher<Req, S::Response>,
{
    inner: S,
    batcher: B,
    settings: BatchSettings,
    shared: Arc<Shared<B::Key, Req, S::Response>>,
}

impl<S, B, Req> Clone for Batch<S, B, Req>
where
    S: Service<Req> + Clone,
    B: Batcher<Req, S::Response>,
{
    fn clone(&self) -> Self {
        Batch {
            inner: self.inner.clone(),
            batcher: self.batcher.clone(),
            settings: self.settings,
            shared: self.shared.clone(),
        }
    }
}

impl<S, B, Req> std::fmt::Debug for Batch<S, B, Req>
where
    S: Service<Req>,
    B: Batcher<Req, S::Response>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S, B, Req> Batch<S, B, Req>
where
    S: Service<Req>,
    B: Batcher<Req, S::Response>,
{
    pub(crate) fn new(
        inner: S,
        batcher: B,
        settings: BatchSettings,
        shared: Arc<Shared<B::Key, Req, S::Response>>,
    ) -> Self {
        Batch {
            inner,
            batcher,
            settings,
            shared,
        }
    }
}

impl<S, B, Req> Service<Req> for Batch<S, B, Req>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    B: Batcher<Req, S::Response>,
    Req: HasDeadline + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let Some(key) = self.batcher.key(&req) else {
            self.shared.counts.passed.add(1);
            return ResponseFuture::pass(self.inner.clone(), req);
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return ResponseFuture::failed(
                "batching needs a tokio runtime (its workers are tasks)",
            );
        }
        let size = self.batcher.size(&req);
        let (tx, rx) = oneshot::channel();
        let mut item = Item { req, size, tx };
        loop {
            let queue = self.queue(&key);
            match queue.send(item) {
                Ok(()) => return ResponseFuture::wait(rx),
                // Its worker ended (idle) just now: a new one.
                Err(mpsc::error::SendError(back)) => {
                    self.shared
                        .queues
                        .remove_if(&key, |_, q| q.same_channel(&queue));
                    item = back;
                }
            }
        }
    }
}

impl<S, B, Req> Batch<S, B, Req>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    B: Batcher<Req, S::Response>,
    Req: HasDeadline + Send + 'static,
{
    /// The queue of `key`'s worker, started if there is none.
    fn queue(&self, key: &B::Key) -> mpsc::UnboundedSender<Item<Req, S::Response>> {
        if let Some(q) = self.shared.queues.get(key) {
            return q.clone();
        }
        self.shared
            .queues
            .entry(key.clone())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(worker::run::<S, B, Req>(
                    key.clone(),
                    rx,
                    tx.clone(),
                    self.inner.clone(),
                    self.batcher.clone(),
                    self.settings,
                    self.shared.clone(),
                ));
                tx
            })
            .clone()
    }
}
