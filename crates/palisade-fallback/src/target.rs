//! One provider in a fallback chain: its id, its service, and what the
//! chain needs to know about it.

use std::fmt;
use std::sync::Arc;

use palisade_balance::Load;
use palisade_core::{Admission, Admissions, ProviderId, Refusing};
use palisade_hedge::LatencyWindow;

/// A per-provider request rewrite.
pub(crate) type Rewrite<Req> = Arc<dyn Fn(&mut Req) + Send + Sync>;

/// A provider in a fallback chain.
///
/// ```
/// use palisade_fallback::Target;
/// use palisade_core::{BoxError, WithDeadline};
/// use tower::service_fn;
///
/// let big = Target::new("claude-200k", service_fn(|r: WithDeadline<String>| async move {
///     Ok::<_, BoxError>(r.into_inner())
/// }))
/// .large_context()                                   // gets prompts too long for others
/// .rewrite(|req: &mut WithDeadline<String>| req.get_mut().insert_str(0, "[claude] "));
/// assert!(big.is_large_context());
/// ```
pub struct Target<S, Req> {
    pub(crate) id: ProviderId,
    pub(crate) svc: S,
    pub(crate) admission: Admissions,
    pub(crate) rewrite: Option<Rewrite<Req>>,
    pub(crate) large_context: bool,
    pub(crate) content_filter: bool,
    pub(crate) weight: u32,
    pub(crate) load: Arc<Load>,
    pub(crate) window: Option<Arc<LatencyWindow>>,
    pub(crate) first_token_window: Option<Arc<LatencyWindow>>,
}

impl<S: Clone, Req> Clone for Target<S, Req> {
    fn clone(&self) -> Self {
        Target {
            id: self.id.clone(),
            svc: self.svc.clone(),
            admission: self.admission.clone(),
            rewrite: self.rewrite.clone(),
            large_context: self.large_context,
            content_filter: self.content_filter,
            weight: self.weight,
            load: self.load.clone(),
            window: self.window.clone(),
            first_token_window: self.first_token_window.clone(),
        }
    }
}

impl<S, Req> fmt::Debug for Target<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("id", &self.id)
            .field("refusing", &self.admission.refusing())
            .field("rewrite", &self.rewrite.is_some())
            .field("large_context", &self.large_context)
            .field("content_filter", &self.content_filter)
            .field("weight", &self.weight)
            .field("in_flight", &self.load.in_flight())
            .finish()
    }
}

impl<S, Req> Target<S, Req> {
    /// The provider `id`, called through `svc`.
    pub fn new(id: impl Into<ProviderId>, svc: S) -> Self {
        Target {
            id: id.into(),
            svc,
            admission: Admissions::default(),
            rewrite: None,
            large_context: false,
            content_filter: false,
            weight: 1,
            load: Arc::new(Load::default()),
            window: None,
            first_token_window: None,
        }
    }

    /// Its share of its tier's traffic relative to the others (1 to
    /// 1000, default 1; see [`Builder::tier`](crate::Builder::tier)).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Shares `load` (calls in flight, latency) with whoever else tracks
    /// this provider, so what a balancer learned outlives a rebuilt chain.
    pub fn load(mut self, load: Arc<Load>) -> Self {
        self.load = load;
        self
    }

    /// Shares `window` (recent latencies, for percentile hedge delays)
    /// the same way; without one, a hedged chain makes its own.
    pub fn latency_window(mut self, window: Arc<LatencyWindow>) -> Self {
        self.window = Some(window);
        self
    }

    /// As [`latency_window`](Self::latency_window), for streams' times to
    /// first token: a stream's hedge delay is a percentile of these
    /// ([`RequestMarks::streaming`](palisade_core::RequestMarks::streaming)).
    pub fn first_token_window(mut self, window: Arc<LatencyWindow>) -> Self {
        self.first_token_window = Some(window);
        self
    }

    pub(crate) fn window_for(&self, streaming: bool) -> Option<&LatencyWindow> {
        if streaming {
            self.first_token_window.as_deref()
        } else {
            self.window.as_deref()
        }
    }

    /// A layer of this provider's stack that can say "not now" (its
    /// circuit breaker's handle, its bulkhead's, a rate limiter's: any
    /// [`Admission`]). While any of them refuses, the chain skips this
    /// provider without calling it, and [`AllFailed`](crate::AllFailed)
    /// says which refused and for how long. Call once per layer.
    pub fn admission(mut self, view: impl Admission) -> Self {
        self.admission.push(view);
        self
    }

    /// Every admission view of this provider, together.
    pub fn with_admissions(mut self, views: Admissions) -> Self {
        self.admission = views;
        self
    }

    /// Rewrites the request for this provider (model name, base URL,
    /// auth): LLM providers name the same capability differently. Applied
    /// to this provider's own copy of the request.
    pub fn rewrite(mut self, f: impl Fn(&mut Req) + Send + Sync + 'static) -> Self {
        self.rewrite = Some(Arc::new(f));
        self
    }

    /// Marks the provider as taking prompts too long for the others: a
    /// `ContextLengthExceeded` failure is sent only to providers so marked.
    pub fn large_context(mut self) -> Self {
        self.large_context = true;
        self
    }

    /// Marks the provider as the one to try when another's content filter
    /// refused the request.
    pub fn content_filter(mut self) -> Self {
        self.content_filter = true;
        self
    }

    /// The provider's id.
    pub fn id(&self) -> &ProviderId {
        &self.id
    }

    /// Whether the provider is marked as large-context.
    pub fn is_large_context(&self) -> bool {
        self.large_context
    }

    /// Whether a layer of this provider would refuse a call now, and why.
    pub(crate) fn refusing(&self) -> Option<Refusing> {
        self.admission.refusing()
    }
}
