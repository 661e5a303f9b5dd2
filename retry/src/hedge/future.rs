//! The hedge layer's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{Classify, Outcome, time};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::service::Shared;
use crate::budget::RetryBudget;
use crate::event::HedgeEvent;
use crate::policy::CloneRequest;

pin_project! {
    /// The future of one request through [`Hedge`](super::Hedge): the original call, the
    /// hedged copies in flight and the timer of the next copy. Dropping it cancels them all.
    pub struct ResponseFuture<S, Req, P, C, K>
    where
        S: Service<Req>,
    {
        #[pin]
        original: Slot<S::Future>,
        #[pin]
        timer: Timer,
        // Boxed: only requests that were slow enough to hedge pay for it.
        hedges: Vec<(u32, Pin<Box<S::Future>>)>,
        inner: S,
        // The copy the next hedge sends; `None` once no more hedges will be sent.
        request: Option<Req>,
        delay: Duration,
        sent: u32,
        started: Option<Instant>,
        // This layer deposited for the request and so records the outcomes.
        owns_budget: bool,
        shared: Arc<Shared<P, C, K>>,
    }
}

pin_project! {
    #[project = SlotProj]
    enum Slot<F> {
        Running { #[pin] future: F },
        Finished,
    }
}

pin_project! {
    #[project = TimerProj]
    enum Timer {
        Armed { #[pin] sleep: Sleep },
        // The delay passed and the budget paid for a copy; waiting for the inner service to
        // be ready for it.
        Due,
        Off,
    }
}

impl<S, Req, P, C, K> ResponseFuture<S, Req, P, C, K>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        future: S::Future,
        inner: S,
        hedge: Option<(Duration, Req)>,
        started: Option<Instant>,
        owns_budget: bool,
        shared: Arc<Shared<P, C, K>>,
    ) -> Self {
        let (timer, request, delay) = match (hedge, started) {
            // A delay of "forever" (about 30 years or more) never hedges.
            (Some((delay, request)), Some(start)) if !time::is_forever(delay) => (
                Timer::Armed {
                    sleep: tokio::time::sleep_until(time::add(start, delay)),
                },
                Some(request),
                delay,
            ),
            _ => (Timer::Off, None, Duration::ZERO),
        };
        Self {
            original: Slot::Running { future },
            timer,
            hedges: Vec::new(),
            inner,
            request,
            delay,
            sent: 0,
            started,
            owns_budget,
            shared,
        }
    }
}

impl<S, Req, P, C, K> Future for ResponseFuture<S, Req, P, C, K>
where
    S: Service<Req>,
    C: Classify<S::Response, S::Error>,
    K: CloneRequest<Req>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // First, the copies in flight: the first good answer wins.
            if let SlotProj::Running { future } = this.original.as_mut().project()
                && let Poll::Ready(result) = future.poll(cx)
            {
                this.original.set(Slot::Finished);
                let others = !this.hedges.is_empty();
                if accept(this.shared, *this.owns_budget, &result, others) {
                    finish(this.shared, *this.started, 0);
                    return Poll::Ready(result);
                }
            }
            let mut i = 0;
            while i < this.hedges.len() {
                let (copy, future) = &mut this.hedges[i];
                let copy = *copy;
                if let Poll::Ready(result) = future.as_mut().poll(cx) {
                    drop(this.hedges.swap_remove(i));
                    let others =
                        !this.hedges.is_empty() || matches!(*this.original, Slot::Running { .. });
                    if accept(this.shared, *this.owns_budget, &result, others) {
                        finish(this.shared, *this.started, copy);
                        return Poll::Ready(result);
                    }
                } else {
                    i += 1;
                }
            }
            // Now the timer: send the next copy if the request is still slow.
            match this.timer.as_mut().project() {
                TimerProj::Armed { sleep } => {
                    if sleep.poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // Ask the budget before reserving the inner service's readiness (a
                    // concurrency permit, a connection): a refused hedge holds nothing.
                    if let Some(budget) = &this.shared.config.budget
                        && !budget.withdraw()
                    {
                        this.shared.budget_rejected.increment(1);
                        this.shared.emitter.emit(|| HedgeEvent::BudgetExhausted);
                        *this.request = None;
                        this.timer.set(Timer::Off);
                        continue;
                    }
                    this.timer.set(Timer::Due);
                }
                TimerProj::Due => {
                    match this.inner.poll_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(_)) => {
                            // No hedge then: the copies in flight still answer.
                            this.timer.set(Timer::Off);
                            continue;
                        }
                    }
                    let next = send_hedge(
                        this.shared,
                        this.inner,
                        this.request,
                        this.sent,
                        this.hedges,
                        *this.started,
                    );
                    match next.zip(*this.started) {
                        Some((copies, start)) => {
                            let after = this.delay.saturating_mul(copies.saturating_add(1));
                            let wake = time::add(start, after);
                            this.timer.set(Timer::Armed {
                                sleep: tokio::time::sleep_until(wake),
                            });
                        }
                        None => this.timer.set(Timer::Off),
                    }
                    // Loop: the new copy must be polled once to be woken.
                }
                TimerProj::Off => return Poll::Pending,
            }
        }
    }
}

/// Whether an answer ends the request: a `Success` always does; a failure or an ignored
/// answer (a local rejection) only when no other copy can still answer. Records the
/// answer's outcome in the budget when this layer holds it for the request.
fn accept<P, C, K, Res, E>(
    shared: &Shared<P, C, K>,
    owns_budget: bool,
    result: &Result<Res, E>,
    others: bool,
) -> bool
where
    C: Classify<Res, E>,
{
    let outcome = shared.config.classify.classify(result);
    if owns_budget && let Some(budget) = &shared.config.budget {
        budget.record(outcome);
    }
    !others || outcome == Outcome::Success
}

fn finish<P, C, K>(shared: &Shared<P, C, K>, started: Option<Instant>, copy: u32) {
    if let Some(start) = started {
        shared.record_latency(start.elapsed());
    }
    if copy > 0 {
        shared.wins.increment(1);
        shared.emitter.emit(|| HedgeEvent::Won { copy });
    }
}

/// Send one hedged copy (the budget has paid for it); returns how many copies were sent so
/// far if another one may follow.
fn send_hedge<S, Req, P, C, K>(
    shared: &Shared<P, C, K>,
    inner: &mut S,
    request: &mut Option<Req>,
    sent: &mut u32,
    hedges: &mut Vec<(u32, Pin<Box<S::Future>>)>,
    started: Option<Instant>,
) -> Option<u32>
where
    S: Service<Req>,
    K: CloneRequest<Req>,
{
    let req = request.take()?;
    *sent += 1;
    let copy = *sent;
    if copy < shared.max_hedges() {
        *request = shared.config.clone_request.clone_request(&req);
    }
    let future = {
        let _held = shared.config.budget.as_ref().map(RetryBudget::enter);
        inner.call(req)
    };
    hedges.push((copy, Box::pin(future)));
    shared.hedges.increment(1);
    shared.emitter.emit(|| HedgeEvent::Sent {
        copy,
        after: started.map(|s| s.elapsed()).unwrap_or_default(),
    });
    request.is_some().then_some(copy)
}

impl<S, Req, P, C, K> fmt::Debug for ResponseFuture<S, Req, P, C, K>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("hedges_in_flight", &self.hedges.len())
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}
