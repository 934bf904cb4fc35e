//! The answer cache (`[cache]`): in front of the router, behind the
//! per-key limits. Requests are keyed by what decides their answer
//! ([`OpenAiKey`]); answers are recorded as they stream past and replayed
//! as JSON or SSE, whichever the caller asked for. The caller's
//! `cache-control: no-store` keeps a request out of it, `no-cache` forbids
//! a fresh hit.

use palisade_cache::{
    Cache, CacheHandle, CacheLayer, CacheSettings, HttpEntry, HttpRecord, Keyer, Lookup, OpenAiKey,
};
use palisade_core::ConfigError;
use tower::Layer;

use crate::state::GatewayRouter;
use crate::upstream::{ChatRequest, GatewayBody};

/// A request's place in the cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GatewayKeyer {
    keys: OpenAiKey,
}

impl Keyer<ChatRequest> for GatewayKeyer {
    fn lookup(&self, r: &ChatRequest) -> Option<Lookup> {
        if r.cache.no_store {
            return None;
        }
        let mut lookup = self.keys.lookup(r.endpoint.path(), &r.body);
        lookup.stream = r.stream;
        lookup.fresh &= !r.cache.no_cache;
        Some(lookup)
    }
}

/// The router's answers' body: each holds its provider's bulkhead slot.
pub(crate) type RouterBody = palisade::bulkhead::PermitBody<GatewayBody>;
/// The body of the answers the handlers get: the router's own, or (with a
/// cache) a boxed one the cache could record or build.
pub(crate) type EntryBody = http_body_util::Either<RouterBody, GatewayBody>;
/// The router behind the cache, its answers' bodies boxed.
pub(crate) type Cached = Cache<Reshape<GatewayRouter, Boxed>, GatewayKeyer, HttpRecord, HttpEntry>;
/// The router, cached when `[cache]` is set (no cost when it is not).
pub(crate) type MaybeCached =
    tower::util::Either<Reshape<GatewayRouter, Own>, Reshape<Cached, FromCache>>;

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

/// The cache's counts and size.
pub(crate) type GatewayCache = CacheHandle<HttpEntry, HttpRecord>;

/// `router`, behind a cache on `settings` if there are any.
pub(crate) fn wrap(
    settings: Option<&CacheSettings>,
    router: GatewayRouter,
) -> Result<(MaybeCached, Option<GatewayCache>), ConfigError> {
    let Some(settings) = settings else {
        return Ok((tower::util::Either::Left(Reshape::new(router)), None));
    };
    let layer = CacheLayer::builder::<_, http::Response<GatewayBody>>(HttpRecord::openai())
        .settings(*settings)
        .build(GatewayKeyer {
            keys: OpenAiKey::from_settings(settings),
        })?;
    let handle = layer.handle();
    let cached = layer.layer(Reshape::new(router));
    Ok((
        tower::util::Either::Right(Reshape::new(cached)),
        Some(handle),
    ))
}
