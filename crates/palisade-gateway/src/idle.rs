//! Whether a connection is in use or idle, and since when, and the
//! [`watchdog`] that ends once it has been idle for a timeout.
//!
//! A client connection waiting for its next request head uses it
//! (`header_timeout_ms`, see `head_timeout.rs`). The connection is marked
//! busy when a request starts and idle when it is done, one atomic store
//! each; the watchdog sleeps until the idle spell
//! would reach the timeout, looks, and either ends (its caller drops the
//! connection, which closes it) or sleeps until the newer spell would:
//! one timer per timeout period per connection, whatever the number of
//! requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Marks a busy connection (a request in progress).
const BUSY: u64 = u64::MAX;

/// Whether a connection is idle (waiting for a request), and since when.
#[derive(Debug)]
pub(crate) struct Waiting {
    /// When the connection was opened: what `since` counts from.
    opened: Instant,
    /// Milliseconds since `opened` when the wait began, or [`BUSY`].
    since: AtomicU64,
}

impl Waiting {
    /// A connection just opened: idle from now.
    pub(crate) fn new() -> Self {
        Waiting {
            opened: Instant::now(),
            since: AtomicU64::new(0),
        }
    }

    /// A request has started: the connection is busy until it is done.
    pub(crate) fn busy(&self) {
        self.since.store(BUSY, Ordering::Relaxed);
    }

    /// Whether a request is in progress.
    #[cfg(test)]
    pub(crate) fn is_busy(&self) -> bool {
        self.since.load(Ordering::Relaxed) == BUSY
    }

    /// Milliseconds after it opened when it became idle (`None`: busy).
    #[cfg(test)]
    pub(crate) fn idle_since_ms(&self) -> Option<u64> {
        Some(self.since.load(Ordering::Relaxed)).filter(|&ms| ms != BUSY)
    }

    /// The request is done: the connection is idle from now.
    pub(crate) fn waiting(&self) {
        // The poll's reading (see rewake.rs).
        let ms = palisade_core::clock::now()
            .saturating_duration_since(self.opened)
            .as_millis() as u64;
        self.since.store(ms, Ordering::Relaxed);
    }
}

/// Ends when `conn` has been idle for `timeout` (then the caller drops the
/// connection, which closes it); never ends while a request is in
/// progress.
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
}
