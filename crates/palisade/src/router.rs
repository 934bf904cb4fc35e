//! [`Router`]: the registry as one service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use palisade_core::{BoxError, Classify, HasDeadline, RejectReason, Rejected, RequestMarks};
use palisade_deadline::{DeadlineLayer, DeadlineService};
use palisade_fallback::{Fallback, NoDegrade, Target};
use palisade_hedge::HedgePolicy;
use pin_project_lite::pin_project;
use tower::util::BoxCloneSyncService;
use tower_layer::Layer;
use tower_service::Service;

use crate::config::{Config, ConfigError};
use crate::registry::Registry;
use palisade_bulkhead::{OnResponse, ReleaseMode};

use crate::stack::ProviderService;

type Chain<S, C, Req, M> = Fallback<ProviderService<S, C, M>, Req, C, NoDegrade>;

struct Cached<S, C, Req, M> {
    version: u64,
    chain: Option<Chain<S, C, Req, M>>,
}

/// A [`Router`] behind tower's [`BoxCloneSyncService`]: nameable, cloneable,
/// `Send + Sync`, with a boxed future that can be awaited in spawned tasks
/// and axum handlers. See [`Router::boxed`].
///
/// In an axum app's state:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use axum::extract::State;
/// use axum::http::StatusCode;
/// use palisade::{http_status, BoxRouter, Config, Router};
/// use palisade_core::{BoxError, HttpClassifier};
/// use tower::{service_fn, ServiceExt};
///
/// type Req = http::Request<String>;
/// type Res = http::Response<String>;
///
/// async fn chat(State(router): State<BoxRouter<Req, Res>>, prompt: String) -> (StatusCode, String) {
///     match router.oneshot(http::Request::new(prompt)).await {
///         Ok(res) => (res.status(), res.into_body()),
///         Err(e) => (http_status(&*e), e.to_string()),
///     }
/// }
///
/// let cfg = Config::from_toml("[providers.llm]\n").unwrap();
/// let router = Router::from_config(&cfg, HttpClassifier::new(), |_| {
///     service_fn(|req: Req| async move { Ok::<_, BoxError>(http::Response::new(format!("re: {}", req.body()))) })
/// })
/// .unwrap();
/// let app = axum::Router::new()
///     .route("/chat", axum::routing::post(chat))
///     .with_state(router.boxed());
/// let res = app
///     .oneshot(http::Request::post("/chat").body(axum::body::Body::from("hi")).unwrap())
///     .await
///     .unwrap();
/// assert_eq!(res.status(), 200);
/// # }
/// ```
pub type BoxRouter<Req, Res> = BoxCloneSyncService<Req, Res, BoxError>;

/// The registry as one service: stamps the whole request's deadline, then
/// falls back across the providers in preference order, skipping those
/// whose breaker is open, honouring the deadline, routing context-length
/// and content-filter failures to providers marked for them.
///
/// The chain is rebuilt only when the registry or the order changes (a
/// version check per call); in between, a call costs a lock-free load of
/// the current chain.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use palisade::{Config, Registry, Router};
/// use palisade_core::{BoxError, HttpClassifier};
/// use std::sync::Arc;
/// use tower::{service_fn, ServiceExt};
///
/// let cfg = Config::from_toml(r#"
///     [router]
///     order = ["primary", "backup"]
///     [providers.primary]
///     [providers.backup]
/// "#).unwrap();
/// let registry = Arc::new(Registry::from_config(&cfg, HttpClassifier::new(), |p| {
///     let name = p.id.clone();
///     service_fn(move |_: http::Request<String>| {
///         let name = name.clone();
///         async move {
///             let status = if name == "primary" { 503 } else { 200 };
///             Ok::<_, BoxError>(http::Response::builder().status(status).body(name).unwrap())
///         }
///     })
/// }).unwrap());
/// let router = Router::new(registry, std::time::Duration::from_secs(30), HttpClassifier::new()).unwrap();
/// let res = router.oneshot(http::Request::new(String::new())).await.unwrap();
/// assert_eq!(res.body(), "backup");
/// # }
/// ```
pub struct Router<S, C, Req, M = OnResponse> {
    registry: Arc<Registry<S, C, M>>,
    deadline: DeadlineLayer,
    classifier: C,
    hedge: Option<HedgePolicy>,
    seed: Option<u64>,
    cache: Arc<ArcSwap<Cached<S, C, Req, M>>>,
    rebuild: Arc<Mutex<()>>,
}

impl<S, C: Clone, Req, M> Clone for Router<S, C, Req, M> {
    fn clone(&self) -> Self {
        Router {
            registry: self.registry.clone(),
            deadline: self.deadline.clone(),
            classifier: self.classifier.clone(),
            hedge: self.hedge.clone(),
            seed: self.seed,
            cache: self.cache.clone(),
            rebuild: self.rebuild.clone(),
        }
    }
}

impl<S, C, Req, M> fmt::Debug for Router<S, C, Req, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("registry", &self.registry)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl<S, C, Req, M> Router<S, C, Req, M>
where
    S: Clone,
    C: Clone,
{
    /// A router over `registry` with a whole-request deadline of
    /// `request_timeout`.
    pub fn new(
        registry: Arc<Registry<S, C, M>>,
        request_timeout: Duration,
        classifier: C,
    ) -> Result<Self, ConfigError> {
        Ok(Router {
            registry,
            deadline: DeadlineLayer::new(request_timeout)?,
            classifier,
            hedge: None,
            seed: None,
            cache: Arc::new(ArcSwap::from_pointee(Cached {
                version: u64::MAX,
                chain: None,
            })),
            rebuild: Arc::new(Mutex::new(())),
        })
    }

    /// The router behind tower's [`BoxCloneSyncService`]: one nameable
    /// type ([`BoxRouter`]) for application state, and a future that can
    /// be awaited anywhere, including inside `tokio::spawn` and axum
    /// handlers (one allocation per call).
    ///
    /// Awaiting the unboxed router's future inside a spawned task fails to
    /// compile ("implementation of `From` is not general enough"): a rustc
    /// limitation (rust-lang/rust#64552) that hits any tower layer whose
    /// error is a `BoxError` built from an inner `BoxError`, tower's own
    /// `Timeout` included. Box at the boundary where the future must be
    /// `Send`; the layers inside stay unboxed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use palisade::{BoxRouter, Config, Router};
    /// use palisade_core::{BoxError, HttpClassifier};
    /// use tower::{service_fn, ServiceExt};
    ///
    /// type Req = http::Request<String>;
    /// let cfg = Config::from_toml("[providers.llm]\n").unwrap();
    /// let router: BoxRouter<Req, http::Response<String>> = Router::from_config(&cfg, HttpClassifier::new(), |_| {
    ///     service_fn(|_: Req| async { Ok::<_, BoxError>(http::Response::new(String::from("hi"))) })
    /// }).unwrap().boxed();
    /// let answer = tokio::spawn(async move { router.oneshot(Req::default()).await });
    /// assert_eq!(answer.await.unwrap().unwrap().body(), "hi");
    /// # }
    /// ```
    pub fn boxed(self) -> BoxRouter<Req, <Self as Service<Req>>::Response>
    where
        Self: Service<Req, Error = BoxError> + Send + Sync + 'static,
        <Self as Service<Req>>::Future: Send + 'static,
    {
        BoxCloneSyncService::new(self)
    }

    /// A router over `registry` with the whole-request deadline of the
    /// config it was built from (`router.request_timeout_ms`). Most
    /// callers want [`Router::from_config`], which builds the registry too;
    /// this is for a registry built with [`RegistryBuilder`](crate::RegistryBuilder)
    /// choices or changed by hand.
    pub fn with_registry(
        registry: Arc<Registry<S, C, M>>,
        config: &Config,
        classifier: C,
    ) -> Result<Self, ConfigError> {
        let timeout = Duration::from_millis(config.router.request_timeout_ms);
        let router = Self::new(registry, timeout, classifier)
            .map_err(|e| e.renamed(&[("timeout.total", "router.request_timeout_ms")]))?;
        let shared = router.registry.shared_budget().cloned();
        let mut router = match &config.router.hedge {
            Some(section) => {
                router.hedge(section.policy_sharing(shared).map_err(|e| e.at("router"))?)
            }
            None => router,
        };
        router.seed = config.router.seed;
        Ok(router)
    }

    /// Hedges late calls to another provider of their tier by `policy`
    /// (see [`Builder::hedge`](palisade_fallback::Builder::hedge)); its
    /// counts are on [`HedgePolicy::handle`] and in the registry's
    /// [health report](Registry::health).
    pub fn hedge(mut self, policy: HedgePolicy) -> Self {
        self.registry.set_hedge(Some(policy.handle().clone()));
        self.hedge = Some(policy);
        // Rebuild the chain with it.
        self.cache = Arc::new(ArcSwap::from_pointee(Cached {
            version: u64::MAX,
            chain: None,
        }));
        self
    }

    /// The hedging policy, if any.
    pub fn hedge_policy(&self) -> Option<&HedgePolicy> {
        self.hedge.as_ref()
    }

    /// The registry behind the router.
    pub fn registry(&self) -> &Arc<Registry<S, C, M>> {
        &self.registry
    }

    /// The chain for the registry as it is now.
    fn chain(&self) -> Option<Chain<S, C, Req, M>> {
        let cached = self.cache.load();
        if cached.version == self.registry.version() {
            return cached.chain.clone();
        }
        drop(cached);
        let _one = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        // Read the version before the providers: a change racing this
        // rebuild bumps it again, and the next call rebuilds once more.
        let version = self.registry.version();
        let cached = self.cache.load();
        if cached.version == version {
            return cached.chain.clone();
        }
        let mut builder = Fallback::builder().classifier(self.classifier.clone());
        if let Some(policy) = &self.hedge {
            builder = builder.hedge(policy.clone());
        }
        if let Some(seed) = self.seed {
            builder = builder.seed(seed);
        }
        for (ids, strategy) in self.registry.tiers() {
            let tier = ids
                .iter()
                .filter_map(|id| self.registry.get(id.as_str()))
                .map(|p| {
                    let mut t = Target::new(p.id.clone(), p.service.clone())
                        .with_admissions(p.handles.admissions().with(p.ejection.clone()))
                        .weight(p.weight)
                        .load(p.load.clone())
                        .latency_window(p.latency.clone())
                        .first_token_window(p.first_token.clone());
                    if p.large_context {
                        t = t.large_context();
                    }
                    if p.content_filter {
                        t = t.content_filter();
                    }
                    t
                });
            builder = builder.tier(strategy, tier);
        }
        let chain = match builder.build() {
            Ok(chain) => Some(chain),
            Err(e) => {
                tracing::error!(error = %e, "router chain refused; no provider will be called");
                None
            }
        };
        tracing::debug!(version, providers = ?self.registry.order(), "router chain rebuilt");
        self.cache.store(Arc::new(Cached {
            version,
            chain: chain.clone(),
        }));
        chain
    }
}

impl<S, C, Req> Router<S, C, Req, OnResponse>
where
    S: Service<Req, Error = BoxError> + Clone,
    C: Classify<S::Response, BoxError> + Clone,
    Req: HasDeadline,
{
    /// Builds the registry from `config` (one stack per provider around the
    /// service `make` returns for its settings, see
    /// [`Registry::from_config`]) and a router over it with the config's
    /// whole-request deadline: the classifier and the timeout are each
    /// said once. The registry stays reachable through
    /// [`registry`](Self::registry) for runtime changes and health.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use palisade::{Config, Router};
    /// use palisade_core::{BoxError, HttpClassifier};
    /// use tower::{service_fn, ServiceExt};
    ///
    /// let cfg = Config::from_toml(r#"
    ///     [router]
    ///     order = ["primary", "backup"]
    ///     request_timeout_ms = 30000
    ///     [providers.primary]
    ///     [providers.backup]
    /// "#).unwrap();
    /// let router = Router::from_config(&cfg, HttpClassifier::new(), |p| {
    ///     let status = if p.id == "primary" { 503 } else { 200 };
    ///     service_fn(move |_: http::Request<String>| async move {
    ///         Ok::<_, BoxError>(http::Response::builder().status(status).body(String::new()).unwrap())
    ///     })
    /// }).unwrap();
    /// let res = router.clone().oneshot(http::Request::new(String::new())).await.unwrap();
    /// assert_eq!(res.status(), 200);
    /// assert_eq!(router.registry().ids().len(), 2);
    /// # }
    /// ```
    pub fn from_config(
        config: &Config,
        classifier: C,
        make: impl FnMut(&crate::ProviderSettings) -> S,
    ) -> Result<Self, ConfigError> {
        let registry = Registry::from_config(config, classifier.clone(), make)?;
        Self::with_registry(Arc::new(registry), config, classifier)
    }
}

impl<S, C, Req, M> Service<Req> for Router<S, C, Req, M>
where
    S: Service<Req, Error = BoxError> + Clone,
    C: Classify<S::Response, BoxError> + Classify<M::Response, BoxError> + Clone,
    M: ReleaseMode<S::Response>,
    Req: Clone + HasDeadline + RequestMarks,
{
    type Response = M::Response;
    type Error = BoxError;
    type Future = RoutedFuture<S, C, Req, M>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The chain readies the provider it actually calls.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.route(req)
    }
}

impl<S, C, Req, M> Router<S, C, Req, M>
where
    S: Service<Req, Error = BoxError> + Clone,
    C: Classify<S::Response, BoxError> + Classify<M::Response, BoxError> + Clone,
    M: ReleaseMode<S::Response>,
    Req: Clone + HasDeadline + RequestMarks,
{
    /// Routes `req` as [`call`](Service::call) does, through a shared
    /// reference: a router is always ready and keeps nothing of a call, so
    /// a router held in shared state (an `Arc`) is called as it is, without
    /// a clone for each request (`ServiceExt::oneshot` on a clone costs its
    /// reference counts and the move of the future).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use palisade::{Config, Registry, Router};
    /// use palisade_core::{BoxError, HttpClassifier};
    /// use std::sync::Arc;
    /// use tower::service_fn;
    ///
    /// let cfg = Config::from_toml("[providers.only]").unwrap();
    /// let registry = Arc::new(Registry::from_config(&cfg, HttpClassifier::new(), |_| {
    ///     service_fn(|_: http::Request<String>| async {
    ///         Ok::<_, BoxError>(http::Response::new("answer"))
    ///     })
    /// }).unwrap());
    /// let router = Arc::new(Router::new(registry, std::time::Duration::from_secs(30), HttpClassifier::new()).unwrap());
    /// // Shared by every request; none clones it.
    /// let res = router.route(http::Request::new(String::new())).await.unwrap();
    /// assert_eq!(*res.body(), "answer");
    /// # }
    /// ```
    pub fn route(&self, req: Req) -> RoutedFuture<S, C, Req, M> {
        match self.chain() {
            Some(chain) => RouterFuture {
                inner: Inner::Routed {
                    fut: self.deadline.layer(chain).call(req),
                },
            },
            None => RouterFuture {
                inner: Inner::NoProvider {
                    error: Some(Rejected::new(RejectReason::NoProvider).into()),
                },
            },
        }
    }
}

/// The future of a [`Router`] over `S` (its type spelled out).
type RoutedFuture<S, C, Req, M> =
    RouterFuture<<DeadlineService<Chain<S, C, Req, M>> as Service<Req>>::Future>;

pin_project! {
    #[project = InnerProj]
    enum Inner<F> {
        Routed { #[pin] fut: F },
        NoProvider { error: Option<BoxError> },
    }
}

pin_project! {
    /// The response future of [`Router`]: the call routed through the
    /// chain under the request's deadline, or a refusal when no provider
    /// is registered.
    pub struct RouterFuture<F> {
        #[pin]
        inner: Inner<F>,
    }
}

impl<F> fmt::Debug for RouterFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.inner {
            Inner::Routed { .. } => "RouterFuture::Routed",
            Inner::NoProvider { .. } => "RouterFuture::NoProvider",
        })
    }
}

impl<F, T> Future for RouterFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            InnerProj::Routed { fut } => fut.poll(cx),
            InnerProj::NoProvider { error } => Poll::Ready(Err(error
                .take()
                .expect("RouterFuture polled after completion"))),
        }
    }
}
