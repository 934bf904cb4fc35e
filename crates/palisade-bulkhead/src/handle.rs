//! [`BulkheadHandle`]: the operator's view of a bulkhead.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{Admission, ProviderId, Refusing, RejectReason};

use crate::error::config_error;
use crate::error::ConfigError;
use crate::semaphore::{Semaphore, MAX_PERMITS};

/// A cloneable handle on a bulkhead: reads its numbers and resizes it while
/// it runs. Get one from [`BulkheadLayer::handle`](crate::BulkheadLayer::handle)
/// or [`Bulkhead::handle`](crate::Bulkhead::handle).
///
/// ```
/// use palisade_bulkhead::BulkheadLayer;
///
/// let layer = BulkheadLayer::new(8).unwrap();
/// let handle = layer.handle();
/// handle.set_max_concurrent(16).unwrap();
/// let snap = handle.snapshot();
/// assert_eq!((snap.max_concurrent, snap.in_flight), (16, 0));
/// assert!(handle.set_max_concurrent(0).is_err());
/// ```
#[derive(Clone)]
pub struct BulkheadHandle {
    pub(crate) sem: Arc<Semaphore>,
}

impl fmt::Debug for BulkheadHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadHandle")
            .field("provider", &self.sem.provider)
            .finish()
    }
}

/// A bulkhead's numbers at one moment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BulkheadSnapshot {
    /// The provider, when named.
    pub provider: Option<ProviderId>,
    /// The current limit on calls in flight.
    pub max_concurrent: usize,
    /// The queue's capacity.
    pub max_waiting: usize,
    /// Calls holding a slot now.
    pub in_flight: usize,
    /// Calls waiting for a slot now.
    pub waiting: usize,
    /// The most calls ever in flight at once.
    pub peak_in_flight: usize,
    /// Calls refused because the bulkhead and its queue were full.
    pub rejected: u64,
    /// Calls refused after waiting `max_wait` in the queue.
    pub timed_out: u64,
    /// Calls that had to queue.
    pub queued: u64,
    /// The mean time a queued call waited (zero when none queued). Calls
    /// admitted at once wait nothing and are not counted here. In JSON:
    /// `mean_wait_ms`, a number of milliseconds.
    #[serde(rename = "mean_wait_ms", serialize_with = "millis")]
    pub mean_wait: Duration,
}

/// A duration as a number of milliseconds (fractional), as every
/// duration in palisade's JSON is written.
fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl BulkheadHandle {
    /// The bulkhead's numbers now.
    pub fn snapshot(&self) -> BulkheadSnapshot {
        let s = &self.sem.stats;
        let queued = s.queued.load(Ordering::Relaxed);
        let wait = s.wait_nanos.load(Ordering::Relaxed);
        BulkheadSnapshot {
            provider: self.sem.provider.clone(),
            max_concurrent: self.sem.limit(),
            max_waiting: self.sem.max_waiting(),
            in_flight: self.sem.in_flight(),
            waiting: self.sem.waiting(),
            peak_in_flight: s.peak.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            timed_out: s.timed_out.load(Ordering::Relaxed),
            queued,
            mean_wait: Duration::from_nanos(wait.checked_div(queued).unwrap_or(0)),
        }
    }

    /// Calls holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.sem.in_flight()
    }

    /// Calls waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.sem.waiting()
    }

    /// The bulkhead's answer to the admission view (see
    /// [`Admission`](palisade_core::Admission)): refusing when every slot
    /// is taken and the queue is full, so a call now would be rejected.
    /// When it will have room is not known.
    pub fn admission(&self) -> Option<Refusing> {
        let full = self.sem.in_flight() >= self.sem.limit()
            && self.sem.waiting() >= self.sem.max_waiting();
        full.then_some(Refusing {
            reason: RejectReason::BulkheadFull,
            retry_in: None,
        })
    }

    /// Changes the limit on calls in flight. Growing admits queued calls at
    /// once; shrinking never cancels a call in flight: the limit is reached
    /// as they finish. With an adaptive limit, the estimate restarts from
    /// `n`, clamped to its bounds.
    pub fn set_max_concurrent(&self, n: usize) -> Result<(), ConfigError> {
        if n == 0 || n > MAX_PERMITS {
            return Err(config_error(
                "max_concurrent",
                format!("{n} is not within 1..={MAX_PERMITS}"),
            ));
        }
        let n = match &self.sem.adaptive {
            Some(v) => {
                v.reset_to(n);
                let (lo, hi) = v.bounds();
                n.clamp(lo, hi)
            }
            None => n,
        };
        tracing::info!(
            provider = self.sem.provider.as_ref().map(|p| p.as_str()),
            from = self.sem.limit(),
            to = n,
            "bulkhead resized"
        );
        self.sem.resize(n);
        Ok(())
    }

    /// Changes the queue's capacity. Calls already queued keep their place.
    pub fn set_max_waiting(&self, n: usize) -> Result<(), ConfigError> {
        if n > MAX_PERMITS {
            return Err(config_error(
                "max_waiting",
                format!("{n} is not within 0..={MAX_PERMITS}"),
            ));
        }
        self.sem.set_max_waiting(n);
        Ok(())
    }
}

impl Admission for BulkheadHandle {
    fn refusing(&self) -> Option<Refusing> {
        self.admission()
    }
}
