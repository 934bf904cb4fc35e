//! The [`Fallback`] service, its builder and [`FallbackLayer`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_balance::{Balancer, Strategy};
use palisade_core::{
    Admission, Admissions, BoxError, Classify, ErrorClassifier, HasDeadline, Policy, ProviderId,
    RequestMarks,
};
use palisade_hedge::{HedgeDelay, HedgePolicy};
use tower_layer::Layer;
use tower_service::Service;

use crate::degrade::{Degrade, DegradeWith, NoDegrade};
use crate::error::config_error;
use crate::error::ConfigError;
use crate::future::ResponseFuture;
use crate::target::Target;
use crate::tier::{Tier, TierSpec};

/// What every clone of a chain shares.
pub(crate) struct Chain<S, Req, C, D> {
    pub(crate) targets: Vec<Target<S, Req>>,
    pub(crate) tiers: Vec<Tier>,
    pub(crate) hedge: Option<HedgePolicy>,
    pub(crate) classifier: C,
    pub(crate) policy: Policy,
    pub(crate) degrade: D,
}

/// Lays the targets out in tiers and checks them: at least one target, no
/// id twice, each tier's weights and size within its balancer's limits.
fn assemble<S, Req, C, D>(
    mut targets: Vec<Target<S, Req>>,
    specs: &[TierSpec],
    hedge: Option<HedgePolicy>,
    seed: Option<u64>,
    classifier: C,
    policy: Policy,
    degrade: D,
) -> Result<Chain<S, Req, C, D>, ConfigError> {
    if targets.is_empty() {
        return Err(config_error("targets", "the chain has no provider"));
    }
    let mut problems = palisade_core::Problems::new("fallback");
    for (i, t) in targets.iter().enumerate() {
        if targets[..i].iter().any(|o| o.id == t.id) {
            problems.add(
                "targets",
                format!("provider {} is in the chain twice", t.id),
            );
        }
    }
    let percentile = matches!(
        hedge.as_ref().map(HedgePolicy::delay),
        Some(HedgeDelay::Percentile { .. })
    );
    let mut tiers = Vec::with_capacity(specs.len());
    let mut start = 0;
    for (n, &(len, strategy)) in specs.iter().enumerate() {
        let end = start + len;
        let balancer = if len > 1 {
            let weights = targets[start..end].iter().map(|t| t.weight).collect();
            let built = match seed {
                Some(seed) => Balancer::seeded(strategy, weights, seed.wrapping_add(n as u64)),
                None => Balancer::new(strategy, weights),
            };
            match built {
                Ok(b) => Some(b),
                Err(e) => {
                    problems.extend(e.at(&format!("tiers[{n}]")));
                    None
                }
            }
        } else {
            None
        };
        tiers.push(Tier {
            start,
            end,
            timed: len > 1 && (strategy.needs_latency() || (hedge.is_some() && percentile)),
            counted: len > 1,
            balancer,
        });
        start = end;
    }
    problems.finish()?;
    if let Some(h) = &hedge {
        for t in &mut targets {
            if t.window.is_none() {
                t.window = Some(Arc::new(h.window()));
            }
            if t.first_token_window.is_none() {
                t.first_token_window = Some(Arc::new(h.window()));
            }
        }
    }
    Ok(Chain {
        targets,
        tiers,
        hedge,
        classifier,
        policy,
        degrade,
    })
}

/// Calls providers in order until one answers: the next provider is tried
/// when a failure's classification says fall back (see
/// [`Policy::falls_back`](palisade_core::Policy::falls_back)); the caller's
/// own faults (400, 401, 403, 404, 422...) are returned at once.
///
/// - Providers that a layer of their stack refuses (an open breaker, a
///   full bulkhead; see [`Target::admission`]) are skipped without being
///   called, so a dead primary costs no latency.
/// - `ContextLengthExceeded` goes only to providers marked
///   [`large_context`](Target::large_context); `ContentFiltered` only to
///   providers marked [`content_filter`](Target::content_filter).
/// - No provider is started after the request's deadline has passed.
/// - Each provider gets its own copy of the request (`Req: Clone`), with
///   its [`rewrite`](Target::rewrite) applied; a chain of one provider
///   gives it the request itself (no call can follow, so nothing is kept).
/// - `poll_ready` is always ready: the provider actually called is readied
///   in the response future, and no other.
/// - When every provider failed, the error is an
///   [`AllFailed`](crate::AllFailed) listing each one with its own outcome,
///   unless a [`degrade`](Builder::degrade) handler answers instead.
///
/// Providers of different service types can share a chain through
/// `tower::util::BoxCloneSyncService` (the `Sync` one, so that the chain,
/// shared by its clones, can move between threads).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use palisade_core::{BoxError, WithDeadline};
/// use palisade_fallback::{Fallback, Target};
/// use tower::{service_fn, util::BoxCloneSyncService, ServiceExt};
///
/// type Svc = BoxCloneSyncService<WithDeadline<&'static str>, String, BoxError>;
/// let down: Svc = BoxCloneSyncService::new(service_fn(|_: WithDeadline<&'static str>| async {
///     Err::<String, BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
/// }));
/// let up: Svc = BoxCloneSyncService::new(service_fn(|r: WithDeadline<&'static str>| async move {
///     Ok::<_, BoxError>(format!("local: {}", r.into_inner()))
/// }));
/// let chain = Fallback::builder()
///     .target(Target::new("openai", down))
///     .target(Target::new("local", up))
///     .build()
///     .unwrap();
/// assert_eq!(chain.oneshot(WithDeadline::new("hi")).await.unwrap(), "local: hi");
/// # }
/// ```
pub struct Fallback<S, Req, C = ErrorClassifier, D = NoDegrade> {
    chain: Arc<Chain<S, Req, C, D>>,
}

impl<S, Req, C, D> Clone for Fallback<S, Req, C, D> {
    fn clone(&self) -> Self {
        Fallback {
            chain: self.chain.clone(),
        }
    }
}

impl<S, Req, C, D> fmt::Debug for Fallback<S, Req, C, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("targets", &self.chain.targets)
            .finish()
    }
}

impl<S, Req> Fallback<S, Req> {
    /// Starts a builder with no targets, [`ErrorClassifier`], the default
    /// policy and no degradation.
    pub fn builder() -> Builder<S, Req> {
        Builder {
            targets: Vec::new(),
            tiers: Vec::new(),
            hedge: None,
            seed: None,
            classifier: ErrorClassifier,
            policy: Policy::default(),
            degrade: NoDegrade,
        }
    }
}

impl<S, Req, C, D> Fallback<S, Req, C, D> {
    /// The providers, in order.
    pub fn providers(&self) -> impl Iterator<Item = &ProviderId> {
        self.chain.targets.iter().map(|t| &t.id)
    }
}

impl<S, Req, C, D> Service<Req> for Fallback<S, Req, C, D>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
    D: Degrade<S::Response>,
    Req: Clone + HasDeadline + RequestMarks,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C, D>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture::new(self.chain.clone(), req)
    }
}

/// Builds a [`Fallback`]; [`build`](Self::build) checks the chain.
pub struct Builder<S, Req, C = ErrorClassifier, D = NoDegrade> {
    targets: Vec<Target<S, Req>>,
    tiers: Vec<TierSpec>,
    hedge: Option<HedgePolicy>,
    seed: Option<u64>,
    classifier: C,
    policy: Policy,
    degrade: D,
}

impl<S, Req, C, D> fmt::Debug for Builder<S, Req, C, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("targets", &self.targets)
            .finish()
    }
}

impl<S, Req, C, D> Builder<S, Req, C, D> {
    /// Appends a provider to the chain, as a tier of its own.
    pub fn target(mut self, target: Target<S, Req>) -> Self {
        self.targets.push(target);
        self.tiers.push((1, Strategy::default()));
        self
    }

    /// Appends a tier: equivalent providers (regions, keys, OpenAI and
    /// Azure for one model) balanced by `strategy` and their
    /// [weights](Target::weight). A call goes to one provider of the tier;
    /// when it fails (in a way that falls back) or refuses, the others of
    /// the tier are tried, in the balancer's order, before the next tier.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use palisade_balance::Strategy;
    /// use palisade_core::{BoxError, WithDeadline};
    /// use palisade_fallback::{Fallback, Target};
    /// use tower::{service_fn, util::BoxCloneSyncService, ServiceExt};
    ///
    /// type Svc = BoxCloneSyncService<WithDeadline<()>, &'static str, BoxError>;
    /// let answer = |name: &'static str| -> Svc {
    ///     BoxCloneSyncService::new(service_fn(move |_: WithDeadline<()>| async move { Ok::<_, BoxError>(name) }))
    /// };
    /// let chain = Fallback::builder()
    ///     .tier(Strategy::RoundRobin, [
    ///         Target::new("azure-east", answer("east")),
    ///         Target::new("azure-west", answer("west")),
    ///     ])
    ///     .target(Target::new("local", answer("local")))
    ///     .build()
    ///     .unwrap();
    /// let mut seen = Vec::new();
    /// for _ in 0..4 {
    ///     seen.push(chain.clone().oneshot(WithDeadline::new(())).await.unwrap());
    /// }
    /// assert_eq!(seen, ["east", "west", "east", "west"]);
    /// # }
    /// ```
    pub fn tier(
        mut self,
        strategy: Strategy,
        targets: impl IntoIterator<Item = Target<S, Req>>,
    ) -> Self {
        let before = self.targets.len();
        self.targets.extend(targets);
        let len = self.targets.len() - before;
        if len > 0 {
            self.tiers.push((len, strategy));
        }
        self
    }

    /// Hedges within tiers: a call not answered when `policy`'s delay has
    /// passed is sent again to *another* provider of the same tier
    /// (chosen by its balancer), and the first success wins; the others
    /// are dropped. Only hedgeable requests, only tiers of two or more,
    /// each hedge paid from the policy's budget.
    pub fn hedge(mut self, policy: HedgePolicy) -> Self {
        self.hedge = Some(policy);
        self
    }

    /// Fixes the balancers' random draws (reproducible simulations).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How results are classified (use
    /// [`HttpClassifier`](palisade_core::HttpClassifier) for HTTP
    /// responses, so a 503 falls back and a 400 does not).
    pub fn classifier<C2>(self, classifier: C2) -> Builder<S, Req, C2, D> {
        Builder {
            targets: self.targets,
            tiers: self.tiers,
            hedge: self.hedge,
            seed: self.seed,
            classifier,
            policy: self.policy,
            degrade: self.degrade,
        }
    }

    /// Which failures move on to the next provider.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Answers with `f`'s response when every provider failed (a static
    /// or cached answer), marked as degraded: for HTTP, the
    /// `x-palisade-degraded: 1` header and a
    /// [`Degraded`](crate::Degraded) extension. Returning `None` returns
    /// the error.
    pub fn degrade<F>(self, f: F) -> Builder<S, Req, C, DegradeWith<F>> {
        Builder {
            targets: self.targets,
            tiers: self.tiers,
            hedge: self.hedge,
            seed: self.seed,
            classifier: self.classifier,
            policy: self.policy,
            degrade: DegradeWith(f),
        }
    }

    /// Checks the chain (at least one provider, no id twice, tiers
    /// within their balancers' limits) and builds it.
    pub fn build(self) -> Result<Fallback<S, Req, C, D>, ConfigError> {
        Ok(Fallback {
            chain: Arc::new(assemble(
                self.targets,
                &self.tiers,
                self.hedge,
                self.seed,
                self.classifier,
                self.policy,
                self.degrade,
            )?),
        })
    }

    /// A layer that puts the wrapped service first in the chain, as
    /// provider `primary`, before the targets given here.
    pub fn into_layer(
        self,
        primary: impl Into<ProviderId>,
    ) -> Result<FallbackLayer<S, Req, C, D>, ConfigError>
    where
        S: Clone,
        C: Clone,
        D: Clone,
    {
        let primary = primary.into();
        if self.targets.iter().any(|t| t.id == primary) {
            return Err(config_error(
                "primary",
                format!("provider {primary} is also a fallback target"),
            ));
        }
        if !self.targets.is_empty() {
            // The same checks `layer` will need to pass.
            assemble(
                self.targets.clone(),
                &self.tiers,
                None,
                self.seed,
                (),
                Policy::default(),
                (),
            )?;
        }
        Ok(FallbackLayer {
            primary,
            primary_admission: Admissions::default(),
            builder: self,
        })
    }
}

impl<S: Clone, Req, C: Clone, D: Clone> Clone for Builder<S, Req, C, D> {
    fn clone(&self) -> Self {
        Builder {
            targets: self.targets.clone(),
            tiers: self.tiers.clone(),
            hedge: self.hedge.clone(),
            seed: self.seed,
            classifier: self.classifier.clone(),
            policy: self.policy.clone(),
            degrade: self.degrade.clone(),
        }
    }
}

/// Puts the service it wraps first in a fallback chain. Made by
/// [`Builder::into_layer`].
///
/// ```
/// use palisade_core::{BoxError, WithDeadline};
/// use palisade_fallback::{Fallback, Target};
/// use tower::{service_fn, util::BoxCloneSyncService, Layer};
///
/// type Svc = BoxCloneSyncService<WithDeadline<u32>, u32, BoxError>;
/// let backup: Svc = BoxCloneSyncService::new(service_fn(|r: WithDeadline<u32>| async move { Ok::<_, BoxError>(r.into_inner()) }));
/// let layer = Fallback::<Svc, WithDeadline<u32>>::builder()
///     .target(Target::new("backup", backup.clone()))
///     .into_layer("primary")
///     .unwrap();
/// let chain = layer.layer(backup);
/// assert_eq!(chain.providers().map(|p| p.as_str()).collect::<Vec<_>>(), ["primary", "backup"]);
/// ```
pub struct FallbackLayer<S, Req, C = ErrorClassifier, D = NoDegrade> {
    primary: ProviderId,
    primary_admission: Admissions,
    builder: Builder<S, Req, C, D>,
}

impl<S, Req, C, D> FallbackLayer<S, Req, C, D> {
    /// A layer of the primary's stack that can say "not now" (see
    /// [`Target::admission`]), so the chain skips the primary while it
    /// refuses.
    pub fn primary_admission(mut self, view: impl Admission) -> Self {
        self.primary_admission.push(view);
        self
    }
}

impl<S, Req, C, D> fmt::Debug for FallbackLayer<S, Req, C, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("primary", &self.primary)
            .field("fallbacks", &self.builder.targets)
            .finish()
    }
}

impl<S: Clone, Req, C: Clone, D: Clone> Clone for FallbackLayer<S, Req, C, D> {
    fn clone(&self) -> Self {
        FallbackLayer {
            primary: self.primary.clone(),
            primary_admission: self.primary_admission.clone(),
            builder: self.builder.clone(),
        }
    }
}

impl<S: Clone, Req, C: Clone, D: Clone> Layer<S> for FallbackLayer<S, Req, C, D> {
    type Service = Fallback<S, Req, C, D>;

    fn layer(&self, inner: S) -> Self::Service {
        let mut primary = Target::new(self.primary.clone(), inner);
        primary.admission = self.primary_admission.clone();
        let mut targets = Vec::with_capacity(self.builder.targets.len() + 1);
        targets.push(primary);
        targets.extend(self.builder.targets.iter().cloned());
        let mut tiers = Vec::with_capacity(self.builder.tiers.len() + 1);
        tiers.push((1, Strategy::default()));
        tiers.extend(self.builder.tiers.iter().copied());
        // Checked by `into_layer`; a tier of one cannot be refused.
        let chain = assemble(
            targets,
            &tiers,
            self.builder.hedge.clone(),
            self.builder.seed,
            self.builder.classifier.clone(),
            self.builder.policy.clone(),
            self.builder.degrade.clone(),
        )
        .unwrap_or_else(|e| unreachable!("checked by into_layer: {e}"));
        Fallback {
            chain: Arc::new(chain),
        }
    }
}
