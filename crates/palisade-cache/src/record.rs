//! [`Record`]: how a cache turns an answer into an entry and an entry back
//! into an answer; [`CloneRecord`] for answers that are plain values.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use palisade_core::BoxError;

use crate::key::Lookup;
use crate::service::Shared;

/// How a cached entry answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Replay<'a> {
    /// The answer to the call this request started (collected whole so
    /// that identical requests could share it): new, not from the cache.
    Own,
    /// A copy of the answer to an identical call in flight that this
    /// request joined (coalesced): new, not from the cache.
    Copy,
    /// A fresh hit: no call was made.
    Fresh {
        /// The entry's age.
        age: Duration,
    },
    /// The call failed and this answer, stored earlier, stands in for it:
    /// mark it degraded.
    Stale {
        /// The entry's age.
        age: Duration,
        /// Why the call failed.
        reason: &'a str,
    },
}

/// Turns answers into cache entries and back.
///
/// [`CloneRecord`] serves any `Clone` answer;
/// [`HttpRecord`](crate::HttpRecord) serves HTTP responses with streamed
/// bodies (recording them as they pass, replaying them as JSON or SSE).
pub trait Record<Res>: Clone + Send + Sync + 'static {
    /// What is stored.
    type Entry: Clone + Send + Sync + 'static;

    /// Passes `res` on, and hands its entry to `keep` once the answer is
    /// complete (a streamed body: when it has ended cleanly), if it is
    /// worth storing. Never delays or changes what the caller gets.
    fn record(&self, res: Res, keep: Keep<Self::Entry>) -> Res;

    /// The whole answer as an entry (a body read to its end), so that
    /// callers sharing one call each get a copy.
    fn collect(&self, res: Res) -> BoxFuture<'static, Result<Self::Entry, BoxError>>;

    /// Whether an entry may be stored (a success; a collected error
    /// answer is shared with the callers in flight but never stored).
    fn storable(&self, entry: &Self::Entry) -> bool;

    /// The entry's size in bytes, for the cache's bound.
    fn weight(&self, entry: &Self::Entry) -> u64;

    /// An answer from an entry, for a request looked up as `lookup`.
    fn replay(&self, entry: &Self::Entry, lookup: &Lookup, how: Replay<'_>) -> Res;
}

/// Where a recorded answer goes once it is complete: the cache, under the
/// request's key, if it is within the size limit.
pub struct Keep<E> {
    pub(crate) shared: Arc<dyn KeepInto<E>>,
    pub(crate) key: u128,
}

impl<E> std::fmt::Debug for Keep<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keep").field("key", &self.key).finish()
    }
}

impl<E> Keep<E> {
    /// The largest entry that will be kept, in bytes: a recorder stops
    /// buffering beyond it.
    pub fn limit(&self) -> u64 {
        self.shared.limit()
    }

    /// Stores `entry`, weighing `weight` bytes (refused over the limit).
    pub fn keep(self, entry: E, weight: u64) {
        self.shared.keep(self.key, entry, weight);
    }
}

/// A cache's store as a [`Keep`] sees it (not generic over the layer's
/// other parameters).
pub(crate) trait KeepInto<E>: Send + Sync {
    fn limit(&self) -> u64;
    fn keep(&self, key: u128, entry: E, weight: u64);
}

impl<E: Send + Sync + 'static, R: Send + Sync> KeepInto<E> for Shared<E, R> {
    fn limit(&self) -> u64 {
        self.settings.max_entry_bytes
    }

    fn keep(&self, key: u128, entry: E, weight: u64) {
        self.put(key, entry, weight);
    }
}

/// Records answers that are plain `Clone` values: the answer is the entry.
/// Its weight is its size in memory (`size_of`), or what
/// [`weigh`](Self::weigh) says; [`mark`](Self::mark) marks replayed
/// answers (a stale one as degraded).
///
/// ```
/// use palisade_cache::{CloneRecord, Replay};
///
/// let record = CloneRecord::<String>::new()
///     .weigh(|s| s.len() as u64)
///     .mark(|s, how| if let Replay::Stale { .. } = how { s.insert_str(0, "[stale] ") });
/// # let _ = record;
/// ```
pub struct CloneRecord<Res> {
    weigh: Option<fn(&Res) -> u64>,
    mark: Option<fn(&mut Res, Replay<'_>)>,
}

impl<Res> Clone for CloneRecord<Res> {
    fn clone(&self) -> Self {
        CloneRecord {
            weigh: self.weigh,
            mark: self.mark,
        }
    }
}

impl<Res> std::fmt::Debug for CloneRecord<Res> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloneRecord").finish_non_exhaustive()
    }
}

impl<Res> Default for CloneRecord<Res> {
    fn default() -> Self {
        CloneRecord {
            weigh: None,
            mark: None,
        }
    }
}

impl<Res> CloneRecord<Res> {
    /// Answers stored as they are, weighed by `size_of`, unmarked.
    pub fn new() -> Self {
        CloneRecord::default()
    }

    /// Weighs an answer with `weigh` (bytes).
    pub fn weigh(mut self, weigh: fn(&Res) -> u64) -> Self {
        self.weigh = Some(weigh);
        self
    }

    /// Marks each replayed answer with `mark`.
    pub fn mark(mut self, mark: fn(&mut Res, Replay<'_>)) -> Self {
        self.mark = Some(mark);
        self
    }
}

impl<Res: Clone + Send + Sync + 'static> Record<Res> for CloneRecord<Res> {
    type Entry = Res;

    fn record(&self, res: Res, keep: Keep<Res>) -> Res {
        keep.keep(res.clone(), self.weight(&res));
        res
    }

    fn collect(&self, res: Res) -> BoxFuture<'static, Result<Res, BoxError>> {
        Box::pin(std::future::ready(Ok(res)))
    }

    fn storable(&self, _: &Res) -> bool {
        true
    }

    fn weight(&self, entry: &Res) -> u64 {
        match self.weigh {
            Some(w) => w(entry),
            None => std::mem::size_of::<Res>() as u64,
        }
    }

    fn replay(&self, entry: &Res, _: &Lookup, how: Replay<'_>) -> Res {
        let mut res = entry.clone();
        if let Some(mark) = self.mark {
            mark(&mut res, how);
        }
        res
    }
}
