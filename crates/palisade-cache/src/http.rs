//! [`HttpRecord`]: HTTP answers recorded as their bodies pass (streams
//! included) and replayed whole; for OpenAI-style answers, in the form the
//! request asks for (JSON or SSE).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::header::{HeaderValue, AGE, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use palisade_core::{BoxError, Degraded, MarkDegraded, Served, DEGRADED_HEADER};
use pin_project_lite::pin_project;

use crate::key::Lookup;
use crate::openai::{answer_to_stream, stream_to_answer};
use crate::record::{Keep, Record, Replay};

/// The header saying where an answer came from: `hit` (a fresh entry,
/// no call), `stale` (the call failed; degraded), `shared` (an identical
/// request's call); absent on an answer to the request's own call.
pub const CACHE_HEADER: &str = "x-palisade-cache";
/// The value `x-palisade-degraded` takes on a stale answer.
pub const STALE_CACHE: &str = "stale-cache";

/// A stored HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpEntry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    served: Option<Served>,
}

impl HttpEntry {
    /// Its status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Its body, as stored (for OpenAI answers: the whole JSON answer).
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

/// Records and replays `http::Response`s with a boxed body
/// (`UnsyncBoxBody<Bytes, E>`, as palisade's gateway uses).
///
/// - Only success answers are stored, never a degraded stand-in; a body is
///   recorded as it passes (the caller's stream is not delayed) and kept
///   when it ends cleanly, if within `max_entry_bytes`.
/// - [`openai`](Self::openai): a streamed answer is stored as the whole
///   answer it adds up to, and replayed as JSON or SSE, whichever the
///   request asks for ([`Lookup::stream`]).
/// - Replays carry `x-palisade-cache` (`hit`, `stale`, `shared`) and, from
///   the cache, `age` in seconds; a stale one is marked degraded
///   (`x-palisade-degraded: stale-cache`, the [`Degraded`] extension and
///   [`Served::degraded`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpRecord {
    openai: bool,
}

impl HttpRecord {
    /// Answers stored and replayed as they were.
    pub fn new() -> Self {
        HttpRecord::default()
    }

    /// OpenAI-style answers: streams stored whole, replayed in the form
    /// asked for.
    pub fn openai() -> Self {
        HttpRecord { openai: true }
    }

    /// The entry for an answer's parts and whole body, or `None` if it
    /// cannot be stored (a stream that did not add up to an answer).
    fn entry(
        &self,
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        served: Option<Served>,
    ) -> Option<HttpEntry> {
        for h in [CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION, AGE] {
            headers.remove(h);
        }
        let sse = is_sse(&headers);
        let body = if self.openai && sse {
            let answer = stream_to_answer(&body)?;
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Bytes::from(serde_json::to_vec(&answer).ok()?)
        } else {
            body
        };
        Some(HttpEntry {
            status,
            headers,
            body,
            served,
        })
    }
}

fn is_sse(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

impl<E> Record<Response<UnsyncBoxBody<Bytes, E>>> for HttpRecord
where
    E: Into<BoxError> + 'static,
{
    type Entry = HttpEntry;

    fn record(
        &self,
        res: Response<UnsyncBoxBody<Bytes, E>>,
        keep: Keep<HttpEntry>,
    ) -> Response<UnsyncBoxBody<Bytes, E>> {
        let served = res.extensions().get::<Served>().cloned();
        if !res.status().is_success() || served.as_ref().is_some_and(|s| s.degraded) {
            return res;
        }
        let (parts, body) = res.into_parts();
        let (status, headers, this) = (parts.status, parts.headers.clone(), *self);
        let limit = keep.limit();
        let done = Box::new(move |bytes: Bytes| {
            if let Some(entry) = this.entry(status, headers, bytes, served) {
                let weight = weight(&entry);
                keep.keep(entry, weight);
            }
        });
        let body = UnsyncBoxBody::new(RecordBody {
            inner: body,
            buf: BytesMut::new(),
            limit,
            done: Some(done),
        });
        Response::from_parts(parts, body)
    }

    fn collect(
        &self,
        res: Response<UnsyncBoxBody<Bytes, E>>,
    ) -> BoxFuture<'static, Result<HttpEntry, BoxError>> {
        let this = *self;
        Box::pin(async move {
            let served = res.extensions().get::<Served>().cloned();
            let (parts, body) = res.into_parts();
            let bytes = body.collect().await.map_err(Into::into)?.to_bytes();
            let raw = HttpEntry {
                status: parts.status,
                headers: parts.headers.clone(),
                body: bytes.clone(),
                served: served.clone(),
            };
            Ok(this
                .entry(parts.status, parts.headers, bytes, served)
                .unwrap_or(raw))
        })
    }

    fn storable(&self, entry: &HttpEntry) -> bool {
        entry.status.is_success() && !entry.served.as_ref().is_some_and(|s| s.degraded)
    }

    fn weight(&self, entry: &HttpEntry) -> u64 {
        weight(entry)
    }

    fn replay(
        &self,
        entry: &HttpEntry,
        lookup: &Lookup,
        how: Replay<'_>,
    ) -> Response<UnsyncBoxBody<Bytes, E>> {
        let mut headers = entry.headers.clone();
        let json = headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let body = match serde_json::from_slice(&entry.body) {
            Ok(answer) if self.openai && lookup.stream && json && entry.status.is_success() => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                Bytes::from(answer_to_stream(&answer))
            }
            _ => entry.body.clone(),
        };
        let body = Full::new(body)
            .map_err(|never: Infallible| match never {})
            .boxed_unsync();
        let mut res = Response::new(body);
        *res.status_mut() = entry.status;
        *res.headers_mut() = headers;
        let mut served = entry.served.clone().unwrap_or_default();
        let (mark, age) = match how {
            Replay::Own => (None, None),
            Replay::Copy => (Some("shared"), None),
            Replay::Fresh { age } => (Some("hit"), Some(age)),
            Replay::Stale { age, .. } => (Some("stale"), Some(age)),
        };
        if age.is_some() {
            // No call was made for this answer.
            served.attempts = 0;
            served.fallbacks = 0;
            served.hedged = false;
        }
        res.extensions_mut().insert(served);
        if let Some(mark) = mark {
            res.headers_mut()
                .insert(CACHE_HEADER, HeaderValue::from_static(mark));
        }
        if let Some(age) = age {
            res.headers_mut()
                .insert(AGE, HeaderValue::from(age.as_secs()));
        }
        if let Replay::Stale { reason, .. } = how {
            res.mark_degraded(Degraded {
                reason: format!("stale-cache: {reason}"),
            });
            res.headers_mut()
                .insert(DEGRADED_HEADER, HeaderValue::from_static(STALE_CACHE));
        }
        res
    }
}

/// An entry's size: its body, its headers, and a little for itself.
fn weight(entry: &HttpEntry) -> u64 {
    let headers: usize = entry
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    (entry.body.len() + headers + 128) as u64
}

type Done = Box<dyn FnOnce(Bytes) + Send>;

pin_project! {
    /// A body passed through untouched, its bytes kept (up to a limit)
    /// and handed on once it ends cleanly.
    pub struct RecordBody<B> {
        #[pin]
        inner: B,
        buf: BytesMut,
        limit: u64,
        done: Option<Done>,
    }
}

impl<B> RecordBody<B> {
    fn finish(done: &mut Option<Done>, buf: &mut BytesMut) {
        if let Some(done) = done.take() {
            done(std::mem::take(buf).freeze());
        }
    }
}

impl<B: Body<Data = Bytes>> Body for RecordBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    if this.done.is_some() {
                        if (this.buf.len() + data.len()) as u64 > *this.limit {
                            // Too large to keep: passed on, not stored.
                            *this.done = None;
                            *this.buf = BytesMut::new();
                        } else {
                            this.buf.extend_from_slice(data);
                        }
                    }
                }
                if this.inner.is_end_stream() {
                    Self::finish(this.done, this.buf);
                }
            }
            None => Self::finish(this.done, this.buf),
            Some(Err(_)) => *this.done = None,
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

impl<B> std::fmt::Debug for RecordBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBody")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}
