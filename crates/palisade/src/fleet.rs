//! Joining a registry's providers to a fleet (feature `redis`).

use palisade_redis::Fleet;

use crate::registry::Registry;

impl<S, C, M> Registry<S, C, M> {
    /// Shares every provider of this registry with `fleet` (see
    /// [`palisade_redis`]): its breaker and rate limiter act with the same
    /// provider's on every replica. Call it again after a reload for the
    /// providers rebuilt or added (joining again replaces what was joined).
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
        for provider in self.ids().iter().filter_map(|id| self.get(id.as_str())) {
            fleet.join(
                provider.id.clone(),
                provider.handles.breaker.as_ref(),
                provider.handles.rate_limit.as_ref(),
            );
        }
    }
}
