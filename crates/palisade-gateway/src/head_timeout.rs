//! The time a client connection may take to send a request's head, or
//! stay idle between requests (`header_timeout_ms`: slowloris).
//!
//! hyper can enforce this itself, but with a timer armed for every
//! request: a boxed sleep put in tokio's timer wheel (under its lock) and
//! taken out again, and, when no other timer is due sooner, the worker
//! parked in the I/O driver woken so that it sleeps less. On the bench,
//! with one connection, that was a tenth of a request's time.
//!
//! Here a connection's [`Waiting`] says whether it is waiting for a head
//! and since when: the service marks it busy when a head has arrived, and
//! the answer's body ([`Marked`]) marks it waiting again when it is
//! dropped (written, or the client gone). The connection's task runs a
//! [`watchdog`] beside it, which sleeps until the wait would reach the
//! timeout, looks, and either closes the connection or sleeps again until
//! the newer wait would: one timer per timeout period per connection,
//! whatever the number of requests, and the same deadline as hyper's.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

/// Marks a busy connection (a request in progress).
const BUSY: u64 = u64::MAX;

/// Whether a connection is waiting for a request head, and since when.
#[derive(Debug)]
pub(crate) struct Waiting {
    /// When the connection was opened: what `since` counts from.
    opened: Instant,
    /// Milliseconds since `opened` when the wait began, or [`BUSY`].
    since: AtomicU64,
}

impl Waiting {
    /// A connection just opened: waiting for its first head.
    pub(crate) fn new() -> Self {
        Waiting {
            opened: Instant::now(),
            since: AtomicU64::new(0),
        }
    }

    /// A head has arrived: the connection is busy until its answer is
    /// done.
    pub(crate) fn busy(&self) {
        self.since.store(BUSY, Ordering::Relaxed);
    }

    /// Whether a request is in progress.
    #[cfg(test)]
    pub(crate) fn is_busy(&self) -> bool {
        self.since.load(Ordering::Relaxed) == BUSY
    }

    /// The answer is done: the connection waits for the next head.
    pub(crate) fn waiting(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.since.store(ms, Ordering::Relaxed);
    }
}

/// Ends when `conn` has waited for a request head for `timeout` (then the
/// caller drops the connection, which closes it); never ends while a
/// request is in progress.
pub(crate) async fn watchdog(conn: Arc<Waiting>, timeout: Duration) {
    let mut wake = conn.opened + timeout;
    loop {
        tokio::time::sleep_until(wake).await;
        match conn.since.load(Ordering::Relaxed) {
            // Busy: the wait that follows lasts at least the timeout.
            BUSY => wake = Instant::now() + timeout,
            since => {
                let until = conn.opened + Duration::from_millis(since) + timeout;
                if until <= Instant::now() {
                    return;
                }
                wake = until;
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// An answer's body that marks its connection waiting when it is
    /// dropped.
    pub(crate) struct Marked<B> {
        #[pin]
        body: B,
        conn: Arc<Waiting>,
    }

    impl<B> PinnedDrop for Marked<B> {
        fn drop(this: Pin<&mut Self>) {
            this.conn.waiting();
        }
    }
}

impl<B> Marked<B> {
    pub(crate) fn new(body: B, conn: Arc<Waiting>) -> Self {
        Marked { body, conn }
    }
}

impl<B: Body> Body for Marked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long the watchdog lets `script` run before it ends, on the
    /// paused clock; `script` drives the connection's state.
    async fn ends_after<F: std::future::Future<Output = ()>>(
        timeout_ms: u64,
        script: impl FnOnce(Arc<Waiting>) -> F,
    ) -> Duration {
        let conn = Arc::new(Waiting::new());
        let t0 = Instant::now();
        let dog = tokio::spawn(watchdog(conn.clone(), Duration::from_millis(timeout_ms)));
        script(conn).await;
        dog.await.unwrap();
        t0.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_sends_a_head_is_closed_at_the_timeout() {
        let took = ends_after(300, |_| async {}).await;
        assert_eq!(took, Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_counts_from_the_last_answer() {
        let took = ends_after(300, |c| async move {
            // A request at 100 ms answered at 250 ms: the wait starts
            // again at 250 and ends at 550.
            tokio::time::sleep(Duration::from_millis(100)).await;
            c.busy();
            tokio::time::sleep(Duration::from_millis(150)).await;
            c.waiting();
        })
        .await;
        assert_eq!(took, Duration::from_millis(550));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_is_never_cut_however_long() {
        let took = ends_after(300, |c| async move {
            c.busy();
            // A stream of ten seconds.
            tokio::time::sleep(Duration::from_secs(10)).await;
            c.waiting();
        })
        .await;
        assert_eq!(took, Duration::from_millis(10_300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_marks_its_connection_waiting_when_dropped() {
        let conn = Arc::new(Waiting::new());
        conn.busy();
        tokio::time::sleep(Duration::from_millis(40)).await;
        let body = Marked::new(http_body_util::Empty::<bytes::Bytes>::new(), conn.clone());
        assert_eq!(conn.since.load(Ordering::Relaxed), BUSY);
        drop(body);
        assert_eq!(conn.since.load(Ordering::Relaxed), 40);
    }
}
