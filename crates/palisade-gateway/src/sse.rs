//! Streams that fail after they started end with one SSE error event
//! instead of a cut connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use palisade_core::BoxError;

use crate::openai::ErrorBody;
use crate::state::Counters;

pin_project_lite::pin_project! {
    /// A streamed body whose mid-stream failure (an idle or deadline
    /// timeout after tokens were sent) ends with one SSE error event
    /// instead of a cut connection.
    pub(crate) struct SseTail<B> {
        #[pin]
        body: B,
        done: bool,
        errors: Arc<AtomicU64>,
    }
}

impl<B> SseTail<B> {
    pub(crate) fn new(body: B, counters: &Counters) -> Self {
        SseTail {
            body,
            done: false,
            errors: counters.stream_errors.clone(),
        }
    }
}

impl<B> http_body::Body for SseTail<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match this.body.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                let e: BoxError = e.into();
                this.errors.fetch_add(1, Ordering::Relaxed);
                let err =
                    ErrorBody::new("upstream_error", Some("stream_interrupted"), e.to_string());
                let json = serde_json::to_string(&err).unwrap_or_default();
                *this.done = true;
                Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(format!(
                    "data: {json}\n\n"
                ))))))
            }
            Poll::Ready(None) => {
                *this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Pending => Poll::Pending,
        }
    }
}
