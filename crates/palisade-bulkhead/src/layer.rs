//! [`BulkheadLayer`] and its builder.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{Problems, ProviderId};
use tower_layer::Layer;

use crate::adaptive::{AdaptiveLimit, Vegas};
use crate::error::ConfigError;
use crate::handle::BulkheadHandle;
use crate::permit::{OnBodyEnd, OnResponse};
use crate::semaphore::{Semaphore, MAX_PERMITS};
use crate::service::Bulkhead;

/// Caps the calls in flight to one provider, with a bounded FIFO queue.
///
/// The layer owns the bulkhead: every service it wraps (and every clone of
/// those) shares the same slots, so build one layer per provider. The type
/// parameter says when a call gives its slot back: [`OnResponse`] (the
/// default) or [`OnBodyEnd`] (see [`hold_until_body_end`](Self::hold_until_body_end)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use palisade_bulkhead::BulkheadLayer;
/// use palisade_core::{BoxError, RejectReason, Rejected};
/// use std::time::Duration;
/// use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
///
/// let layer = BulkheadLayer::builder()
///     .provider("openai")
///     .max_concurrent(1)
///     .max_waiting(0) // no queue: refuse at once when full
///     .build()
///     .unwrap();
/// let mut svc = ServiceBuilder::new().layer(layer).service(service_fn(|d: u64| async move {
///     tokio::time::sleep(Duration::from_millis(d)).await;
///     Ok::<_, BoxError>(d)
/// }));
///
/// let slow = svc.ready().await.unwrap().call(50); // holds the only slot
/// let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
/// let rejected = err.downcast_ref::<Rejected>().unwrap();
/// assert_eq!(rejected.reason(), RejectReason::BulkheadFull);
/// assert_eq!(slow.await.unwrap(), 50);
/// # }
/// ```
pub struct BulkheadLayer<M = OnResponse> {
    sem: Arc<Semaphore>,
    _mode: PhantomData<fn() -> M>,
}

impl<M> Clone for BulkheadLayer<M> {
    fn clone(&self) -> Self {
        BulkheadLayer {
            sem: self.sem.clone(),
            _mode: PhantomData,
        }
    }
}

impl<M> fmt::Debug for BulkheadLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("provider", &self.sem.provider)
            .field("max_concurrent", &self.sem.limit())
            .field("max_waiting", &self.sem.max_waiting())
            .field("max_wait", &self.sem.max_wait)
            .finish()
    }
}

impl BulkheadLayer<OnResponse> {
    /// Starts a builder with the defaults: 64 concurrent calls, no queue,
    /// no adaptive limit.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A bulkhead of `max_concurrent` slots and no queue.
    pub fn new(max_concurrent: usize) -> Result<Self, ConfigError> {
        Builder::default().max_concurrent(max_concurrent).build()
    }

    /// Switches to holding each call's slot until its HTTP response body
    /// ends (the service then returns `http::Response<PermitBody<B>>`).
    /// Use it for streamed responses, where the provider is busy until the
    /// last token.
    pub fn hold_until_body_end(self) -> BulkheadLayer<OnBodyEnd> {
        self.release_mode()
    }

    /// Switches to release mode `M`, for code generic over the mode
    /// ([`OnResponse`] or [`OnBodyEnd`]).
    ///
    /// ```
    /// use palisade_bulkhead::{BulkheadLayer, OnBodyEnd};
    ///
    /// fn layer_in<M>(max: usize) -> BulkheadLayer<M> {
    ///     BulkheadLayer::new(max).unwrap().release_mode::<M>()
    /// }
    /// let streaming: BulkheadLayer<OnBodyEnd> = layer_in(8);
    /// assert_eq!(streaming.handle().snapshot().max_concurrent, 8);
    /// ```
    pub fn release_mode<M>(self) -> BulkheadLayer<M> {
        BulkheadLayer {
            sem: self.sem,
            _mode: PhantomData,
        }
    }
}

impl<M> BulkheadLayer<M> {
    /// The operator's handle: metrics and runtime resize.
    pub fn handle(&self) -> BulkheadHandle {
        BulkheadHandle {
            sem: self.sem.clone(),
        }
    }
}

impl<S, M> Layer<S> for BulkheadLayer<M> {
    type Service = Bulkhead<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead::new(inner, self.sem.clone())
    }
}

/// Builds a [`BulkheadLayer`]; [`build`](Self::build) checks the settings.
#[derive(Debug, Clone)]
pub struct Builder {
    provider: Option<ProviderId>,
    max_concurrent: usize,
    max_waiting: usize,
    max_wait: Option<Duration>,
    adaptive: Option<AdaptiveLimit>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            provider: None,
            max_concurrent: 64,
            max_waiting: 0,
            max_wait: None,
            adaptive: None,
        }
    }
}

impl Builder {
    /// Names the provider, for rejections, events and metrics.
    pub fn provider(mut self, provider: impl Into<ProviderId>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    /// How many calls may be in flight at once (default 64). With an
    /// adaptive limit, where the limit starts.
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n;
        self
    }

    /// How many calls may wait for a slot, in arrival order (default 0:
    /// refuse at once when full).
    pub fn max_waiting(mut self, n: usize) -> Self {
        self.max_waiting = n;
        self
    }

    /// How long a queued call waits before it is refused (default: no
    /// limit of its own; a request deadline outside still bounds it).
    pub fn max_wait(mut self, wait: Option<Duration>) -> Self {
        self.max_wait = wait;
        self
    }

    /// Lets the limit follow observed latency within the given bounds.
    pub fn adaptive(mut self, limit: AdaptiveLimit) -> Self {
        self.adaptive = Some(limit);
        self
    }

    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<BulkheadLayer, ConfigError> {
        let mut p = Problems::new("bulkhead");
        if self.max_concurrent == 0 || self.max_concurrent > MAX_PERMITS {
            p.add(
                "max_concurrent",
                format!("{} is not within 1..={MAX_PERMITS}", self.max_concurrent),
            );
        }
        if self.max_waiting > MAX_PERMITS {
            p.add(
                "max_waiting",
                format!("{} is not within 0..={MAX_PERMITS}", self.max_waiting),
            );
        }
        if self.max_wait == Some(Duration::ZERO) && self.max_waiting > 0 {
            p.add(
                "max_wait",
                "0s lets nobody wait; use max_waiting(0) to refuse at once",
            );
        }
        if let Some(a) = &self.adaptive {
            {
                if a.min == 0 || a.min > a.max || a.max > MAX_PERMITS {
                    p.add(
                        "adaptive",
                        format!(
                            "bounds {}..={} must satisfy 1 <= min <= max <= {MAX_PERMITS}",
                            a.min, a.max
                        ),
                    );
                }
                if !(a.smoothing > 0.0 && a.smoothing <= 1.0) {
                    p.add(
                        "adaptive.smoothing",
                        format!("{} is not within (0, 1]", a.smoothing),
                    );
                }
                if a.probe_interval == 0 {
                    p.add("adaptive.probe_interval", "0 samples; use at least 1");
                }
            }
        }
        p.finish()?;
        let adaptive = self.adaptive.map(|a| Vegas::new(a, self.max_concurrent));
        let start = match &adaptive {
            Some(v) => {
                let (lo, hi) = v.bounds();
                self.max_concurrent.clamp(lo, hi)
            }
            None => self.max_concurrent,
        };
        Ok(BulkheadLayer {
            sem: Arc::new(Semaphore::new(
                start,
                self.max_waiting,
                self.max_wait,
                self.provider,
                adaptive,
            )),
            _mode: PhantomData,
        })
    }
}
