//! [`Balance`]: a tier of equivalent providers as one service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{BoxError, Classify, ConfigError, ErrorClassifier, Rejected, RequestMarks};
use tower_service::Service;

use crate::balancer::Balancer;
use crate::future::ResponseFuture;
use crate::member::Member;
use crate::strategy::Strategy;
use crate::tier::TierView;

pub(crate) struct Shared<S, C> {
    pub(crate) members: Vec<Member<S>>,
    pub(crate) balancer: Balancer,
    pub(crate) classifier: C,
    pub(crate) timed: bool,
}

/// Spreads calls over equivalent providers (regions, keys, OpenAI and
/// Azure for one model) by a [`Strategy`], never picking one whose layers
/// refuse while another can take the call. A call goes to one provider;
/// what to do when it fails is the job of the layers around (retry,
/// fallback to the next tier).
///
/// - `poll_ready` is always ready; the provider picked is readied in the
///   response future, and no other.
/// - When every provider refuses, the call fails at once with the
///   [`Rejected`] of the one that will take calls again soonest.
/// - Calls in flight and latency are tracked per provider ([`Load`](crate::Load));
///   a dropped response future uncounts its call.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use palisade_balance::{Balance, Member, Strategy};
/// use palisade_core::BoxError;
/// use tower::{service_fn, Service, ServiceExt};
///
/// let deployment = |name: &'static str| service_fn(move |_: ()| async move { Ok::<_, BoxError>(name) });
/// let mut tier = Balance::builder()
///     .strategy(Strategy::RoundRobin)
///     .member(Member::new("east", deployment("east")).weight(2))
///     .member(Member::new("west", deployment("west")))
///     .build()
///     .unwrap();
/// let mut answers = Vec::new();
/// for _ in 0..3 {
///     answers.push(tier.ready().await.unwrap().call(()).await.unwrap());
/// }
/// assert_eq!(answers, ["east", "west", "east"]);
/// # }
/// ```
pub struct Balance<S, C = ErrorClassifier> {
    shared: Arc<Shared<S, C>>,
}

impl<S, C> Clone for Balance<S, C> {
    fn clone(&self) -> Self {
        Balance {
            shared: self.shared.clone(),
        }
    }
}

impl<S, C> fmt::Debug for Balance<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("balancer", &self.shared.balancer)
            .field("members", &self.shared.members)
            .finish()
    }
}

impl<S> Balance<S> {
    /// Starts a builder: no members, [`Strategy::PeakEwma`], errors-only
    /// classification (use [`Builder::classifier`] with an
    /// [`HttpClassifier`](palisade_core::HttpClassifier) so a 503 counts
    /// as a failure in the latency estimate).
    pub fn builder() -> Builder<S> {
        Builder {
            members: Vec::new(),
            strategy: Strategy::default(),
            classifier: ErrorClassifier,
            seed: None,
        }
    }
}

impl<S, C> Balance<S, C> {
    /// The providers, in the order given.
    pub fn members(&self) -> &[Member<S>] {
        &self.shared.members
    }

    /// The balancer (strategy, weights).
    pub fn balancer(&self) -> &Balancer {
        &self.shared.balancer
    }
}

impl<S, C, Req> Service<Req> for Balance<S, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
    Req: RequestMarks,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, C, Req>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // One clock read for the pick, the call's start and the layers
        // the call goes through.
        let _reading = palisade_core::clock::SharedReading::enter();
        let shared = &*self.shared;
        let streaming = req.streaming();
        let view = TierView::new(&shared.members, streaming);
        match shared.balancer.pick(&view) {
            Some(i) => {
                let m = &shared.members[i];
                let call = m.load.start_for(streaming, shared.timed);
                ResponseFuture::call(shared.classifier.clone(), m.svc.clone(), req, call)
            }
            None => ResponseFuture::refused(refusal(&shared.members)),
        }
    }
}

/// The refusal of the provider that will take calls again soonest.
fn refusal<S>(members: &[Member<S>]) -> BoxError {
    let soonest = members
        .iter()
        .filter_map(|m| m.admission.refusing().map(|r| (m, r)))
        .min_by_key(|(_, r)| r.retry_in.unwrap_or(std::time::Duration::MAX));
    match soonest {
        Some((m, r)) => {
            let mut e = Rejected::new(r.reason)
                .with_provider(m.id.clone())
                .with_detail("every provider of the tier refuses");
            if let Some(after) = r.retry_in {
                e = e.with_retry_after(after);
            }
            e.into()
        }
        // Refusals can end between the pick and this look.
        None => Rejected::new(palisade_core::RejectReason::NoProvider)
            .with_detail("no provider of the tier could take the call")
            .into(),
    }
}

/// Builds a [`Balance`]; [`build`](Self::build) checks the members.
pub struct Builder<S, C = ErrorClassifier> {
    members: Vec<Member<S>>,
    strategy: Strategy,
    classifier: C,
    seed: Option<u64>,
}

impl<S, C> fmt::Debug for Builder<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("members", &self.members)
            .field("strategy", &self.strategy)
            .finish()
    }
}

impl<S, C> Builder<S, C> {
    /// Adds a provider.
    pub fn member(mut self, member: Member<S>) -> Self {
        self.members.push(member);
        self
    }

    /// How a provider is chosen (default [`Strategy::PeakEwma`]).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Fixes the random draws (for reproducible tests and simulations).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How answers are classified: a failure counts as slow in the
    /// latency estimate.
    pub fn classifier<C2>(self, classifier: C2) -> Builder<S, C2> {
        Builder {
            members: self.members,
            strategy: self.strategy,
            classifier,
            seed: self.seed,
        }
    }

    /// Checks the members (1 to 64, weights 1 to 1000, no id twice) and
    /// builds the balance.
    pub fn build(self) -> Result<Balance<S, C>, ConfigError> {
        let weights: Vec<u32> = self.members.iter().map(|m| m.weight).collect();
        let mut problems = palisade_core::Problems::new("balance");
        for (i, m) in self.members.iter().enumerate() {
            if self.members[..i].iter().any(|o| o.id == m.id) {
                problems.add("members", format!("provider {} is in the tier twice", m.id));
            }
        }
        let balancer = match self.seed {
            Some(seed) => Balancer::seeded(self.strategy, weights, seed),
            None => Balancer::new(self.strategy, weights),
        };
        let balancer = problems.finish_with(balancer)?;
        Ok(Balance {
            shared: Arc::new(Shared {
                members: self.members,
                timed: self.strategy.needs_latency(),
                balancer,
                classifier: self.classifier,
            }),
        })
    }
}
