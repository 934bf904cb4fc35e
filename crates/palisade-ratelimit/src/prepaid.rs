//! Handing a request's admission from a limiter's pacer (outside a
//! bulkhead, where waiting holds nothing) to the limiter itself (inside
//! it, where every attempt is counted).
//!
//! A tower stack calls each layer's `call` from the one outside it,
//! synchronously. So the pacer, having waited for and taken the request's
//! room, leaves an offer in a thread-local for the length of its inner
//! `call`; the same limiter's `call`, reached synchronously through the
//! bulkhead and retry, claims it instead of taking room again. An offer
//! nobody claimed (the bulkhead queued the call, so the limiter runs later,
//! or the limiter is not inside) is given back by the pacer: room is never
//! taken twice and never lost.

use std::cell::Cell;

use crate::limiter::{Shared, Taken};

thread_local! {
    /// The offer in force: the limiter it is for (by address, only ever
    /// compared) and what it took.
    static OFFER: Cell<Option<(usize, Taken)>> = const { Cell::new(None) };
}

fn key(shared: &Shared) -> usize {
    shared as *const Shared as usize
}

/// An offer in force until dropped (on unwind too), when the one it
/// replaced is put back.
#[must_use = "the offer is only in force while it lives"]
#[derive(Debug)]
pub(crate) struct Offer {
    key: usize,
    before: Option<(usize, Taken)>,
}

impl Offer {
    /// Offers room already `taken` from `shared`.
    pub(crate) fn new(shared: &Shared, taken: Taken) -> Self {
        let key = key(shared);
        let before = OFFER.with(|o| o.replace(Some((key, taken))));
        Offer { key, before }
    }

    /// Whether the limiter claimed it.
    pub(crate) fn claimed(&self) -> bool {
        OFFER.with(Cell::get).is_none_or(|(k, _)| k != self.key)
    }
}

impl Drop for Offer {
    fn drop(&mut self) {
        let before = self.before;
        OFFER.with(|o| o.set(before));
    }
}

/// Claims an offer for `shared`: what was already taken for this call.
#[inline]
pub(crate) fn claim(shared: &Shared) -> Option<Taken> {
    OFFER.with(|o| match o.get() {
        Some((k, taken)) if k == key(shared) => {
            o.set(None);
            Some(taken)
        }
        _ => None,
    })
}
