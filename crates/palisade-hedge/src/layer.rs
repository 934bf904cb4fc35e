//! [`HedgeLayer`].

use palisade_core::{ErrorClassifier, HttpClassifier};
use tower_layer::Layer;

use crate::policy::HedgePolicy;
use crate::service::Hedge;

/// Hedges the service it wraps by a [`HedgePolicy`]: a late request is
/// sent again through a clone of the same service, and the first success
/// wins. (The palisade router hedges across the providers of a tier
/// instead: a hedge goes to another provider there.)
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade_core::BoxError;
/// use palisade_hedge::{HedgeLayer, HedgePolicy};
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// // The first call hangs for 10 s; the second answers in 50 ms.
/// let calls = Arc::new(AtomicU32::new(0));
/// let c = calls.clone();
/// let provider = service_fn(move |_: ()| {
///     let n = c.fetch_add(1, Ordering::SeqCst);
///     async move {
///         let wait = if n == 0 { 10_000 } else { 50 };
///         tokio::time::sleep(Duration::from_millis(wait)).await;
///         Ok::<_, BoxError>(n)
///     }
/// });
/// let layer = HedgeLayer::new(HedgePolicy::fixed(Duration::from_millis(200)).build().unwrap());
/// let svc = layer.layer(provider);
/// let start = tokio::time::Instant::now();
/// assert_eq!(svc.oneshot(()).await.unwrap(), 1, "the hedge answered");
/// assert_eq!(start.elapsed(), Duration::from_millis(250));
/// assert_eq!(layer.policy().handle().snapshot().won, 1);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct HedgeLayer<C = ErrorClassifier> {
    policy: HedgePolicy,
    classifier: C,
}

impl HedgeLayer {
    /// Hedges by `policy`, counting only errors as failures.
    pub fn new(policy: HedgePolicy) -> Self {
        HedgeLayer {
            policy,
            classifier: ErrorClassifier,
        }
    }

    /// Hedges by `policy`, reading HTTP answers: a 503 is a failure, not a
    /// winner.
    pub fn http(policy: HedgePolicy) -> HedgeLayer<HttpClassifier> {
        HedgeLayer::new(policy).classifier(HttpClassifier::new())
    }
}

impl<C> HedgeLayer<C> {
    /// How answers are classified: only a success wins the race.
    pub fn classifier<C2>(self, classifier: C2) -> HedgeLayer<C2> {
        HedgeLayer {
            policy: self.policy,
            classifier,
        }
    }

    /// The policy (its counts through [`HedgePolicy::handle`]).
    pub fn policy(&self) -> &HedgePolicy {
        &self.policy
    }
}

impl<S, C: Clone> Layer<S> for HedgeLayer<C> {
    type Service = Hedge<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge::new(inner, self.policy.clone(), self.classifier.clone())
    }
}
