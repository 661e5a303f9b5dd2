//! The rate limit's response future, where wait mode waits.

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use palisade_core::RateLimited;
use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::PollSemaphore;
use tower_service::Service;

use super::limiter::{Common, Limiter};
use crate::event::{LimitEvent, LimitKind};

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit).
    ///
    /// # Wait mode
    ///
    /// A call that does not conform and whose wait would fit in `max_wait` waits here, with
    /// the readied inner service and the request, before calling the service:
    ///
    /// - **Fair order** (direct limits): waiting calls line up on a FIFO turnstile (a tokio
    ///   semaphore with one permit). Only the head of the line checks the limiter: it sleeps
    ///   until governor's `NotUntil` instant for its cells, takes them, calls the service
    ///   and passes the turn on. While anyone waits, new calls join the end of the line
    ///   instead of taking the head's cells, so a large request is never starved by small
    ///   ones. Keyed limits do not share one line (a noisy key would hold up the others):
    ///   each waiting call sleeps until its own key's `NotUntil` instant and retries.
    /// - **Max wait**: a call whose cells would conform only after its `max_wait` (or after
    ///   the request's ambient [`Deadline`](palisade_core::Deadline), set by an outer
    ///   timeout, if that comes first) is rejected with [`RateLimited`] as soon as that is
    ///   known, carrying the exact wait; one still in line when its wait ends is rejected
    ///   with the time until the head of the line expects its cells (an estimate).
    /// - **Nothing is lost on drop**: cells are taken only at the instant the call is
    ///   admitted, right before the service is called. Dropping this future while it waits
    ///   consumes no quota and hands the turn to the next in line.
    pub struct ResponseFuture<S, Req, L>
    where
        S: Service<Req>,
        L: Limiter<Req>,
    {
        #[pin]
        state: State<S, Req, L>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, L>
    where
        S: Service<Req>,
        L: Limiter<Req>,
    {
        Called { #[pin] fut: S::Future },
        Waiting { wait: Pin<Box<Wait<S, Req, L, L::Key>>> },
        Rejected { error: Option<RateLimited> },
    }
}

impl<S, Req, L> ResponseFuture<S, Req, L>
where
    S: Service<Req>,
    L: Limiter<Req>,
{
    #[inline]
    pub(crate) fn called(fut: S::Future) -> Self {
        Self {
            state: State::Called { fut },
        }
    }

    pub(crate) fn rejected(error: RateLimited) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
        }
    }

    pub(crate) fn waiting(
        common: Arc<Common>,
        limiter: L,
        key: L::Key,
        cells: NonZeroU32,
        conforms_at: Option<Instant>,
        inner: S,
        req: Req,
    ) -> Self {
        let wait = Wait::new(common, limiter, key, cells, conforms_at, inner, req);
        Self {
            state: State::Waiting {
                wait: Box::pin(wait),
            },
        }
    }
}

impl<S, Req, L> Future for ResponseFuture<S, Req, L>
where
    S: Service<Req>,
    S::Error: From<RateLimited>,
    L: Limiter<Req>,
{
    type Output = Result<S::Response, S::Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        // The admitted call, inline; waiting and refusals out of line.
        if let StateProj::Called { fut } = state.as_mut().project() {
            return fut.poll(cx);
        }
        poll_other(state, cx)
    }
}

/// [`ResponseFuture::poll`] for a call that waits for its cells or was refused.
#[cold]
#[inline(never)]
fn poll_other<S, Req, L>(
    mut state: Pin<&mut State<S, Req, L>>,
    cx: &mut Context<'_>,
) -> Poll<Result<S::Response, S::Error>>
where
    S: Service<Req>,
    S::Error: From<RateLimited>,
    L: Limiter<Req>,
{
    loop {
        match state.as_mut().project() {
            StateProj::Called { fut } => return fut.poll(cx),
            StateProj::Rejected { error } => {
                let error = error.take().expect("polled after completion");
                return Poll::Ready(Err(error.into()));
            }
            StateProj::Waiting { wait } => {
                // Wait for our cells, then call the service we readied before waiting.
                if let Err(rejected) = ready!(wait.as_mut().poll_admit(cx)) {
                    return Poll::Ready(Err(rejected.into()));
                }
                let fut = wait.as_mut().call();
                state.set(State::Called { fut });
            }
        }
    }
}

impl<S, Req, L> fmt::Debug for ResponseFuture<S, Req, L>
where
    S: Service<Req>,
    L: Limiter<Req>,
{
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

// ===== impl Wait =====

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In line for the turnstile (direct limits only).
    InLine,
    /// Our turn: check the limiter now.
    Check,
    /// Sleeping until our cells conform.
    Sleeping,
}

pin_project! {
    /// A call waiting for its cells (boxed: only calls that wait pay for it).
    struct Wait<S, Req, L, K> {
        common: Arc<Common>,
        limiter: L,
        key: K,
        cells: NonZeroU32,
        inner: Option<S>,
        req: Option<Req>,
        started: Instant,
        deadline: Instant,
        phase: Phase,
        turnstile: Option<PollSemaphore>,
        turn: Option<OwnedSemaphorePermit>,
        in_line: Option<InLine>,
        #[pin]
        sleep: Sleep,
    }
}

/// Counts a call (and its cells) as waiting while it lives, so newcomers queue behind it
/// and know how long the line ahead of them is.
struct InLine(Arc<Common>, u64);

impl InLine {
    fn join(common: &Arc<Common>, cells: NonZeroU32) -> Self {
        let cells = u64::from(cells.get());
        common.queued.fetch_add(cells, Ordering::AcqRel);
        common.waiting.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(common), cells)
    }
}

impl Drop for InLine {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        self.0.queued.fetch_sub(self.1, Ordering::AcqRel);
    }
}

impl<S, Req, L> Wait<S, Req, L, L::Key>
where
    S: Service<Req>,
    L: Limiter<Req>,
{
    fn new(
        common: Arc<Common>,
        limiter: L,
        key: L::Key,
        cells: NonZeroU32,
        conforms_at: Option<Instant>,
        inner: S,
        req: Req,
    ) -> Self {
        let started = Instant::now();
        let (deadline, _) = crate::give_up_at(started, common.max_wait);
        let (phase, turnstile, in_line, wake_at) = if limiter.fifo() {
            let turnstile = PollSemaphore::new(Arc::clone(&common.turnstile));
            let in_line = InLine::join(&common, cells);
            (Phase::InLine, Some(turnstile), Some(in_line), deadline)
        } else if let Some(at) = conforms_at {
            // The check in `call` already said when: sleep until then.
            (Phase::Sleeping, None, None, at)
        } else {
            (Phase::Check, None, None, deadline)
        };
        Self {
            common,
            limiter,
            key,
            cells,
            inner: Some(inner),
            req: Some(req),
            started,
            deadline,
            phase,
            turnstile,
            turn: None,
            in_line,
            sleep: tokio::time::sleep_until(wake_at),
        }
    }

    /// Ready once the call's cells were taken (admitted) or the call was rejected.
    fn poll_admit(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), RateLimited>> {
        let mut this = self.project();
        loop {
            match *this.phase {
                Phase::InLine => {
                    let turnstile = this
                        .turnstile
                        .as_mut()
                        .expect("fifo waits have a turnstile");
                    if let Poll::Ready(turn) = turnstile.poll_acquire(cx) {
                        // The turnstile is never closed, so a turn always comes.
                        *this.turn = turn;
                        *this.phase = Phase::Check;
                        continue;
                    }
                    // Still in line: give up when our max wait ends.
                    ready!(this.sleep.as_mut().poll(cx));
                    let now = Instant::now();
                    let retry_after = this.common.next_conform().saturating_duration_since(now);
                    return Poll::Ready(Err(reject(this.common, *this.cells, retry_after)));
                }
                Phase::Check => {
                    match this
                        .common
                        .check::<Req, L>(&*this.limiter, this.key, *this.cells)
                    {
                        Ok(()) => {
                            if this.in_line.is_some() {
                                this.common.line_moved(Instant::now());
                            }
                            admitted(this.common, *this.started);
                            return Poll::Ready(Ok(()));
                        }
                        Err(at) => {
                            if at > *this.deadline {
                                let retry_after = at.saturating_duration_since(Instant::now());
                                return Poll::Ready(Err(reject(
                                    this.common,
                                    *this.cells,
                                    retry_after,
                                )));
                            }
                            this.common.set_next_conform(at);
                            this.sleep.as_mut().reset(at);
                            *this.phase = Phase::Sleeping;
                        }
                    }
                }
                Phase::Sleeping => {
                    ready!(this.sleep.as_mut().poll(cx));
                    *this.phase = Phase::Check;
                }
            }
        }
    }

    /// Call the readied service with the request; only once, after admission.
    fn call(self: Pin<&mut Self>) -> S::Future {
        let this = self.project();
        let mut inner = this.inner.take().expect("called once");
        let req = this.req.take().expect("called once");
        inner.call(req)
    }
}

fn admitted(common: &Common, started: Instant) {
    common.metrics.admitted.increment(1);
    if common.emitter.is_active() || common.metrics.wait.is_enabled() {
        let waited = started.elapsed();
        common.metrics.wait.record(waited.as_secs_f64());
        common.emitter.emit(|| LimitEvent::Admitted {
            kind: LimitKind::Rate,
            waited,
        });
    }
}

fn reject(common: &Common, cells: NonZeroU32, retry_after: std::time::Duration) -> RateLimited {
    common.metrics.rejected.increment(1);
    common.emitter.emit(|| LimitEvent::RateLimited {
        cost: cells.get(),
        retry_after,
    });
    RateLimited::new(common.emitter.name().clone(), retry_after)
}
