//! The chaos service's response future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

pin_project! {
    /// The response future of [`Chaos`](crate::Chaos): the inner service's answer, maybe
    /// delayed; an injected answer; or, for a hang, nothing ever.
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
        // The same, then a user behaviour runs on the answer. A variant of its own so the
        // common one carries no function pointer.
        Behave { #[pin] future: F, delay: Option<Duration>, behave: OnAnswer<F::Output> },
        // Holding an answer back until the sleep ends. Boxed so the common variant stays
        // small and cheap to drop; only injected answers and delays pay the allocation.
        Delayed { held: Pin<Box<Held<F::Output>>> },
        Hang,
    }
}

/// A user behaviour run on an answer (corrupt a field, drop a body).
pub(crate) type OnAnswer<T> = Arc<dyn Fn(&mut T) + Send + Sync>;

pin_project! {
    /// An answer held back until its sleep ends.
    struct Held<T> {
        #[pin]
        sleep: Option<Sleep>,
        output: Option<T>,
    }
}

impl<T> Held<T> {
    fn new(output: T, delay: Option<Duration>) -> Pin<Box<Self>> {
        Box::pin(Self {
            sleep: delay.map(tokio::time::sleep),
            output: Some(output),
        })
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
        Self {
            state: State::Behave {
                future,
                delay,
                behave,
            },
        }
    }

    /// An injected answer, after `delay`.
    pub(crate) fn injected(output: F::Output, delay: Option<Duration>) -> Self {
        Self {
            state: State::Delayed {
                held: Held::new(output, delay),
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
        loop {
            match state.as_mut().project() {
                // First wait for the service; then, if a delay was injected, hold its answer.
                StateProj::Inner { future, delay } => {
                    let output = ready!(future.poll(cx));
                    let Some(delay) = delay.take() else {
                        return Poll::Ready(output);
                    };
                    state.set(State::Delayed {
                        held: Held::new(output, Some(delay)),
                    });
                }
                StateProj::Behave {
                    future,
                    delay,
                    behave,
                } => {
                    let mut output = ready!(future.poll(cx));
                    behave(&mut output);
                    let Some(delay) = delay.take() else {
                        return Poll::Ready(output);
                    };
                    state.set(State::Delayed {
                        held: Held::new(output, Some(delay)),
                    });
                }
                StateProj::Delayed { held } => {
                    let held = held.as_mut().project();
                    if let Some(sleep) = held.sleep.as_pin_mut() {
                        ready!(sleep.poll(cx));
                    }
                    let output = held.output.take();
                    return Poll::Ready(output.expect("ResponseFuture polled after completion"));
                }
                // Never wakes: only an outer timeout or the caller giving up ends it.
                StateProj::Hang => return Poll::Pending,
            }
        }
    }
}
