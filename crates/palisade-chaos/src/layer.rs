//! [`ChaosLayer`] and its builder.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;
use palisade_core::ConfigError;
use tower_layer::Layer;

use crate::body::NoStreams;
use crate::draw::Draws;
use crate::handle::{ChaosHandle, Counts, Shared};
use crate::plan::Plan;
use crate::service::Chaos;

/// Which requests a chaos layer applies to.
pub trait Select<Req>: Clone {
    /// Whether `req` may get a fault.
    fn select(&self, req: &Req) -> bool;
}

/// Every request (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct Every;

impl<Req> Select<Req> for Every {
    #[inline]
    fn select(&self, _: &Req) -> bool {
        true
    }
}

impl<Req, F: Fn(&Req) -> bool + Clone> Select<Req> for F {
    #[inline]
    fn select(&self, req: &Req) -> bool {
        self(req)
    }
}

/// Injects faults into the calls of the service it wraps, per its
/// [`Plan`]: errors (a status, with or without a wait), latency, hangs and
/// connection resets, each at its rate, for the requests
/// [selected](Builder::only). For tests, staging and game days; off until
/// enabled (through the builder or the [`ChaosHandle`]), and then with no
/// cost but one atomic load per call.
///
/// An injected error is a [`Classified`](palisade_core::Classified) error
/// of the kind its status means (429: rate limited, 503: overloaded, other
/// 5xx: server error, 4xx: the caller's), a reset a `Connect` failure, so
/// every palisade layer and classifier treats them as the real thing.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade_chaos::{ChaosLayer, Plan};
/// use palisade_core::{classify_error, BoxError, FailureKind};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// let chaos = ChaosLayer::builder()
///     .plan(Plan::default().error(1.0, 503))
///     .enabled(true)
///     .seed(7)
///     .build()
///     .unwrap();
/// let svc = chaos.layer(service_fn(|_: ()| async { Ok::<_, BoxError>("answer") }));
/// let err = svc.clone().oneshot(()).await.unwrap_err();
/// assert!(matches!(classify_error(&*err).kind, FailureKind::Overloaded { .. }));
/// chaos.handle().disable();
/// assert_eq!(svc.oneshot(()).await.unwrap(), "answer");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ChaosLayer<P = Every, St = NoStreams> {
    shared: Arc<Shared>,
    select: P,
    streams: St,
}

impl ChaosLayer {
    /// A builder: an empty plan, off, seeded from the clock.
    pub fn builder() -> Builder {
        Builder {
            name: None,
            plan: Plan::default(),
            enabled: false,
            seed: None,
            select: Every,
            streams: NoStreams,
        }
    }
}

impl<P, St> ChaosLayer<P, St> {
    /// The handle: switch, plan, counts.
    pub fn handle(&self) -> ChaosHandle {
        ChaosHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S, P: Clone, St: Clone> Layer<S> for ChaosLayer<P, St> {
    type Service = Chaos<S, P, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Chaos::new(
            inner,
            self.shared.clone(),
            self.select.clone(),
            self.streams.clone(),
        )
    }
}

/// Configures a [`ChaosLayer`]; [`build`](Self::build) checks the plan.
#[derive(Debug, Clone)]
pub struct Builder<P = Every, St = NoStreams> {
    name: Option<String>,
    plan: Plan,
    enabled: bool,
    seed: Option<u64>,
    select: P,
    streams: St,
}

impl<P, St> Builder<P, St> {
    /// A name for its log lines (the provider it stands in front of).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// What to inject.
    pub fn plan(mut self, plan: Plan) -> Self {
        self.plan = plan;
        self
    }

    /// Whether it injects from the start (default false).
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }

    /// Seeds its draws: the same seed, plan and call order give the same
    /// faults on every run.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Applies only to requests `select` picks (a closure `Fn(&Req) ->
    /// bool`, or any [`Select`]).
    pub fn only<P2>(self, select: P2) -> Builder<P2, St> {
        Builder {
            name: self.name,
            plan: self.plan,
            enabled: self.enabled,
            seed: self.seed,
            select,
            streams: self.streams,
        }
    }

    /// Reaches responses' bodies with `streams` (e.g.
    /// [`HttpStreams`](crate::HttpStreams)), so the plan's stalls and cuts
    /// apply; without it they are never drawn.
    pub fn streams<St2>(self, streams: St2) -> Builder<P, St2> {
        Builder {
            name: self.name,
            plan: self.plan,
            enabled: self.enabled,
            seed: self.seed,
            select: self.select,
            streams,
        }
    }

    /// The layer, if the plan is sound (every problem named).
    pub fn build(self) -> Result<ChaosLayer<P, St>, ConfigError> {
        self.plan.check()?;
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Ok(ChaosLayer {
            shared: Arc::new(Shared {
                name: self.name,
                enabled: AtomicBool::new(self.enabled),
                plan: ArcSwap::from_pointee(self.plan),
                draws: Draws::new(seed),
                counts: Counts::default(),
            }),
            select: self.select,
            streams: self.streams,
        })
    }
}
