//! [`Cache`]: the service a [`CacheLayer`](crate::CacheLayer) wraps around
//! another, and the state its clones share.

use std::sync::Arc;
use std::task::{Context, Poll};

use dashmap::DashMap;
use futures_util::TryFutureExt;
use palisade_core::{classify_error, BoxError, FailureKind, StripedCounter};
use tower_service::Service;

use crate::flight::{adopt, Flight};
use crate::future::ResponseFuture;
use crate::key::{BuildKeyHasher, Keyer, Lookup};
use crate::record::{Keep, Record, Replay};
use crate::settings::CacheSettings;
use crate::store::Store;

/// What a cache's clones share.
pub(crate) struct Shared<E, R> {
    pub(crate) settings: CacheSettings,
    pub(crate) store: Store<E>,
    pub(crate) flights: DashMap<u128, Arc<Flight<E>>, BuildKeyHasher>,
    pub(crate) record: R,
    pub(crate) counts: Counts,
}

/// What a cache has done.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) hits: StripedCounter,
    pub(crate) stale: StripedCounter,
    pub(crate) calls: StripedCounter,
    pub(crate) coalesced: StripedCounter,
    pub(crate) stored: StripedCounter,
    pub(crate) too_large: StripedCounter,
    pub(crate) bypassed: StripedCounter,
}

impl<E: Send + Sync + 'static, R> Shared<E, R> {
    pub(crate) fn put(&self, key: u128, entry: E, weight: u64) {
        if !self.settings.fresh && !self.settings.stale_if_error {
            // Coalescing alone: nothing would ever read it.
            return;
        }
        if weight > self.settings.max_entry_bytes {
            self.counts.too_large.add(1);
            return;
        }
        self.store.put(key, entry, weight);
        self.counts.stored.add(1);
    }
}

/// Caches its inner service's answers (see
/// [`CacheLayer`](crate::CacheLayer)).
///
/// `E` is what its [`Record`] stores.
pub struct Cache<S, K, R, E> {
    inner: S,
    keyer: K,
    shared: Arc<Shared<E, R>>,
}

impl<S: Clone, K: Clone, R, E> Clone for Cache<S, K, R, E> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
            keyer: self.keyer.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: std::fmt::Debug, K, R, E> std::fmt::Debug for Cache<S, K, R, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl<S, K, R, E> Cache<S, K, R, E> {
    pub(crate) fn new(inner: S, keyer: K, shared: Arc<Shared<E, R>>) -> Self {
        Cache {
            inner,
            keyer,
            shared,
        }
    }
}

/// Whether a failure is the caller's own doing (a stale answer must not
/// hide it).
fn callers_fault(err: &BoxError) -> bool {
    matches!(classify_error(&**err).kind, FailureKind::Client(_))
}

impl<E: Clone + Send + Sync + 'static, R> Shared<E, R> {
    /// The stale answer for a failed call, if the settings allow one and
    /// one is young enough.
    pub(crate) fn stale<Res>(&self, lookup: &Lookup, err: &BoxError) -> Option<Res>
    where
        R: Record<Res, Entry = E>,
    {
        if !self.settings.stale_if_error || callers_fault(err) {
            return None;
        }
        let stored = self.store.get(lookup.key)?;
        let age = stored.age();
        if age > self.settings.max_stale() {
            return None;
        }
        self.counts.stale.add(1);
        let reason = err.to_string();
        // Per request, so at debug: an outage would otherwise log a line
        // per caller (the counts and metrics say how many).
        tracing::debug!(age_ms = age.as_millis() as u64, error = %reason, "answered from the cache: the call failed");
        Some(self.record.replay(
            &stored.entry,
            lookup,
            Replay::Stale {
                age,
                reason: &reason,
            },
        ))
    }

    /// The keep for `lookup`'s answer.
    pub(crate) fn keep(self: &Arc<Self>, key: u128) -> Keep<E>
    where
        R: Send + Sync + 'static,
    {
        Keep {
            shared: self.clone(),
            key,
        }
    }
}

impl<S, K, R, E, Req> Service<Req> for Cache<S, K, R, E>
where
    S: Service<Req>,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    K: Keyer<Req>,
    R: Record<S::Response, Entry = E>,
    E: Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, R, E, S::Response>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let s = &self.shared;
        let Some(lookup) = self.keyer.lookup(&req) else {
            s.counts.bypassed.add(1);
            return ResponseFuture::pass(self.inner.call(req));
        };
        if s.settings.fresh && lookup.fresh {
            if let Some(stored) = s.store.get(lookup.key) {
                let age = stored.age();
                if age <= s.settings.ttl() {
                    s.counts.hits.add(1);
                    let res = s
                        .record
                        .replay(&stored.entry, &lookup, Replay::Fresh { age });
                    return ResponseFuture::ready(res);
                }
            }
        }
        if s.settings.coalesce && !lookup.stream {
            return self.coalesce(req, lookup);
        }
        s.counts.calls.add(1);
        ResponseFuture::call(self.inner.call(req), lookup, s.clone())
    }
}

impl<S, K, R, E: Clone + Send + Sync + 'static> Cache<S, K, R, E> {
    /// Joins the identical call in flight, or starts it: the request
    /// that starts a call runs it in its own future; if it goes away while
    /// others wait, the call goes on in a task of its own.
    fn coalesce<Req>(
        &mut self,
        req: Req,
        lookup: Lookup,
    ) -> ResponseFuture<S::Future, R, E, S::Response>
    where
        S: Service<Req>,
        S::Error: Into<BoxError> + 'static,
        S::Future: Send + 'static,
        S::Response: Send + 'static,
        R: Record<S::Response, Entry = E>,
    {
        let s = &self.shared;
        match s.flights.entry(lookup.key) {
            dashmap::Entry::Occupied(o) => {
                s.counts.coalesced.add(1);
                ResponseFuture::join(o.get().clone(), lookup, s.clone())
            }
            dashmap::Entry::Vacant(v) => {
                s.counts.calls.add(1);
                let flight = Arc::new(Flight::new());
                v.insert(flight.clone());
                let call = Box::pin(self.inner.call(req).map_err(Into::into));
                ResponseFuture::lead(call, flight, lookup, s.clone(), adopt::<S::Response, E, R>)
            }
        }
    }
}

/// The error a coalesced caller gets: the shared call's error.
pub(crate) fn coalesced_error(err: &Arc<BoxError>) -> BoxError {
    Box::new(palisade_core::SharedError::new(err.clone()))
}
