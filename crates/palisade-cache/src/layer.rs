//! [`CacheLayer`], its builder, and [`CacheHandle`].

use std::marker::PhantomData;
use std::sync::Arc;

use dashmap::DashMap;
use palisade_core::ConfigError;
use serde::Serialize;
use tower_layer::Layer;

use crate::record::Record;
use crate::service::{Cache, Counts, Shared};
use crate::settings::CacheSettings;
use crate::store::Store;

/// Caches the answers of the service it wraps, for three uses, each on
/// its own switch ([`CacheSettings`]):
///
/// - **stale-if-error** (on by default): when the call fails (for a
///   router: every provider), the newest stored answer younger than
///   `max_stale` answers instead, marked degraded;
/// - **fresh** (off by default): a stored answer younger than `ttl`
///   answers with no call, for requests whose [`Lookup`](crate::Lookup)
///   allows it (LLM answers repeat only at temperature 0);
/// - **coalescing** (on by default): identical requests in flight at once
///   share one call, run by the request that started it; if that request
///   goes away while others wait, the call goes on in a task of its own
///   (a caller that goes away cancels nothing for the others). Every
///   caller gets its own copy of the answer, or the error. Streams are
///   not coalesced.
///
/// Errors are never stored; a request its [`Keyer`](crate::Keyer) does
/// not key (`no-store`) passes by. The store is bounded by the bytes of
/// its answers (`max_bytes`): quick_cache, whose lookups take a shard's
/// shared read lock, never a `Mutex`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use palisade_cache::{CacheLayer, CacheSettings, CloneRecord, Lookup};
/// use palisade_core::BoxError;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// let down = Arc::new(AtomicBool::new(false));
/// let flag = down.clone();
/// let provider = service_fn(move |prompt: String| {
///     let down = flag.load(Ordering::Relaxed);
///     async move {
///         if down { Err::<String, BoxError>("every provider failed".into()) } else { Ok(format!("answer to {prompt}")) }
///     }
/// });
/// let cache = CacheLayer::builder(CloneRecord::<String>::new())
///     .settings(CacheSettings::default())
///     .build(|p: &String| Some(Lookup::new(palisade_cache::hash_bytes(p.as_bytes()))))
///     .unwrap();
/// let svc = cache.layer(provider);
/// assert_eq!(svc.clone().oneshot("hi".into()).await.unwrap(), "answer to hi");
/// down.store(true, Ordering::Relaxed);
/// // The provider is down: the stored answer stands in.
/// assert_eq!(svc.clone().oneshot("hi".into()).await.unwrap(), "answer to hi");
/// assert!(svc.oneshot("new".into()).await.is_err(), "nothing stored for a new prompt");
/// assert_eq!(cache.handle().snapshot().stale, 1);
/// # }
/// ```
///
/// `E` is what its [`Record`] stores.
pub struct CacheLayer<K, R, E> {
    keyer: K,
    shared: Arc<Shared<E, R>>,
}

impl<K: Clone, R, E> Clone for CacheLayer<K, R, E> {
    fn clone(&self) -> Self {
        CacheLayer {
            keyer: self.keyer.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<K, R, E> std::fmt::Debug for CacheLayer<K, R, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayer")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl CacheLayer<(), (), ()> {
    /// A builder storing answers of type `Res` with `record`, on the
    /// default settings.
    pub fn builder<R: Record<Res>, Res>(record: R) -> Builder<R, Res> {
        Builder {
            record,
            settings: CacheSettings::default(),
            _res: PhantomData,
        }
    }
}

impl<K, R, E> CacheLayer<K, R, E> {
    /// The handle: counts, size, clear.
    pub fn handle(&self) -> CacheHandle<E, R> {
        CacheHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S, K: Clone, R, E> Layer<S> for CacheLayer<K, R, E> {
    type Service = Cache<S, K, R, E>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache::new(inner, self.keyer.clone(), self.shared.clone())
    }
}

/// Configures a [`CacheLayer`].
pub struct Builder<R, Res> {
    record: R,
    settings: CacheSettings,
    _res: PhantomData<fn() -> Res>,
}

impl<R, Res> std::fmt::Debug for Builder<R, Res> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<R: Record<Res>, Res> Builder<R, Res> {
    /// The settings (checked by [`build`](Self::build)).
    pub fn settings(mut self, settings: CacheSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The layer, keying requests with `keyer`, if the settings are sound
    /// (every problem named).
    pub fn build<K>(self, keyer: K) -> Result<CacheLayer<K, R, R::Entry>, ConfigError> {
        self.settings.check()?;
        Ok(CacheLayer {
            keyer,
            shared: Arc::new(Shared {
                settings: self.settings,
                store: Store::new(self.settings.max_bytes, self.settings.keep_for()),
                flights: DashMap::default(),
                record: self.record,
                counts: Counts::default(),
            }),
        })
    }
}

/// A cache's counts and size, and a way to empty it.
pub struct CacheHandle<E, R> {
    shared: Arc<Shared<E, R>>,
}

impl<E, R> Clone for CacheHandle<E, R> {
    fn clone(&self) -> Self {
        CacheHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<E, R> std::fmt::Debug for CacheHandle<E, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheHandle").finish_non_exhaustive()
    }
}

/// What a cache has done, and holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CacheSnapshot {
    /// Requests answered by a fresh entry, with no call.
    pub hits: u64,
    /// Failed calls answered by a stale entry, marked degraded.
    pub stale: u64,
    /// Calls made (one per coalesced group).
    pub calls: u64,
    /// Requests that joined an identical call in flight.
    pub coalesced: u64,
    /// Requests passed by (not keyed: `no-store`).
    pub bypassed: u64,
    /// Answers stored.
    pub stored: u64,
    /// Answers not stored for being over `max_entry_bytes`.
    pub too_large: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// Calls in flight that others can join.
    pub in_flight: u64,
}

impl<E: Send + Sync + 'static, R> CacheHandle<E, R> {
    /// The counts and size now.
    pub fn snapshot(&self) -> CacheSnapshot {
        let s = &self.shared;
        let c = &s.counts;
        CacheSnapshot {
            hits: c.hits.get(),
            stale: c.stale.get(),
            calls: c.calls.get(),
            coalesced: c.coalesced.get(),
            bypassed: c.bypassed.get(),
            stored: c.stored.get(),
            too_large: c.too_large.get(),
            entries: s.store.entries(),
            bytes: s.store.bytes(),
            in_flight: s.flights.len() as u64,
        }
    }

    /// Drops every stored answer.
    pub fn clear(&self) {
        self.shared.store.clear();
    }

    /// The settings it runs on.
    pub fn settings(&self) -> CacheSettings {
        self.shared.settings
    }
}
