//! The retry layer's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::deadline::TimerReport;
use palisade_core::{Classify, Deadline, Outcome, time};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::backoff::Schedule;
use crate::budget::RetryBudget;
use crate::event::{RetryEvent, StopReason};
use crate::policy::{CloneRequest, RetryAfter};
use crate::service::Shared;

pin_project! {
    /// The future of one request through [`Retry`](crate::Retry): the current attempt, or
    /// the wait before the next one.
    #[project = ResponseFutureProj]
    pub struct ResponseFuture<S, Req, C, A, K>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        // The copy the next attempt sends.
        request: Option<Req>,
        shared: Arc<Shared<S, C, A, K>>,
        progress: Progress,
        // What only a retried request needs (with the service its later attempts go to),
        // boxed so the happy path stays small to move.
        retrying: RetryingSlot<S, S::Response, S::Error>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] future: F },
        Waiting,
        Readying,
        Done,
    }
}

pin_project! {
    /// The state of a request that failed at least once.
    struct Retrying<S, Res, E> {
        #[pin]
        sleep: Sleep,
        // The service later attempts go to, driven ready before each: the one the first
        // attempt was made on, or a clone of the layer's (made when needed); none while
        // waiting after a refusal, so that nothing below stays reserved meanwhile.
        inner: Option<S>,
        // Made when the first retry is planned.
        schedule: Option<Schedule>,
        // The failed result, returned if no further attempt is made.
        last: Option<Result<Res, E>>,
        // Reports the backoff's timer to the enclosing timeouts (it ends before their
        // deadline, so they need none of their own meanwhile); dropped, takes it back.
        report: TimerReport,
    }
}

/// Where a request that failed keeps its [`Retrying`] state (`None` until it first fails).
/// Dropped with a check inline and the state out of line, so that dropping the future of a
/// request that never failed costs no call.
struct RetryingSlot<S, Res, E>(Option<Pin<Box<Retrying<S, Res, E>>>>);

impl<S, Res, E> std::ops::Deref for RetryingSlot<S, Res, E> {
    type Target = Option<Pin<Box<Retrying<S, Res, E>>>>;

    #[inline]
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<S, Res, E> std::ops::DerefMut for RetryingSlot<S, Res, E> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<S, Res, E> Drop for RetryingSlot<S, Res, E> {
    #[inline]
    fn drop(&mut self) {
        if let Some(retrying) = self.0.take() {
            drop_cold(retrying);
        }
    }
}

/// Drop a retried request's state (out of line: the common request has none).
#[cold]
#[inline(never)]
fn drop_cold<T>(value: T) {
    drop(value);
}

/// Bookkeeping of one request's attempts.
struct Progress {
    attempts: u32,
    /// The deadline in effect when the request was called.
    deadline: Option<Deadline>,
    /// When the first attempt started (read only when `max_elapsed` is set).
    started: Option<Instant>,
    /// This layer deposited for the request (no outer layer holds the budget) and so
    /// records the outcomes.
    owns_budget: bool,
}

/// The resolution of tokio's timer.
const TIMER_GRANULARITY: Duration = Duration::from_millis(1);

/// What to do after an attempt.
enum Next {
    Return,
    Retry(Duration),
    Stop(StopReason),
    OverBudget,
}

// ===== impl ResponseFuture =====

impl<S, Req, C, A, K> ResponseFuture<S, Req, C, A, K>
where
    S: Service<Req>,
{
    #[inline]
    pub(crate) fn new(
        future: S::Future,
        request: Option<Req>,
        shared: Arc<Shared<S, C, A, K>>,
        deadline: Option<Deadline>,
        started: Option<Instant>,
        owns_budget: bool,
    ) -> Self {
        Self {
            state: State::Calling { future },
            request,
            shared,
            progress: Progress {
                attempts: 0,
                deadline,
                started,
                owns_budget,
            },
            retrying: RetryingSlot(None),
        }
    }

    /// Later attempts go to `inner` (the service the first attempt was made on).
    #[cold]
    pub(crate) fn retry_on(&mut self, inner: S) {
        self.retrying.0 = Some(Box::pin(Retrying {
            sleep: tokio::time::sleep(Duration::ZERO),
            inner: Some(inner),
            schedule: None,
            last: None,
            report: TimerReport::default(),
        }));
    }
}

impl<S, Req, C, A, K> Future for ResponseFuture<S, Req, C, A, K>
where
    S: Service<Req> + Clone,
    C: Classify<S::Response, S::Error>,
    A: RetryAfter<S::Response, S::Error>,
    K: CloneRequest<Req>,
{
    type Output = Result<S::Response, S::Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The first attempt, inline: most requests end with it. Retries, out of line.
        if let StateProj::Calling { future } = this.state.as_mut().project()
            && this.retrying.is_none()
        {
            let result = ready!(future.poll(cx));
            let has_copy = this.request.is_some();
            match this
                .progress
                .after_attempt(this.shared, this.retrying, &result, has_copy)
            {
                Next::Retry(delay) => this.schedule(result, delay),
                other => {
                    this.state.set(State::Done);
                    this.progress.finish(this.shared, &other);
                    return Poll::Ready(result);
                }
            }
        }
        this.poll_retrying(cx)
    }
}

impl<S, Req, C, A, K> ResponseFutureProj<'_, S, Req, C, A, K>
where
    S: Service<Req> + Clone,
    C: Classify<S::Response, S::Error>,
    A: RetryAfter<S::Response, S::Error>,
    K: CloneRequest<Req>,
{
    /// Wait `delay` before the next attempt, keeping the failed `result`.
    #[cold]
    fn schedule(&mut self, result: Result<S::Response, S::Error>, delay: Duration) {
        let retrying = self.retrying.as_mut().expect("made by after_attempt");
        let retrying = retrying.as_mut().project();
        *retrying.last = Some(result);
        retrying.sleep.reset(time::add(Instant::now(), delay));
        self.state.set(State::Waiting);
    }

    /// [`ResponseFuture::poll`] once a retry is planned (or a service was handed over):
    /// the wait, the readying of the service and the later attempts.
    #[cold]
    #[inline(never)]
    fn poll_retrying(&mut self, cx: &mut Context<'_>) -> Poll<Result<S::Response, S::Error>> {
        let this = self;
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    // First, wait for the attempt; then decide whether it was the last.
                    let result = ready!(future.poll(cx));
                    let has_copy = this.request.is_some();
                    let next =
                        this.progress
                            .after_attempt(this.shared, this.retrying, &result, has_copy);
                    match next {
                        Next::Retry(delay) => this.schedule(result, delay),
                        other => {
                            this.state.set(State::Done);
                            this.progress.finish(this.shared, &other);
                            return Poll::Ready(result);
                        }
                    }
                }
                StateProj::Waiting => {
                    let retrying = this.retrying.as_mut().expect("waiting after a failure");
                    let retrying = retrying.as_mut().project();
                    // An outer timeout may have set an earlier deadline since the retry was
                    // scheduled: waking up after it would be pointless.
                    let wake = retrying.sleep.deadline();
                    if Deadline::current().is_some_and(|d| d.instant() <= wake) {
                        return Poll::Ready(this.give_up(StopReason::Deadline));
                    }
                    if retrying.sleep.poll(cx).is_pending() {
                        retrying.report.armed(cx.waker(), wake);
                        return Poll::Pending;
                    }
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    let retrying = this.retrying.as_mut().expect("readying after a failure");
                    let shared = &**this.shared;
                    let inner = retrying
                        .as_mut()
                        .project()
                        .inner
                        .get_or_insert_with(|| shared.spare());
                    // tower's contract: the service must be ready before every call.
                    if let Err(err) = ready!(inner.poll_ready(cx)) {
                        this.state.set(State::Done);
                        this.progress.record_total(this.shared);
                        return Poll::Ready(Err(err));
                    }
                    let Some(request) = this.request.take() else {
                        return Poll::Ready(this.give_up(StopReason::NotCloneable));
                    };
                    let more =
                        this.progress.attempts.saturating_add(1) < this.shared.config.max_attempts;
                    if more {
                        *this.request = this.shared.config.clone_request.clone_request(&request);
                    }
                    this.shared.metrics.retries.increment(1);
                    let future = {
                        let _held = this.shared.budget().map(RetryBudget::enter);
                        inner.call(request)
                    };
                    this.state.set(State::Calling { future });
                }
                StateProj::Done => panic!("retry ResponseFuture polled after completion"),
            }
        }
    }
}

impl<S, Req, C, A, K> ResponseFutureProj<'_, S, Req, C, A, K>
where
    S: Service<Req>,
{
    fn give_up(&mut self, reason: StopReason) -> Result<S::Response, S::Error> {
        self.state.set(State::Done);
        self.progress.finish(self.shared, &Next::Stop(reason));
        self.retrying
            .as_mut()
            .and_then(|r| r.as_mut().project().last.take())
            .expect("a retry is only scheduled with the failed result kept")
    }
}

/// A refusal by a layer below (an `Ignore`d result with a hint) is retried: drop the
/// service it was made on, which may still hold what that layer's `poll_ready` reserved
/// below it (a limit's slot or queue place), so that nothing is held while the request
/// waits; the next attempt clones the layer's service. Later calls of the layer hand their
/// readied service to their request until an attempt succeeds (see `Retry`'s docs).
#[cold]
#[inline(never)]
fn release<S, Res, E, C, A, K>(
    shared: &Shared<S, C, A, K>,
    retrying: &mut RetryingSlot<S, Res, E>,
) {
    shared.refused();
    if let Some(retrying) = retrying.as_mut() {
        drop(retrying.as_mut().project().inner.take());
    }
}

// ===== impl Progress =====

impl Progress {
    #[inline]
    fn after_attempt<S: Clone, Res, E, C, A, K>(
        &mut self,
        shared: &Shared<S, C, A, K>,
        retrying: &mut RetryingSlot<S, Res, E>,
        result: &Result<Res, E>,
        has_copy: bool,
    ) -> Next
    where
        C: Classify<Res, E>,
        A: RetryAfter<Res, E>,
    {
        self.attempts = self.attempts.saturating_add(1);
        shared.metrics.attempts.increment(1);
        let config = &shared.config;
        let outcome = config.classify.classify(result);
        if self.owns_budget
            && let Some(budget) = shared.budget()
        {
            budget.record(outcome);
        }
        match outcome {
            Outcome::Success => {
                // Refusals have ended. Only requests that retried or were handed a service
                // (called while refusals lasted) say so: a request answered at its first
                // attempt that was called before reads nothing more; the handed-over
                // calls, all of them while the flag is up, end it at their first success.
                if retrying.is_some() {
                    shared.succeeded();
                }
                Next::Return
            }
            Outcome::Failure => self.plan_retry(shared, retrying, result, has_copy, true, |r| {
                config.retry_after.retry_after(r)
            }),
            // Not the backend's failure: retried only when it says "later" (a rate limit's
            // retry_after, an overload), never when it says "no" (an open circuit).
            Outcome::Ignore => match config.retry_after.retry_after(result) {
                Some(hint) => {
                    let paid = !config.classify.never_sent(result);
                    let next =
                        self.plan_retry(shared, retrying, result, has_copy, paid, |_| Some(hint));
                    if matches!(next, Next::Retry(_)) {
                        release(shared, retrying);
                    }
                    next
                }
                None => Next::Return,
            },
        }
    }

    /// The failure path, kept out of line so the happy path stays small.
    #[cold]
    #[inline(never)]
    fn plan_retry<S: Clone, Res, E, C, A, K>(
        &mut self,
        shared: &Shared<S, C, A, K>,
        retrying: &mut RetryingSlot<S, Res, E>,
        result: &Result<Res, E>,
        has_copy: bool,
        paid: bool,
        hint: impl FnOnce(&Result<Res, E>) -> Option<Duration>,
    ) -> Next {
        let config = &shared.config;
        if self.attempts >= config.max_attempts {
            return Next::Stop(StopReason::MaxAttempts);
        }
        if !has_copy {
            return Next::Stop(StopReason::NotCloneable);
        }
        let retrying = retrying.get_or_insert_with(|| {
            Box::pin(Retrying {
                sleep: tokio::time::sleep(Duration::ZERO),
                inner: None,
                schedule: None,
                last: None,
                report: TimerReport::default(),
            })
        });
        let schedule = retrying
            .as_mut()
            .project()
            .schedule
            .get_or_insert_with(|| config.backoff.schedule(shared.rng()));
        let Some(mut delay) = schedule.next() else {
            return Next::Stop(StopReason::ScheduleEnded);
        };
        if let Some(hint) = hint(result) {
            // Never sooner than the hint: an earlier attempt would only be refused again.
            // A hint longer than the longest wait this layer accepts ends retrying; bounded
            // by time, the layer accepts any wait that ends within its limits.
            if hint > config.backoff.get_max_delay() && !config.until_deadline {
                return Next::Stop(StopReason::RetryAfterTooLong);
            }
            delay = delay.max(hint);
        }
        if let Some(reason) = self.past_limits(config.max_elapsed, delay) {
            return Next::Stop(reason);
        }
        if paid
            && let Some(budget) = shared.budget()
            && !budget.withdraw()
        {
            return Next::OverBudget;
        }
        shared.emitter.emit(|| RetryEvent::Retrying {
            attempt: self.attempts,
            delay,
        });
        Next::Retry(delay)
    }

    /// Whether waiting `delay` would reach the deadline or pass `max_elapsed`.
    fn past_limits(&self, max_elapsed: Option<Duration>, delay: Duration) -> Option<StopReason> {
        let now = Instant::now();
        // tokio's timer fires on the next millisecond tick, so the wake-up can be up to 1 ms
        // after `now + delay`. A delay of "forever" wakes at the far future, past any limit.
        let wake = time::add(now, delay.saturating_add(TIMER_GRANULARITY));
        let deadline = Deadline::earliest(self.deadline, Deadline::current());
        if deadline.is_some_and(|d| wake >= d.instant()) {
            return Some(StopReason::Deadline);
        }
        // `max_elapsed` of "forever" (about 30 years or more) is no limit at all.
        let max_elapsed = max_elapsed.filter(|m| !time::is_forever(*m));
        let limit = self.started.zip(max_elapsed).map(|(s, m)| time::add(s, m));
        if limit.is_some_and(|limit| wake > limit) {
            return Some(StopReason::MaxElapsed);
        }
        None
    }

    #[inline]
    fn finish<S, C, A, K>(&self, shared: &Shared<S, C, A, K>, next: &Next) {
        self.record_total(shared);
        if !matches!(next, Next::Return) {
            self.report_stop(shared, next);
        }
    }

    #[cold]
    #[inline(never)]
    fn report_stop<S, C, A, K>(&self, shared: &Shared<S, C, A, K>, next: &Next) {
        let attempts = self.attempts;
        match *next {
            Next::Stop(reason) => {
                shared.metrics.exhausted.increment(1);
                shared
                    .emitter
                    .emit(|| RetryEvent::Exhausted { attempts, reason });
            }
            Next::OverBudget => {
                shared.metrics.budget_rejected.increment(1);
                shared
                    .emitter
                    .emit(|| RetryEvent::BudgetExhausted { attempts });
            }
            Next::Return | Next::Retry(_) => {}
        }
    }

    #[inline]
    fn record_total<S, C, A, K>(&self, shared: &Shared<S, C, A, K>) {
        let histogram = &shared.metrics.attempts_per_request;
        if histogram.is_enabled() {
            histogram.record(f64::from(self.attempts));
        }
    }
}

impl<S, Req, C, A, K> fmt::Debug for ResponseFuture<S, Req, C, A, K>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.progress.attempts)
            .finish_non_exhaustive()
    }
}
