//! The chaos service's response future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

/// A user behaviour run on an answer (corrupt a field, drop a body).
pub(crate) type OnAnswer<T> = Arc<dyn Fn(&mut T) + Send + Sync>;

pin_project! {
    /// The response future of [`Chaos`](crate::Chaos): the inner service's answer, maybe
    /// delayed or altered; an injected answer; or, for a hang, nothing ever.
    pub struct ResponseFuture<F>
    where
        F: Future,
    {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F>
    where
        F: Future,
    {
        // Waiting for the inner service; `delay` is added once it answers.
        Inner { #[pin] future: F, delay: Option<Duration> },
        // Anything injected: boxed, so the common variant stays small and cheap to drop;
        // only calls that suffer a fault pay the allocation.
        Faulted { faulted: Pin<Box<Faulted<F>>> },
        Hang,
    }
}

pin_project! {
    #[project = FaultedProj]
    enum Faulted<F>
    where
        F: Future,
    {
        // Waiting for the inner service; then `behave` alters its answer.
        Behaving { #[pin] future: F, delay: Option<Duration>, behave: OnAnswer<F::Output> },
        // An answer held back until the sleep ends.
        Held { #[pin] sleep: Option<Sleep>, output: Option<F::Output> },
    }
}

impl<F: Future> Faulted<F> {
    fn held(output: F::Output, delay: Option<Duration>) -> Pin<Box<Self>> {
        Box::pin(Faulted::Held {
            sleep: delay.map(tokio::time::sleep),
            output: Some(output),
        })
    }

    fn poll_answer(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        loop {
            match self.as_mut().project() {
                // First the service answers, then the behaviour alters the answer, then the
                // delay holds it back.
                FaultedProj::Behaving {
                    future,
                    delay,
                    behave,
                } => {
                    let mut output = ready!(future.poll(cx));
                    behave(&mut output);
                    let sleep = delay.take().map(tokio::time::sleep);
                    self.set(Faulted::Held {
                        sleep,
                        output: Some(output),
                    });
                }
                FaultedProj::Held { sleep, output } => {
                    if let Some(sleep) = sleep.as_pin_mut() {
                        ready!(sleep.poll(cx));
                    }
                    let output = output.take();
                    return Poll::Ready(output.expect("ResponseFuture polled after completion"));
                }
            }
        }
    }
}

impl<F: Future> ResponseFuture<F> {
    /// The inner service's future, its answer delayed by `delay`.
    pub(crate) fn inner(future: F, delay: Option<Duration>) -> Self {
        Self {
            state: State::Inner { future, delay },
        }
    }

    /// The inner service's future; `behave` runs on its answer, which is then delayed by
    /// `delay`.
    pub(crate) fn behave(future: F, delay: Option<Duration>, behave: OnAnswer<F::Output>) -> Self {
        let faulted = Box::pin(Faulted::Behaving {
            future,
            delay,
            behave,
        });
        Self {
            state: State::Faulted { faulted },
        }
    }

    /// An injected answer, after `delay`.
    pub(crate) fn injected(output: F::Output, delay: Option<Duration>) -> Self {
        Self {
            state: State::Faulted {
                faulted: Faulted::held(output, delay),
            },
        }
    }

    /// A future that never completes.
    pub(crate) fn hang() -> Self {
        Self { state: State::Hang }
    }
}

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        match state.as_mut().project() {
            // First wait for the service; then, if a delay was injected, hold its answer.
            StateProj::Inner { future, delay } => {
                let output = ready!(future.poll(cx));
                let Some(delay) = delay.take() else {
                    return Poll::Ready(output);
                };
                let mut faulted = Faulted::held(output, Some(delay));
                let answer = faulted.as_mut().poll_answer(cx);
                state.set(State::Faulted { faulted });
                answer
            }
            StateProj::Faulted { faulted } => faulted.as_mut().poll_answer(cx),
            // Never wakes: only an outer timeout or the caller giving up ends it.
            StateProj::Hang => Poll::Pending,
        }
    }
}
