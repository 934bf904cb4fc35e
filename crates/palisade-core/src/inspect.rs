//! The inspection view: what each layer's handle says about its provider
//! now (a status, notes a person can act on, metric samples and its
//! numbers), so health reports and metrics exports iterate over handles
//! instead of naming each layer.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// How well things are going, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Everything answers normally.
    #[default]
    Healthy,
    /// Something is under strain; callers do not notice yet.
    Warning,
    /// Callers are being served, but not as configured (failing over,
    /// probing).
    Degraded,
    /// Calls are failing.
    Critical,
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Warning => "warning",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Critical => "critical",
        })
    }
}

/// Whether a metric only grows (a counter) or goes up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only grows.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One metric's value now, for one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name (`palisade_breaker_state`).
    pub name: &'static str,
    /// What it measures, one sentence.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// A gauge sample.
    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Self {
        Sample {
            name,
            help,
            kind: MetricKind::Gauge,
            value,
        }
    }

    /// A counter sample.
    pub fn counter(name: &'static str, help: &'static str, value: f64) -> Self {
        Sample {
            name,
            help,
            kind: MetricKind::Counter,
            value,
        }
    }
}

/// One layer's view of its provider, now.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    /// The layer, as named in config (`breaker`, `bulkhead`, `retry`).
    pub layer: &'static str,
    /// The layer's verdict on the provider.
    pub status: HealthStatus,
    /// What a person could do about it, without the provider's name (the
    /// report puts it in front): `circuit open after ...`.
    pub notes: Vec<String>,
    /// Its metrics.
    pub samples: Vec<Sample>,
    /// Its numbers, as they appear in a JSON health report.
    pub detail: serde_json::Value,
}

/// A handle that can say how its layer sees the provider: each layer's
/// handle implements it, and a provider's stack lists its handles as
/// [`Inspectors`].
///
/// ```
/// use palisade_core::{HealthStatus, Inspect, Inspection, Sample};
///
/// struct Lamp(bool);
/// impl Inspect for Lamp {
///     fn inspect(&self) -> Inspection {
///         Inspection {
///             layer: "lamp",
///             status: if self.0 { HealthStatus::Healthy } else { HealthStatus::Warning },
///             notes: if self.0 { vec![] } else { vec!["the lamp is off".into()] },
///             samples: vec![Sample::gauge("lamp_on", "Whether the lamp is on.", self.0 as u8 as f64)],
///             detail: serde_json::json!({ "on": self.0 }),
///         }
///     }
/// }
/// assert_eq!(Lamp(false).inspect().status, HealthStatus::Warning);
/// ```
pub trait Inspect: Send + Sync + 'static {
    /// The layer's view now. Admin path: may take locks and allocate.
    fn inspect(&self) -> Inspection;
}

/// The inspectable handles of one provider's stack, outer to inner.
#[derive(Clone, Default)]
pub struct Inspectors {
    views: Vec<Arc<dyn Inspect>>,
}

impl Inspectors {
    /// Adds a layer's handle.
    pub fn push(&mut self, view: impl Inspect) {
        self.views.push(Arc::new(view));
    }

    /// Every layer's view now, in the order pushed.
    pub fn inspect(&self) -> Vec<Inspection> {
        self.views.iter().map(|v| v.inspect()).collect()
    }

    /// How many layers are listed.
    pub fn len(&self) -> usize {
        self.views.len()
    }

    /// Whether no layer is listed.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }
}

impl fmt::Debug for Inspectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inspectors")
            .field("layers", &self.views.len())
            .finish()
    }
}
