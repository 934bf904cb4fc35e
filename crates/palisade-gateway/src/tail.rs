//! A stream's access-log line, written when the stream ends: by then its
//! whole time is known, and the tokens it used when the provider sent a
//! usage chunk (`stream_options.include_usage`) or, on the Responses API,
//! a `response.completed` event (which carries the whole response: one
//! over [`MAX_LINE`] is not read).

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tracing::Span;

use crate::upstream::Usage;

/// The longest SSE line kept while waiting for its end: a usage chunk is a
/// few hundred bytes, and a longer line is no usage chunk.
const MAX_LINE: usize = 64 * 1024;

/// What a request's access line says besides its end and tokens, read
/// from its answer's head (borrowed from it for a whole answer, owned by a
/// stream's [`Tail`] until the stream ends).
#[derive(Debug)]
pub(crate) struct Head<'a> {
    pub(crate) key: Cow<'a, str>,
    pub(crate) model: Cow<'a, str>,
    pub(crate) stream: bool,
    pub(crate) status: u16,
    pub(crate) provider: Cow<'a, str>,
    pub(crate) attempts: Cow<'a, str>,
    pub(crate) fallbacks: Cow<'a, str>,
    pub(crate) hedged: bool,
    pub(crate) degraded: Cow<'a, str>,
    pub(crate) trace_id: Cow<'a, str>,
    /// Time to the answer (a stream's: to its first token).
    pub(crate) first: Duration,
}

impl Head<'_> {
    /// The same, owning its text.
    pub(crate) fn owned(self) -> Head<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        Head {
            key: own(self.key),
            model: own(self.model),
            stream: self.stream,
            status: self.status,
            provider: own(self.provider),
            attempts: own(self.attempts),
            fallbacks: own(self.fallbacks),
            hedged: self.hedged,
            degraded: own(self.degraded),
            trace_id: own(self.trace_id),
            first: self.first,
        }
    }
}

/// Writes a request's access line (target `palisade_gateway::access`,
/// level info), in the current span: `ms` is the time to the answer (a
/// stream's first token), `total_ms` to its end, `end` how it ended
/// (`whole` for a whole answer; a stream's `ended`, `cut`, or
/// `caller gone`), and the tokens its usage reported (0 when unknown).
pub(crate) fn write(head: &Head<'_>, used: Usage, total: Duration, end: &str) {
    tracing::info!(
        target: "palisade_gateway::access",
        key = &*head.key,
        model = &*head.model,
        stream = head.stream,
        status = head.status,
        provider = &*head.provider,
        attempts = &*head.attempts,
        fallbacks = &*head.fallbacks,
        hedged = head.hedged,
        degraded = &*head.degraded,
        trace_id = &*head.trace_id,
        ms = head.first.as_millis() as u64,
        total_ms = total.as_millis() as u64,
        end,
        prompt_tokens = used.prompt_tokens,
        completion_tokens = used.completion_tokens,
        "answered"
    );
}

/// Called with the usage a stream reported, once, when it ended.
pub(crate) type OnUsage = Box<dyn FnOnce(Usage) + Send>;

/// A stream's body, passed through unchanged, that writes the request's
/// access line (in the request's span) when it ends, is cut, or is
/// dropped by the caller: `end` says which (`ended`; `cut` when the
/// stream failed, a timeout after tokens were sent, which `SseTail`
/// outside it turns into one SSE event; `caller gone`), `ms` is the time
/// to the first token and `total_ms` the whole stream's.
pub(crate) struct Tail<B: Body> {
    inner: B,
    /// The line to write (when the access log is on), in the request's
    /// span, timed from its start, and what to tell of the usage.
    log: Option<(Option<Head<'static>>, Span, Instant, Option<OnUsage>)>,
    usage: Option<Usage>,
    /// The end of the last chunk when it stopped mid-line.
    partial: Vec<u8>,
}

impl<B: Body> Tail<B> {
    /// Passes `inner` through; the line is written with `head` (if given:
    /// the access log is on), in `span`, timed from `started`; `on_usage`
    /// gets the usage if there is one.
    pub(crate) fn new(
        inner: B,
        head: Option<Head<'static>>,
        span: Span,
        started: Instant,
        on_usage: Option<OnUsage>,
    ) -> Self {
        Tail {
            inner,
            log: Some((head, span, started, on_usage)),
            usage: None,
            partial: Vec::new(),
        }
    }

    /// Reads the usage from the chunk's complete SSE lines (and the line
    /// the last chunk left open).
    fn scan(&mut self, chunk: &[u8]) {
        let Some(last_newline) = memchr::memrchr(b'\n', chunk) else {
            self.keep(chunk);
            return;
        };
        let (complete, rest) = chunk.split_at(last_newline + 1);
        if self.partial.is_empty() {
            self.lines(complete);
        } else {
            let mut joined = std::mem::take(&mut self.partial);
            joined.extend_from_slice(complete);
            self.lines(&joined);
        }
        self.keep(rest);
    }

    fn keep(&mut self, open: &[u8]) {
        if self.partial.len() + open.len() <= MAX_LINE {
            self.partial.extend_from_slice(open);
        } else {
            self.partial.clear();
        }
    }

    fn lines(&mut self, text: &[u8]) {
        // Most chunks carry no usage: one search of the chunk, no parse.
        let usage = usage_finder();
        if usage.find(text).is_none() {
            return;
        }
        for line in text.split(|&b| b == b'\n') {
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            if usage.find(data).is_none() {
                continue;
            }
            // A chat or completion stream's usage chunk has it at its top
            // level; the Responses API's `response.completed` event in
            // the response it carries.
            #[derive(serde::Deserialize)]
            struct Chunk {
                usage: Option<Usage>,
                response: Option<Nested>,
            }
            #[derive(serde::Deserialize)]
            struct Nested {
                usage: Option<Usage>,
            }
            if let Ok(chunk) = serde_json::from_slice::<Chunk>(data.trim_ascii()) {
                if let Some(u) = chunk.usage.or(chunk.response.and_then(|r| r.usage)) {
                    self.usage = Some(u);
                }
            }
        }
    }

    fn finish(&mut self, outcome: &'static str) {
        let Some((head, span, started, on_usage)) = self.log.take() else {
            return;
        };
        if let (Some(u), Some(on_usage)) = (self.usage, on_usage) {
            on_usage(u);
        }
        let Some(head) = head else { return };
        let used = self.usage.unwrap_or_default();
        span.in_scope(|| write(&head, used, started.elapsed(), outcome));
    }
}

/// The search for `"usage"`, built once (building it costs more than
/// searching a chunk).
fn usage_finder() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> =
        std::sync::OnceLock::new();
    FINDER.get_or_init(|| memchr::memmem::Finder::new(b"\"usage\""))
}

impl<B: Body> Drop for Tail<B> {
    fn drop(&mut self) {
        // Not yet written: the server stopped polling, either because the
        // body said it had ended or because the caller went away.
        let outcome = if self.inner.is_end_stream() {
            "ended"
        } else {
            "caller gone"
        };
        self.finish(outcome);
    }
}

impl<B> Body for Tail<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    if self.log.is_some() {
                        self.scan(data);
                    }
                }
            }
            Some(Err(_)) => self.finish("cut"),
            None => self.finish("ended"),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail() -> Tail<http_body_util::Empty<Bytes>> {
        let head = Head {
            key: "-".into(),
            model: "m".into(),
            stream: true,
            status: 200,
            provider: "p".into(),
            attempts: "1".into(),
            fallbacks: "0".into(),
            hedged: false,
            degraded: "-".into(),
            trace_id: "-".into(),
            first: Duration::ZERO,
        };
        Tail::new(
            http_body_util::Empty::new(),
            Some(head),
            Span::none(),
            Instant::now(),
            None,
        )
    }

    #[test]
    fn the_usage_chunk_is_read_however_the_stream_is_cut_into_frames() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi, \\\"usage\\\"\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        for cut in [1, 2, 5, 17, 64, 500] {
            let mut t = tail();
            for chunk in stream.chunks(cut) {
                t.scan(chunk);
            }
            let u = t.usage.expect("read");
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens),
                (7, 3),
                "frames of {cut}"
            );
            t.log = None;
        }
    }

    #[test]
    fn a_responses_stream_has_its_usage_in_the_completed_event() {
        let stream = concat!(
            "event: response.created\n",
            "data: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"usage\":null}}\n\n",
            "event: response.output_text.delta\n",
            "data: {\"type\":\"response.output_text.delta\",\"delta\":\"\\\"usage\\\"\"}\n\n",
            "event: response.completed\n",
            "data: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"output\":[],",
            "\"usage\":{\"input_tokens\":5,\"input_tokens_details\":{\"cached_tokens\":0},",
            "\"output_tokens\":8,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":13},",
            "\"user\":null,\"metadata\":{}}}\n\n",
        )
        .as_bytes();
        for cut in [1, 7, 64, 1000] {
            let mut t = tail();
            for chunk in stream.chunks(cut) {
                t.scan(chunk);
            }
            let u = t.usage.expect("read");
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.total),
                (5, 8, 13),
                "frames of {cut}"
            );
            t.log = None;
        }
    }

    #[test]
    fn a_stream_without_usage_has_none_and_a_huge_line_is_not_kept() {
        let mut t = tail();
        t.scan(b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n");
        assert!(t.usage.is_none());
        t.scan(&vec![b'x'; MAX_LINE + 1]);
        assert!(t.partial.is_empty(), "an endless line is dropped");
        t.log = None;
    }
}
