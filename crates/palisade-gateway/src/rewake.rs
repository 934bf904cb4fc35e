//! A connection's future polled again at once when it wakes itself.
//!
//! hyper runs a connection's service inside the connection's own task, so
//! when the gateway reads a request's body, the body's channel wakes the
//! connection's dispatcher, which is the task being polled. tokio treats
//! a task woken while it runs as a yield: the task goes to the back of the
//! worker's queue and an idle worker is unparked to share the work. With
//! one request in flight that is a futex wake, two context switches and
//! often the task moving to the other core, for nothing: the task has
//! work to do right now.
//!
//! [`Rewake`] polls the inner future with a waker of its own. A wake that
//! arrives while the inner future is being polled (from itself or from
//! another thread) is remembered, and the inner future is polled again
//! before [`Rewake`] returns; a wake at any other time goes to the task's
//! waker as usual. After [`MAX_REPOLLS`] polls in a row, or once the
//! task's cooperative budget is spent, the wake goes to the runtime, so a
//! future that yields on purpose still yields.
//!
//! Each poll of the inner future is one clock reading
//! ([`palisade_core::clock::PollReading`]): a request's start, its
//! deadlines, its provider's call, its pooled connection's return and its
//! end each read the time, and within one poll they are microseconds
//! apart; they share the first reading instead of a `clock_gettime` each.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

/// How many times in one poll the inner future is polled again after
/// waking itself, before the wake is handed to the runtime.
pub(crate) const MAX_REPOLLS: u32 = 4;

/// Not being polled.
const IDLE: u8 = 0;
/// Being polled, not woken since the poll began.
const POLLING: u8 = 1;
/// Woken while being polled: poll again.
const WOKEN: u8 = 2;

pin_project_lite::pin_project! {
    /// A future that is polled again at once when it wakes itself while
    /// being polled (see the module's documentation).
    pub(crate) struct Rewake<F> {
        #[pin]
        inner: F,
        shared: Arc<Shared>,
        waker: Waker,
    }
}

/// What the inner future's waker and [`Rewake`] share.
struct Shared {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self
            .state
            .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
        {
            // Being polled: it will be polled again before the poll ends.
            Ok(_) => {}
            // Already marked to be polled again.
            Err(WOKEN) => {}
            Err(_) => self.task.wake(),
        }
    }
}

impl<F> Rewake<F> {
    /// Wraps `inner` (one allocation, for the connection's lifetime).
    pub(crate) fn new(inner: F) -> Self {
        let shared = Arc::new(Shared {
            state: AtomicU8::new(IDLE),
            task: AtomicWaker::new(),
        });
        Rewake {
            inner,
            waker: Waker::from(shared.clone()),
            shared,
        }
    }
}

impl<F: Future> Future for Rewake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        this.shared.task.register(cx.waker());
        let mut own = Context::from_waker(this.waker);
        for _ in 0..MAX_REPOLLS {
            this.shared.state.store(POLLING, Ordering::Release);
            let polled = {
                // What reads the time in this poll reads it once.
                let _reading = palisade_core::clock::PollReading::enter();
                this.inner.as_mut().poll(&mut own)
            };
            let state = this.shared.state.swap(IDLE, Ordering::AcqRel);
            if polled.is_ready() {
                return polled;
            }
            if state != WOKEN {
                return Poll::Pending;
            }
            if !tokio::task::coop::has_budget_remaining() {
                break;
            }
        }
        // Woken on every poll, or out of budget: let the runtime decide
        // when to poll again.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the polls it gets, wakes itself on the first `self_wakes`
    /// and is ready on poll number `ready_at`.
    struct Probe {
        polls: Arc<AtomicUsize>,
        self_wakes: usize,
        ready_at: usize,
    }

    impl Future for Probe {
        type Output = usize;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            let n = self.polls.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= self.ready_at {
                return Poll::Ready(n);
            }
            if n <= self.self_wakes {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }
    }

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Polls `f` once with a waker that counts its wakes in `task`.
    fn poll_once(f: Pin<&mut Rewake<Probe>>, task: &Arc<Count>) -> Poll<usize> {
        let waker = Waker::from(task.clone());
        f.poll(&mut Context::from_waker(&waker))
    }

    fn probe(self_wakes: usize, ready_at: usize) -> (Rewake<Probe>, Arc<AtomicUsize>) {
        let polls = Arc::new(AtomicUsize::new(0));
        let f = Probe {
            polls: polls.clone(),
            self_wakes,
            ready_at,
        };
        (Rewake::new(f), polls)
    }

    #[test]
    fn a_self_wake_is_polled_again_without_waking_the_task() {
        let (f, polls) = probe(1, 2);
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let mut f = std::pin::pin!(f);
        assert_eq!(poll_once(f.as_mut(), &task), Poll::Ready(2));
        assert_eq!(polls.load(Ordering::Relaxed), 2);
        assert_eq!(task.0.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_future_that_always_wakes_itself_still_yields_to_the_runtime() {
        let (f, polls) = probe(usize::MAX, usize::MAX);
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let mut f = std::pin::pin!(f);
        assert!(poll_once(f.as_mut(), &task).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), MAX_REPOLLS as usize);
        assert_eq!(task.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_pending_future_not_woken_is_polled_once_and_a_later_wake_reaches_the_task() {
        let (f, polls) = probe(0, usize::MAX);
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let mut f = std::pin::pin!(f);
        assert!(poll_once(f.as_mut(), &task).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        assert_eq!(task.0.load(Ordering::Relaxed), 0);
        // A wake from outside, between polls, goes to the task's waker.
        f.waker.wake_by_ref();
        assert_eq!(task.0.load(Ordering::Relaxed), 1);
    }

    /// Wakes from other threads racing the polls are never lost: each
    /// round, a thread wakes the future while or after it is polled, and
    /// the future is either polled again in the same poll or its task is
    /// woken.
    #[test]
    fn a_wake_from_another_thread_is_never_lost() {
        for _ in 0..2_000 {
            let (f, polls) = probe(0, usize::MAX);
            let task = Arc::new(Count(AtomicUsize::new(0)));
            let mut f = Box::pin(f);
            assert!(poll_once(f.as_mut(), &task).is_pending());
            let seen = polls.load(Ordering::Relaxed);
            let other = f.waker.clone();
            let t = std::thread::spawn(move || other.wake());
            let _ = poll_once(f.as_mut(), &task);
            t.join().unwrap();
            // The wake happened during the second poll (so it was polled
            // a third time) or outside it (so the task was woken).
            let repolled = polls.load(Ordering::Relaxed) > seen + 1;
            let woken = task.0.load(Ordering::Relaxed) > 0;
            assert!(repolled || woken, "a wake was lost");
        }
    }
}
