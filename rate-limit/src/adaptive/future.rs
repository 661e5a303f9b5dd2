//! The adaptive limit's response future: it measures the call and holds its slot, and in
//! wait mode waits for the slot.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use palisade_core::{Classify, Overloaded};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use super::service::{Slot, Wait};

pin_project! {
    /// The response future of [`AdaptiveLimit`](super::AdaptiveLimit).
    ///
    /// It holds the call's slot: when the call completes, its round trip and outcome feed
    /// the algorithm and the slot is freed; if the future is dropped first (cancelled, or
    /// unwound by a panic), the slot is freed and no sample is taken.
    ///
    /// In wait mode, a call that found every slot taken waits here for one, with the
    /// readied inner service and the request, then calls the service. The wait is part of
    /// the call: an outer timeout's future covers it, and it ends at the caller's deadline
    /// or after `max_wait`, whichever comes first, with [`Overloaded`]. Dropping this
    /// future while it waits leaves the queue.
    pub struct ResponseFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, C>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, C>
    where
        S: Service<Req>,
    {
        Called { #[pin] fut: S::Future, slot: Option<Slot>, started: Instant, classifier: C },
        Waiting { wait: Pin<Box<Wait<S, Req>>>, classifier: Option<C> },
        Rejected { error: Option<Overloaded> },
    }
}

impl<S: Service<Req>, Req, C> ResponseFuture<S, Req, C> {
    #[inline]
    pub(crate) fn called(fut: S::Future, slot: Slot, started: Instant, classifier: C) -> Self {
        Self {
            state: State::Called {
                fut,
                slot: Some(slot),
                started,
                classifier,
            },
        }
    }

    // The rare futures are built out of line (into the caller's slot): with three
    // construction sites inlined in `call`, the layer above copied the admitted future in
    // on every call (a `memmove` in the profile; the README stack 1.16 → 1.28).
    #[cold]
    #[inline(never)]
    pub(crate) fn waiting(wait: Pin<Box<Wait<S, Req>>>, classifier: C) -> Self {
        Self {
            state: State::Waiting {
                wait,
                classifier: Some(classifier),
            },
        }
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn rejected(error: Overloaded) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
        }
    }
}

impl<S, Req, C, T, E> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req, Response = T, Error = E>,
    C: Classify<T, E>,
    E: From<Overloaded>,
{
    type Output = Result<T, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        // The admitted call, inline; waiting and refusals out of line.
        if let StateProj::Called {
            fut,
            slot,
            started,
            classifier,
        } = state.as_mut().project()
        {
            let out = ready!(fut.poll(cx));
            if let Some(slot) = slot.take() {
                slot.complete(*started, classifier.classify(&out));
            }
            return Poll::Ready(out);
        }
        poll_other(state, cx)
    }
}

/// [`ResponseFuture::poll`] for a call that waits for a slot or was refused.
#[cold]
#[inline(never)]
fn poll_other<S, Req, C, T, E>(
    mut state: Pin<&mut State<S, Req, C>>,
    cx: &mut Context<'_>,
) -> Poll<Result<T, E>>
where
    S: Service<Req, Response = T, Error = E>,
    C: Classify<T, E>,
    E: From<Overloaded>,
{
    loop {
        match state.as_mut().project() {
            StateProj::Called {
                fut,
                slot,
                started,
                classifier,
            } => {
                let out = ready!(fut.poll(cx));
                if let Some(slot) = slot.take() {
                    slot.complete(*started, classifier.classify(&out));
                }
                return Poll::Ready(out);
            }
            StateProj::Waiting { wait, classifier } => {
                let slot = match ready!(wait.as_mut().poll_slot(cx)) {
                    Ok(slot) => slot,
                    Err(overloaded) => return Poll::Ready(Err(overloaded.into())),
                };
                let classifier = classifier.take().expect("polled after completion");
                // The round trip starts now, not when the call began to wait.
                let started = Instant::now();
                let fut = wait.as_mut().call();
                state.set(State::Called {
                    fut,
                    slot: Some(slot),
                    started,
                    classifier,
                });
            }
            StateProj::Rejected { error } => {
                let error = error.take().expect("polled after completion");
                return Poll::Ready(Err(error.into()));
            }
        }
    }
}

impl<S: Service<Req>, Req, C> fmt::Debug for ResponseFuture<S, Req, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
