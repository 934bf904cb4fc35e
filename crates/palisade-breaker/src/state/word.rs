//! The state word: the state (3 bits), the half-open probes in flight (16
//! bits), the half-open successes so far (16 bits) and a generation (29
//! bits) that changes on every transition, so an outcome of a call
//! admitted under an older state cannot feed the rules of the current one;
//! and the tally of rated half-open probes.

use std::sync::atomic::{AtomicU64, Ordering};

use palisade_core::CircuitState;

pub(super) const ST_MASK: u64 = 0b111;
pub(super) const PROBE_SHIFT: u32 = 3;
pub(super) const SUCC_SHIFT: u32 = 19;
pub(super) const GEN_SHIFT: u32 = 35;
pub(super) const FIELD16: u64 = 0xFFFF;

pub(crate) fn st_code(s: CircuitState) -> u64 {
    match s {
        CircuitState::Closed => 0,
        CircuitState::Open => 1,
        CircuitState::HalfOpen => 2,
        CircuitState::ForcedOpen => 3,
        CircuitState::Disabled => 4,
    }
}

pub(crate) fn st_of(w: u64) -> CircuitState {
    match w & ST_MASK {
        0 => CircuitState::Closed,
        1 => CircuitState::Open,
        2 => CircuitState::HalfOpen,
        3 => CircuitState::ForcedOpen,
        _ => CircuitState::Disabled,
    }
}

pub(super) fn probes_of(w: u64) -> u32 {
    ((w >> PROBE_SHIFT) & FIELD16) as u32
}

pub(super) fn succ_of(w: u64) -> u32 {
    ((w >> SUCC_SHIFT) & FIELD16) as u32
}

pub(super) fn gen_of(w: u64) -> u64 {
    w >> GEN_SHIFT
}

pub(super) fn pack(s: CircuitState, probes: u32, succ: u32, gen: u64) -> u64 {
    st_code(s)
        | (probes as u64 & FIELD16) << PROBE_SHIFT
        | (succ as u64 & FIELD16) << SUCC_SHIFT
        | (gen & ((1 << (64 - GEN_SHIFT)) - 1)) << GEN_SHIFT
}

/// The failed and slow probes of one half-open period under
/// [`HalfOpenRule::Rate`], in one word: the period's generation (high 32
/// bits), failures (16 bits), slow calls (16 bits). A probe of another
/// generation adds nothing.
pub(super) struct Tally;

impl Tally {
    const GEN_MASK: u64 = (1 << (64 - GEN_SHIFT)) - 1;

    /// An empty tally for generation `gen`.
    pub(super) fn start(gen: u64) -> u64 {
        (gen & Self::GEN_MASK) << 32
    }

    pub(super) fn add(cell: &AtomicU64, gen: u32, failed: bool, slow: bool) {
        let delta = (u64::from(failed) << 16) | u64::from(slow);
        let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
            ((t >> 32) == u64::from(gen)).then_some(t + delta)
        });
    }

    /// (failures, slow calls) if the tally is generation `gen`'s.
    pub(super) fn counts(t: u64, gen: u32) -> (u32, u32) {
        if (t >> 32) != u64::from(gen) {
            return (0, 0);
        }
        (((t >> 16) & FIELD16) as u32, (t & FIELD16) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_packing_round_trips() {
        for s in [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
            CircuitState::ForcedOpen,
            CircuitState::Disabled,
        ] {
            let w = pack(s, 65_000, 3, (1 << 29) - 1);
            assert_eq!(st_of(w), s);
            assert_eq!(probes_of(w), 65_000);
            assert_eq!(succ_of(w), 3);
            assert_eq!(gen_of(w), (1 << 29) - 1);
        }
        // the generation wraps instead of spilling
        assert_eq!(gen_of(pack(CircuitState::Closed, 0, 0, 1 << 29)), 0);
    }
}
