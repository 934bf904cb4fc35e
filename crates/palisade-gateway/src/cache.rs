//! The answer cache (`[cache]`): in front of the router, behind the
//! per-key limits. Requests are keyed by what decides their answer
//! ([`OpenAiKey`]); answers are recorded as they stream past and replayed
//! as JSON or SSE, whichever the caller asked for. The caller's
//! `cache-control: no-store` keeps a request out of it, `no-cache` forbids
//! a fresh hit.

use palisade_cache::{
    CacheHandle, CacheLayer, CacheSettings, HttpEntry, HttpRecord, Keyer, Lookup, OpenAiKey,
};
use palisade_core::ConfigError;

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
        let mut lookup = self.keys.lookup(r.endpoint.path(), r.body());
        lookup.stream = r.stream;
        lookup.fresh &= !r.cache.no_cache;
        Some(lookup)
    }
}

/// The cache's counts and size.
pub(crate) type GatewayCache = CacheHandle<HttpEntry, HttpRecord>;

/// The cache layer on `settings`.
pub(crate) fn layer(
    settings: &CacheSettings,
) -> Result<CacheLayer<GatewayKeyer, HttpRecord, HttpEntry>, ConfigError> {
    CacheLayer::builder::<_, http::Response<GatewayBody>>(HttpRecord::openai())
        .settings(*settings)
        .build(GatewayKeyer {
            keys: OpenAiKey::from_settings(settings),
        })
}
