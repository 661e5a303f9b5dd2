//! The load shedder's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use palisade_core::Overloaded;
use pin_project_lite::pin_project;

use super::state::InFlight;

pin_project! {
    /// The response future of [`Shed`](super::Shed).
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Admitted: the call holds an in-flight slot until it completes.
        Admitted { #[pin] fut: F, slot: Option<InFlight> },
        // Shed in `call`: the rejection is returned on first poll.
        Shed { rejection: Option<Overloaded> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn admitted(fut: F, slot: InFlight) -> Self {
        Self {
            state: State::Admitted {
                fut,
                slot: Some(slot),
            },
        }
    }

    pub(crate) fn shed(rejection: Overloaded) -> Self {
        Self {
            state: State::Shed {
                rejection: Some(rejection),
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: From<Overloaded>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Admitted { fut, slot } => {
                let result = ready!(fut.poll(cx));
                // Free the slot as soon as the answer is in, not when the future is dropped.
                drop(slot.take());
                Poll::Ready(result)
            }
            StateProj::Shed { rejection } => Poll::Ready(Err(E::from(
                rejection.take().expect("polled after completion"),
            ))),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
