//! Where the hot fields live: what every call reads on one cache line, and
//! a hot atomic on a line of its own.

use std::sync::atomic::AtomicU64;

use tokio::time::Instant;

use crate::config::ReadinessMode;
use crate::kind::Kinds;

/// Keeps a hot atomic on a cache line of its own.
#[derive(Debug)]
#[repr(align(64))]
pub(super) struct Line<T>(pub(super) T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// What every call reads, on one cache line: the state word, the end of
/// the open period, and the settings the hot paths branch on. Written only
/// on transitions and half-open probes.
#[derive(Debug)]
#[repr(C, align(64))]
pub(super) struct Hot {
    pub(super) word: AtomicU64,
    /// Unique per breaker for the life of the process (the key of the
    /// per-thread open-deadline cache; an address could be reused).
    pub(super) id: u64,
    /// Nanos since base when the open period ends (valid in Open).
    pub(super) open_until: AtomicU64,
    pub(super) base: Instant,
    /// What refusals name (provider, state, detail), interned.
    pub(super) kinds: &'static Kinds,
    pub(super) needs_clock: bool,
    pub(super) mode: ReadinessMode,
}

/// Source of [`Hot::id`].
pub(super) static NEXT_ID: AtomicU64 = AtomicU64::new(0);
