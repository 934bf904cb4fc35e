//! [`Flight`]: one call in flight that identical requests wait on, and
//! what happens to it when the request that started it goes away.

use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use futures_util::future::BoxFuture;
use palisade_core::BoxError;

use crate::record::Record;
use crate::service::Shared;

/// What every caller of one shared call gets: the entry, or the error.
pub(crate) type Flown<E> = Result<E, Arc<BoxError>>;

/// One call in flight. The request that started it runs it in its own
/// future (no task, no wait for a request alone); requests that join it
/// wait here for its outcome.
pub(crate) struct Flight<E> {
    done: OnceLock<Flown<E>>,
    /// Wakers of the requests waiting (touched only when there are some).
    waiters: Mutex<Vec<Waker>>,
}

impl<E> Flight<E> {
    pub(crate) fn new() -> Self {
        Flight {
            done: OnceLock::new(),
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// Sets the outcome (the first one set stays) and wakes every waiter.
    pub(crate) fn finish(&self, out: Flown<E>) {
        let _ = self.done.set(out);
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for w in waiters {
            w.wake();
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.get().is_some()
    }

    /// The outcome, once there is one; until then the caller is woken
    /// when it comes.
    pub(crate) fn poll_done(&self, cx: &mut Context<'_>) -> Poll<&Flown<E>> {
        if let Some(out) = self.done.get() {
            return Poll::Ready(out);
        }
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        // Set before the lock was taken by `finish`: seen here.
        if let Some(out) = self.done.get() {
            return Poll::Ready(out);
        }
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// What the request that started a flight still has to do.
pub(crate) enum Pending<Res, E> {
    /// The call itself.
    Call(BoxFuture<'static, Result<Res, BoxError>>),
    /// Reading the answer whole, to share it.
    Collect(BoxFuture<'static, Result<E, BoxError>>),
}

/// Finishes a flight whose starter went away while others wait on it:
/// the rest of its work in a task of its own, so they get the answer.
pub(crate) type Adopt<Res, E, R> = fn(Pending<Res, E>, Arc<Flight<E>>, Arc<Shared<E, R>>, u128);

/// The [`Adopt`] for a record `R` of answers `Res`.
pub(crate) fn adopt<Res, E, R>(
    pending: Pending<Res, E>,
    flight: Arc<Flight<E>>,
    shared: Arc<Shared<E, R>>,
    key: u128,
) where
    Res: Send + 'static,
    E: Clone + Send + Sync + 'static,
    R: Record<Res, Entry = E>,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        flight.finish(Err(Arc::new(
            "the shared call was dropped outside a tokio runtime".into(),
        )));
        return;
    };
    runtime.spawn(async move {
        let collected = match pending {
            Pending::Call(call) => match call.await {
                Ok(res) => shared.record.collect(res).await,
                Err(e) => Err(e),
            },
            Pending::Collect(collect) => collect.await,
        };
        // The waiters take the outcome from the flight.
        let _ = settle::<Res, E, R>(&shared, &flight, key, collected);
    });
}

/// Ends `flight` with a collected answer (stored if it may be) or an
/// error; the shared outcome.
pub(crate) fn settle<Res, E, R>(
    shared: &Shared<E, R>,
    flight: &Flight<E>,
    key: u128,
    collected: Result<E, BoxError>,
) -> Flown<E>
where
    E: Clone + Send + Sync + 'static,
    R: Record<Res, Entry = E>,
{
    let out = match collected {
        Ok(entry) => {
            if shared.record.storable(&entry) {
                shared.put(key, entry.clone(), shared.record.weight(&entry));
            }
            Ok(entry)
        }
        Err(e) => Err(Arc::new(e)),
    };
    flight.finish(out.clone());
    out
}
