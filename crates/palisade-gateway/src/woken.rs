//! [`WhenWoken`]: a future polled only once it has woken its task.
//!
//! A connection's task polls everything it selects over each time any of
//! it wakes the task: its idle watchdog's sleep was polled on every wake
//! of the connection (several a request), each poll checking the timer
//! and registering the task's waker again. Wrapped, the sleep is polled
//! when its own timer woke the task, and otherwise costs a flag check.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

pin_project_lite::pin_project! {
    /// `fut`, polled on the first poll and then only after it has woken
    /// the task (through a waker of its own, which sets a flag and wakes
    /// the task's waker).
    pub(crate) struct WhenWoken<F> {
        #[pin]
        fut: F,
        flag: Arc<Flag>,
    }
}

/// Whether the wrapped future has woken since it was last polled, and the
/// task to wake.
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F> WhenWoken<F> {
    pub(crate) fn new(fut: F) -> Self {
        WhenWoken {
            fut,
            flag: Arc::new(Flag {
                // Polled the first time.
                woken: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // The task's waker first: a wake after it is seen by the flag or
        // wakes this waker; one before it left the flag set.
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(this.flag.clone());
        this.fut.poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    /// Counts its polls, pending until told, and keeps the waker it was
    /// given.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        done: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    struct ProbeFuture(Arc<Probe>);

    impl Future for ProbeFuture {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.polls.fetch_add(1, Ordering::SeqCst);
            *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.0.done.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    /// A task waker that counts its wakes.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn polled_first_then_only_when_it_woke_the_task() {
        let probe = Arc::new(Probe::default());
        let task = Arc::new(Task::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = Box::pin(WhenWoken::new(ProbeFuture(probe.clone())));

        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            probe.polls.load(Ordering::SeqCst),
            1,
            "polled the first time"
        );
        // The task woken by something else: the wrapped future is not
        // polled.
        for _ in 0..5 {
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(probe.polls.load(Ordering::SeqCst), 1);

        // It wakes (its timer fired, say): the task is woken, and the next
        // poll reaches it.
        probe.done.store(true, Ordering::SeqCst);
        probe.waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task was woken");
        assert!(fut.as_mut().poll(&mut cx).is_ready());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_wake_racing_the_poll_is_never_lost() {
        for _ in 0..2_000 {
            let probe = Arc::new(Probe::default());
            let task = Arc::new(Task::default());
            let waker = Waker::from(task.clone());
            let mut fut = Box::pin(WhenWoken::new(ProbeFuture(probe.clone())));
            assert!(fut
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
            let inner = probe.waker.lock().unwrap().take().unwrap();
            probe.done.store(true, Ordering::SeqCst);
            let other = std::thread::spawn(move || inner.wake());
            let _ = fut.as_mut().poll(&mut Context::from_waker(&waker));
            other.join().unwrap();
            // Whichever came first, the wake reached the task or the poll
            // saw it: polling again after any wake of the task completes.
            if probe.polls.load(Ordering::SeqCst) < 2 {
                assert!(task.0.load(Ordering::SeqCst) >= 1);
                assert!(fut
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_ready());
            }
        }
    }
}
