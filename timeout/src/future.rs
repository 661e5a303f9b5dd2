//! The timeout's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::deadline::{self, TimerReport};
use palisade_core::{Deadline, Elapsed, Name};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::event::TimeoutEvent;
use crate::layer::Shared;

pin_project! {
    /// The response future of [`Timeout`](crate::Timeout): the inner future raced against
    /// the deadline.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        // Made on the first poll that finds the inner future pending and no timer armed
        // inside it that fires by our deadline: a call answered at once never registers
        // (or builds) a timer, nor does an overall timeout over a per-attempt one.
        #[pin]
        sleep: Option<Sleep>,
        deadline: Option<Deadline>,
        // The deadline is this layer's own (no earlier outer one).
        ours: bool,
        start: Option<Instant>,
        // Who reports an expiry: the shared state only when someone observes (metrics,
        // listeners, tracing), else just the name, sparing the happy path an atomic
        // reference count (one field, not both: a smaller future to move).
        reporter: Reporter,
        // Reports our timer to the enclosing timeouts, and takes the report back when
        // dropped.
        report: TimerReport,
    }
}

/// What reports the call's expiry and completion.
enum Reporter {
    /// Nobody observes: the layer's name, for the [`Elapsed`].
    Quiet(Name),
    /// Someone observes: the shared state (which has the name too).
    Observed(Arc<Shared>),
}

impl Reporter {
    #[inline]
    fn shared(&self) -> Option<&Shared> {
        match self {
            Self::Quiet(_) => None,
            Self::Observed(shared) => Some(shared),
        }
    }

    #[inline]
    fn name(&self) -> &Name {
        match self {
            Self::Quiet(name) => name,
            Self::Observed(shared) => shared.name(),
        }
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn new(
        inner: F,
        deadline: Option<Deadline>,
        ours: bool,
        start: Option<Instant>,
        shared: &Arc<Shared>,
        observed: bool,
    ) -> Self {
        Self {
            inner: Some(inner),
            sleep: None,
            deadline,
            ours,
            start,
            reporter: if observed {
                Reporter::Observed(Arc::clone(shared))
            } else {
                Reporter::Quiet(shared.name().clone())
            },
            report: TimerReport::default(),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: From<Elapsed>,
{
    type Output = Result<T, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();

        // First, poll the inner future, with the deadline in effect for everything inside,
        // watching for a timer armed inside it.
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            panic!("ResponseFuture polled after completion");
        };
        deadline::watch_timers();
        if let Poll::Ready(result) = deadline::scope(*this.deadline, || inner.poll(cx)) {
            // An error once our own deadline has passed is our expiry, whoever inside gave
            // up at it first (an inner timeout shortened to it, a limit that stopped
            // waiting): report it under our name. Only errors pay for the clock read.
            if let (Err(_), true, Some(deadline)) = (&result, *this.ours, *this.deadline)
                && Instant::now() >= deadline.instant()
            {
                this.inner.set(None);
                return Poll::Ready(Err(expired(this.reporter, deadline, *this.start)));
            }
            if let Some(shared) = this.reporter.shared() {
                completed(shared, *this.start);
            }
            return Poll::Ready(result);
        }

        // Now check the timer. No deadline: no timeout of our own and no outer deadline.
        let Some(deadline) = *this.deadline else {
            return Poll::Pending;
        };
        // A timer armed inside (a per-attempt timeout's) wakes this task by our deadline:
        // no timer of our own, and the enclosing timeouts see that one in turn. When it
        // fires, the call inside gives up and we see the error, or is answered in time.
        if deadline::armed_timer(cx.waker()).is_some_and(|at| at <= deadline.instant()) {
            return Poll::Pending;
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(sleep_until(deadline.instant())));
        }
        let sleep = this.sleep.as_pin_mut().expect("set above");
        if sleep.poll(cx).is_pending() {
            this.report.armed(cx.waker(), deadline.instant());
            return Poll::Pending;
        }

        // Elapsed: cancel the inner call now, not when the caller drops us.
        this.inner.set(None);
        Poll::Ready(Err(expired(this.reporter, deadline, *this.start)))
    }
}

/// The `Elapsed` for a call that ran out of time at `deadline`, counted and reported.
#[cold]
#[inline(never)]
fn expired<E: From<Elapsed>>(reporter: &Reporter, deadline: Deadline, start: Option<Instant>) -> E {
    let timeout = start.map_or(std::time::Duration::ZERO, |start| {
        deadline.instant().saturating_duration_since(start)
    });
    if let Some(shared) = reporter.shared() {
        elapsed(shared, timeout);
    }
    Elapsed::new(reporter.name().clone(), timeout).into()
}

fn completed(shared: &Shared, start: Option<Instant>) {
    shared.completed.increment(1);
    let Some(start) = start else { return };
    if !shared.observing() {
        return;
    }
    let took = start.elapsed();
    shared.duration.record(took.as_secs_f64());
    shared
        .emitter
        .emit(|| TimeoutEvent::Completed { elapsed: took });
}

fn elapsed(shared: &Shared, timeout: std::time::Duration) {
    shared.elapsed.increment(1);
    shared.duration.record(timeout.as_secs_f64());
    shared.emitter.emit(|| TimeoutEvent::Elapsed { timeout });
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
