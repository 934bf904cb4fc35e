//! What a refusal says besides *when*: the provider, the state and the
//! detail, interned once per provider name.
//!
//! A [`Refusal`](crate::Refusal) is on the path a burst of traffic takes
//! against a dead provider, so it must be cheap to build, move and drop.
//! Holding the provider's name by value would mean a reference-count bump
//! (on a counter every worker thread shares) for every refusal and a
//! 40-byte error moved through every `poll_ready` and response future.
//! Instead, every combination of provider, state and detail a breaker can
//! refuse with is built once, when the breaker is built, and kept for the
//! life of the process; a refusal points at its combination and carries
//! only the open deadline beside it (24 bytes, no atomics).
//!
//! The cost is a few hundred bytes per *distinct* provider name ever given
//! to a breaker, shared by every breaker with that name (a registry names a
//! handful of providers, and rebuilding its breakers adds nothing); the name
//! itself is [interned](ProviderId::interned) once for every layer.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use palisade_core::{CircuitState, ProviderId};

use crate::error::Detail;
use crate::state::st_code;

/// Every state a refusal can report, in [`st_code`] order.
const STATES: [CircuitState; 5] = [
    CircuitState::Closed,
    CircuitState::Open,
    CircuitState::HalfOpen,
    CircuitState::ForcedOpen,
    CircuitState::Disabled,
];

/// Every detail, in code order.
const DETAILS: [Detail; 3] = [
    Detail::None,
    Detail::ProbeSlotsTaken,
    Detail::OpenAtReadiness,
];

/// One kind of refusal: who refused, in which state, and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RefusalKind {
    pub(crate) provider: Option<&'static ProviderId>,
    pub(crate) state: CircuitState,
    pub(crate) detail: Detail,
}

/// Every kind of refusal the breakers of one provider can give, indexed by
/// state code and detail.
#[derive(Debug)]
pub(crate) struct Kinds([[RefusalKind; 3]; 5]);

/// The interned kinds, by interned provider name (`None` for breakers
/// without one).
type Interned = HashMap<Option<&'static ProviderId>, &'static Kinds>;

static INTERNED: OnceLock<Mutex<Interned>> = OnceLock::new();

impl Kinds {
    /// The kinds for `provider`, built on first use of that name and shared
    /// by every breaker given it from then on.
    pub(crate) fn of(provider: Option<&ProviderId>) -> &'static Kinds {
        let map = INTERNED.get_or_init(Default::default);
        // The map is only ever inserted into whole entries, so a panic
        // elsewhere while it was held leaves it consistent.
        let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
        let provider = provider.map(ProviderId::interned);
        if let Some(kinds) = map.get(&provider) {
            return kinds;
        }
        let kinds: &'static Kinds = Box::leak(Box::new(Kinds(STATES.map(|state| {
            DETAILS.map(|detail| RefusalKind {
                provider,
                state,
                detail,
            })
        }))));
        map.insert(provider, kinds);
        kinds
    }

    /// The kind for `state` and `detail`.
    #[inline(always)]
    pub(crate) fn get(&'static self, state: CircuitState, detail: Detail) -> &'static RefusalKind {
        &self.0[st_code(state) as usize][detail as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_says_what_it_was_asked_for() {
        let p = ProviderId::new("kinds-test");
        for provider in [None, Some(&p)] {
            let kinds = Kinds::of(provider);
            for state in STATES {
                for detail in DETAILS {
                    let k = kinds.get(state, detail);
                    assert_eq!(k.state, state);
                    assert_eq!(k.detail, detail);
                    assert_eq!(k.provider, provider);
                }
            }
        }
    }

    #[test]
    fn one_name_is_interned_once() {
        let a = Kinds::of(Some(&ProviderId::new("interned-once")));
        let b = Kinds::of(Some(&ProviderId::new("interned-once")));
        let c = Kinds::of(Some(&ProviderId::new("interned-other")));
        assert!(std::ptr::eq(a, b));
        assert!(!std::ptr::eq(a, c));
        assert!(std::ptr::eq(Kinds::of(None), Kinds::of(None)));
    }
}
