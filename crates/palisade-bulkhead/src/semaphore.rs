//! The bulkhead's semaphore: a counter of free slots that admits callers
//! with one compare-and-swap, a FIFO queue (behind a lock) for callers that
//! must wait, direct hand-off from a finishing call to the head of the
//! queue, and resizing at runtime.
//!
//! Why not `tokio::sync::Semaphore`: its release always takes the waiter
//! list's lock, even when nobody waits. Here a release with an empty queue
//! is one `fetch_add`; the lock is only taken when someone is queued.
//!
//! **No lost wake-ups.** A waiter increments `waiting` and then, under the
//! queue lock, tries to take a free slot; a releaser adds its slot to
//! `avail` and then reads `waiting`. Both pairs are `SeqCst`, so at least
//! one side sees the other: either the waiter finds the slot, or the
//! releaser finds the waiter and drains the queue under the lock.
//!
//! **Shrinking** takes free slots at once and records the rest as `owed`:
//! the next releases retire their slot instead of freeing it, so in-flight
//! calls finish undisturbed and the limit is reached as they do.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use palisade_core::{ProviderId, RejectReason, Rejected};

use crate::adaptive::Vegas;

/// Upper bound on slots and queue length, so a typo cannot ask for the
/// impossible.
pub(crate) const MAX_PERMITS: usize = 1 << 30;

/// One queued caller. Its own small lock guards its grant flag and waker;
/// lock order is queue, then waiter.
#[derive(Debug, Default)]
pub(crate) struct Waiter {
    state: Mutex<WaiterState>,
}

#[derive(Debug, Default)]
struct WaiterState {
    granted: bool,
    waker: Option<Waker>,
}

impl Waiter {
    fn lock(&self) -> MutexGuard<'_, WaiterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a slot was handed to this waiter; if not, remembers `waker`.
    pub(crate) fn poll_granted(&self, waker: &Waker) -> bool {
        let mut st = self.lock();
        if st.granted {
            return true;
        }
        match &st.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => st.waker = Some(waker.clone()),
        }
        false
    }

    fn grant(&self) {
        let waker = {
            let mut st = self.lock();
            st.granted = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Counters for the handle's snapshot. Only `peak` is touched on the
/// uncontended path, and only when it grows.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) peak: AtomicUsize,
    pub(crate) rejected: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) queued: AtomicU64,
    pub(crate) wait_nanos: AtomicU64,
}

/// The shared state of one bulkhead.
#[derive(Debug)]
pub(crate) struct Semaphore {
    /// Free slots.
    avail: AtomicUsize,
    /// Callers in the queue; mirrors `queue.len()` so it can be read
    /// without the lock.
    waiting: AtomicUsize,
    /// Slots to retire as they come back, after a shrink.
    owed: AtomicUsize,
    /// The configured number of slots.
    limit: AtomicUsize,
    /// The queue's capacity.
    max_waiting: AtomicUsize,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) provider: Option<ProviderId>,
    /// The adaptive limiter, when the limit follows latency.
    pub(crate) adaptive: Option<Vegas>,
    /// The origin of the permits' start times (adaptive limit only).
    pub(crate) epoch: tokio::time::Instant,
    queue: Mutex<VecDeque<Arc<Waiter>>>,
    /// Serialises resizes against each other.
    resize: Mutex<()>,
    pub(crate) stats: Stats,
}

impl Semaphore {
    pub(crate) fn new(
        limit: usize,
        max_waiting: usize,
        max_wait: Option<Duration>,
        provider: Option<ProviderId>,
        adaptive: Option<Vegas>,
    ) -> Self {
        Semaphore {
            avail: AtomicUsize::new(limit),
            waiting: AtomicUsize::new(0),
            owed: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            max_waiting: AtomicUsize::new(max_waiting),
            max_wait,
            provider,
            adaptive,
            epoch: tokio::time::Instant::now(),
            queue: Mutex::new(VecDeque::new()),
            resize: Mutex::new(()),
            stats: Stats::default(),
        }
    }

    fn lock_queue(&self) -> MutexGuard<'_, VecDeque<Arc<Waiter>>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[inline]
    fn take_free(&self) -> bool {
        self.avail
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |a| a.checked_sub(1))
            .is_ok()
    }

    /// The fast path: a free slot, taken only when nobody queues ahead.
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        if self.waiting.load(Ordering::SeqCst) != 0 || !self.take_free() {
            return false;
        }
        self.note_peak();
        true
    }

    #[inline]
    fn note_peak(&self) {
        let now = self.in_flight();
        if now > self.stats.peak.load(Ordering::Relaxed) {
            self.stats.peak.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Joins the queue, or refuses when it is full. The returned waiter
    /// may already hold a slot.
    pub(crate) fn enqueue(&self) -> Result<Arc<Waiter>, Rejected> {
        let max_waiting = self.max_waiting.load(Ordering::Relaxed);
        if max_waiting == 0 {
            // No queue: one more look for a free slot happens in the
            // caller before this; refuse.
            return Err(self.reject_full());
        }
        let waiter = Arc::new(Waiter::default());
        let mut q = self.lock_queue();
        if q.len() >= max_waiting {
            drop(q);
            return Err(self.reject_full());
        }
        q.push_back(waiter.clone());
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.drain_locked(&mut q);
        Ok(waiter)
    }

    /// Hands free slots to the head of the queue while both exist.
    fn drain_locked(&self, q: &mut VecDeque<Arc<Waiter>>) {
        while !q.is_empty() && self.take_free() {
            let w = q.pop_front().expect("checked non-empty");
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            w.grant();
        }
        self.note_peak();
    }

    /// Gives a slot back: retires it if a shrink is owed, hands it to the
    /// head of the queue if someone waits, frees it otherwise.
    #[inline]
    pub(crate) fn release(&self) {
        if self.owed.load(Ordering::Relaxed) != 0
            && self
                .owed
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |o| o.checked_sub(1))
                .is_ok()
        {
            return;
        }
        if self.waiting.load(Ordering::SeqCst) != 0 {
            self.hand_off();
            return;
        }
        self.avail.fetch_add(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) != 0 {
            let mut q = self.lock_queue();
            self.drain_locked(&mut q);
        }
    }

    #[cold]
    fn hand_off(&self) {
        let mut q = self.lock_queue();
        match q.pop_front() {
            Some(w) => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                drop(q);
                w.grant();
            }
            None => {
                self.avail.fetch_add(1, Ordering::SeqCst);
                self.drain_locked(&mut q);
            }
        }
    }

    /// A queued caller gives up (timed out or dropped) and leaves the
    /// queue. Returns `true` when it had already been handed a slot (or is
    /// being handed one right now): the caller then holds that slot and must
    /// use it or [`release`](Self::release) it.
    pub(crate) fn leave(&self, waiter: &Arc<Waiter>) -> bool {
        let mut q = self.lock_queue();
        if let Some(pos) = q.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            q.remove(pos);
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        // Not queued any more: a releaser popped it, so the slot is its
        // own even if `grant` has not run yet.
        true
    }

    /// Sets the number of slots. Growing frees slots at once (serving the
    /// queue first); shrinking takes free slots at once and retires the rest
    /// as in-flight calls finish.
    pub(crate) fn resize(&self, new: usize) {
        let _serial = self.resize.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.limit.swap(new, Ordering::SeqCst);
        if new > old {
            let mut grow = new - old;
            // Cancel retirements first.
            while grow > 0 {
                let owed = self.owed.load(Ordering::Acquire);
                if owed == 0 {
                    break;
                }
                let cancel = owed.min(grow);
                if self
                    .owed
                    .compare_exchange(owed, owed - cancel, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    grow -= cancel;
                }
            }
            if grow > 0 {
                self.avail.fetch_add(grow, Ordering::SeqCst);
                let mut q = self.lock_queue();
                self.drain_locked(&mut q);
            }
        } else {
            let mut shrink = old - new;
            while shrink > 0 {
                let a = self.avail.load(Ordering::Acquire);
                if a == 0 {
                    break;
                }
                let take = a.min(shrink);
                if self
                    .avail
                    .compare_exchange(a, a - take, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    shrink -= take;
                }
            }
            self.owed.fetch_add(shrink, Ordering::AcqRel);
        }
    }

    /// Sets the queue's capacity; callers already queued keep their place.
    pub(crate) fn set_max_waiting(&self, n: usize) {
        self.max_waiting.store(n, Ordering::Relaxed);
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn max_waiting(&self) -> usize {
        self.max_waiting.load(Ordering::Relaxed)
    }

    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Calls holding a slot (a racy snapshot; exact when quiescent).
    #[inline]
    pub(crate) fn in_flight(&self) -> usize {
        let held = self.limit.load(Ordering::Relaxed) + self.owed.load(Ordering::Relaxed);
        held.saturating_sub(self.avail.load(Ordering::Relaxed))
    }

    #[cold]
    pub(crate) fn reject_full(&self) -> Rejected {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            provider = self.provider.as_ref().map(|p| p.as_str()),
            in_flight = self.in_flight(),
            waiting = self.waiting(),
            "bulkhead full; call rejected"
        );
        Rejected::new(RejectReason::BulkheadFull)
            .with_provider_opt(self.provider.clone())
            .with_detail(format!(
                "{} in flight of {}, {} waiting of {}",
                self.in_flight(),
                self.limit(),
                self.waiting(),
                self.max_waiting()
            ))
    }

    #[cold]
    pub(crate) fn reject_timeout(&self, waited: Duration) -> Rejected {
        self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            provider = self.provider.as_ref().map(|p| p.as_str()),
            waited_ms = waited.as_millis() as u64,
            "bulkhead wait timed out"
        );
        Rejected::new(RejectReason::BulkheadTimeout)
            .with_provider_opt(self.provider.clone())
            .with_detail(format!(
                "waited {waited:?} in the queue with {} in flight of {}",
                self.in_flight(),
                self.limit()
            ))
    }

    pub(crate) fn record_wait(&self, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.stats.wait_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}
