//! [`ResponseFuture`]: a call through a chaos layer: passed through,
//! answered late, failed, or never answered.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tokio::time::Sleep;

pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        Pass { #[pin] fut: F },
        // The answer is held until the delay after it has passed.
        Late { #[pin] fut: F, delay: Duration, held: Option<(Result<T, BoxError>, Pin<Box<Sleep>>)> },
        Fail { err: Option<BoxError> },
        Hang,
        // The answer's body is interrupted on the way out (rare: boxed).
        Interrupt { #[pin] fut: F, wrap: Option<Box<dyn FnOnce(T) -> T + Send>> },
    }
}

pin_project! {
    /// The response future of [`Chaos`](crate::Chaos): `F` is the inner
    /// service's future, `T` its response.
    pub struct ResponseFuture<F, T> {
        #[pin]
        state: State<F, T>,
    }
}

impl<F, T> std::fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, T> ResponseFuture<F, T> {
    #[inline]
    pub(crate) fn pass(fut: F) -> Self {
        ResponseFuture {
            state: State::Pass { fut },
        }
    }

    pub(crate) fn late(fut: F, delay: Duration) -> Self {
        ResponseFuture {
            state: State::Late {
                fut,
                delay,
                held: None,
            },
        }
    }

    pub(crate) fn fail(err: BoxError) -> Self {
        ResponseFuture {
            state: State::Fail { err: Some(err) },
        }
    }

    pub(crate) fn hang() -> Self {
        ResponseFuture { state: State::Hang }
    }

    pub(crate) fn interrupt(fut: F, wrap: Box<dyn FnOnce(T) -> T + Send>) -> Self {
        ResponseFuture {
            state: State::Interrupt {
                fut,
                wrap: Some(wrap),
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Pass { fut } => fut.poll(cx).map_err(Into::into),
            StateProj::Late { fut, delay, held } => {
                if held.is_none() {
                    let out = ready!(fut.poll(cx)).map_err(Into::into);
                    *held = Some((out, Box::pin(tokio::time::sleep(*delay))));
                }
                let (_, sleep) = held.as_mut().expect("held above");
                ready!(sleep.as_mut().poll(cx));
                let (out, _) = held.take().expect("polled after completion");
                Poll::Ready(out)
            }
            StateProj::Fail { err } => {
                Poll::Ready(Err(err.take().expect("polled after completion")))
            }
            StateProj::Hang => Poll::Pending,
            StateProj::Interrupt { fut, wrap } => {
                let out = ready!(fut.poll(cx)).map_err(Into::into)?;
                let wrap = wrap.take().expect("polled after completion");
                Poll::Ready(Ok(wrap(out)))
            }
        }
    }
}
