//! [`Strategy`]: how a tier chooses among its providers.

use std::fmt;
use std::str::FromStr;

/// How a [`Balancer`](crate::Balancer) chooses among the providers of one
/// tier. Every strategy steps around providers that refuse (an open
/// breaker, no rate-limit room, a full bulkhead) and, within what is left,
/// honours each provider's weight.
///
/// ```
/// use palisade_balance::Strategy;
///
/// let s: Strategy = "peak_ewma".parse().unwrap();
/// assert_eq!(s, Strategy::PeakEwma);
/// assert_eq!(s.to_string(), "peak_ewma");
/// assert!("fastest".parse::<Strategy>().unwrap_err().contains("round_robin"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Strategy {
    /// Each provider in turn, `weight` turns each per round, interleaved
    /// (smooth weighted round robin): over N rounds each provider gets
    /// exactly its share.
    RoundRobin,
    /// A provider at random, with probability proportional to its weight.
    Random,
    /// The provider with the fewest calls in flight per unit of weight;
    /// ties go round robin.
    LeastInFlight,
    /// Power of two choices over peak-EWMA latency (tower's `p2c` +
    /// `PeakEwma`): two providers drawn at random, the cheaper one taken,
    /// cost = latency estimate × (calls in flight + 1) ÷ weight. The
    /// estimate jumps to a slow answer at once and decays back with time,
    /// so a provider with a heavy tail is avoided as soon as it shows it.
    /// Behind a first-frame gate (the gateway's upstream), an answer
    /// arrives with its first token, so for streams this is p2c over
    /// time to first token.
    #[default]
    PeakEwma,
    /// The provider with the most rate-limit room left (the share of its
    /// quota still free, as its rate limiter reports it); providers with
    /// no limiter count as fully free; ties go to the fewest in flight.
    MostHeadroom,
}

impl Strategy {
    /// Every strategy, by its config name.
    pub const ALL: [Strategy; 5] = [
        Strategy::RoundRobin,
        Strategy::Random,
        Strategy::LeastInFlight,
        Strategy::PeakEwma,
        Strategy::MostHeadroom,
    ];

    /// The config name (`round_robin`, `random`, `least_in_flight`,
    /// `peak_ewma`, `most_headroom`).
    pub const fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Random => "random",
            Strategy::LeastInFlight => "least_in_flight",
            Strategy::PeakEwma => "peak_ewma",
            Strategy::MostHeadroom => "most_headroom",
        }
    }

    /// Whether the strategy reads latency, so calls must be timed.
    pub const fn needs_latency(self) -> bool {
        matches!(self, Strategy::PeakEwma)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Strategy::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown strategy {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}
