//! Starting a registry's health checks from its config.

use std::sync::Arc;

use palisade_core::{BoxError, Classify, ProviderId};
use tower::Service;

use super::{HealthCheck, HealthCheckSettings};
use crate::registry::{Provider, Registry};

impl<S, C, M> Registry<S, C, M> {
    /// Starts the health checks the config asks for (`[..health_check]
    /// enabled = true`) for every provider with a breaker: `check(provider,
    /// settings)` builds the check (see [`HealthCheck`]) or says `None` to
    /// leave it unchecked. Call it again after a reload: a provider kept as
    /// it was keeps its running check (and its counts), a rebuilt one gets
    /// a new check, and a removed one's check stops. The health report
    /// shows each check (`health_check`). Returns the providers checked.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use palisade::check::HealthCheck;
    /// use palisade::{Config, RegistryBuilder};
    /// use palisade_core::{BoxError, HttpClassifier};
    /// use tower::service_fn;
    ///
    /// let cfg = Config::from_toml(r#"
    ///     [providers.openai.health_check]
    ///     enabled = true
    ///     interval_ms = 1000
    ///     [providers.backup]
    /// "#).unwrap();
    /// let upstream = service_fn(|_: http::Request<String>| async {
    ///     Ok::<_, BoxError>(http::Response::new(String::new()))
    /// });
    /// let router = RegistryBuilder::new(&cfg, HttpClassifier::new())
    ///     .build_router(|_| upstream.clone())
    ///     .unwrap();
    /// let checked = router.registry().start_checks(|_provider, settings| {
    ///     Some(HealthCheck::new(settings, upstream.clone(), || http::Request::new(String::new())))
    /// });
    /// assert_eq!(checked, vec![palisade_core::ProviderId::from("openai")]);
    /// # }
    /// ```
    pub fn start_checks<P, R, Cl, F>(&self, check: F) -> Vec<ProviderId>
    where
        F: Fn(&Provider<S, C, M>, HealthCheckSettings) -> Option<HealthCheck<P, R, Cl>>,
        P: Service<R> + Send + 'static,
        P::Future: Send,
        P::Error: Into<BoxError>,
        P::Response: Send,
        R: Send + 'static,
        Cl: Classify<P::Response, BoxError> + Send + 'static,
    {
        let ids = self.ids();
        // Checks of providers no longer here stop.
        self.checks.retain(|id, (_, check)| {
            let here = ids.contains(id);
            if !here {
                check.stop();
            }
            here
        });
        let mut checked = Vec::new();
        for id in ids {
            let Some(provider) = self.get(id.as_str()) else {
                continue;
            };
            // The same provider (kept by a reload): its check runs on.
            if let Some(running) = self.checks.get(&id) {
                if running
                    .0
                    .upgrade()
                    .is_some_and(|p| Arc::ptr_eq(&p, &provider))
                {
                    checked.push(id);
                    continue;
                }
            }
            if let Some((_, (_, old))) = self.checks.remove(&id) {
                old.stop();
            }
            let settings = provider
                .settings
                .as_ref()
                .map(|s| s.layers.health_check.clone())
                .unwrap_or_default();
            let Some(breaker) = provider.handles.breaker.as_ref() else {
                continue;
            };
            if !settings.enabled {
                continue;
            }
            let Some(c) = check(&provider, settings) else {
                continue;
            };
            match c.spawn(breaker) {
                Ok(handle) => {
                    self.checks
                        .insert(id.clone(), (Arc::downgrade(&provider), handle));
                    checked.push(id);
                }
                Err(e) => {
                    tracing::warn!(provider = id.as_str(), error = %e, "health check not started")
                }
            }
        }
        checked
    }

    /// The running health check of provider `id`, if any.
    pub fn check(&self, id: &str) -> Option<super::CheckHandle> {
        self.checks.get(id).map(|c| c.1.clone())
    }
}
