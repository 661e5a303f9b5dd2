//! The concurrency limit service and its shared state.

use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::metrics::Gauge;
use palisade_core::{ConfigError, Emitter, Listeners, Overloaded};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::PollSemaphore;
use tower_service::Service;

use super::config::ConcurrencyLimitConfig;
use super::future::ResponseFuture;
use super::handle::ConcurrencyLimitHandle;
use crate::event::{LimitEvent, LimitKind};
use crate::metrics::Metrics;
use crate::wait_queue::WaitQueue;

// ===== Shared =====

/// The state all clones of one layer share.
pub(crate) struct Shared {
    pub(crate) semaphore: Arc<Semaphore>,
    pub(crate) max_in_flight: AtomicUsize,
    /// Permits still out after the limit was lowered: the next ones acquired are forgotten
    /// instead of used, until the debt is paid.
    pub(crate) debt: AtomicUsize,
    /// Serializes changes of the limit.
    resize: Mutex<()>,
    /// Nanoseconds (saturating).
    max_wait: AtomicU64,
    /// Calls waiting for a permit (wait mode), at most `max_queue` (or `max_in_flight`).
    pub(crate) queue: WaitQueue,
    pub(crate) emitter: Emitter<LimitEvent>,
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
            max_wait: AtomicU64::new(palisade_core::time::nanos(config.max_wait)),
            queue: WaitQueue::new(config.max_queue),
            emitter: Emitter::new(config.name, listeners),
            metrics,
        }
    }

    /// Use `permit`, or forget it to pay down the debt of a lowered limit.
    #[inline]
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

    fn max_wait(&self) -> Duration {
        match self.max_wait.load(Ordering::Relaxed) {
            u64::MAX => Duration::MAX,
            n => Duration::from_nanos(n),
        }
    }

    pub(crate) fn config(&self) -> ConcurrencyLimitConfig {
        let mut config =
            ConcurrencyLimitConfig::with_max(self.max_in_flight.load(Ordering::Relaxed));
        config.name = self.emitter.name().clone();
        config.max_wait = self.max_wait();
        config.max_queue = self.queue.configured();
        config
    }

    pub(crate) fn update(&self, config: &ConcurrencyLimitConfig) -> Result<(), ConfigError> {
        config.validate()?;
        palisade_core::config::ensure_same_name(
            "concurrency_limit",
            self.emitter.name(),
            &config.name,
        )?;
        self.set_max_in_flight(config.max_in_flight)?;
        self.max_wait.store(
            palisade_core::time::nanos(config.max_wait),
            Ordering::Relaxed,
        );
        self.queue.set(config.max_queue);
        Ok(())
    }

    pub(crate) fn set_max_in_flight(&self, max: usize) -> Result<(), ConfigError> {
        let mut config = ConcurrencyLimitConfig::with_max(max);
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

    #[cold]
    #[inline(never)]
    pub(crate) fn rejected(&self, limit: &'static str) -> Overloaded {
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
            .field("waiting", &self.queue.waiting())
            .finish_non_exhaustive()
    }
}

/// A held permit: one call in flight. Dropping it frees the permit.
#[derive(Debug)]
pub(crate) struct InFlight {
    _permit: OwnedSemaphorePermit,
    // Its own handle, not the shared state; a disabled one unless it feeds a recorder, so
    // without one (or without the `metrics` feature) a call clones nothing for it.
    gauge: Gauge,
}

impl InFlight {
    #[inline]
    fn new(permit: OwnedSemaphorePermit, shared: &Shared) -> Self {
        let gauge = &shared.metrics.in_flight;
        let gauge = if gauge.is_enabled() {
            gauge.add(1.0);
            gauge.clone()
        } else {
            Gauge::default()
        };
        Self {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for InFlight {
    #[inline]
    fn drop(&mut self) {
        self.gauge.add(-1.0);
    }
}

/// A place in the wait queue (wait mode): counted as waiting while it lives, from
/// `poll_ready` until the call is admitted, refused or dropped.
#[derive(Debug)]
pub(crate) struct QueueSlot {
    shared: Arc<Shared>,
}

impl QueueSlot {
    fn join(shared: &Arc<Shared>) -> Option<Self> {
        let limit = shared.max_in_flight.load(Ordering::Relaxed);
        if !shared.queue.try_join(limit) {
            return None;
        }
        Some(Self {
            shared: Arc::clone(shared),
        })
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.shared.queue.leave();
    }
}

pin_project! {
    /// A call waiting for a permit in its response future (boxed there: only waiting calls
    /// pay for it), with the readied inner service and the request.
    pub(crate) struct Wait<S, Req> {
        slot: Option<QueueSlot>,
        semaphore: PollSemaphore,
        started: Instant,
        // Gives up here: `max_wait` after the call, or the caller's deadline if earlier.
        #[pin]
        give_up: Sleep,
        // The deadline, not `max_wait`, bounds the wait.
        by_deadline: bool,
        inner: Option<S>,
        req: Option<Req>,
    }
}

impl<S, Req> Wait<S, Req> {
    /// Start waiting now; the caller's deadline in effect now bounds the wait.
    fn new(slot: QueueSlot, inner: S, req: Req) -> Self {
        let started = Instant::now();
        let (give_up, by_deadline) = crate::give_up_at(started, slot.shared.max_wait());
        Self {
            semaphore: PollSemaphore::new(Arc::clone(&slot.shared.semaphore)),
            slot: Some(slot),
            started,
            give_up: tokio::time::sleep_until(give_up),
            by_deadline,
            inner: Some(inner),
            req: Some(req),
        }
    }

    /// Ready with the permit once one is ours, or with the refusal once the wait ends.
    pub(crate) fn poll_permit(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<InFlight, Overloaded>> {
        let this = self.project();
        let Some(slot) = this.slot.take() else {
            panic!("ResponseFuture polled after completion");
        };
        let shared = Arc::clone(&slot.shared);
        *this.slot = Some(slot);
        loop {
            if let Poll::Ready(permit) = this.semaphore.poll_acquire(cx) {
                let permit = permit.expect("the semaphore is never closed");
                let Some(permit) = shared.pay_debt(permit) else {
                    continue;
                };
                *this.slot = None;
                admitted(&shared, *this.started);
                shared.metrics.admitted.increment(1);
                return Poll::Ready(Ok(InFlight::new(permit, &shared)));
            }
            if this.give_up.poll(cx).is_pending() {
                return Poll::Pending;
            }
            *this.slot = None;
            let limit = if *this.by_deadline {
                "deadline"
            } else {
                "max wait"
            };
            return Poll::Ready(Err(shared.rejected(limit)));
        }
    }

    /// Call the readied service with the request; once, after admission.
    pub(crate) fn call(self: Pin<&mut Self>) -> S::Future
    where
        S: Service<Req>,
    {
        let this = self.project();
        let mut inner = this.inner.take().expect("called once");
        let req = this.req.take().expect("called once");
        inner.call(req)
    }
}

// ===== ConcurrencyLimit =====

/// A service with at most N calls in flight across all clones; built by
/// [`ConcurrencyLimitLayer`](super::ConcurrencyLimitLayer).
///
/// `poll_ready` takes a free permit if there is one, then readies the inner service; `call`
/// moves the permit into the [`ResponseFuture`]. A permit taken in `poll_ready` is released
/// if the service is dropped before `call`.
///
/// When every permit is taken:
///
/// - **reject mode** (`max_wait` zero, the default), or a full queue: `poll_ready` still
///   returns `Ready(Ok)` and `call` fails with [`Overloaded`] without calling the inner
///   service;
/// - **wait mode**: `poll_ready` takes a place in the queue and readies the inner service;
///   `call` moves the readied service and the request into the response future, which
///   waits for a permit in FIFO order (tokio's semaphore is fair), then calls it. The wait
///   is inside the caller's deadline: an outer timeout's future covers it, and it gives up
///   at that deadline ([`Deadline::current`](palisade_core::Deadline::current), set while
///   `call` runs) or after `max_wait`, whichever comes first, with [`Overloaded`]
///   (`"deadline"` or `"max wait"`). Hence `S: Clone`: the waiting call takes the readied
///   service and leaves a clone (wrap a service that is not `Clone` in
///   `tower::buffer::Buffer`, and carry the deadline across it on the request, see the
///   crate docs).
pub struct ConcurrencyLimit<S> {
    inner: S,
    shared: Arc<Shared>,
    state: Readiness,
}

enum Readiness {
    /// Not yet asked for a permit.
    Idle,
    /// Holding a permit for the next call.
    Permit(OwnedSemaphorePermit),
    /// Wait mode, every permit taken: the next call waits for one in its future.
    Queued(QueueSlot),
    /// The next call is rejected for this reason.
    Rejected(&'static str),
}

impl<S> ConcurrencyLimit<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self {
            inner,
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

    /// What the next call gets: a free permit, a place in the queue, or a refusal.
    #[inline]
    fn admit(&self) -> Readiness {
        loop {
            return match Arc::clone(&self.shared.semaphore).try_acquire_owned() {
                Ok(permit) => match self.shared.pay_debt(permit) {
                    Some(permit) => Readiness::Permit(permit),
                    None => continue,
                },
                Err(_) if self.shared.max_wait().is_zero() => Readiness::Rejected("max in-flight"),
                Err(_) => match QueueSlot::join(&self.shared) {
                    Some(slot) => Readiness::Queued(slot),
                    None => Readiness::Rejected("queue full"),
                },
            };
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
    S: Service<Req> + Clone,
    S::Error: From<Overloaded>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Readiness::Idle = self.state {
            self.state = self.admit();
        }
        match self.state {
            // The call will be refused: do not reserve the inner service for it.
            Readiness::Rejected(_) => Poll::Ready(Ok(())),
            _ => self.inner.poll_ready(cx),
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match std::mem::replace(&mut self.state, Readiness::Idle) {
            Readiness::Permit(permit) => {
                self.shared.metrics.admitted.increment(1);
                let permit = InFlight::new(permit, &self.shared);
                ResponseFuture::called(self.inner.call(req), permit)
            }
            Readiness::Queued(slot) => {
                // The readied service waits with the request; a clone takes its place.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::waiting(Wait::new(slot, inner, req))
            }
            Readiness::Rejected(limit) => ResponseFuture::rejected(self.shared.rejected(limit)),
            Readiness::Idle => {
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
            Readiness::Queued(_) => "queued",
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
