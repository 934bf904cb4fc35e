//! [`Plan`]: what a [`ChaosLayer`](crate::ChaosLayer) injects, each fault
//! at its own rate.

use std::time::Duration;

use palisade_core::{ConfigError, Problems};
use serde::{Deserialize, Serialize};

/// How long injected latency lasts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delay {
    /// Always this long.
    Fixed(#[serde(with = "ms")] Duration),
    /// Uniformly between the two.
    Uniform(
        #[serde(with = "ms")] Duration,
        #[serde(with = "ms")] Duration,
    ),
}

mod ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl Delay {
    /// The delay for a draw `u` in [0, 1).
    pub(crate) fn at(&self, u: f64) -> Duration {
        match *self {
            Delay::Fixed(d) => d,
            Delay::Uniform(lo, hi) => lo + (hi.saturating_sub(lo)).mul_f64(u),
        }
    }
}

/// What to inject, each fault drawn on its own for every call the layer
/// applies to (rates within [0, 1]). Checked in this order, the first that
/// draws wins: a reset, a hang, an error, a stalled stream, a cut stream;
/// latency is added to a call that goes through untouched.
///
/// ```
/// use palisade_chaos::{Delay, Plan};
/// use std::time::Duration;
///
/// let plan = Plan::default()
///     .error(0.1, 503)
///     .latency(0.5, Delay::Uniform(Duration::from_millis(100), Duration::from_millis(400)));
/// plan.check().unwrap();
/// assert!(Plan::default().error(1.5, 503).check().unwrap_err().to_string().contains("chaos.error_rate"));
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Plan {
    /// Share of calls failed with [`error_status`](Self::error_status).
    pub error_rate: f64,
    /// The status an injected error carries: 429 and 503 say when to come
    /// back if [`retry_after`](Self::retry_after) is set, 5xx is a server
    /// error, 4xx the caller's (default 503).
    pub error_status: Option<u16>,
    /// The wait an injected 429/503 names.
    #[serde(with = "opt_ms")]
    pub retry_after: Option<Duration>,
    /// Share of calls delayed by [`delay`](Self::delay).
    pub latency_rate: f64,
    /// How long.
    pub delay: Option<Delay>,
    /// Share of calls never answered (the caller's timeouts end them).
    pub hang_rate: f64,
    /// Share of calls failed as a connection reset (a `Connect` failure,
    /// as a refused or dropped connection is).
    pub reset_rate: f64,
    /// Share of streamed answers that stall (stop sending without ending)
    /// after [`stall_after`](Self::stall_after) frames. Needs a layer
    /// that knows the response's body ([`Builder::streams`](crate::Builder::streams)).
    pub stall_rate: f64,
    /// Frames let through before a stall.
    pub stall_after: Option<u32>,
    /// Share of streamed answers cut (the body fails as a dropped
    /// connection) after [`cut_after`](Self::cut_after) frames.
    pub cut_rate: f64,
    /// Frames let through before a cut.
    pub cut_after: Option<u32>,
}

mod opt_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

impl Plan {
    /// Fails `rate` of calls with `status`.
    pub fn error(mut self, rate: f64, status: u16) -> Self {
        self.error_rate = rate;
        self.error_status = Some(status);
        self
    }

    /// The wait injected 429s and 503s name.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// Delays `rate` of calls by `delay`.
    pub fn latency(mut self, rate: f64, delay: Delay) -> Self {
        self.latency_rate = rate;
        self.delay = Some(delay);
        self
    }

    /// Never answers `rate` of calls.
    pub fn hang(mut self, rate: f64) -> Self {
        self.hang_rate = rate;
        self
    }

    /// Fails `rate` of calls as a connection reset.
    pub fn reset(mut self, rate: f64) -> Self {
        self.reset_rate = rate;
        self
    }

    /// Stalls `rate` of streamed answers after `frames` frames.
    pub fn stall(mut self, rate: f64, frames: u32) -> Self {
        self.stall_rate = rate;
        self.stall_after = Some(frames);
        self
    }

    /// Cuts `rate` of streamed answers after `frames` frames.
    pub fn cut(mut self, rate: f64, frames: u32) -> Self {
        self.cut_rate = rate;
        self.cut_after = Some(frames);
        self
    }

    /// Every bad value, each named (`chaos.error_rate`).
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut p = Problems::new("chaos");
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("latency_rate", self.latency_rate),
            ("hang_rate", self.hang_rate),
            ("reset_rate", self.reset_rate),
            ("stall_rate", self.stall_rate),
            ("cut_rate", self.cut_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                p.add(name, format!("{rate} is not within [0, 1]"));
            }
        }
        if let Some(s) = self.error_status {
            if !(400..=599).contains(&s) {
                p.add(
                    "error_status",
                    format!("{s} is not an error status (400 to 599)"),
                );
            }
        }
        if self.latency_rate > 0.0 && self.delay.is_none() {
            p.add("delay", "latency_rate is set but no delay is given");
        }
        if self.stall_rate > 0.0 && self.stall_after.is_none() {
            p.add(
                "stall_after",
                "stall_rate is set but not after how many frames",
            );
        }
        if self.cut_rate > 0.0 && self.cut_after.is_none() {
            p.add("cut_after", "cut_rate is set but not after how many frames");
        }
        if let Some(Delay::Uniform(lo, hi)) = self.delay {
            if lo > hi {
                p.add(
                    "delay",
                    format!("uniform from {lo:?} to {hi:?}: the first is larger"),
                );
            }
        }
        p.finish()
    }

    /// Whether it injects anything at all.
    pub fn is_quiet(&self) -> bool {
        self.error_rate == 0.0
            && self.latency_rate == 0.0
            && self.hang_rate == 0.0
            && self.reset_rate == 0.0
            && self.stall_rate == 0.0
            && self.cut_rate == 0.0
    }
}
