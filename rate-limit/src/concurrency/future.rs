//! The concurrency limit's response future: it holds the permit.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use palisade_core::Overloaded;
use pin_project_lite::pin_project;

use super::service::InFlight;

pin_project! {
    /// The response future of [`ConcurrencyLimit`](super::ConcurrencyLimit).
    ///
    /// It owns the call's permit: the permit is released when this future completes, fails,
    /// panics or is dropped, so no outcome leaks a permit.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Called { #[pin] fut: F, permit: Option<InFlight> },
        Rejected { error: Option<Overloaded> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(fut: F, permit: InFlight) -> Self {
        Self {
            state: State::Called {
                fut,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn rejected(error: Overloaded) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
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
            StateProj::Called { fut, permit } => {
                let out = std::task::ready!(fut.poll(cx));
                // The call is over: free its permit now, not when the future is dropped.
                drop(permit.take());
                Poll::Ready(out)
            }
            StateProj::Rejected { error } => {
                let error = error.take().expect("polled after completion");
                Poll::Ready(Err(error.into()))
            }
        }
    }
}
