//! The time a client connection may take to send a request's head, or
//! stay idle between requests (`header_timeout_ms`: slowloris).
//!
//! hyper can enforce this itself, but with a timer armed for every
//! request: a boxed sleep put in tokio's timer wheel (under its lock) and
//! taken out again, and, when no other timer is due sooner, the worker
//! parked in the I/O driver woken so that it sleeps less. On the bench,
//! with one connection, that was a tenth of a request's time.
//!
//! Here a connection's [`Waiting`] (see `idle.rs`) says whether it is
//! waiting for a head and since when: the service marks it busy when a
//! head has arrived, and the answer's body ([`Marked`]) marks it waiting
//! again when it is dropped (written, or the client gone). The
//! connection's task runs a [`watchdog`] beside it, which closes the
//! connection once the wait reaches the timeout: one timer per timeout
//! period per connection, whatever the number of requests, and the same
//! deadline as hyper's.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

pub(crate) use crate::idle::{watchdog, Waiting};

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
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_body_marks_its_connection_waiting_when_dropped() {
        let conn = Arc::new(Waiting::new());
        conn.busy();
        tokio::time::sleep(Duration::from_millis(40)).await;
        let body = Marked::new(http_body_util::Empty::<bytes::Bytes>::new(), conn.clone());
        assert_eq!(conn.idle_since_ms(), None);
        drop(body);
        assert_eq!(conn.idle_since_ms(), Some(40));
    }
}
