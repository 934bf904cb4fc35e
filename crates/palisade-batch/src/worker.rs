//! The worker of one batch key: gathers the requests queued for it until
//! the batch is full, its delay is up or its earliest deadline calls, and
//! sends each batch in a task of its own.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::{BoxError, HasDeadline};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_service::Service;

use crate::batcher::{Batcher, Size};
use crate::service::Shared;
use crate::settings::BatchSettings;

/// One request waiting in a batch.
pub(crate) struct Item<Req, Res> {
    pub(crate) req: Req,
    pub(crate) size: Size,
    pub(crate) tx: oneshot::Sender<Result<Res, BoxError>>,
}

/// A worker with no request for this long ends (a new one starts with the
/// next request).
const IDLE: Duration = Duration::from_secs(30);

/// Gathers and sends the batches of `key` until idle.
pub(crate) async fn run<S, B, Req>(
    key: B::Key,
    mut rx: mpsc::UnboundedReceiver<Item<Req, S::Response>>,
    me: mpsc::UnboundedSender<Item<Req, S::Response>>,
    inner: S,
    batcher: B,
    settings: BatchSettings,
    shared: Arc<Shared<B::Key, Req, S::Response>>,
) where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    B: Batcher<Req, S::Response>,
    Req: HasDeadline + Send + 'static,
{
    let mut carry: Option<Item<Req, S::Response>> = None;
    loop {
        let first = match carry.take() {
            Some(item) => item,
            None => match tokio::time::timeout(IDLE, rx.recv()).await {
                Ok(Some(item)) => item,
                Ok(None) => return,
                Err(_) => {
                    // Idle: no new request finds this worker; any that
                    // raced in are sent now.
                    shared.queues.remove_if(&key, |_, tx| tx.same_channel(&me));
                    drop(me);
                    rx.close();
                    let mut rest = Vec::new();
                    while let Ok(item) = rx.try_recv() {
                        rest.push(item);
                    }
                    if !rest.is_empty() {
                        send(rest, inner, batcher, shared).await;
                    }
                    return;
                }
            },
        };
        let mut flush_at = Instant::now() + settings.max_delay();
        let mut items = first.size.items;
        let mut tokens = first.size.tokens;
        flush_at = earlier(flush_at, &first.req, settings);
        let mut batch = vec![first];
        while items < settings.max_items && tokens < settings.max_tokens {
            // What is queued already is taken without waiting; a delay
            // that is up (0 ms: at once) sends what there is.
            let next = match rx.try_recv() {
                Ok(item) => Some(item),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) if Instant::now() >= flush_at => None,
                Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                    biased;
                    next = rx.recv() => next,
                    _ = tokio::time::sleep_until(flush_at) => None,
                },
            };
            let Some(item) = next else { break };
            if items + item.size.items > settings.max_items
                || tokens + item.size.tokens > settings.max_tokens
            {
                carry = Some(item);
                break;
            }
            items += item.size.items;
            tokens += item.size.tokens;
            flush_at = earlier(flush_at, &item.req, settings);
            batch.push(item);
        }
        // Requests whose callers went away are left out.
        let before = batch.len();
        batch.retain(|item| !item.tx.is_closed());
        shared.counts.gone.add((before - batch.len()) as u64);
        if batch.is_empty() {
            continue;
        }
        tokio::spawn(send(batch, inner.clone(), batcher.clone(), shared.clone()));
    }
}

/// `flush_at`, or earlier if `req`'s deadline leaves less than the margin
/// after it.
fn earlier<Req: HasDeadline>(flush_at: Instant, req: &Req, settings: BatchSettings) -> Instant {
    match req.deadline() {
        Some(d) => flush_at.min(
            d.instant()
                .checked_sub(settings.deadline_margin())
                .unwrap_or_else(Instant::now),
        ),
        None => flush_at,
    }
}

/// Sends one batch: a request alone as it is; several merged into one
/// call (with the earliest deadline), its answer split back in order.
async fn send<S, B, Req>(
    mut batch: Vec<Item<Req, S::Response>>,
    inner: S,
    batcher: B,
    shared: Arc<Shared<B::Key, Req, S::Response>>,
) where
    S: Service<Req> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    B: Batcher<Req, S::Response>,
    Req: HasDeadline + Send + 'static,
{
    let c = &shared.counts;
    c.batches.add(1);
    c.requests.add(batch.len() as u64);
    c.largest
        .fetch_max(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
    if batch.len() == 1 {
        let Some(item) = batch.pop() else { return };
        let out = inner.oneshot(item.req).await.map_err(Into::into);
        let _ = item.tx.send(out);
        return;
    }
    let earliest = batch.iter().filter_map(|i| i.req.deadline()).min();
    let sizes: Vec<usize> = batch.iter().map(|i| i.size.items).collect();
    let (reqs, txs): (Vec<Req>, Vec<_>) = batch.into_iter().map(|i| (i.req, i.tx)).unzip();
    let mut merged = batcher.merge(reqs);
    if let Some(d) = earliest {
        merged.tighten_deadline(d);
    }
    let answer = inner.oneshot(merged).await.map_err(Into::into);
    let outcome: Result<Vec<S::Response>, BoxError> = match answer {
        Ok(res) => match batcher.split(res, sizes).await {
            Ok(parts) if parts.len() == txs.len() => Ok(parts),
            Ok(parts) => Err(format!(
                "the batch's answer split into {} parts for {} requests",
                parts.len(),
                txs.len()
            )
            .into()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match outcome {
        Ok(parts) => {
            for (tx, part) in txs.into_iter().zip(parts) {
                let _ = tx.send(Ok(part));
            }
        }
        Err(e) => {
            c.failed.add(1);
            let shared_err = Arc::new(e);
            for tx in txs {
                let _ = tx.send(Err(Box::new(palisade_core::SharedError::new(
                    shared_err.clone(),
                ))));
            }
        }
    }
}
