//! The concurrency limit's response future: it holds the permit, and in wait mode waits
//! for it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use palisade_core::Overloaded;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::service::{InFlight, Wait};

pin_project! {
    /// The response future of [`ConcurrencyLimit`](super::ConcurrencyLimit).
    ///
    /// It owns the call's permit: the permit is released when this future completes, fails,
    /// panics or is dropped, so no outcome leaks a permit.
    ///
    /// In wait mode, a call that found every permit taken waits here for one (in FIFO
    /// order), with the readied inner service and the request, then calls the service. The
    /// wait is part of the call: an outer timeout's future covers it, and it ends at the
    /// caller's deadline or after `max_wait`, whichever comes first, with [`Overloaded`].
    /// Dropping this future while it waits leaves the queue.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Called { #[pin] fut: S::Future, permit: Option<InFlight> },
        Waiting { wait: Pin<Box<Wait<S, Req>>> },
        Rejected { error: Option<Overloaded> },
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    #[inline]
    pub(crate) fn called(fut: S::Future, permit: InFlight) -> Self {
        Self {
            state: State::Called {
                fut,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn waiting(wait: Wait<S, Req>) -> Self {
        Self {
            state: State::Waiting {
                wait: Box::pin(wait),
            },
        }
    }

    pub(crate) fn rejected(error: Overloaded) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
        }
    }
}

impl<S, Req, T, E> Future for ResponseFuture<S, Req>
where
    S: Service<Req, Response = T, Error = E>,
    E: From<Overloaded>,
{
    type Output = Result<T, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        // The admitted call, inline; waiting and refusals out of line.
        if let StateProj::Called { fut, permit } = state.as_mut().project() {
            let out = ready!(fut.poll(cx));
            // The call is over: free its permit now, not when the future is dropped.
            drop(permit.take());
            return Poll::Ready(out);
        }
        poll_other(state, cx)
    }
}

/// [`ResponseFuture::poll`] for a call that waits for a permit or was refused.
#[cold]
#[inline(never)]
fn poll_other<S, Req, T, E>(
    mut state: Pin<&mut State<S, Req>>,
    cx: &mut Context<'_>,
) -> Poll<Result<T, E>>
where
    S: Service<Req, Response = T, Error = E>,
    E: From<Overloaded>,
{
    loop {
        match state.as_mut().project() {
            StateProj::Called { fut, permit } => {
                let out = ready!(fut.poll(cx));
                // The call is over: free its permit now, not when the future is dropped.
                drop(permit.take());
                return Poll::Ready(out);
            }
            StateProj::Waiting { wait } => {
                let permit = match ready!(wait.as_mut().poll_permit(cx)) {
                    Ok(permit) => permit,
                    Err(overloaded) => return Poll::Ready(Err(overloaded.into())),
                };
                let fut = wait.as_mut().call();
                state.set(State::Called {
                    fut,
                    permit: Some(permit),
                });
            }
            StateProj::Rejected { error } => {
                let error = error.take().expect("polled after completion");
                return Poll::Ready(Err(error.into()));
            }
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Waiting { .. } => "waiting",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
