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

use palisade_core::UsageLater;

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
    /// The end of the last chunk when it stopped mid-line (while hiding
    /// the usage chunk, held back from the caller until its line ends).
    partial: Vec<u8>,
    /// Told the tokens used when the stream ends (the token limits that
    /// charged the call settle then).
    later: Option<UsageLater>,
    /// The caller did not ask for the usage chunk the gateway asked the
    /// provider for: it is taken out of the stream.
    hide: bool,
    /// While hiding: the usage chunk's line was taken out at the end of a
    /// frame, and the blank line that ends its event, if it starts the
    /// next, goes too.
    blank_owed: bool,
    /// Told a Responses API stream's response id (its `response.created`
    /// event), once.
    on_id: Option<OnId>,
}

/// Called with a Responses API stream's response id.
pub(crate) type OnId = Box<dyn FnOnce(String) + Send>;

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
            later: None,
            hide: false,
            blank_owed: false,
            on_id: None,
        }
    }

    /// Tells `on_id` the stream's response id (a Responses API stream's).
    pub(crate) fn on_response_id(mut self, on_id: Option<OnId>) -> Self {
        self.on_id = on_id;
        self
    }

    /// Tells `later` the tokens used when the stream ends.
    pub(crate) fn report_to(mut self, later: Option<UsageLater>) -> Self {
        self.later = later;
        self
    }

    /// Takes the usage chunk (no choices, a usage) out of the stream: the
    /// gateway asked the provider for it, the caller did not.
    pub(crate) fn hiding_usage(mut self, hide: bool) -> Self {
        self.hide = hide;
        self
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

    /// Reads the usage from `text`, complete lines; returns where the
    /// usage chunk's line is (with the blank line after it), if `text`
    /// has one: a chunk with no choices that carries the usage.
    fn lines(&mut self, text: &[u8]) -> Option<std::ops::Range<usize>> {
        // Most chunks carry no usage: one search of the chunk, no parse.
        let usage = usage_finder();
        let wants_id =
            self.on_id.is_some() && memchr::memmem::find(text, b"response.created").is_some();
        if usage.find(text).is_none() && !wants_id {
            return None;
        }
        let mut usage_chunk = None;
        let mut at = 0;
        for line in text.split(|&b| b == b'\n') {
            let start = at;
            at += line.len() + 1;
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            // A chunk whose every `usage` is `null` (each chunk of a
            // stream whose usage was asked for) has none to read: not
            // parsed.
            if !wants_id && !carries_usage(data) {
                continue;
            }
            // A chat or completion stream's usage chunk has it at its top
            // level; the Responses API's `response.completed` event in
            // the response it carries.
            #[derive(serde::Deserialize)]
            struct Chunk {
                usage: Option<Usage>,
                response: Option<Nested>,
                choices: Option<Vec<serde::de::IgnoredAny>>,
            }
            #[derive(serde::Deserialize)]
            struct Nested {
                usage: Option<Usage>,
                id: Option<String>,
            }
            if let Ok(mut chunk) = serde_json::from_slice::<Chunk>(data.trim_ascii()) {
                if let Some(id) = chunk.response.as_mut().and_then(|r| r.id.take()) {
                    if let Some(on_id) = self.on_id.take() {
                        on_id(id);
                    }
                }
                let only_usage =
                    chunk.usage.is_some() && chunk.choices.is_some_and(|c| c.is_empty());
                if let Some(u) = chunk.usage.or(chunk.response.and_then(|r| r.usage)) {
                    self.usage = Some(u);
                }
                if only_usage {
                    // The blank line that ends the event goes with it.
                    let end = if text.get(at) == Some(&b'\n') {
                        at + 1
                    } else {
                        at
                    };
                    usage_chunk = Some(start..end.min(text.len()));
                }
            }
        }
        usage_chunk
    }

    /// A data frame passed on while hiding the usage chunk: complete lines
    /// only (an open one held in `partial` for the next; a line past
    /// [`MAX_LINE`] is no usage chunk, and goes on once that long), that
    /// chunk taken out. `None` when nothing is left to pass on yet.
    fn hidden(&mut self, data: Bytes) -> Option<Bytes> {
        let mut joined = if self.partial.is_empty() {
            data
        } else {
            self.partial.extend_from_slice(&data);
            Bytes::from(std::mem::take(&mut self.partial))
        };
        if std::mem::take(&mut self.blank_owed) && joined.first() == Some(&b'\n') {
            joined = joined.slice(1..);
        }
        let Some(last_newline) = memchr::memrchr(b'\n', &joined) else {
            if joined.len() > MAX_LINE {
                // No usage chunk is that long: on it goes.
                return Some(joined);
            }
            self.partial.extend_from_slice(&joined);
            return None;
        };
        let complete = joined.slice(..=last_newline);
        self.partial.extend_from_slice(&joined[last_newline + 1..]);
        let out = match self.lines(&complete) {
            Some(cut) => {
                self.blank_owed =
                    cut.end == complete.len() && !complete[cut.clone()].ends_with(b"\n\n");
                let mut kept = Vec::with_capacity(complete.len() - cut.len());
                kept.extend_from_slice(&complete[..cut.start]);
                kept.extend_from_slice(&complete[cut.end..]);
                Bytes::from(kept)
            }
            None => complete,
        };
        // Asked for the usage, the provider writes `"usage":null` in every
        // chunk: taken out too, so the caller gets the stream it asked for.
        let out = if usage_finder().find(&out).is_some() {
            without_null_usage(&out)
        } else {
            out
        };
        (!out.is_empty()).then_some(out)
    }

    fn finish(&mut self, outcome: &'static str) {
        if let Some(later) = self.later.take() {
            later.report(self.usage.map(|u| u.total));
        }
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

/// Where `null` ends when the `"usage"` found at `at` in `text` is a key
/// whose value is `null` (spaces allowed around the colon); `None` for
/// any other value, or a `\"usage\"` escaped inside a string.
fn null_usage_end(text: &[u8], at: usize) -> Option<usize> {
    if at > 0 && text[at - 1] == b'\\' {
        return None;
    }
    let is_ws = |b: &u8| b.is_ascii_whitespace();
    let mut i = at + b"\"usage\"".len();
    while text.get(i).is_some_and(is_ws) {
        i += 1;
    }
    if text.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    while text.get(i).is_some_and(is_ws) {
        i += 1;
    }
    text[i..].starts_with(b"null").then_some(i + 4)
}

/// Whether `data` has a `"usage"` that is not `null`.
fn carries_usage(data: &[u8]) -> bool {
    usage_finder()
        .find_iter(data)
        .any(|at| null_usage_end(data, at).is_none())
}

/// `text` with every `"usage": null` member taken out of its JSON
/// objects, with the comma that joined it (a `"usage"` inside a string is
/// escaped, `\"usage\"`, and left alone).
fn without_null_usage(text: &[u8]) -> Bytes {
    let is_ws = |b: &u8| b.is_ascii_whitespace();
    let mut out = Vec::with_capacity(text.len());
    let mut from = 0;
    for at in usage_finder().find_iter(text) {
        if at < from {
            continue;
        }
        let Some(end) = null_usage_end(text, at) else {
            continue;
        };
        // The member and its comma: the one before it, else the one after.
        let mut start = at;
        while start > from && is_ws(&text[start - 1]) {
            start -= 1;
        }
        let (cut_start, cut_end) = if start > from && text[start - 1] == b',' {
            (start - 1, end)
        } else {
            let mut j = end;
            while text.get(j).is_some_and(is_ws) {
                j += 1;
            }
            if text.get(j) == Some(&b',') {
                (at, j + 1)
            } else {
                (at, end)
            }
        };
        out.extend_from_slice(&text[from..cut_start]);
        from = cut_end;
    }
    out.extend_from_slice(&text[from..]);
    Bytes::from(out)
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
        loop {
            let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
            match frame {
                Some(Ok(f)) if self.hide => match f.into_data() {
                    Ok(data) => match self.hidden(data) {
                        Some(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                        // Nothing whole yet: read on.
                        None => continue,
                    },
                    Err(f) => return Poll::Ready(Some(Ok(f))),
                },
                Some(Ok(f)) => {
                    if let Some(data) = f.data_ref() {
                        if self.log.is_some() || self.later.is_some() {
                            self.scan(data);
                        }
                    }
                    return Poll::Ready(Some(Ok(f)));
                }
                Some(Err(e)) => {
                    self.finish("cut");
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    // What a stream left open at its end goes as it is.
                    let open = if self.hide {
                        std::mem::take(&mut self.partial)
                    } else {
                        Vec::new()
                    };
                    self.finish("ended");
                    if !open.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(open)))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
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
    fn null_usage_members_are_taken_out_with_their_comma() {
        for (text, want) in [
            (r#"{"a":1,"usage":null}"#, r#"{"a":1}"#),
            (r#"{"usage":null,"a":1}"#, r#"{"a":1}"#),
            (r#"{"a":1, "usage" : null , "b":2}"#, r#"{"a":1 , "b":2}"#),
            (r#"{"usage":null}"#, r#"{}"#),
            // Not null, or inside a string: left alone.
            (
                r#"{"usage":{"total_tokens":1}}"#,
                r#"{"usage":{"total_tokens":1}}"#,
            ),
            (
                r#"{"c":"say \"usage\":null"}"#,
                r#"{"c":"say \"usage\":null"}"#,
            ),
            (
                "data: {\"id\":1,\"usage\":null}\n\ndata: {\"id\":2,\"usage\":null}\n\n",
                "data: {\"id\":1}\n\ndata: {\"id\":2}\n\n",
            ),
        ] {
            assert_eq!(
                without_null_usage(text.as_bytes()),
                want.as_bytes(),
                "{text}"
            );
        }
        // Only a chunk with a usage that is not null is worth parsing.
        assert!(!carries_usage(br#"{"a":1, "usage" : null}"#));
        assert!(carries_usage(
            br#"{"usage":null,"response":{"usage":{"total_tokens":3}}}"#
        ));
        assert!(carries_usage(
            br#"{"choices":[],"usage":{"total_tokens":3}}"#
        ));
    }

    /// A tail hiding the usage chunk over `frames`: what the caller gets,
    /// and the usage read.
    fn hidden_stream(frames: &[&[u8]]) -> (String, Option<Usage>) {
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(
            frames
                .iter()
                .map(|f| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::copy_from_slice(f))))
                .collect::<Vec<_>>(),
        ));
        let later = UsageLater::new();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let s = seen.clone();
        later.push(move |used| *s.lock().unwrap() = used);
        let mut t = Tail::new(body, None, Span::none(), Instant::now(), None)
            .report_to(Some(later))
            .hiding_usage(true);
        let mut out = Vec::new();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        while let Poll::Ready(Some(f)) = Pin::new(&mut t).poll_frame(&mut cx) {
            out.extend_from_slice(&f.unwrap().into_data().unwrap());
        }
        drop(t);
        let total = *seen.lock().unwrap();
        let usage = total.map(|total| Usage {
            prompt_tokens: 0,
            completion_tokens: 0,
            total,
        });
        (String::from_utf8(out).unwrap(), usage)
    }

    #[test]
    fn the_usage_chunk_the_caller_did_not_ask_for_is_taken_out_however_cut() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        let want = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        for cut in [1, 2, 5, 17, 64, 500] {
            let frames: Vec<&[u8]> = stream.chunks(cut).collect();
            let (got, usage) = hidden_stream(&frames);
            assert_eq!(got, want, "frames of {cut}");
            assert_eq!(
                usage.map(|u| u.total),
                Some(10),
                "reported, frames of {cut}"
            );
        }
        // A stream cut mid-line gives what it had at its end; the usage
        // is reported as unknown.
        let (got, usage) = hidden_stream(&[b"data: {\"choices\":[]", b",\"usa"]);
        assert_eq!(got, "data: {\"choices\":[],\"usa");
        assert_eq!(usage, None);
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
