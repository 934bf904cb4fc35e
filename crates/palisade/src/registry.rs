//! [`Registry`]: the providers, keyed by id, changeable at runtime.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::{ArcSwap, ArcSwapOption};
use dashmap::DashMap;
use palisade_balance::{Load, Strategy};
use palisade_core::{BoxError, Classify, HasDeadline, ProviderId};
use palisade_hedge::{HedgeHandle, LatencyWindow};

use crate::config::{Config, ConfigError};
use palisade_bulkhead::{OnResponse, ReleaseMode};

use crate::stack::{ProviderHandles, ProviderService, ProviderStack};

/// A running health check and the provider it was started for.
pub(crate) type RunningCheck<S, C, M> = (Weak<Provider<S, C, M>>, crate::check::CheckHandle);

/// One registered provider: its stack, handles and routing marks.
pub struct Provider<S, C, M = OnResponse> {
    /// The provider's id.
    pub id: ProviderId,
    /// Its protected service.
    pub service: ProviderService<S, C, M>,
    /// Handles on its breaker, bulkhead and retry layer.
    pub handles: ProviderHandles,
    /// Takes prompts too long for the others.
    pub large_context: bool,
    /// Takes requests another provider's content filter refused.
    pub content_filter: bool,
    /// Its share of its tier's traffic.
    pub weight: u32,
    /// Calls in flight and latency, as its tier's balancer sees them
    /// (kept across chain rebuilds).
    pub load: Arc<Load>,
    /// Recent latencies, for percentile hedge delays.
    pub latency: Arc<LatencyWindow>,
    /// Recent streams' times to first token, for streams' hedge delays.
    pub first_token: Arc<LatencyWindow>,
    /// The settings it was built from, when built from a config (what
    /// [`RegistryBuilder::reconcile`] compares).
    pub settings: Option<crate::ProviderSettings>,
    /// Whether it is ejected from its tier as an outlier (see
    /// [`eject`](crate::eject)); an admission view of its own.
    pub ejection: crate::eject::Ejection,
}

/// How long a provider's latency window holds samples unless the hedge
/// section says otherwise.
const LATENCY_PERIOD: std::time::Duration = std::time::Duration::from_secs(30);

impl<S, C, M> fmt::Debug for Provider<S, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("id", &self.id)
            .field("handles", &self.handles)
            .field("large_context", &self.large_context)
            .field("content_filter", &self.content_filter)
            .field("weight", &self.weight)
            .field("in_flight", &self.load.in_flight())
            .finish()
    }
}

impl<S, C, M> Provider<S, C, M> {
    /// A provider from a built stack, with no routing marks.
    pub fn new(stack: ProviderStack<S, C, M>) -> Self {
        Provider {
            ejection: crate::eject::Ejection::new(stack.id.clone()),
            id: stack.id,
            service: stack.service,
            handles: stack.handles,
            large_context: false,
            content_filter: false,
            weight: 1,
            load: Arc::new(Load::default()),
            latency: Arc::new(LatencyWindow::new(LATENCY_PERIOD)),
            first_token: Arc::new(LatencyWindow::new(LATENCY_PERIOD)),
            settings: None,
        }
    }

    /// Its share of its tier's traffic (1 to 1000; checked when the
    /// router builds its chain: a provider with a weight out of range is
    /// left out of it, with an error logged).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Marks it as taking prompts too long for the others.
    pub fn large_context(mut self, on: bool) -> Self {
        self.large_context = on;
        self
    }

    /// Marks it as taking requests other providers' filters refused.
    pub fn content_filter(mut self, on: bool) -> Self {
        self.content_filter = on;
        self
    }
}

/// The providers, keyed by [`ProviderId`], on a concurrent map: add,
/// replace and remove them while requests run. A request in flight holds
/// its own handle on the provider it is calling, so replacing or removing
/// that provider never disturbs it; the next request sees the change.
///
/// The preference order (for the [`Router`](crate::Router)) can be set at
/// runtime too; providers missing from it come after, by id.
pub struct Registry<S, C, M = OnResponse> {
    providers: DashMap<ProviderId, Arc<Provider<S, C, M>>>,
    tiers: ArcSwap<Vec<(Vec<ProviderId>, Strategy)>>,
    hedge: ArcSwapOption<HedgeHandle>,
    shared_budget: Option<palisade_retry::RetryBudget>,
    /// Running health checks, by provider (see `Registry::start_checks`),
    /// with the provider each was started for.
    pub(crate) checks: DashMap<ProviderId, RunningCheck<S, C, M>>,
    version: AtomicU64,
}

impl<S, C, M> fmt::Debug for Registry<S, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("providers", &self.ids())
            .field("order", &self.order())
            .finish()
    }
}

impl<S, C, M> Default for Registry<S, C, M> {
    fn default() -> Self {
        Registry {
            providers: DashMap::new(),
            tiers: ArcSwap::from_pointee(Vec::new()),
            hedge: ArcSwapOption::empty(),
            shared_budget: None,
            checks: DashMap::new(),
            version: AtomicU64::new(0),
        }
    }
}

impl<S, C> Registry<S, C, OnResponse> {
    /// Builds a registry from `config`: one stack per provider, each
    /// wrapping the service `make` returns for its settings, in the
    /// configured preference order (with one retry budget for all when
    /// `router.share_retry_budget` is on). Bulkheads free a call's slot
    /// when its response arrives. The short form of
    /// [`RegistryBuilder`].
    pub fn from_config<Req>(
        config: &Config,
        classifier: C,
        make: impl FnMut(&crate::ProviderSettings) -> S,
    ) -> Result<Self, ConfigError>
    where
        S: tower_service::Service<Req, Error = BoxError> + Clone,
        C: Classify<S::Response, BoxError> + Clone,
        Req: HasDeadline,
    {
        RegistryBuilder::new(config, classifier).build(make)
    }
}

/// Builds a [`Registry`] from a [`Config`], with the choices beyond the
/// config (the bulkheads' release mode).
///
/// ```
/// use palisade::bulkhead::OnBodyEnd;
/// use palisade::{Config, RegistryBuilder};
/// use palisade_core::{BoxError, HttpClassifier};
/// use tower::service_fn;
///
/// let cfg = Config::from_toml("[providers.a]\n[providers.b]\n").unwrap();
/// let registry = RegistryBuilder::new(&cfg, HttpClassifier::new())
///     // hold each call's bulkhead slot until its streamed body ends
///     .release_mode(OnBodyEnd)
///     .build(|_| service_fn(|_: http::Request<String>| async {
///         Ok::<_, BoxError>(http::Response::new(String::new()))
///     }))
///     .unwrap();
/// assert_eq!(registry.order().len(), 2);
/// ```
pub struct RegistryBuilder<'a, C, M> {
    config: &'a Config,
    classifier: C,
    mode: PhantomData<fn() -> M>,
}

impl<C, M> fmt::Debug for RegistryBuilder<'_, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryBuilder").finish_non_exhaustive()
    }
}

impl<'a, C> RegistryBuilder<'a, C, OnResponse> {
    /// A builder for a registry of `config`'s providers, reading their
    /// answers with `classifier`.
    pub fn new(config: &'a Config, classifier: C) -> Self {
        RegistryBuilder {
            config,
            classifier,
            mode: PhantomData,
        }
    }
}

impl<'a, C, M> RegistryBuilder<'a, C, M> {
    /// The bulkheads' release mode: [`OnResponse`] (the default), or
    /// [`OnBodyEnd`](palisade_bulkhead::OnBodyEnd) to hold each call's slot
    /// until its streamed HTTP body ends, which is what a concurrency cap
    /// on an LLM provider means for streamed answers.
    pub fn release_mode<M2>(self, _mode: M2) -> RegistryBuilder<'a, C, M2> {
        RegistryBuilder {
            config: self.config,
            classifier: self.classifier,
            mode: PhantomData,
        }
    }

    /// Builds the registry and a [`Router`](crate::Router) over it with
    /// the config's whole-request deadline, the classifier said once.
    ///
    /// ```
    /// use palisade::bulkhead::OnBodyEnd;
    /// use palisade::{Config, RegistryBuilder};
    /// use palisade_core::{BoxError, HttpClassifier};
    /// use tower::service_fn;
    ///
    /// let cfg = Config::from_toml("[providers.a]\n").unwrap();
    /// let router = RegistryBuilder::new(&cfg, HttpClassifier::new())
    ///     .release_mode(OnBodyEnd)
    ///     .build_router(|_| service_fn(|_: http::Request<String>| async {
    ///         Ok::<_, BoxError>(http::Response::new(String::new()))
    ///     }))
    ///     .unwrap();
    /// assert_eq!(router.registry().ids().len(), 1);
    /// ```
    pub fn build_router<S, Req>(
        self,
        make: impl FnMut(&crate::ProviderSettings) -> S,
    ) -> Result<crate::Router<S, C, Req, M>, ConfigError>
    where
        S: tower_service::Service<Req, Error = BoxError> + Clone,
        C: Classify<S::Response, BoxError> + Clone,
        M: ReleaseMode<S::Response>,
        Req: HasDeadline,
    {
        let config = self.config;
        let classifier = self.classifier.clone();
        let registry = self.build(make)?;
        crate::Router::with_registry(std::sync::Arc::new(registry), config, classifier)
    }

    /// Builds one stack per provider around the service `make` returns for
    /// its settings.
    pub fn build<S, Req>(
        self,
        mut make: impl FnMut(&crate::ProviderSettings) -> S,
    ) -> Result<Registry<S, C, M>, ConfigError>
    where
        S: tower_service::Service<Req, Error = BoxError> + Clone,
        C: Classify<S::Response, BoxError> + Clone,
        M: ReleaseMode<S::Response>,
        Req: HasDeadline,
    {
        let config = self.config;
        config.validate()?;
        let shared = config.shared_budget()?;
        let period = latency_period(config);
        let mut registry = Registry::new();
        registry.shared_budget = shared.clone();
        for id in config.provider_order() {
            let settings = config.provider(&id).expect("listed by provider_order");
            let provider = self.provider(settings, &mut make, shared.as_ref(), period)?;
            registry.insert(provider);
        }
        registry.set_tiers(config_tiers(config));
        Ok(registry)
    }

    /// Brings `registry` to this config without a restart: providers whose
    /// settings are unchanged, and that `rebuild` does not name, keep their
    /// stacks and all their state (an open breaker stays open, a budget
    /// keeps its balance, a balancer its latency estimates); changed ones
    /// get a new stack (calls in flight finish on the old one); new ones
    /// are added, missing ones removed, and the tiers replaced. Nothing
    /// changes when the config has a problem. What needs a restart is
    /// refused: switching `router.share_retry_budget`.
    ///
    /// ```
    /// use palisade::{Config, RegistryBuilder};
    /// use palisade_core::{BoxError, ErrorClassifier, WithDeadline};
    /// use tower::service_fn;
    ///
    /// let make = |_: &palisade::ProviderSettings| service_fn(|_: WithDeadline<()>| async { Ok::<_, BoxError>(()) });
    /// let v1 = Config::from_toml("[router]\norder = [\"a\", \"b\"]\n[providers.a]\n[providers.b]").unwrap();
    /// let registry = RegistryBuilder::new(&v1, ErrorClassifier).build(make).unwrap();
    /// let v2 = Config::from_toml("[router]\norder = [\"b\", \"c\"]\n[providers.b]\n[providers.c]").unwrap();
    /// let done = RegistryBuilder::new(&v2, ErrorClassifier).reconcile(&registry, make, |_| false).unwrap();
    /// assert_eq!((done.kept.len(), done.added.len(), done.removed.len()), (1, 1, 1));
    /// assert_eq!(registry.order(), ["b", "c"]);
    /// ```
    pub fn reconcile<S, Req>(
        self,
        registry: &Registry<S, C, M>,
        mut make: impl FnMut(&crate::ProviderSettings) -> S,
        rebuild: impl Fn(&str) -> bool,
    ) -> Result<Reconciled, ConfigError>
    where
        S: tower_service::Service<Req, Error = BoxError> + Clone,
        C: Classify<S::Response, BoxError> + Clone,
        M: ReleaseMode<S::Response>,
        Req: HasDeadline,
    {
        let config = self.config;
        config.validate()?;
        if config.router.share_retry_budget != registry.shared_budget.is_some() {
            return Err(ConfigError::invalid(
                "router.share_retry_budget",
                "changing it needs a restart (the providers' budgets are built around it)",
            ));
        }
        let period = latency_period(config);
        // Build everything first, so a failure changes nothing.
        let mut done = Reconciled::default();
        let mut built = Vec::new();
        let wanted = config.provider_order();
        for id in &wanted {
            let settings = config.provider(id).expect("listed by provider_order");
            let same = registry
                .get(id)
                .is_some_and(|p| p.settings.as_ref() == Some(&settings));
            if same && !rebuild(id) {
                done.kept.push(ProviderId::from(id.as_str()));
                continue;
            }
            let fresh = registry.get(id).is_none();
            built.push((
                fresh,
                self.provider(settings, &mut make, registry.shared_budget.as_ref(), period)?,
            ));
        }
        for (fresh, provider) in built {
            let id = provider.id.clone();
            registry.insert(provider);
            if fresh {
                done.added.push(id);
            } else {
                done.replaced.push(id);
            }
        }
        for id in registry.ids() {
            if !wanted.iter().any(|w| w == id.as_str()) {
                registry.remove(id.as_str());
                done.removed.push(id);
            }
        }
        registry.set_tiers(config_tiers(config));
        Ok(done)
    }

    /// One provider's stack and routing marks, from its settings.
    fn provider<S, Req>(
        &self,
        settings: crate::ProviderSettings,
        make: &mut impl FnMut(&crate::ProviderSettings) -> S,
        shared: Option<&palisade_retry::RetryBudget>,
        period: std::time::Duration,
    ) -> Result<Provider<S, C, M>, ConfigError>
    where
        S: tower_service::Service<Req, Error = BoxError> + Clone,
        C: Classify<S::Response, BoxError> + Clone,
        M: ReleaseMode<S::Response>,
        Req: HasDeadline,
    {
        let mut stack = ProviderStack::builder(&settings, make(&settings), self.classifier.clone());
        if let Some(budget) = shared {
            stack = stack.budget(budget.clone());
        }
        let stack = stack.with_mode::<M>().build()?;
        let mut provider = Provider::new(stack)
            .large_context(settings.large_context)
            .content_filter(settings.content_filter)
            .weight(settings.weight);
        provider.latency = Arc::new(LatencyWindow::new(period));
        provider.first_token = Arc::new(LatencyWindow::new(period));
        provider.settings = Some(settings);
        Ok(provider)
    }
}

/// What [`RegistryBuilder::reconcile`] did, by provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Unchanged: same stack, same state.
    pub kept: Vec<ProviderId>,
    /// Rebuilt with new settings or a new service.
    pub replaced: Vec<ProviderId>,
    /// New in the config.
    pub added: Vec<ProviderId>,
    /// Gone from the config.
    pub removed: Vec<ProviderId>,
}

/// How long providers' latency windows hold samples: the hedge section's
/// period, else 30 s.
fn latency_period(config: &Config) -> std::time::Duration {
    config.router.hedge.as_ref().map_or(LATENCY_PERIOD, |h| {
        std::time::Duration::from_millis(h.period_ms)
    })
}

/// The config's tiers, as the registry keeps them.
fn config_tiers(config: &Config) -> Vec<(Vec<ProviderId>, Strategy)> {
    config
        .provider_tiers()
        .into_iter()
        .map(|(ids, strategy)| (ids.into_iter().map(ProviderId::from).collect(), strategy))
        .collect()
}

impl<S, C, M> Registry<S, C, M> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider, or replaces the one with the same id (returned).
    pub fn insert(&self, provider: Provider<S, C, M>) -> Option<Arc<Provider<S, C, M>>> {
        let old = self
            .providers
            .insert(provider.id.clone(), Arc::new(provider));
        self.bump();
        old
    }

    /// Removes a provider; requests already calling it finish undisturbed.
    pub fn remove(&self, id: &str) -> Option<Arc<Provider<S, C, M>>> {
        let old = self.providers.remove(id).map(|(_, p)| p);
        self.bump();
        old
    }

    /// A provider by id.
    pub fn get(&self, id: &str) -> Option<Arc<Provider<S, C, M>>> {
        self.providers.get(id).map(|p| p.clone())
    }

    /// A provider's handles (breaker, bulkhead, retry and budget).
    pub fn handles(&self, id: &str) -> Option<ProviderHandles> {
        self.providers.get(id).map(|p| p.handles.clone())
    }

    /// The ids registered, by id.
    pub fn ids(&self) -> Vec<ProviderId> {
        let mut ids: Vec<_> = self.providers.iter().map(|e| e.key().clone()).collect();
        ids.sort();
        ids
    }

    /// Sets the preference order (e.g. `openai, anthropic, local`), each
    /// provider a tier of its own.
    pub fn set_order(&self, order: Vec<ProviderId>) {
        self.set_tiers(
            order
                .into_iter()
                .map(|id| (vec![id], Strategy::default()))
                .collect(),
        );
    }

    /// The retry budget every provider shares, when the registry was built
    /// from a config with `router.share_retry_budget` on; a router built
    /// over the registry has its hedges withdraw from it too.
    pub fn shared_budget(&self) -> Option<&palisade_retry::RetryBudget> {
        self.shared_budget.as_ref()
    }

    /// The counts of the hedging that routes over this registry, for its
    /// [health report](Self::health) (a [`Router`](crate::Router) with a
    /// hedge policy sets it).
    pub fn set_hedge(&self, handle: Option<HedgeHandle>) {
        self.hedge.store(handle.map(Arc::new));
    }

    /// The hedging counts set by [`set_hedge`](Self::set_hedge).
    pub fn hedge(&self) -> Option<HedgeHandle> {
        self.hedge.load_full().map(|h| (*h).clone())
    }

    /// Sets the preference order as tiers of equivalent providers, each
    /// balanced by its strategy (e.g. `[azure-east, azure-west]`
    /// round robin, then `[openai]`).
    pub fn set_tiers(&self, tiers: Vec<(Vec<ProviderId>, Strategy)>) {
        self.tiers.store(Arc::new(tiers));
        self.bump();
    }

    /// The effective tiers: the configured ones' registered providers,
    /// then the others, each alone, by id.
    pub fn tiers(&self) -> Vec<(Vec<ProviderId>, Strategy)> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (ids, strategy) in self.tiers.load().iter() {
            let ids: Vec<ProviderId> = ids
                .iter()
                .filter(|id| self.providers.contains_key(*id) && seen.insert((*id).clone()))
                .cloned()
                .collect();
            if !ids.is_empty() {
                out.push((ids, *strategy));
            }
        }
        for id in self.ids() {
            if seen.insert(id.clone()) {
                out.push((vec![id], Strategy::default()));
            }
        }
        out
    }

    /// The effective order: the tiers' providers, flattened.
    pub fn order(&self) -> Vec<ProviderId> {
        self.tiers().into_iter().flat_map(|(ids, _)| ids).collect()
    }

    /// The providers in effective order.
    pub fn in_order(&self) -> Vec<Arc<Provider<S, C, M>>> {
        self.order()
            .iter()
            .filter_map(|id| self.get(id.as_str()))
            .collect()
    }

    /// Changes every time a provider or the order changes.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}
