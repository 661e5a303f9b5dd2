//! The adaptive limit's response future: it measures the call and holds its slot.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use palisade_core::{Classify, Overloaded};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::service::Slot;

pin_project! {
    /// The response future of [`AdaptiveLimit`](super::AdaptiveLimit).
    ///
    /// It holds the call's slot: when the call completes, its round trip and outcome feed
    /// the algorithm and the slot is freed; if the future is dropped first (cancelled, or
    /// unwound by a panic), the slot is freed and no sample is taken.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: State<F, C>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F, C> {
        Called { #[pin] fut: F, slot: Option<Slot>, started: Instant, classifier: C },
        Rejected { error: Option<Overloaded> },
    }
}

impl<F, C> ResponseFuture<F, C> {
    #[inline]
    pub(crate) fn called(fut: F, slot: Slot, started: Instant, classifier: C) -> Self {
        Self {
            state: State::Called {
                fut,
                slot: Some(slot),
                started,
                classifier,
            },
        }
    }

    pub(crate) fn rejected(error: Overloaded) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
    E: From<Overloaded>,
{
    type Output = Result<T, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called {
                fut,
                slot,
                started,
                classifier,
            } => {
                let out = std::task::ready!(fut.poll(cx));
                if let Some(slot) = slot.take() {
                    slot.complete(*started, classifier.classify(&out));
                }
                Poll::Ready(out)
            }
            StateProj::Rejected { error } => {
                let error = error.take().expect("polled after completion");
                Poll::Ready(Err(error.into()))
            }
        }
    }
}
