//! The concurrency limit service and its shared state.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::metrics::Gauge;
use palisade_core::{ConfigError, Emitter, Listeners, Name, Overloaded};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::PollSemaphore;
use tower_service::Service;

use super::config::ConcurrencyLimitConfig;
use super::future::ResponseFuture;
use crate::event::{LimitEvent, LimitKind};
use crate::metrics::Metrics;

// ===== Shared =====

/// The state all clones of one layer share.
pub(crate) struct Shared {
    semaphore: Arc<Semaphore>,
    max_in_flight: AtomicUsize,
    /// Permits still out after the limit was lowered: the next ones acquired are forgotten
    /// instead of used, until the debt is paid.
    debt: AtomicUsize,
    /// Serializes changes of the limit.
    resize: Mutex<()>,
    max_wait: Duration,
    max_queue: usize,
    waiting: AtomicUsize,
    emitter: Emitter<LimitEvent>,
    metrics: Metrics,
}

impl Shared {
    pub(crate) fn new(config: ConcurrencyLimitConfig, listeners: Listeners<LimitEvent>) -> Self {
        let metrics = Metrics::register(&config.name, LimitKind::Concurrency);
        metrics.limit.set(config.max_in_flight as f64);
        Self {
            semaphore: Arc::new(Semaphore::new(config.max_in_flight)),
            max_in_flight: AtomicUsize::new(config.max_in_flight),
            debt: AtomicUsize::new(0),
            resize: Mutex::new(()),
            max_wait: config.max_wait,
            max_queue: config.effective_max_queue(),
            waiting: AtomicUsize::new(0),
            emitter: Emitter::new(config.name, listeners),
            metrics,
        }
    }

    /// Use `permit`, or forget it to pay down the debt of a lowered limit.
    fn pay_debt(&self, permit: OwnedSemaphorePermit) -> Option<OwnedSemaphorePermit> {
        let paid = self
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1));
        if paid.is_ok() {
            permit.forget();
            return None;
        }
        Some(permit)
    }

    fn set_max_in_flight(&self, max: usize) -> Result<(), ConfigError> {
        let mut config = ConcurrencyLimitConfig::new(max);
        config.name = self.emitter.name().clone();
        config.validate()?;
        let _resizing = self.resize.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.max_in_flight.swap(max, Ordering::AcqRel);
        if max > old {
            // Cancel debt first: those permits are still out and will come back.
            let grow = max - old;
            let before = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    Some(d.saturating_sub(grow))
                })
                .unwrap_or(0);
            self.semaphore.add_permits(grow - before.min(grow));
        } else {
            let shrink = old - max;
            let forgotten = self.semaphore.forget_permits(shrink);
            self.debt.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
        self.metrics.limit.set(max as f64);
        Ok(())
    }

    fn rejected(&self, limit: &'static str) -> Overloaded {
        self.metrics.rejected.increment(1);
        self.emitter.emit(|| LimitEvent::Overloaded {
            kind: LimitKind::Concurrency,
            limit,
        });
        Overloaded::new(self.emitter.name().clone(), limit)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", self.emitter.name())
            .field("max_in_flight", &self.max_in_flight.load(Ordering::Relaxed))
            .field("available", &self.semaphore.available_permits())
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Reads a concurrency limit's state; from [`ConcurrencyLimitLayer::handle`](super::ConcurrencyLimitLayer::handle).
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitHandle {
    shared: Arc<Shared>,
}

impl ConcurrencyLimitHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The limit's name.
    pub fn name(&self) -> &Name {
        self.shared.emitter.name()
    }

    /// The limit in effect.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::Acquire)
    }

    /// Change the limit at run time, for all clones. Raising it admits waiting calls at
    /// once; lowering it takes effect as calls in flight finish (none is cancelled).
    /// Refuses zero.
    pub fn set_max_in_flight(&self, max: usize) -> Result<(), ConfigError> {
        self.shared.set_max_in_flight(max)
    }

    /// Permits held now: calls in flight plus services readied but not yet called.
    pub fn in_flight(&self) -> usize {
        let shared = &self.shared;
        let issued =
            shared.max_in_flight.load(Ordering::Acquire) + shared.debt.load(Ordering::Acquire);
        issued.saturating_sub(shared.semaphore.available_permits())
    }

    /// Calls waiting for a permit now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }
}

/// A held permit: one call in flight. Dropping it frees the permit.
#[derive(Debug)]
pub(crate) struct InFlight {
    _permit: OwnedSemaphorePermit,
    // Its own handle, not the shared state: without the `metrics` feature it is zero-sized.
    gauge: Gauge,
}

impl InFlight {
    fn new(permit: OwnedSemaphorePermit, shared: &Shared) -> Self {
        shared.metrics.in_flight.add(1.0);
        Self {
            _permit: permit,
            gauge: shared.metrics.in_flight.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.add(-1.0);
    }
}

/// A call waiting for a permit in wait mode; counted as waiting while it lives.
struct Waiting {
    started: Instant,
    timeout: Pin<Box<Sleep>>,
    shared: Arc<Shared>,
}

impl Waiting {
    fn join(shared: &Arc<Shared>) -> Option<Self> {
        let queued = shared.waiting.fetch_add(1, Ordering::AcqRel);
        if queued >= shared.max_queue {
            // The queue is full: leave again.
            shared.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let started = Instant::now();
        Some(Self {
            started,
            timeout: Box::pin(tokio::time::sleep_until(crate::give_up_at(
                started,
                shared.max_wait,
            ))),
            shared: Arc::clone(shared),
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

// ===== ConcurrencyLimit =====

/// A service with at most N calls in flight across all clones; built by
/// [`ConcurrencyLimitLayer`](super::ConcurrencyLimitLayer).
///
/// `poll_ready` takes a permit (waiting for one in wait mode, in FIFO order: tokio's
/// semaphore is fair), then readies the inner service; `call` moves the permit into the
/// [`ResponseFuture`]. A permit taken in `poll_ready` is released if the service is dropped
/// before `call`. When no permit can be had (reject mode, a full queue, or the max wait
/// elapsed), `poll_ready` still returns `Ready(Ok)` and `call` fails with
/// [`Overloaded`](palisade_core::Overloaded) without calling the inner service.
pub struct ConcurrencyLimit<S> {
    inner: S,
    shared: Arc<Shared>,
    semaphore: PollSemaphore,
    state: Readiness,
}

enum Readiness {
    /// Not yet asked for a permit.
    Idle,
    /// Waiting for a permit (wait mode).
    Waiting(Waiting),
    /// Holding a permit for the next call.
    Permit(OwnedSemaphorePermit),
    /// The next call is rejected for this reason.
    Rejected(&'static str),
}

impl<S> ConcurrencyLimit<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            semaphore: PollSemaphore::new(Arc::clone(&shared.semaphore)),
            shared,
            state: Readiness::Idle,
        }
    }

    /// A handle reading the limit's state.
    pub fn handle(&self) -> ConcurrencyLimitHandle {
        ConcurrencyLimitHandle::new(Arc::clone(&self.shared))
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, consuming the limit.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Move on from `Idle` or `Waiting`: to `Permit` or `Rejected`, or stay waiting.
    fn poll_permit(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.state {
                Readiness::Permit(_) | Readiness::Rejected(_) => return Poll::Ready(()),
                Readiness::Idle => {
                    self.state = match Arc::clone(&self.shared.semaphore).try_acquire_owned() {
                        Ok(permit) => match self.shared.pay_debt(permit) {
                            Some(permit) => Readiness::Permit(permit),
                            None => continue,
                        },
                        Err(_) if self.shared.max_wait.is_zero() => {
                            Readiness::Rejected("max in-flight")
                        }
                        Err(_) => match Waiting::join(&self.shared) {
                            Some(waiting) => Readiness::Waiting(waiting),
                            None => Readiness::Rejected("queue full"),
                        },
                    };
                }
                Readiness::Waiting(waiting) => {
                    if let Poll::Ready(permit) = self.semaphore.poll_acquire(cx) {
                        let permit = permit.expect("the semaphore is never closed");
                        let Some(permit) = self.shared.pay_debt(permit) else {
                            continue;
                        };
                        admitted(&self.shared, waiting.started);
                        self.state = Readiness::Permit(permit);
                        continue;
                    }
                    if waiting.timeout.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // Max wait elapsed: leave the semaphore's queue (a fresh `PollSemaphore`
                    // drops the pending acquire, returning any permit it was just handed).
                    self.semaphore = PollSemaphore::new(Arc::clone(&self.shared.semaphore));
                    self.state = Readiness::Rejected("max wait");
                }
            }
        }
    }
}

fn admitted(shared: &Shared, started: Instant) {
    if shared.emitter.is_active() || shared.metrics.wait.is_enabled() {
        let waited = started.elapsed();
        shared.metrics.wait.record(waited.as_secs_f64());
        shared.emitter.emit(|| LimitEvent::Admitted {
            kind: LimitKind::Concurrency,
            waited,
        });
    }
}

impl<S, Req> Service<Req> for ConcurrencyLimit<S>
where
    S: Service<Req>,
    S::Error: From<Overloaded>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        std::task::ready!(self.poll_permit(cx));
        match self.state {
            // The call will be refused: do not reserve the inner service for it.
            Readiness::Rejected(_) => Poll::Ready(Ok(())),
            _ => self.inner.poll_ready(cx),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match std::mem::replace(&mut self.state, Readiness::Idle) {
            Readiness::Permit(permit) => {
                self.shared.metrics.admitted.increment(1);
                let permit = InFlight::new(permit, &self.shared);
                ResponseFuture::called(self.inner.call(req), permit)
            }
            Readiness::Rejected(limit) => ResponseFuture::rejected(self.shared.rejected(limit)),
            Readiness::Idle | Readiness::Waiting(_) => {
                panic!("ConcurrencyLimit::call without poll_ready returning Ready first")
            }
        }
    }
}

impl<S: Clone> Clone for ConcurrencyLimit<S> {
    /// A clone shares the permits but not readiness: it must be polled ready itself.
    fn clone(&self) -> Self {
        Self::from_shared(self.inner.clone(), Arc::clone(&self.shared))
    }
}

impl<S: fmt::Debug> fmt::Debug for ConcurrencyLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            Readiness::Idle => "idle",
            Readiness::Waiting(_) => "waiting",
            Readiness::Permit(_) => "permit",
            Readiness::Rejected(_) => "rejected",
        };
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .field("state", &state)
            .finish()
    }
}
