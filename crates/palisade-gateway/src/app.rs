//! The gateway as a whole: building it from its config (upstreams,
//! registry, router), serving, and shutting down gracefully.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use palisade::bulkhead::OnBodyEnd;
use palisade::RegistryBuilder;
use palisade_core::BoxError;

use crate::auth::Auth;
use crate::config::GatewayConfig;
use crate::state::{AppState, Counters, GatewayRegistry};
use crate::upstream::{self, ChatRequest, GatewayClassifier, Upstream, UpstreamSettings};

/// A gateway ready to serve: its router and registry, the simulated
/// providers it started, and its listener.
pub struct Gateway {
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    #[cfg(feature = "sim")]
    sims: BTreeMap<String, palisade_sim::SimHandle>,
    limits: crate::server::Limits,
    reloader: crate::reload::Reloader,
    /// The file `POST /admin/reload` reads again, if any.
    reload_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Starts the simulated providers the config asks for, builds the
    /// registry and router, and binds the listener (`listen` overrides the
    /// config's address; port 0 picks a free one).
    pub async fn bind(cfg: GatewayConfig, listen: Option<SocketAddr>) -> Result<Gateway, BoxError> {
        let settings = UpstreamSettings {
            connect_timeout: Duration::from_millis(cfg.gateway.connect_timeout_ms),
            first_token: Duration::from_millis(cfg.gateway.first_token_timeout_ms),
            idle: Duration::from_millis(cfg.gateway.idle_timeout_ms),
        };
        let tls = upstream::client_config(cfg.gateway.ca_file.as_deref())?;
        let client = upstream::HttpClient::new(settings.connect_timeout, upstream::POOL_IDLE, tls);
        #[cfg(feature = "sim")]
        let mut sims = BTreeMap::new();
        let chaos = Arc::new(crate::chaos::ChaosLayers::default());
        let upstreams = upstreams(
            &cfg,
            &client,
            &settings,
            #[cfg(feature = "sim")]
            &mut sims,
            &chaos,
        )
        .await?;
        let router = RegistryBuilder::new(&cfg.palisade, GatewayClassifier::default())
            .release_mode(OnBodyEnd)
            .build_router(|p| upstreams[&p.id].clone())?;
        let registry = router.registry().clone();
        start_checks(&registry, &cfg, &upstreams);
        if let Some(outlier) = &cfg.palisade.router.outlier {
            palisade::eject::OutlierDetection::spawn(&registry, outlier.clone())?;
        }
        let fleet = match &cfg.palisade.fleet {
            Some(settings) => {
                let fleet = palisade::redis::Fleet::connect(settings.clone())?;
                registry.join_fleet(&fleet);
                // Serve once each provider holds its first leases (or
                // Redis is found unreachable: then alone).
                fleet.ready().await;
                Some(fleet)
            }
            None => None,
        };
        let (router, cache, batch) =
            crate::front::wrap(cfg.cache.as_ref(), cfg.batch.as_ref(), router)?;
        let router = per_key_limits(cfg.gateway.auth.as_ref(), router)?;
        let addr = match listen {
            Some(a) => a,
            None => cfg.gateway.listen.parse()?,
        };
        if let Some(why) = cfg.exposure_problem(addr) {
            return Err(why.into());
        }
        let auth = match &cfg.gateway.auth {
            Some(a)
                if !a.keys.is_empty()
                    || a.admin_key_env.is_some()
                    || a.admin_key_sha256.is_some() =>
            {
                Some(Auth::new(a)?)
            }
            _ => None,
        };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let state = Arc::new(AppState {
            router,
            registry,
            models: arc_swap::ArcSwap::from_pointee(crate::state::models_of(&cfg)),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            max_body: cfg.gateway.max_body_bytes,
            body_timeout: Duration::from_millis(cfg.gateway.body_timeout_ms),
            counters: Counters::default(),
            requests: Default::default(),
            recent: crate::recent::Recent::new(),
            auth,
            fleet: fleet.clone(),
            chaos,
            chaos_endpoint: cfg.gateway.chaos_endpoint,
            served_headers: cfg.gateway.served_headers,
            cache,
            batch,
            // In a fleet, which provider stored which response is shared.
            affinity: match &fleet {
                Some(f) => crate::affinity::Affinity::default().shared(f.notes(
                    "responses",
                    Duration::from_millis(cfg.gateway.response_ids_ttl_ms),
                )),
                None => Default::default(),
            },
            upstreams: arc_swap::ArcSwap::from_pointee(upstreams.clone()),
        });
        let reloader = crate::reload::Reloader::new(
            state.clone(),
            cfg.clone(),
            client,
            settings,
            #[cfg(feature = "sim")]
            sims.clone(),
        );
        Ok(Gateway {
            state,
            reloader,
            reload_file: None,
            listener,
            #[cfg(feature = "sim")]
            sims,
            limits: crate::server::Limits {
                max_connections: cfg.gateway.max_connections,
                header_timeout: Duration::from_millis(cfg.gateway.header_timeout_ms),
                max_header_bytes: cfg.gateway.max_header_bytes,
                max_requests_per_connection: cfg.gateway.max_requests_per_connection,
                grace: Duration::from_millis(cfg.gateway.shutdown_grace_ms),
            },
        })
    }

    /// What applies a new config to this gateway while it serves (see
    /// [`Reloader::reload`](crate::Reloader::reload)).
    pub fn reloader(&self) -> crate::Reloader {
        self.reloader.clone()
    }

    /// Serves `POST /admin/reload` (behind the admin key, when there is
    /// one): reads `path` again and applies it as a SIGHUP does. Without
    /// it the endpoint says there is no file to reload.
    pub fn reload_from(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.reload_file = Some(path.into());
        self
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The simulated providers it started, by id.
    #[cfg(feature = "sim")]
    pub fn sims(&self) -> &BTreeMap<String, palisade_sim::SimHandle> {
        &self.sims
    }

    /// The registry (for handles and health).
    pub fn registry(&self) -> Arc<GatewayRegistry> {
        self.state.registry.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets
    /// requests in flight finish for up to the grace period, and returns.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let reload = crate::routes::AdminReload {
            reloader: self.reloader.clone(),
            file: self.reload_file.clone(),
        };
        let app = crate::routes::app(self.state.clone(), reload);
        crate::server::run(self.listener, app, self.state, self.limits, shutdown).await
    }
}

/// The router behind one rate limit per client key when `[gateway.auth]`
/// sets `requests_per_minute` or `tokens_per_minute` (each key its own
/// bucket, a minute's worth deep), else the router itself.
fn per_key_limits(
    auth: Option<&crate::config::AuthConfig>,
    router: crate::front::Front,
) -> Result<crate::state::Entry, BoxError> {
    use palisade::ratelimit::{estimate_openai_tokens_in, KeyedRateLimitLayer, Quota};
    use tower::Layer;
    let Some(auth) =
        auth.filter(|a| a.requests_per_minute.is_some() || a.tokens_per_minute.is_some())
    else {
        return Ok(tower::util::Either::Left(router));
    };
    let key: crate::state::KeyOfRequest = |r| r.client.clone();
    let tokens: crate::state::TokensOfRequest = |r| estimate_openai_tokens_in(r.body());
    // Each key's estimate is corrected by what its answers used (a
    // stream's when it ends).
    let mut limit = KeyedRateLimitLayer::builder(key)
        .provider("gateway")
        .weigh(tokens)
        .classifier(crate::upstream::GatewayClassifier::default());
    if let Some(n) = auth.requests_per_minute {
        limit = limit.quota(Quota::per_minute(n).burst(n));
    }
    if let Some(n) = auth.tokens_per_minute {
        limit = limit.quota(Quota::tokens_per_minute(n).burst(n));
    }
    Ok(tower::util::Either::Right(limit.build()?.layer(router)))
}

/// One [`Upstream`] per `[upstreams.<id>]`. A simulated one reuses the
/// running simulator of that id in `sims` (its faults replaced) or starts
/// one.
/// Starts the health checks `[palisade.*.health_check]` asks for: each
/// checked upstream is sent a one-token chat completion of its first model,
/// straight (not through its stack, so checks are not counted as traffic).
pub(crate) fn start_checks(
    registry: &GatewayRegistry,
    cfg: &GatewayConfig,
    upstreams: &BTreeMap<String, Upstream>,
) {
    let checked = registry.start_checks(|p, settings| {
        let upstream = upstreams.get(p.id.as_str())?.clone();
        let model: Arc<str> = cfg
            .upstreams
            .get(p.id.as_str())?
            .models
            .keys()
            .next()?
            .as_str()
            .into();
        let request = move || {
            let body = serde_json::json!({
                "model": &*model,
                "messages": [{"role": "user", "content": "ping"}],
                "max_tokens": 1,
            });
            let body = body.as_object().cloned().unwrap_or_default();
            ChatRequest::new(&model, body, false)
        };
        Some(
            palisade::check::HealthCheck::new(settings, upstream, request)
                .classifier(GatewayClassifier::default()),
        )
    });
    if !checked.is_empty() {
        tracing::info!(providers = ?checked, "health checks started");
    }
}

pub(crate) async fn upstreams(
    cfg: &GatewayConfig,
    client: &upstream::HttpClient,
    settings: &UpstreamSettings,
    #[cfg(feature = "sim")] sims: &mut BTreeMap<String, palisade_sim::SimHandle>,
    chaos: &crate::chaos::ChaosLayers,
) -> Result<BTreeMap<String, Upstream>, BoxError> {
    let mut out = BTreeMap::new();
    for (id, u) in &cfg.upstreams {
        #[cfg(feature = "sim")]
        let base = match &u.simulated {
            Some(faults) => match sims.get(id) {
                Some(sim) => {
                    let faults = faults.clone();
                    sim.set_faults(move |f| *f = faults);
                    sim.base_url()
                }
                None => {
                    let sim = palisade_sim::spawn(id, faults.clone()).await?;
                    let base = sim.base_url();
                    sims.insert(id.clone(), sim);
                    base
                }
            },
            None => u.base_url.clone().unwrap_or_default(),
        };
        #[cfg(not(feature = "sim"))]
        let base = u.base_url.clone().unwrap_or_default();
        let mut key = u.api_key_env.as_ref().and_then(|v| std::env::var(v).ok());
        // Checked with the config: names and values that parse.
        let mut headers = http::HeaderMap::new();
        for (name, value) in &u.headers {
            headers.append(
                http::HeaderName::try_from(name.as_str())?,
                http::HeaderValue::from_str(value)?,
            );
        }
        // A key in a header of its own (`api-key`) goes as it is, with the
        // other headers; in `authorization`, as a bearer token.
        if let Some(name) = u.api_key_header.as_deref() {
            let name = http::HeaderName::try_from(name)?;
            if name != http::header::AUTHORIZATION {
                if let Some(k) = key.take() {
                    let mut value = http::HeaderValue::from_str(&k)?;
                    value.set_sensitive(true);
                    headers.insert(name, value);
                }
            }
        }
        out.insert(
            id.clone(),
            Upstream::new(
                id,
                &base,
                key,
                u.models.clone(),
                client,
                settings,
                chaos.for_upstream(id),
            )?
            .with_headers(headers)
            .with_stream_usage(u.stream_usage.unwrap_or(true)),
        );
    }
    Ok(out)
}
