//! splitmix64: random-looking draws from a plain counter, for the layers
//! that draw on their hot path (a balancer's pick, a chaos layer's fault)
//! and must stay lock-free and, when seeded, repeatable.

/// The step between successive states (the golden-ratio constant).
pub const SPLITMIX_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The draw for counter state `state`: advance a counter by
/// [`SPLITMIX_GAMMA`] (an atomic `fetch_add`, or a thread's own cell) and
/// mix each value it takes; the same states give the same draws.
///
/// ```
/// use palisade_core::{splitmix64, SPLITMIX_GAMMA};
///
/// // A counter seeded with 0: its first draw is splitmix64's well-known
/// // first output for seed 0.
/// let mut state = 0u64;
/// state = state.wrapping_add(SPLITMIX_GAMMA);
/// assert_eq!(splitmix64(state), 0xe220_a839_7b1d_cdaf);
/// ```
#[inline]
pub fn splitmix64(state: u64) -> u64 {
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
