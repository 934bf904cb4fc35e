//! Stream faults: a response body that stalls or is cut after some frames,
//! and [`Streams`], how a chaos layer reaches a response's body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use palisade_core::{Classified, FailureKind};
use pin_project_lite::pin_project;

/// What happens to a streamed answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFault {
    /// After this many frames, nothing more, and no end.
    Stall(u32),
    /// After this many frames, the body fails as a dropped connection.
    Cut(u32),
}

impl StreamFault {
    fn after(self) -> u32 {
        match self {
            StreamFault::Stall(n) | StreamFault::Cut(n) => n,
        }
    }
}

pin_project! {
    /// A body that lets `after` frames through, then stalls or fails.
    #[derive(Debug)]
    pub struct ChaosBody<B> {
        #[pin]
        inner: B,
        fault: StreamFault,
        frames: u32,
        done: bool,
        // A cut yields once first, so what was let through is flushed
        // before the failure (a server drops unflushed bytes on a body
        // error).
        yielded: bool,
    }
}

impl<B> ChaosBody<B> {
    /// `inner`, interrupted by `fault`.
    pub fn new(inner: B, fault: StreamFault) -> Self {
        ChaosBody {
            inner,
            fault,
            frames: 0,
            done: false,
            yielded: false,
        }
    }
}

impl<B> Body for ChaosBody<B>
where
    B: Body,
    B::Error: From<Classified>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if *this.frames >= this.fault.after() {
            return match this.fault {
                // Never woken: the reader's idle timeout ends it.
                StreamFault::Stall(_) => Poll::Pending,
                StreamFault::Cut(_) if !*this.yielded => {
                    *this.yielded = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                StreamFault::Cut(_) => {
                    *this.done = true;
                    let cut = Classified::new(FailureKind::Connect, "chaos: stream cut (injected)");
                    Poll::Ready(Some(Err(cut.into())))
                }
            };
        }
        let frame = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame {
            if f.is_data() {
                *this.frames += 1;
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.frames < self.fault.after() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// How a chaos layer applies a [`StreamFault`] to a response: for HTTP
/// responses with boxed bodies ([`HttpStreams`]), or not at all
/// ([`NoStreams`], the default: stream faults are then never drawn).
pub trait Streams<Res>: Clone {
    /// Whether this can interrupt responses at all.
    fn enabled(&self) -> bool;
    /// `res` with its body interrupted by `fault`.
    fn interrupt(&self, res: Res, fault: StreamFault) -> Res;
}

/// Stream faults off: responses pass untouched.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStreams;

impl<Res> Streams<Res> for NoStreams {
    fn enabled(&self) -> bool {
        false
    }
    fn interrupt(&self, res: Res, _: StreamFault) -> Res {
        res
    }
}

/// Stream faults on `http::Response`s with a boxed body
/// (`http_body_util`'s `UnsyncBoxBody` or `BoxBody`, whose error can be
/// made from a [`Classified`] failure, as `BoxError` can).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpStreams;

/// `Streams` for a boxed body type: the body wrapped in a [`ChaosBody`]
/// and boxed again the same way.
macro_rules! boxed_streams {
    ($boxed:ident) => {
        impl<D, E> Streams<http::Response<$boxed<D, E>>> for HttpStreams
        where
            D: Buf + 'static,
            E: From<Classified> + 'static,
        {
            fn enabled(&self) -> bool {
                true
            }
            fn interrupt(
                &self,
                res: http::Response<$boxed<D, E>>,
                fault: StreamFault,
            ) -> http::Response<$boxed<D, E>> {
                res.map(|b| $boxed::new(ChaosBody::new(b, fault)))
            }
        }
    };
}

boxed_streams!(UnsyncBoxBody);
boxed_streams!(BoxBody);
