//! [`ProviderStack`]: the default per-provider stack, built from settings.

mod box_error;
mod service;

use std::fmt;
use std::marker::PhantomData;

use palisade_breaker::{BreakerHandle, CircuitBreakerLayer};
use palisade_bulkhead::{BulkheadHandle, BulkheadLayer, OnResponse, ReleaseMode, Unguarded};
use palisade_core::{Admissions, BoxError, Classify, HasDeadline, Inspectors, ProviderId};
use palisade_ratelimit::{Mode, RateLimitHandle, RateLimitLayer};
use palisade_retry::{RetryBudget, RetryHandle, RetryLayer};
use tower::util::Either;
use tower_layer::Layer;

use self::box_error::BoxErrors;
use self::service::{BreakerPart, BulkheadPart, RateLimitPart, RetryPart, TimeoutPart};
pub use self::service::{ProviderFuture, ProviderService};

use crate::config::{ConfigError, ProviderSettings};

/// The handles on one provider's stack, for health and administration.
/// A part that is switched off has no handle.
#[derive(Debug, Clone, Default)]
pub struct ProviderHandles {
    /// The circuit breaker.
    pub breaker: Option<BreakerHandle>,
    /// The bulkhead.
    pub bulkhead: Option<BulkheadHandle>,
    /// The retry layer (and through it, the budget).
    pub retry: Option<RetryHandle>,
    /// The rate limiter.
    pub rate_limit: Option<RateLimitHandle>,
}

impl ProviderHandles {
    /// The admission views of the layers that can refuse a call without
    /// sending it (breaker, bulkhead), together: what a fallback chain asks
    /// before it calls this provider.
    pub fn admissions(&self) -> Admissions {
        let mut views = Admissions::default();
        if let Some(b) = &self.breaker {
            views.push(b.clone());
        }
        if let Some(b) = &self.bulkhead {
            views.push(b.clone());
        }
        if let Some(r) = &self.rate_limit {
            views.push(r.clone());
        }
        views
    }

    /// The inspection views of every layer that is on, the breaker first
    /// (its verdict says most): what the health report and the metrics
    /// export read.
    pub fn inspectors(&self) -> Inspectors {
        let mut views = Inspectors::default();
        if let Some(b) = &self.breaker {
            views.push(b.clone());
        }
        if let Some(b) = &self.bulkhead {
            views.push(b.clone());
        }
        if let Some(r) = &self.retry {
            views.push(r.clone());
        }
        if let Some(r) = &self.rate_limit {
            views.push(r.clone());
        }
        views
    }
}

/// One provider, protected: its stack and its handles.
///
/// Built in the order ARCHITECTURE.md gives, outer to inner: in the rate
/// limit's wait mode, its pacer (a request waits for quota here, holding
/// no bulkhead slot), bulkhead (one request holds one slot across its
/// retries), retry with budget (every
/// attempt passes the rate limit and the breaker), rate limit (every
/// attempt spends quota, so retries cannot exceed it), circuit breaker (a
/// timed-out attempt counts as the provider's failure), attempt timeout
/// (each attempt gets `min(per_attempt, remaining deadline)`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use palisade::{Config, ProviderStack};
/// use palisade_core::{BoxError, HttpClassifier};
/// use tower::{service_fn, ServiceExt};
///
/// let cfg = Config::from_toml("[providers.openai.retry]\nenabled = false\n").unwrap();
/// let provider = service_fn(|req: http::Request<String>| async move {
///     Ok::<_, BoxError>(http::Response::new(req.into_body()))
/// });
/// let stack = ProviderStack::build(&cfg.provider("openai").unwrap(), provider, HttpClassifier::new(), None).unwrap();
/// assert!(stack.handles.retry.is_none() && stack.handles.breaker.is_some());
/// let res = stack.service.oneshot(http::Request::new("hi".to_owned())).await.unwrap();
/// assert_eq!(res.body(), "hi");
/// # }
/// ```
pub struct ProviderStack<S, C, M = OnResponse> {
    /// The provider's id.
    pub id: ProviderId,
    /// The stack.
    pub service: ProviderService<S, C, M>,
    /// Its handles.
    pub handles: ProviderHandles,
}

impl<S, C, M> fmt::Debug for ProviderStack<S, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderStack")
            .field("id", &self.id)
            .field("handles", &self.handles)
            .finish()
    }
}

impl<S, C> ProviderStack<S, C, OnResponse> {
    /// Builds the stack for `settings` around `provider`. `budget`, when
    /// given, replaces the provider's own retry budget (to share one budget
    /// among providers). The bulkhead frees a call's slot when its response
    /// arrives. The short form of [`builder`](ProviderStack::builder).
    pub fn build<Req>(
        settings: &ProviderSettings,
        provider: S,
        classifier: C,
        budget: Option<RetryBudget>,
    ) -> Result<Self, ConfigError>
    where
        S: tower_service::Service<Req, Error = BoxError> + Clone,
        C: Classify<S::Response, BoxError> + Clone,
        Req: HasDeadline,
    {
        let mut builder = Self::builder(settings, provider, classifier);
        if let Some(budget) = budget {
            builder = builder.budget(budget);
        }
        builder.build()
    }

    /// A builder for the stack of `settings` around `provider`, for the
    /// choices beyond the settings: a shared retry budget, the bulkhead's
    /// release mode.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use palisade::bulkhead::OnBodyEnd;
    /// use palisade::{Config, ProviderStack};
    /// use palisade_core::{BoxError, HttpClassifier};
    /// use tower::{service_fn, ServiceExt};
    ///
    /// let cfg = Config::from_toml("[providers.llm.bulkhead]\nmax_concurrent = 1\nmax_waiting = 0\n").unwrap();
    /// let provider = service_fn(|_: http::Request<String>| async {
    ///     Ok::<_, BoxError>(http::Response::new(String::from("a streamed answer")))
    /// });
    /// let stack = ProviderStack::builder(&cfg.provider("llm").unwrap(), provider, HttpClassifier::new())
    ///     .release_mode(OnBodyEnd) // hold the slot until the body ends
    ///     .build()
    ///     .unwrap();
    /// let bulkhead = stack.handles.bulkhead.clone().unwrap();
    /// let res = stack.service.oneshot(http::Request::new(String::new())).await.unwrap();
    /// // The answer's body holds the provider's only slot ...
    /// assert!(res.body().holds_permit());
    /// assert_eq!(bulkhead.snapshot().in_flight, 1);
    /// // ... until it ends or is dropped.
    /// drop(res);
    /// assert_eq!(bulkhead.snapshot().in_flight, 0);
    /// # }
    /// ```
    pub fn builder<'a>(
        settings: &'a ProviderSettings,
        provider: S,
        classifier: C,
    ) -> StackBuilder<'a, S, C, OnResponse> {
        StackBuilder {
            settings,
            provider,
            classifier,
            budget: None,
            mode: PhantomData,
        }
    }
}

/// Builds a [`ProviderStack`]; from [`ProviderStack::builder`].
pub struct StackBuilder<'a, S, C, M> {
    settings: &'a ProviderSettings,
    provider: S,
    classifier: C,
    budget: Option<RetryBudget>,
    mode: PhantomData<fn() -> M>,
}

impl<S, C, M> fmt::Debug for StackBuilder<'_, S, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackBuilder")
            .field("provider", &self.settings.id)
            .field("shared_budget", &self.budget.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a, S, C, M> StackBuilder<'a, S, C, M> {
    /// Uses `budget` instead of the provider's own retry budget (to share
    /// one budget among providers).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The bulkhead's release mode: [`OnResponse`] (the default) frees a
    /// call's slot when its response arrives;
    /// [`OnBodyEnd`](palisade_bulkhead::OnBodyEnd) holds it until a
    /// streamed HTTP body ends, so `max_concurrent` caps the streams in
    /// progress (responses then carry a
    /// [`PermitBody`](palisade_bulkhead::PermitBody), also when the
    /// bulkhead is switched off, so the type does not change with the
    /// config).
    pub fn release_mode<M2>(self, _mode: M2) -> StackBuilder<'a, S, C, M2> {
        self.with_mode()
    }

    /// [`release_mode`](Self::release_mode) named by type alone.
    pub(crate) fn with_mode<M2>(self) -> StackBuilder<'a, S, C, M2> {
        StackBuilder {
            settings: self.settings,
            provider: self.provider,
            classifier: self.classifier,
            budget: self.budget,
            mode: PhantomData,
        }
    }

    /// Builds the stack, pushing each layer over the previous one, inner
    /// to outer.
    pub fn build<Req>(self) -> Result<ProviderStack<S, C, M>, ConfigError>
    where
        S: tower_service::Service<Req, Error = BoxError> + Clone,
        C: Classify<S::Response, BoxError> + Clone,
        M: ReleaseMode<S::Response>,
        Req: HasDeadline,
    {
        let StackBuilder {
            settings,
            provider,
            classifier,
            budget,
            ..
        } = self;
        let s = &settings.layers;
        let id = ProviderId::from(settings.id.as_str());
        let at = |e: ConfigError| e.at(&format!("providers.{}", settings.id));
        let mut handles = ProviderHandles::default();

        let timeout: TimeoutPart<S> = if s.timeout.enabled {
            let layer = s.timeout.build().map_err(at)?.provider(id.clone());
            Either::Left(layer.layer(provider))
        } else {
            Either::Right(provider)
        };

        let breaker: BreakerPart<S, C> = if s.breaker.enabled {
            let builder = CircuitBreakerLayer::builder()
                .provider(id.clone())
                .classifier(classifier.clone());
            let layer = s.breaker.build(builder).map_err(at)?;
            handles.breaker = Some(layer.handle());
            Either::Left(BoxErrors::new(layer.layer(timeout)))
        } else {
            Either::Right(timeout)
        };

        let mut pacer = None;
        let rate_limit: RateLimitPart<S, C> = if s.rate_limit.active() {
            let builder = RateLimitLayer::builder()
                .provider(id.clone())
                .classifier(classifier.clone());
            let layer = s.rate_limit.build(builder).map_err(at)?;
            handles.rate_limit = Some(layer.handle());
            if matches!(layer.mode(), Mode::Wait(_)) {
                pacer = Some(layer.pacer());
            }
            Either::Left(layer.layer(breaker))
        } else {
            Either::Right(breaker)
        };

        let retry: RetryPart<S, C> = if s.retry.enabled {
            let mut builder = RetryLayer::builder()
                .provider(id.clone())
                .classifier(classifier);
            if let Some(budget) = budget {
                builder = builder.budget(budget);
            }
            let layer = s.retry.build(builder).map_err(at)?;
            handles.retry = Some(layer.handle());
            Either::Left(layer.layer(rate_limit))
        } else {
            Either::Right(rate_limit)
        };

        let bulkhead: BulkheadPart<S, C, M> = if s.bulkhead.enabled {
            let builder = BulkheadLayer::builder().provider(id.clone());
            let layer = s.bulkhead.build(builder).map_err(at)?;
            handles.bulkhead = Some(layer.handle());
            Either::Left(layer.release_mode::<M>().layer(retry))
        } else {
            Either::Right(Unguarded::new(retry))
        };

        // A request waiting for quota waits outside the bulkhead, holding
        // no slot; the limiter inside still counts every attempt.
        let inner = match pacer {
            Some(pacer) => Either::Left(pacer.layer(bulkhead)),
            None => Either::Right(bulkhead),
        };

        Ok(ProviderStack {
            id,
            service: ProviderService { inner },
            handles,
        })
    }
}
