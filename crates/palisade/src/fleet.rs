//! Joining a registry's providers to a fleet (feature `redis`).

use palisade_redis::Fleet;

use crate::registry::Registry;

impl<S, C, M> Registry<S, C, M> {
    /// Shares every provider of this registry with `fleet` (see
    /// [`palisade_redis`]): its breaker and rate limiter act with the same
    /// provider's on every replica, and its retry budget (a ratio budget)
    /// holds for the fleet: the router's shared budget under the name
    /// `shared`, a provider's own under its id. Call it again after a
    /// reload for the providers rebuilt or added (joining again replaces
    /// what was joined).
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() {
    /// use palisade::redis::{Fleet, FleetSettings};
    /// use palisade::{Config, RegistryBuilder};
    /// use palisade_core::{BoxError, HttpClassifier};
    /// use tower::service_fn;
    ///
    /// let cfg = Config::from_toml(r#"
    ///     [providers.openai.rate_limit]
    ///     requests_per_minute = 600
    /// "#).unwrap();
    /// let router = RegistryBuilder::new(&cfg, HttpClassifier::new())
    ///     .build_router(|_| service_fn(|_: http::Request<String>| async {
    ///         Ok::<_, BoxError>(http::Response::new(String::new()))
    ///     }))
    ///     .unwrap();
    /// let fleet = Fleet::connect(FleetSettings::new("redis://127.0.0.1:6379")).unwrap();
    /// router.registry().join_fleet(&fleet);
    /// fleet.ready().await;
    /// # }
    /// ```
    pub fn join_fleet(&self, fleet: &Fleet) {
        if let Some(budget) = self.shared_budget() {
            fleet.share_budget("shared", budget);
        }
        for id in self.ids() {
            self.join_fleet_provider(fleet, id.as_str());
        }
    }

    /// Shares one provider of this registry with `fleet`, as
    /// [`join_fleet`](Self::join_fleet) does each: for a provider rebuilt
    /// or added by a reload. Returns whether the registry has it.
    pub fn join_fleet_provider(&self, fleet: &Fleet, id: &str) -> bool {
        let Some(provider) = self.get(id) else {
            return false;
        };
        fleet.join(
            provider.id.clone(),
            provider.handles.breaker.as_ref(),
            provider.handles.rate_limit.as_ref(),
        );
        if let Some(retry) = &provider.handles.retry {
            // A budget already shared (the router's, shared once by
            // join_fleet) is left as it is.
            fleet.share_budget(provider.id.as_str(), &retry.budget());
        }
        true
    }
}
