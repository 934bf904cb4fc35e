//! [`ChaosHandle`]: switching a chaos layer and changing its plan while it
//! serves, and its counts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use palisade_core::ConfigError;
use serde::Serialize;

use crate::draw::Draws;
use crate::plan::Plan;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: Option<String>,
    pub(crate) enabled: AtomicBool,
    pub(crate) plan: ArcSwap<Plan>,
    pub(crate) draws: Draws,
    pub(crate) counts: Counts,
}

#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) calls: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) delays: AtomicU64,
    pub(crate) hangs: AtomicU64,
    pub(crate) resets: AtomicU64,
    pub(crate) streams: AtomicU64,
}

/// A chaos layer's counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChaosSnapshot {
    /// Whether it injects now.
    pub enabled: bool,
    /// The plan in force.
    pub plan: Plan,
    /// Calls it applied to while enabled.
    pub calls: u64,
    /// Errors injected.
    pub errors: u64,
    /// Calls delayed.
    pub delays: u64,
    /// Calls never answered.
    pub hangs: u64,
    /// Connection resets injected.
    pub resets: u64,
    /// Streamed answers stalled or cut.
    pub streams: u64,
}

/// Switches a [`ChaosLayer`](crate::ChaosLayer) on and off and changes its
/// plan while it serves; every clone of the layer's services sees the
/// change at once. Cloning shares it.
///
/// ```
/// use palisade_chaos::{ChaosLayer, Plan};
///
/// let layer = ChaosLayer::builder().build().unwrap();
/// let chaos = layer.handle();
/// assert!(!chaos.snapshot().enabled, "off until enabled");
/// chaos.set(Plan::default().error(0.5, 503)).unwrap();
/// chaos.enable();
/// assert!(chaos.set(Plan::default().hang(2.0)).is_err(), "a bad plan is refused, the old one stays");
/// assert_eq!(chaos.snapshot().plan.error_rate, 0.5);
/// ```
#[derive(Debug, Clone)]
pub struct ChaosHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ChaosHandle {
    /// Starts injecting.
    pub fn enable(&self) {
        self.shared.enabled.store(true, Ordering::Release);
        tracing::warn!(layer = self.shared.name.as_deref(), plan = ?**self.shared.plan.load(), "chaos: injecting faults");
    }

    /// Stops injecting: calls pass untouched (a call already delayed or
    /// hanging stays so).
    pub fn disable(&self) {
        self.shared.enabled.store(false, Ordering::Release);
        tracing::info!(layer = self.shared.name.as_deref(), "chaos: off");
    }

    /// Replaces the plan (checked first; a bad one is refused, every
    /// problem named, and the plan in force stays).
    pub fn set(&self, plan: Plan) -> Result<(), ConfigError> {
        plan.check()?;
        self.shared.plan.store(Arc::new(plan));
        Ok(())
    }

    /// The counts and the plan now.
    pub fn snapshot(&self) -> ChaosSnapshot {
        let c = &self.shared.counts;
        ChaosSnapshot {
            enabled: self.shared.enabled.load(Ordering::Acquire),
            plan: (**self.shared.plan.load()).clone(),
            calls: c.calls.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            delays: c.delays.load(Ordering::Relaxed),
            hangs: c.hangs.load(Ordering::Relaxed),
            resets: c.resets.load(Ordering::Relaxed),
            streams: c.streams.load(Ordering::Relaxed),
        }
    }
}
