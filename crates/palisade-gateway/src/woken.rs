//! [`WhenWoken`]: a future polled only once it has woken its task.
//!
//! A connection's task polls everything it selects over each time any of
//! it wakes the task: its idle watchdog's sleep was polled on every wake
//! of the connection (several a request), each poll checking the timer
//! and registering the task's waker again. Wrapped, the sleep is polled
//! when its own timer woke the task, and otherwise costs a flag check.
//!
//! The flag keeps the task's waker until the wrapped future wakes it, so
//! a poll that finds the flag down and the same waker as last time does
//! nothing else: no atomic read-modify-write (each one a few nanoseconds
//! on every wake of the connection, several a request). The waker is
//! given again only after a wake was seen, when the flag may have given
//! it away.

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
        // The waker the flag holds, known to be there: left with it when
        // a poll saw no wake since, forgotten when a poll sees one.
        registered: Option<Waker>,
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
            registered: None,
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let same = this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        // The flag holds this waker and has not woken it: a wake from now
        // on sets the flag and wakes the task through it.
        if same && !this.flag.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // The task's waker first: a wake after it is seen by the flag or
        // wakes this waker; one before it left the flag set.
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            // No wake since the waker was given, so the flag holds it
            // until the next (which sets the flag before taking it).
            if !same {
                *this.registered = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        // A wake was seen: it may have taken the waker given just now or
        // one before, so the next poll gives it again.
        *this.registered = None;
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

    type Wrapped = Pin<Box<WhenWoken<ProbeFuture>>>;

    /// A probe wrapped, and a task (with its waker) counting its wakes.
    fn wrapped() -> (Arc<Probe>, Arc<Task>, Waker, Wrapped) {
        let probe = Arc::new(Probe::default());
        let task = Arc::new(Task::default());
        let waker = Waker::from(task.clone());
        let fut = Box::pin(WhenWoken::new(ProbeFuture(probe.clone())));
        (probe, task, waker, fut)
    }

    #[test]
    fn polled_first_then_only_when_it_woke_the_task() {
        let (probe, task, waker, mut fut) = wrapped();
        let mut cx = Context::from_waker(&waker);

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
            let (probe, task, waker, mut fut) = wrapped();
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

    #[test]
    fn a_new_waker_is_the_one_woken() {
        let probe = Arc::new(Probe::default());
        let (first, second) = (Arc::new(Task::default()), Arc::new(Task::default()));
        let mut fut = Box::pin(WhenWoken::new(ProbeFuture(probe.clone())));
        let first_waker = Waker::from(first.clone());
        for _ in 0..3 {
            assert!(fut
                .as_mut()
                .poll(&mut Context::from_waker(&first_waker))
                .is_pending());
        }
        // The task polled with another waker (moved, say): a wake of the
        // wrapped future goes there.
        let second_waker = Waker::from(second.clone());
        assert!(fut
            .as_mut()
            .poll(&mut Context::from_waker(&second_waker))
            .is_pending());
        probe.waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn every_wake_reaches_the_task_after_polls_that_saw_none() {
        let (probe, task, waker, mut fut) = wrapped();
        let mut cx = Context::from_waker(&waker);
        for round in 1..=3 {
            // Polls between wakes find nothing to do...
            for _ in 0..3 {
                assert!(fut.as_mut().poll(&mut cx).is_pending());
            }
            // ...and each wake still reaches the task and the next poll.
            probe.waker.lock().unwrap().take().unwrap().wake();
            assert_eq!(task.0.load(Ordering::SeqCst), round);
            let polls = probe.polls.load(Ordering::SeqCst);
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            assert_eq!(probe.polls.load(Ordering::SeqCst), polls + 1);
        }
    }

    /// The wrapped future woken from another thread while the task polls
    /// twice (the second poll on the path that touches nothing): the wake
    /// is seen by a poll or reaches the task, and after it a second wake
    /// does too.
    #[test]
    fn a_wake_racing_polls_that_saw_none_is_never_lost() {
        for _ in 0..2_000 {
            let (probe, task, waker, mut fut) = wrapped();
            let poll = |fut: &mut Wrapped| fut.as_mut().poll(&mut Context::from_waker(&waker));
            assert!(poll(&mut fut).is_pending());
            assert!(poll(&mut fut).is_pending());
            let inner = probe.waker.lock().unwrap().take().unwrap();
            let other = std::thread::spawn(move || inner.wake());
            let _ = poll(&mut fut);
            let _ = poll(&mut fut);
            other.join().unwrap();
            let seen = |probe: &Probe| probe.polls.load(Ordering::SeqCst) >= 2;
            if !seen(&probe) {
                assert!(task.0.load(Ordering::SeqCst) >= 1, "the wake was lost");
                assert!(poll(&mut fut).is_pending());
                assert!(seen(&probe));
            }
            // Once more, with nothing racing: the wrapped future's next
            // wake reaches the task.
            let before = task.0.load(Ordering::SeqCst);
            let _ = poll(&mut fut);
            let _ = poll(&mut fut);
            probe.done.store(true, Ordering::SeqCst);
            probe.waker.lock().unwrap().take().unwrap().wake();
            assert_eq!(task.0.load(Ordering::SeqCst), before + 1);
            assert!(poll(&mut fut).is_ready());
        }
    }

    /// A task waker that counts its wakes and, the first time it is
    /// cloned after `on_clone` is set, wakes that waker: a wake landing
    /// in the middle of the flag taking the task's waker.
    #[derive(Default)]
    struct Hooked {
        wakes: AtomicUsize,
        on_clone: Mutex<Option<Waker>>,
    }

    #[allow(unsafe_code)]
    fn hooked_waker(task: &Arc<Hooked>) -> Waker {
        use std::task::{RawWaker, RawWakerVTable};
        unsafe fn clone(p: *const ()) -> RawWaker {
            let task = unsafe { &*(p as *const Hooked) };
            if let Some(w) = task.on_clone.lock().unwrap().take() {
                w.wake();
            }
            unsafe { Arc::increment_strong_count(p as *const Hooked) };
            RawWaker::new(p, &VTABLE)
        }
        unsafe fn wake(p: *const ()) {
            unsafe { wake_by_ref(p) };
            unsafe { drop_waker(p) };
        }
        unsafe fn wake_by_ref(p: *const ()) {
            let task = unsafe { &*(p as *const Hooked) };
            task.wakes.fetch_add(1, Ordering::SeqCst);
        }
        unsafe fn drop_waker(p: *const ()) {
            unsafe { Arc::decrement_strong_count(p as *const Hooked) };
        }
        static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);
        let p = Arc::into_raw(task.clone()) as *const ();
        // SAFETY: the vtable keeps the Arc's count: one per waker.
        unsafe { Waker::from_raw(RawWaker::new(p, &VTABLE)) }
    }

    /// A wake between the poll giving the task's waker and reading the
    /// flag takes the waker just given: the poll sees the flag, and the
    /// next poll must give the waker again, or the wake after is lost.
    #[test]
    fn a_wake_while_the_waker_is_given_leaves_the_next_poll_to_give_it_again() {
        let probe = Arc::new(Probe::default());
        let task = Arc::new(Hooked::default());
        let waker = hooked_waker(&task);
        let mut cx = Context::from_waker(&waker);
        let mut fut = Box::pin(WhenWoken::new(ProbeFuture(probe.clone())));
        // The first poll reaches the wrapped future, the second leaves the
        // waker with the flag.
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        let inner = probe.waker.lock().unwrap().take().unwrap();
        inner.wake_by_ref();
        assert_eq!(task.wakes.load(Ordering::SeqCst), 1);
        // This poll gives the waker again (the wake took it); giving it
        // clones it, and the clone lets the wrapped future wake again.
        *task.on_clone.lock().unwrap() = Some(inner);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(task.on_clone.lock().unwrap().is_none(), "the hook ran");
        let woken = task.wakes.load(Ordering::SeqCst);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        probe.done.store(true, Ordering::SeqCst);
        probe.waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(
            task.wakes.load(Ordering::SeqCst),
            woken + 1,
            "the wake was lost"
        );
        assert!(fut.as_mut().poll(&mut cx).is_ready());
    }
}
