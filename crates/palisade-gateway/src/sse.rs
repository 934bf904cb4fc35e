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
        // The first frame went out: the next poll yields once (see
        // `poll_frame`).
        first: First,
        errors: Arc<AtomicU64>,
        typed: bool,
    }
}

/// Where a stream is with its first frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum First {
    Ahead,
    Sent,
    Flushed,
}

impl<B> SseTail<B> {
    /// `body`'s failure counted in `counters`; `typed` for a stream of
    /// typed events (the Responses API), whose failure is an `error`
    /// event.
    pub(crate) fn new(body: B, counters: &Counters, typed: bool) -> Self {
        SseTail {
            body,
            done: false,
            first: First::Ahead,
            errors: counters.stream_errors.clone(),
            typed,
        }
    }
}

/// The SSE event that ends a stream cut by `message`: OpenAI's error
/// object as its data; on a stream of typed events (`typed`), an `error`
/// event whose data is also the Responses API's error event (`type`,
/// `code`, `message`, `param`). The OpenAI SDKs raise an API error on
/// either, from its `error` member.
fn failure_event(message: String, typed: bool) -> Bytes {
    let err = ErrorBody::new("upstream_error", Some("stream_interrupted"), message);
    let text = if typed {
        let event = serde_json::json!({
            "type": "error",
            "code": err.error.code,
            "message": err.error.message,
            "param": null,
            "error": err.error,
        });
        format!("event: error\ndata: {event}\n\n")
    } else {
        format!(
            "data: {}\n\n",
            serde_json::to_string(&err).unwrap_or_default()
        )
    };
    Bytes::from(text)
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
        // The first token goes out on its own: the body yields once after
        // it, so hyper writes the head and that frame before it reads on.
        // Frames already come are otherwise written together, the first
        // waiting for the last: a stream's time to first token would be its
        // whole time when the provider sends faster than it is read.
        if *this.first == First::Sent {
            *this.first = First::Flushed;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match this.body.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                let e: BoxError = e.into();
                this.errors.fetch_add(1, Ordering::Relaxed);
                *this.done = true;
                Poll::Ready(Some(Ok(http_body::Frame::data(failure_event(
                    e.to_string(),
                    *this.typed,
                )))))
            }
            Poll::Ready(None) => {
                *this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if *this.first == First::Ahead && frame.is_data() {
                    *this.first = First::Sent;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll, Wake, Waker};

    use http_body::{Body, Frame};

    /// Counts its wakes.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Frames that have all come already.
    struct Ready(std::collections::VecDeque<&'static str>);

    impl Body for Ready {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|s| Ok(Frame::data(Bytes::from(s)))))
        }
    }

    fn data(p: Poll<Option<Result<Frame<Bytes>, BoxError>>>) -> Option<Bytes> {
        match p {
            Poll::Ready(Some(Ok(f))) => f.into_data().ok(),
            _ => None,
        }
    }

    #[test]
    fn the_first_frame_goes_out_alone_then_the_rest_as_they_come() {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut body = SseTail::new(
            Ready(["data: 1\n\n", "data: 2\n\n", "data: 3\n\n"].into()),
            &Counters::default(),
            false,
        );
        let mut body = Pin::new(&mut body);
        assert_eq!(
            data(body.as_mut().poll_frame(&mut cx)).unwrap(),
            "data: 1\n\n"
        );
        // Yields once, waking its task at once: the first frame is written.
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            data(body.as_mut().poll_frame(&mut cx)).unwrap(),
            "data: 2\n\n"
        );
        assert_eq!(
            data(body.as_mut().poll_frame(&mut cx)).unwrap(),
            "data: 3\n\n"
        );
        assert!(matches!(
            body.as_mut().poll_frame(&mut cx),
            Poll::Ready(None)
        ));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "only after the first");
    }

    #[test]
    fn a_cut_stream_ends_with_an_error_event_of_its_kind() {
        let json = |line: &str| -> serde_json::Value {
            serde_json::from_str(line.strip_prefix("data: ").unwrap()).unwrap()
        };
        // Chat and completions: OpenAI's error object as the data.
        let chat = failure_event("idle timeout fired".into(), false);
        let chat = std::str::from_utf8(&chat).unwrap();
        assert!(
            chat.starts_with("data: ") && chat.ends_with("\n\n"),
            "{chat:?}"
        );
        let v = json(chat.trim_end());
        assert_eq!(v["error"]["code"], "stream_interrupted");
        assert_eq!(v["error"]["message"], "idle timeout fired");
        // Responses: an `error` event, the Responses API's fields and the
        // error object (which the SDKs read) in its data.
        let typed = failure_event("idle timeout fired".into(), true);
        let typed = std::str::from_utf8(&typed).unwrap();
        let (event, data) = typed.trim_end().split_once('\n').unwrap();
        assert_eq!(event, "event: error");
        let v = json(data);
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "stream_interrupted");
        assert_eq!(v["message"], "idle timeout fired");
        assert!(v["param"].is_null());
        assert_eq!(v["error"]["code"], "stream_interrupted");
        assert!(typed.ends_with("\n\n"));
    }
}
