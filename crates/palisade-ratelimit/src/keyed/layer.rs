//! [`KeyedRateLimitLayer`] and its builder.

use std::hash::Hash;
use std::sync::Arc;

use palisade_core::{ConfigError, ErrorClassifier, Problems, ProviderId};
use tower_layer::Layer;

use crate::keyed::handle::KeyedRateLimitHandle;
use crate::keyed::service::KeyedRateLimit;
use crate::keyed::shared::KeyedShared;
use crate::quota::Quota;
use crate::weigh::Unweighted;

/// The most quotas a keyed limiter checks together per key (requests and
/// tokens): each key holds a cell per quota, inline, so more would make
/// every key bigger.
pub const MAX_KEYED_QUOTAS: usize = 2;

/// Limits calls per key (an API key, a tenant, a user): each key gets
/// every configured [`Quota`] of its own, checked all or nothing as in
/// [`RateLimitLayer`](crate::RateLimitLayer). The key comes from the
/// request ([`KeyOf`](crate::KeyOf): a closure, or [`HeaderKey`](crate::HeaderKey)
/// for a header); a request without one passes this layer unlimited.
///
/// A key over its limit is refused at once with a
/// [`Rejected`](palisade_core::Rejected) (`RateLimited`, with
/// `retry_after` = when that key will have room), never queued: one
/// tenant's backlog must not hold the caller's resources.
///
/// Keys live in a concurrent map ([`dashmap`]); a key whose buckets are
/// all full again is forgotten by a sweep that runs once per as many new
/// keys as it last kept (4096 at the least), which changes no decision (a
/// forgotten key's buckets are full, as a new key's are). So the map holds
/// about the keys seen within one refill of their buckets, however many
/// distinct keys come: memory stays bounded under millions of them.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade_core::{BoxError, Rejected};
/// use palisade_ratelimit::{HeaderKey, KeyedRateLimitLayer, Quota};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// let layer = KeyedRateLimitLayer::builder(HeaderKey::new(http::header::AUTHORIZATION))
///     .quota(Quota::per_minute(2).burst(2))
///     .build()
///     .unwrap();
/// let svc = layer.layer(service_fn(|_: http::Request<()>| async { Ok::<_, BoxError>("sent") }));
/// let req = |key: &str| http::Request::builder().header("authorization", key).body(()).unwrap();
/// assert_eq!(svc.clone().oneshot(req("alice")).await.unwrap(), "sent");
/// assert_eq!(svc.clone().oneshot(req("alice")).await.unwrap(), "sent");
/// let err = svc.clone().oneshot(req("alice")).await.unwrap_err();
/// assert!(err.downcast_ref::<Rejected>().is_some(), "alice is over her limit");
/// assert_eq!(svc.clone().oneshot(req("bob")).await.unwrap(), "sent", "bob is not");
/// assert_eq!(layer.handle().snapshot().keys, 2);
/// # }
/// ```
pub struct KeyedRateLimitLayer<X, K, W = Unweighted, C = ErrorClassifier> {
    shared: Arc<KeyedShared<K>>,
    key: X,
    weigh: W,
    classifier: C,
}

impl<X, K, W, C> std::fmt::Debug for KeyedRateLimitLayer<X, K, W, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<X: Clone, K, W: Clone, C: Clone> Clone for KeyedRateLimitLayer<X, K, W, C> {
    fn clone(&self) -> Self {
        KeyedRateLimitLayer {
            shared: self.shared.clone(),
            key: self.key.clone(),
            weigh: self.weigh.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl KeyedRateLimitLayer<(), ()> {
    /// A builder keying requests by `key`; no quota yet.
    pub fn builder<X>(key: X) -> KeyedBuilder<X> {
        KeyedBuilder {
            key,
            provider: None,
            quotas: Vec::new(),
            weigh: Unweighted,
            classifier: ErrorClassifier,
        }
    }
}

impl<X, K, W, C> KeyedRateLimitLayer<X, K, W, C> {
    /// The handle: keys held, counters, each key's room.
    pub fn handle(&self) -> KeyedRateLimitHandle<K> {
        KeyedRateLimitHandle::new(self.shared.clone())
    }
}

impl<S, X: Clone, K, W: Clone, C: Clone> Layer<S> for KeyedRateLimitLayer<X, K, W, C> {
    type Service = KeyedRateLimit<S, X, K, W, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimit::new(
            inner,
            self.shared.clone(),
            self.key.clone(),
            self.weigh.clone(),
            self.classifier.clone(),
        )
    }
}

/// Configures a [`KeyedRateLimitLayer`]; [`build`](Self::build) checks
/// every value and names each bad one.
#[derive(Clone)]
pub struct KeyedBuilder<X, W = Unweighted, C = ErrorClassifier> {
    key: X,
    provider: Option<ProviderId>,
    quotas: Vec<Quota>,
    weigh: W,
    classifier: C,
}

impl<X, W, C> std::fmt::Debug for KeyedBuilder<X, W, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedBuilder")
            .field("provider", &self.provider)
            .field("quotas", &self.quotas)
            .finish_non_exhaustive()
    }
}

impl<X, W, C> KeyedBuilder<X, W, C> {
    /// Names the provider, for refusals and events.
    pub fn provider(mut self, provider: impl Into<ProviderId>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    /// Adds a quota every key gets; all must have room for a call to go.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
        self
    }

    /// Weighs requests in tokens for token quotas (default: nothing).
    pub fn weigh<W2>(self, weigh: W2) -> KeyedBuilder<X, W2, C> {
        KeyedBuilder {
            key: self.key,
            provider: self.provider,
            quotas: self.quotas,
            weigh,
            classifier: self.classifier,
        }
    }

    /// Reads the answers, for token quotas: a call's estimate is corrected
    /// by the tokens its answer used ([`RateInfo::used_tokens`]), or, for a
    /// stream, by those its end reports
    /// ([`UsageLater`](palisade_core::UsageLater)). The default reads
    /// nothing: a key is charged its estimates alone.
    /// [`HttpClassifier`](palisade_core::HttpClassifier) reads an HTTP
    /// answer's [`TokenUsage`](palisade_core::TokenUsage) and `UsageLater`.
    ///
    /// [`RateInfo::used_tokens`]: palisade_core::RateInfo::used_tokens
    pub fn classifier<C2>(self, classifier: C2) -> KeyedBuilder<X, W, C2> {
        KeyedBuilder {
            key: self.key,
            provider: self.provider,
            quotas: self.quotas,
            weigh: self.weigh,
            classifier,
        }
    }

    /// Checks the settings and builds the layer, for keys of type `K`
    /// (what the key extractor gives).
    pub fn build<K: Hash + Eq + Clone>(
        self,
    ) -> Result<KeyedRateLimitLayer<X, K, W, C>, ConfigError> {
        let mut p = Problems::new("keyed_rate_limit");
        if self.quotas.is_empty() {
            p.add("quotas", "no quota: a keyed limiter needs at least one");
        }
        if self.quotas.len() > MAX_KEYED_QUOTAS {
            p.add(
                "quotas",
                format!("{} quotas; at most {MAX_KEYED_QUOTAS}", self.quotas.len()),
            );
        }
        for q in &self.quotas {
            q.check(&mut p);
        }
        p.finish()?;
        Ok(KeyedRateLimitLayer {
            shared: Arc::new(KeyedShared::new(self.provider, self.quotas)),
            key: self.key,
            weigh: self.weigh,
            classifier: self.classifier,
        })
    }
}
