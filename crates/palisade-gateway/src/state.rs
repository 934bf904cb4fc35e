//! What the handlers share: the router, the registry, the models served,
//! and the gateway's own counters.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use palisade::bulkhead::OnBodyEnd;
use palisade::{Registry, Router};
use palisade_core::StripedCounter;

use crate::upstream::{ChatRequest, GatewayClassifier, Upstream};

/// The registry type the gateway runs. Its bulkheads hold a call's slot
/// until the answer's body ends ([`OnBodyEnd`]), so a provider's
/// `max_concurrent` caps the streams in progress, not only the calls
/// still waiting for their first token.
pub type GatewayRegistry = Registry<Upstream, GatewayClassifier, OnBodyEnd>;
/// The router type the gateway runs.
pub type GatewayRouter = Router<Upstream, GatewayClassifier, ChatRequest, OnBodyEnd>;

/// The client key of a request, for the per-key limits.
pub(crate) type KeyOfRequest = fn(&ChatRequest) -> Option<Arc<str>>;
/// A request's estimated tokens, for the per-key token limit.
pub(crate) type TokensOfRequest = fn(&ChatRequest) -> u64;

/// The router, behind each client key's own rate limits when
/// `[gateway.auth]` sets them.
pub(crate) type Entry = tower::util::Either<
    crate::front::Front,
    palisade::ratelimit::KeyedRateLimit<
        crate::front::Front,
        KeyOfRequest,
        Arc<str>,
        TokensOfRequest,
        crate::upstream::GatewayClassifier,
    >,
>;

/// Counters the gateway keeps about the answers it gave. Those every
/// request adds to are striped: the workers do not take one cache line
/// from each other for each request.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) requests: StripedCounter,
    pub(crate) ok: StripedCounter,
    pub(crate) client_errors: StripedCounter,
    pub(crate) upstream_errors: StripedCounter,
    pub(crate) stream_errors: Arc<AtomicU64>,
}

/// The models served, each with its providers. A request's model is the
/// name here, shared (its text is not copied for each request).
pub(crate) type Models = BTreeMap<Arc<str>, Vec<String>>;

/// The models `cfg` serves.
pub(crate) fn models_of(cfg: &crate::GatewayConfig) -> Models {
    cfg.models()
        .into_iter()
        .map(|(m, providers)| (Arc::from(m), providers))
        .collect()
}

/// What every handler reads.
pub(crate) struct AppState {
    pub(crate) router: Entry,
    pub(crate) registry: Arc<GatewayRegistry>,
    /// The models served, with their providers (replaced on reload).
    pub(crate) models: arc_swap::ArcSwap<Models>,
    /// When the gateway started, in Unix seconds: the `created` of the
    /// models it lists.
    pub(crate) started: u64,
    pub(crate) max_body: usize,
    /// Longest a request's body may take to arrive.
    pub(crate) body_timeout: std::time::Duration,
    pub(crate) counters: Counters,
    /// Requests by model, provider and status; latency, first token,
    /// tokens.
    pub(crate) requests: crate::metrics::RequestMetrics,
    /// The last minute's rates and latencies, for `/health`.
    pub(crate) recent: crate::recent::Recent,
    /// Client and admin keys; `None`: anyone may call.
    pub(crate) auth: Option<crate::auth::Auth>,
    /// The fleet this gateway shares its providers with (`[palisade.fleet]`).
    pub(crate) fleet: Option<palisade::redis::Fleet>,
    /// The answer cache (`[cache]`), if any.
    pub(crate) cache: Option<crate::cache::GatewayCache>,
    /// The embeddings batcher (`[batch]`), if any.
    pub(crate) batch: Option<palisade_batch::BatchHandle>,
    /// Each upstream's chaos layer.
    pub(crate) chaos: Arc<crate::chaos::ChaosLayers>,
    /// Whether `/admin/chaos` is served.
    pub(crate) chaos_endpoint: bool,
    /// Whether answers say who served them (`[gateway] served_headers`).
    pub(crate) served_headers: bool,
    /// Which provider stored which response (the Responses API).
    pub(crate) affinity: crate::affinity::Affinity,
    /// Each upstream by its id, in order of their ids, for the calls
    /// about a stored response (`stored.rs`; replaced on reload).
    pub(crate) upstreams:
        arc_swap::ArcSwap<std::collections::BTreeMap<String, crate::upstream::Upstream>>,
}

impl AppState {
    /// The caller's key (`None` when the gateway has no client keys).
    pub(crate) fn client(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<Option<Arc<crate::auth::ClientKey>>, crate::auth::Unauthorized> {
        match &self.auth {
            Some(a) if a.has_client_keys() => a.client(headers).map(Some),
            _ => Ok(None),
        }
    }

    /// Whether the caller may read `/health` and `/metrics`.
    pub(crate) fn admin(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<(), crate::auth::Unauthorized> {
        self.auth.as_ref().map_or(Ok(()), |a| a.admin(headers))
    }
}
