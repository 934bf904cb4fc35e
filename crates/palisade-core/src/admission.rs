//! The admission view: "would this provider's layers take a call now?",
//! asked without sending one.
//!
//! Any layer that can say "not now" (an open breaker, a full bulkhead, a
//! rate limiter with no room, an ejected outlier) answers it through its
//! handle, with how long until it might say yes. A fallback chain or a
//! balancer holds each provider's answers as one [`Admissions`] and skips a
//! provider that refuses without calling it, knowing nothing of the crates
//! the answers come from.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::RejectReason;

/// A layer's "not now": which refusal a call would meet, and how long
/// until the layer might take one (`None`: not known, or not until an
/// operator acts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusing {
    /// What would refuse the call.
    pub reason: RejectReason,
    /// How long until it might not.
    pub retry_in: Option<Duration>,
}

impl fmt::Display for Refusing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry_in {
            Some(d) => write!(f, "{} (retry in {} ms)", self.reason, d.as_millis()),
            None => write!(f, "{}", self.reason),
        }
    }
}

/// Answers whether a call sent now would be refused without reaching the
/// provider. Implemented by the handles of palisade's layers; implement it
/// for your own layer's handle and the fallback chain and the router skip
/// a provider it refuses.
///
/// The answer is advisory and cheap to ask (atomics, no lock): the call
/// itself is still checked by the layer, which may have changed its mind.
///
/// ```
/// use palisade_core::{Admission, Admissions, RejectReason, Refusing};
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
///
/// #[derive(Debug, Default)]
/// struct Switch(AtomicBool);
/// impl Admission for Switch {
///     fn refusing(&self) -> Option<Refusing> {
///         self.0.load(Ordering::Relaxed).then_some(Refusing {
///             reason: RejectReason::BulkheadFull,
///             retry_in: None,
///         })
///     }
/// }
///
/// let switch = Arc::new(Switch::default());
/// let mut views = Admissions::default();
/// views.push(switch.clone());
/// assert_eq!(views.refusing(), None);
/// switch.0.store(true, Ordering::Relaxed);
/// assert_eq!(views.refusing().unwrap().reason, RejectReason::BulkheadFull);
/// ```
pub trait Admission: fmt::Debug + Send + Sync + 'static {
    /// `None` if a call sent now would be let through; otherwise why not.
    fn refusing(&self) -> Option<Refusing>;

    /// The share of the layer's capacity still free, from 0 (none) to 1
    /// (all), for layers that meter one (a rate limiter's quota); `None`
    /// (the default) for the others. A balancer's "most headroom"
    /// strategy reads it.
    fn headroom(&self) -> Option<f64> {
        None
    }
}

impl<A: Admission> Admission for Arc<A> {
    fn refusing(&self) -> Option<Refusing> {
        (**self).refusing()
    }

    fn headroom(&self) -> Option<f64> {
        (**self).headroom()
    }
}

/// The admission views of one provider's layers, asked together: the
/// provider refuses when any of them does.
#[derive(Clone, Default)]
pub struct Admissions {
    views: Vec<Arc<dyn Admission>>,
}

impl fmt::Debug for Admissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.views).finish()
    }
}

impl Admissions {
    /// Adds a layer's view.
    pub fn push(&mut self, view: impl Admission) {
        self.views.push(Arc::new(view));
    }

    /// Adds a layer's view (builder style).
    pub fn with(mut self, view: impl Admission) -> Self {
        self.push(view);
        self
    }

    /// Whether there is no view at all (nothing could refuse).
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// `None` when every view would let a call through; otherwise the
    /// refusal that lasts longest (one with no known end beats any
    /// duration), since the provider takes a call only once all agree.
    pub fn refusing(&self) -> Option<Refusing> {
        let mut worst: Option<Refusing> = None;
        for view in &self.views {
            let Some(r) = view.refusing() else { continue };
            worst = match worst {
                None => Some(r),
                Some(w) => match (w.retry_in, r.retry_in) {
                    (None, _) => Some(w),
                    (Some(_), None) => Some(r),
                    (Some(a), Some(b)) if b > a => Some(r),
                    _ => Some(w),
                },
            };
        }
        worst
    }

    /// The least headroom any view reports (the tightest meter decides),
    /// `None` when no view meters anything.
    pub fn headroom(&self) -> Option<f64> {
        self.views
            .iter()
            .filter_map(|v| v.headroom())
            .reduce(f64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Option<Refusing>);
    impl Admission for Fixed {
        fn refusing(&self) -> Option<Refusing> {
            self.0
        }
    }

    fn r(reason: RejectReason, ms: Option<u64>) -> Option<Refusing> {
        Some(Refusing {
            reason,
            retry_in: ms.map(Duration::from_millis),
        })
    }

    #[test]
    fn the_longest_refusal_wins_and_an_open_ended_one_beats_all() {
        let open = RejectReason::CircuitOpen(crate::CircuitState::Open);
        let views = Admissions::default()
            .with(Fixed(None))
            .with(Fixed(r(open, Some(100))))
            .with(Fixed(r(RejectReason::BulkheadFull, Some(300))));
        assert_eq!(views.refusing(), r(RejectReason::BulkheadFull, Some(300)));
        let views = views.with(Fixed(r(open, None)));
        assert_eq!(views.refusing(), r(open, None));
        assert_eq!(Admissions::default().refusing(), None);
        assert_eq!(Admissions::default().with(Fixed(None)).refusing(), None);
    }

    #[test]
    fn refusals_read_as_words() {
        let text = r(RejectReason::BulkheadFull, Some(1500))
            .unwrap()
            .to_string();
        assert_eq!(text, "bulkhead is full (retry in 1500 ms)");
    }
}
