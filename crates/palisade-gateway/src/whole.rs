//! [`read_whole`]: a body read to its end as one `Bytes`.

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;

/// Reads `body` to its end. A body that comes in one chunk (a small body
/// arrives in one read) is that chunk as it came: no list of chunks is
/// made and nothing is copied. More chunks are joined into one buffer.
/// Trailers are dropped; the body's first error is returned. A body that
/// says it has ended after a chunk (one of known length, all of it come)
/// is not polled again for the end it would report: for hyper's bodies
/// that poll is a channel's round of atomics for nothing.
pub(crate) async fn read_whole<B>(body: B) -> Result<Bytes, B::Error>
where
    B: Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        match (&first, &mut joined) {
            (None, _) => first = Some(data),
            (Some(head), None) => {
                let mut buf = BytesMut::with_capacity(head.len() + data.len());
                buf.extend_from_slice(head);
                buf.extend_from_slice(&data);
                joined = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&data),
        }
        if body.is_end_stream() {
            break;
        }
    }
    Ok(match joined {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, Limited, StreamBody};

    fn chunks(
        parts: Vec<Result<&'static [u8], &'static str>>,
    ) -> impl Body<Data = Bytes, Error = &'static str> {
        StreamBody::new(futures_util::stream::iter(
            parts
                .into_iter()
                .map(|p| p.map(|b| http_body::Frame::data(Bytes::from_static(b)))),
        ))
    }

    #[tokio::test]
    async fn one_chunk_is_kept_as_it_came_and_more_are_joined() {
        let one = Bytes::from_static(b"{\"a\":1}");
        let read = read_whole(Full::new(one.clone())).await.unwrap();
        assert_eq!(read, one);
        assert_eq!(read.as_ptr(), one.as_ptr(), "not copied");

        let parts = vec![Ok(&b"ab"[..]), Ok(b""), Ok(b"cd"), Ok(b"e")];
        assert_eq!(read_whole(chunks(parts)).await.unwrap(), "abcde");
        assert_eq!(read_whole(chunks(vec![])).await.unwrap(), "");
    }

    /// One chunk, then ended by its own account; polled again, an error.
    struct Ends(Option<Bytes>);

    impl Body for Ends {
        type Data = Bytes;
        type Error = &'static str;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, &'static str>>> {
            std::task::Poll::Ready(Some(
                self.0
                    .take()
                    .map(http_body::Frame::data)
                    .ok_or("polled past its end"),
            ))
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_none()
        }
    }

    #[tokio::test]
    async fn a_body_that_says_it_ended_is_not_polled_again() {
        let read = read_whole(Ends(Some(Bytes::from_static(b"{}")))).await;
        assert_eq!(read, Ok(Bytes::from_static(b"{}")));
        // Through the limit the request body is read with, too.
        let limited = Limited::new(Ends(Some(Bytes::from_static(b"{}"))), 10);
        assert_eq!(read_whole(limited).await.unwrap(), "{}");
    }

    #[tokio::test]
    async fn the_first_error_is_the_answer() {
        let parts = vec![Ok(&b"ab"[..]), Err("reset"), Ok(b"cd")];
        assert_eq!(read_whole(chunks(parts)).await, Err("reset"));
        // A limit's error comes through as the limit said it.
        let limited = Limited::new(Full::new(Bytes::from_static(b"0123456789")), 4);
        let e = read_whole(limited).await.unwrap_err();
        assert!(e
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some());
    }
}
