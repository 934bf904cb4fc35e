//! [`Reloader`]: a new config applied to a serving gateway (on SIGHUP).

#[cfg(feature = "sim")]
use std::collections::BTreeMap;
use std::sync::Arc;

use palisade::bulkhead::OnBodyEnd;
use palisade::{Reconciled, RegistryBuilder};
use palisade_core::BoxError;

use crate::config::GatewayConfig;
use crate::state::AppState;
use crate::upstream::{self, GatewayClassifier, UpstreamSettings};

/// Applies a new config to a running gateway: upstreams and their models,
/// palisade's provider settings and tiers. Providers whose settings and
/// upstream did not change keep their state (breakers, budgets, limits,
/// latency estimates); changed ones get new stacks while calls in flight
/// finish on the old; simulated providers take new faults in place.
/// What only a restart can change is refused, naming it: the `[gateway]`
/// section (address, keys, limits, timeouts), and the router's
/// `request_timeout_ms`, `[router.hedge]`, `seed` and
/// `share_retry_budget`. A refused config changes nothing.
///
/// Cheap to clone; [`Gateway::reloader`](crate::Gateway::reloader) gives
/// one.
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<AppState>,
    current: tokio::sync::Mutex<Current>,
    client: upstream::HttpClient,
    settings: UpstreamSettings,
}

struct Current {
    cfg: GatewayConfig,
    #[cfg(feature = "sim")]
    sims: BTreeMap<String, palisade_sim::SimHandle>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

/// `value`'s JSON, for comparing config sections that have no `PartialEq`.
fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

impl Reloader {
    pub(crate) fn new(
        state: Arc<AppState>,
        cfg: GatewayConfig,
        client: upstream::HttpClient,
        settings: UpstreamSettings,
        #[cfg(feature = "sim")] sims: BTreeMap<String, palisade_sim::SimHandle>,
    ) -> Self {
        Reloader {
            inner: Arc::new(Inner {
                state,
                current: tokio::sync::Mutex::new(Current {
                    cfg,
                    #[cfg(feature = "sim")]
                    sims,
                }),
                client,
                settings,
            }),
        }
    }

    /// Reads the config file at `path` and applies it as
    /// [`reload`](Self::reload) does (on SIGHUP, and on `POST
    /// /admin/reload`).
    pub async fn reload_file(&self, path: &std::path::Path) -> Result<Reconciled, BoxError> {
        let cfg = GatewayConfig::from_path(&path.to_string_lossy())
            .map_err(|e| format!("{} not reloaded: {e}", path.display()))?;
        self.reload(cfg).await
    }

    /// Applies `cfg` (already checked: [`GatewayConfig::from_toml`]), and
    /// says what happened to each provider; one reload at a time.
    pub async fn reload(&self, cfg: GatewayConfig) -> Result<Reconciled, BoxError> {
        let mut current = self.inner.current.lock().await;
        let old = &current.cfg;
        let mut restart = Vec::new();
        if json(&old.gateway) != json(&cfg.gateway) {
            restart.push("gateway");
        }
        let (a, b) = (&old.palisade.router, &cfg.palisade.router);
        if a.request_timeout_ms != b.request_timeout_ms {
            restart.push("palisade.router.request_timeout_ms");
        }
        if json(&a.hedge) != json(&b.hedge) {
            restart.push("palisade.router.hedge");
        }
        if json(&a.outlier) != json(&b.outlier) {
            restart.push("palisade.router.outlier");
        }
        if a.seed != b.seed {
            restart.push("palisade.router.seed");
        }
        if a.share_retry_budget != b.share_retry_budget {
            restart.push("palisade.router.share_retry_budget");
        }
        if json(&old.palisade.fleet) != json(&cfg.palisade.fleet) {
            restart.push("palisade.fleet");
        }
        if json(&old.cache) != json(&cfg.cache) {
            restart.push("cache");
        }
        if json(&old.batch) != json(&cfg.batch) {
            restart.push("batch");
        }
        if !restart.is_empty() {
            return Err(format!(
                "not reloaded: changing {} needs a restart",
                restart.join(", ")
            )
            .into());
        }
        // An upstream whose connection settings changed needs a new stack
        // (a simulated one's faults change in place).
        let rebuild: Vec<String> = cfg
            .upstreams
            .iter()
            .filter(|(id, u)| {
                old.upstreams.get(*id).is_none_or(|o| {
                    let strip = |u: &crate::config::UpstreamConfig| {
                        let mut v = json(u);
                        if let Some(m) = v.as_object_mut() {
                            m.remove("simulated");
                        }
                        (v, u.is_simulated())
                    };
                    strip(o) != strip(u)
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        #[cfg(feature = "sim")]
        let mut sims = current.sims.clone();
        let upstreams = crate::app::upstreams(
            &cfg,
            &self.inner.client,
            &self.inner.settings,
            #[cfg(feature = "sim")]
            &mut sims,
            &self.inner.state.chaos,
        )
        .await?;
        let done = RegistryBuilder::new(&cfg.palisade, GatewayClassifier::default())
            .release_mode(OnBodyEnd)
            .reconcile(
                &self.inner.state.registry,
                |p| upstreams[&p.id].clone(),
                |id| rebuild.iter().any(|r| r == id),
            )?;
        if let Some(fleet) = &self.inner.state.fleet {
            // Rebuilt and new providers share with the fleet as before.
            let registry = &self.inner.state.registry;
            for id in done.replaced.iter().chain(&done.added) {
                registry.join_fleet_provider(fleet, id.as_str());
            }
            for id in &done.removed {
                fleet.forget(id.as_str());
            }
        }
        // Checks follow the new stacks and settings.
        crate::app::start_checks(&self.inner.state.registry, &cfg, &upstreams);
        self.inner.state.upstreams.store(Arc::new(upstreams));
        self.inner
            .state
            .models
            .store(Arc::new(crate::state::models_of(&cfg)));
        #[cfg(feature = "sim")]
        sims.retain(|id, _| cfg.upstreams.contains_key(id));
        *current = Current {
            cfg,
            #[cfg(feature = "sim")]
            sims,
        };
        Ok(done)
    }
}
