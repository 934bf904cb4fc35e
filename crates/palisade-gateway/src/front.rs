//! What stands between the handlers and the router: the batcher
//! (`[batch]`, embeddings only) and the cache (`[cache]`), in that order
//! from the router out, both behind the per-key limits. Without either the
//! router's answers pass as they are; with them, bodies are boxed so the
//! cache and the batcher can record and build answers.

use palisade_batch::{Batch, BatchHandle, BatchLayer, BatchSettings};
use palisade_cache::{Cache, CacheSettings, HttpEntry, HttpRecord};
use palisade_core::ConfigError;
use tower::util::Either;
use tower::Layer;

use crate::batch::GatewayBatcher;
use crate::cache::{GatewayCache, GatewayKeyer};
use crate::state::GatewayRouter;
use crate::upstream::{ChatRequest, GatewayBody};

/// The router's answers' body: each holds its provider's bulkhead slot.
pub(crate) type RouterBody = palisade::bulkhead::PermitBody<GatewayBody>;
/// The body of the answers the handlers get: the router's own, or (with a
/// cache) a boxed one the cache could record or build.
pub(crate) type EntryBody = http_body_util::Either<RouterBody, GatewayBody>;
/// The router with its answers' bodies boxed, as the cache and the
/// batcher take them.
pub(crate) type Core = Reshape<GatewayRouter, Boxed>;
/// The core behind the batcher when `[batch]` is set.
pub(crate) type Batched = Either<Core, Batch<Core, GatewayBatcher, ChatRequest>>;
/// That behind the cache when `[cache]` is set.
pub(crate) type Cached = Either<Batched, Cache<Batched, GatewayKeyer, HttpRecord, HttpEntry>>;
/// The router as the handlers call it: as it is when neither `[cache]` nor
/// `[batch]` is set (no cost), else behind them.
pub(crate) type Front = Either<Reshape<GatewayRouter, Own>, Reshape<Cached, FromCache>>;

/// How an answer's body changes on its way out of a [`Reshape`].
pub(crate) trait Bodies<In> {
    type Out;
    fn reshape(body: In) -> Self::Out;
}

/// The router's body, boxed for the cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Boxed;
/// The router's body, as the handlers take it without a cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Own;
/// The cache's body, as the handlers take it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FromCache;

impl Bodies<RouterBody> for Boxed {
    type Out = GatewayBody;
    fn reshape(body: RouterBody) -> GatewayBody {
        http_body_util::BodyExt::boxed_unsync(body)
    }
}

impl Bodies<RouterBody> for Own {
    type Out = EntryBody;
    fn reshape(body: RouterBody) -> EntryBody {
        EntryBody::Left(body)
    }
}

// Generic over the error (always `BoxError` here) so the compiler can
// prove the handlers' futures `Send` (it checks this impl for any lifetime
// of the error's trait object).
impl<E> Bodies<http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, E>> for FromCache {
    type Out = http_body_util::Either<
        RouterBody,
        http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, E>,
    >;
    fn reshape(body: http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, E>) -> Self::Out {
        http_body_util::Either::Right(body)
    }
}

/// A service whose answers' bodies are changed by `K`.
#[derive(Debug, Clone)]
pub(crate) struct Reshape<S, K> {
    inner: S,
    _k: std::marker::PhantomData<K>,
}

impl<S, K> Reshape<S, K> {
    fn new(inner: S) -> Self {
        Reshape {
            inner,
            _k: std::marker::PhantomData,
        }
    }
}

impl<S, K, B, Req> tower::Service<Req> for Reshape<S, K>
where
    S: tower::Service<Req, Response = http::Response<B>>,
    K: Bodies<B>,
{
    type Response = http::Response<K::Out>;
    type Error = S::Error;
    type Future = Reshaped<S::Future, K>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        Reshaped {
            fut: self.inner.call(req),
            _k: std::marker::PhantomData,
        }
    }
}

pin_project_lite::pin_project! {
    /// A [`Reshape`]'s answer.
    pub(crate) struct Reshaped<F, K> {
        #[pin]
        fut: F,
        _k: std::marker::PhantomData<K>,
    }
}

impl<F, K, B, E> std::future::Future for Reshaped<F, K>
where
    F: std::future::Future<Output = Result<http::Response<B>, E>>,
    K: Bodies<B>,
{
    type Output = Result<http::Response<K::Out>, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.project().fut.poll(cx).map_ok(|r| r.map(K::reshape))
    }
}

/// The router itself when nothing stands in front of it (no per-key
/// limits, no cache, no batcher): the handlers then call it through a
/// shared reference ([`Router::route`](palisade::Router::route)), not a
/// clone of the whole front for each request.
pub(crate) fn bare(entry: &crate::state::Entry) -> Option<&GatewayRouter> {
    match entry {
        Either::Left(Either::Left(plain)) => Some(&plain.inner),
        _ => None,
    }
}

/// `router` behind a batcher and a cache where the settings ask for them;
/// their handles.
pub(crate) fn wrap(
    cache: Option<&CacheSettings>,
    batch: Option<&BatchSettings>,
    router: GatewayRouter,
) -> Result<(Front, Option<GatewayCache>, Option<BatchHandle>), ConfigError> {
    if cache.is_none() && batch.is_none() {
        return Ok((Either::Left(Reshape::new(router)), None, None));
    }
    let core = Reshape::new(router);
    let (batched, batches) = match batch {
        Some(settings) => {
            let layer = BatchLayer::new(GatewayBatcher, *settings)?;
            let handle = layer.handle();
            (Either::Right(layer.layer(core)), Some(handle))
        }
        None => (Either::Left(core), None),
    };
    let (cached, handle) = match cache {
        Some(settings) => {
            let layer = crate::cache::layer(settings)?;
            let handle = layer.handle();
            (Either::Right(layer.layer(batched)), Some(handle))
        }
        None => (Either::Left(batched), None),
    };
    Ok((Either::Right(Reshape::new(cached)), handle, batches))
}
