//! Tiers: the chain's order as groups of equivalent providers, each
//! balanced within, tried one group after another.

use palisade_balance::{Balancer, Candidates, Load, Strategy};

use crate::target::Target;

/// One tier: targets `start..end` of the chain, and how to choose among
/// them (no balancer for a tier of one).
#[derive(Debug)]
pub(crate) struct Tier {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) balancer: Option<Balancer>,
    /// Whether calls to this tier are timed (a strategy or a hedge delay
    /// reads latency).
    pub(crate) timed: bool,
    /// Whether calls to this tier are counted in flight (any balancer).
    pub(crate) counted: bool,
}

impl Tier {
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }
}

/// How tiers were asked for: `(len, strategy)`, in order.
pub(crate) type TierSpec = (usize, Strategy);

/// The tier's members as a balancer sees them for one pick.
pub(crate) struct Pickable<'a, S, Req, F> {
    pub(crate) targets: &'a [Target<S, Req>],
    pub(crate) eligible: F,
    pub(crate) streaming: bool,
}

impl<S, Req, F: Fn(usize) -> bool> Candidates for Pickable<'_, S, Req, F> {
    fn len(&self) -> usize {
        self.targets.len()
    }

    fn eligible(&self, i: usize) -> bool {
        (self.eligible)(i)
    }

    fn load(&self, i: usize) -> &Load {
        &self.targets[i].load
    }

    fn headroom(&self, i: usize) -> Option<f64> {
        self.targets[i].admission.headroom()
    }

    fn streaming(&self) -> bool {
        self.streaming
    }
}
