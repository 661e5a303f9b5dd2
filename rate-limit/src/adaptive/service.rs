//! The adaptive limit service and its shared state.

use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{
    Classify, ConfigError, Emitter, Listeners, Outcome, Overloaded, config::ensure, deadline, time,
};
use pin_project_lite::pin_project;
use tokio::sync::{Notify, futures::OwnedNotified};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::Sample;
use super::config::{AdaptiveLimitConfig, Algorithm};
use super::future::ResponseFuture;
use super::gradient::GradientState;
use super::handle::AdaptiveLimitHandle;
use crate::event::{LimitEvent, LimitKind};
use crate::metrics::Metrics;
use crate::wait_queue::WaitQueue;

// ===== Shared =====

/// How finely [`Shared::last_fast`] tracks the latest fast answer, nanoseconds.
const FAST_GRAIN: u64 = 1_000_000;

/// The state all clones of one layer share.
pub(crate) struct Shared {
    /// The limit admission reads: a plain atomic, so admitting takes no lock.
    pub(crate) limit: AtomicUsize,
    pub(crate) in_flight: AtomicUsize,
    /// The algorithm and its parameters.
    algorithm: Algorithm,
    /// The gradient's windowed minimum round trip (unused by AIMD).
    gradient: GradientState,
    /// The exact limit, as `f64` bits; admission uses its floor (`limit`).
    exact: AtomicU64,
    /// When the limit last decreased, in nanoseconds since `origin` plus one (0: never):
    /// calls started before it do not decrease the limit again (one decrease per round
    /// trip).
    last_decrease: AtomicU64,
    /// When the latest fast answer (AIMD: within the latency threshold) ended, nanoseconds
    /// since `origin` plus one (0: never), kept to within [`FAST_GRAIN`]: a slow call that
    /// gave no sample (a timed-out attempt) decreases the limit only if no fast answer
    /// ended while it ran.
    last_fast: AtomicU64,
    origin: Instant,
    /// The bounds, changed at run time by [`AdaptiveLimitHandle::update`].
    min_limit: AtomicUsize,
    max_limit: AtomicUsize,
    pub(crate) emitter: Emitter<LimitEvent>,
    metrics: Metrics,
    /// The config in effect (the limit moves; the algorithm is fixed).
    pub(crate) config: RwLock<AdaptiveLimitConfig>,
    /// Wait mode: how long a call may wait for a slot, nanoseconds (0: reject mode).
    max_wait: AtomicU64,
    /// Calls waiting for a slot (wait mode), at most `max_queue` (or the current limit).
    pub(crate) queue: WaitQueue,
    /// Wakes a waiting call when a slot frees or the limit grows.
    notify: Arc<Notify>,
}

impl Shared {
    pub(crate) fn new(config: AdaptiveLimitConfig, listeners: Listeners<LimitEvent>) -> Self {
        let metrics = Metrics::register(&config.name, LimitKind::Adaptive);
        metrics.limit.set(config.initial_limit as f64);
        let kept = config.clone();
        Self {
            config: RwLock::new(kept),
            limit: AtomicUsize::new(config.initial_limit),
            in_flight: AtomicUsize::new(0),
            algorithm: config.algorithm,
            gradient: GradientState::default(),
            exact: AtomicU64::new((config.initial_limit as f64).to_bits()),
            last_decrease: AtomicU64::new(0),
            last_fast: AtomicU64::new(0),
            origin: Instant::now(),
            min_limit: AtomicUsize::new(config.min_limit),
            max_limit: AtomicUsize::new(config.max_limit),
            max_wait: AtomicU64::new(time::nanos(config.max_wait)),
            queue: WaitQueue::new(config.max_queue),
            notify: Arc::new(Notify::new()),
            emitter: Emitter::new(config.name, listeners),
            metrics,
        }
    }

    /// How long a call may wait for a slot (zero: reject mode).
    #[inline]
    fn max_wait(&self) -> Duration {
        time::from_nanos(self.max_wait.load(Ordering::Relaxed))
    }

    /// A slot was freed or added: wake a waiting call, if any. The waiting count is read
    /// after the slot was freed (both sequentially consistent), and a waiter counts itself
    /// before it looks for a slot, so either this sees the waiter or the waiter sees the
    /// slot: no wake-up is lost.
    #[inline]
    fn wake(&self, slots: usize) {
        let waiting = self.queue.waiting();
        if waiting != 0 {
            self.wake_waiting(slots.min(waiting));
        }
    }

    /// [`wake`](Self::wake) when calls are waiting: out of line, so a freed slot with
    /// nobody waiting costs one load.
    #[cold]
    #[inline(never)]
    fn wake_waiting(&self, n: usize) {
        for _ in 0..n {
            self.notify.notify_one();
        }
    }

    /// Take a slot if fewer than `limit` calls are in flight.
    #[inline]
    fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let limit = self.limit.load(Ordering::Acquire);
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        let in_flight = taken.ok()? + 1;
        self.metrics.in_flight.add(1.0);
        Some(Slot {
            shared: Arc::clone(self),
            in_flight,
        })
    }

    /// Feed one sample to the algorithm: lock-free, a compare-and-swap of the exact limit
    /// (and, for a decrease, of the last decrease's time, so that of the calls started
    /// before a decrease only one decreases the limit).
    #[inline]
    fn on_sample(&self, started: Instant, sample: &Sample) {
        // The common case first: an AIMD sample that changes nothing (a fast success with
        // the limit to spare) reads one atomic and returns.
        if let Algorithm::Aimd(aimd) = &self.algorithm
            && aimd.steady(f64::from_bits(self.exact.load(Ordering::Acquire)), sample)
        {
            return;
        }
        self.update_limit(started, sample);
    }

    /// Remember when a fast answer ended (AIMD), to within [`FAST_GRAIN`]: one load, and
    /// a store at most once per grain.
    #[inline]
    fn note_fast(&self, started: Instant, sample: &Sample) {
        if let Algorithm::Aimd(aimd) = &self.algorithm
            && !sample.dropped
            && sample.rtt <= aimd.latency_threshold
        {
            let ended = time::nanos_since(self.origin, started)
                .saturating_add(time::nanos(sample.rtt))
                .saturating_add(1);
            if ended
                > self
                    .last_fast
                    .load(Ordering::Relaxed)
                    .saturating_add(FAST_GRAIN)
            {
                self.last_fast.store(ended, Ordering::Relaxed);
            }
        }
    }

    /// A call whose outcome gives no sample (by the classifier: a timed-out attempt, an
    /// error): if it ran longer than the AIMD latency threshold and no fast answer ended
    /// while it ran, the backend as a whole is slow (an overload's queue, not a few slow
    /// calls): a decrease, at most one per round trip as any.
    #[cold]
    #[inline(never)]
    fn on_ignored(&self, started: Instant, in_flight: usize) {
        let Algorithm::Aimd(aimd) = &self.algorithm else {
            return;
        };
        let rtt = Instant::now().saturating_duration_since(started);
        if rtt <= aimd.latency_threshold {
            return;
        }
        let start = time::nanos_since(self.origin, started).saturating_add(1);
        if self
            .last_fast
            .load(Ordering::Relaxed)
            .saturating_add(FAST_GRAIN)
            >= start
        {
            return;
        }
        let sample = Sample {
            rtt,
            in_flight,
            dropped: false,
        };
        self.update_limit(started, &sample);
    }

    /// [`on_sample`](Self::on_sample) for a sample that may move the limit.
    #[inline(never)]
    fn update_limit(&self, started: Instant, sample: &Sample) {
        let started = time::nanos_since(self.origin, started);
        // When the call ended: its start plus its round trip (no second clock read).
        let ended = started.saturating_add(time::nanos(sample.rtt));
        let min_rtt = match &self.algorithm {
            Algorithm::Gradient(params) => self.gradient.min_rtt(params, sample.rtt),
            Algorithm::Aimd(_) => Duration::ZERO,
        };
        let mut current = f64::from_bits(self.exact.load(Ordering::Acquire));
        let mut claimed = false;
        loop {
            let last_decrease = self.last_decrease.load(Ordering::Acquire);
            // Stored plus one, so that zero means "never".
            let may_decrease = claimed || started.saturating_add(1) >= last_decrease;
            let next = match &self.algorithm {
                Algorithm::Aimd(aimd) => aimd.update(current, sample, may_decrease),
                Algorithm::Gradient(params) => {
                    params.update(min_rtt, current, sample, may_decrease)
                }
            };
            let Some(next) = next else { return };
            // `max` then `min`, not `clamp`: while an update moves the bounds, this may read
            // an old bound and a new one, which `clamp` would panic on when they cross.
            let next = next
                .min(self.max_limit.load(Ordering::Acquire) as f64)
                .max(self.min_limit.load(Ordering::Acquire) as f64);
            if next < current && !claimed {
                // Claim this round trip's decrease; if another call claimed it first, look
                // again (this sample may no longer decrease the limit).
                let now = ended.saturating_add(1);
                if self
                    .last_decrease
                    .compare_exchange(last_decrease, now, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    current = f64::from_bits(self.exact.load(Ordering::Acquire));
                    continue;
                }
                claimed = true;
            }
            match self.exact.compare_exchange_weak(
                current.to_bits(),
                next.to_bits(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.publish(next as usize);
                    return;
                }
                Err(actual) => current = f64::from_bits(actual),
            }
        }
    }

    /// Apply `config`'s bounds (the limit is clamped into them at once) and, when its
    /// `initial_limit` differs from the one in effect, restart the limit from it. The
    /// algorithm and its parameters are fixed.
    pub(crate) fn update(&self, config: AdaptiveLimitConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let mut current = self.config.write().unwrap_or_else(PoisonError::into_inner);
        palisade_core::config::ensure_same_name("adaptive_limit", &current.name, &config.name)?;
        ensure(
            config.algorithm == current.algorithm,
            "adaptive_limit",
            "algorithm",
            config.algorithm,
            "the algorithm and parameters the limit was built with (the bounds and the \
             initial limit change at run time)",
        )?;
        let restart = config.initial_limit != current.initial_limit;
        let (min, max) = (config.min_limit, config.max_limit);
        // A sample landing between these stores may see one old bound (see `on_sample`);
        // the limit is clamped into the new bounds right after.
        self.min_limit.store(min, Ordering::Release);
        self.max_limit.store(max, Ordering::Release);
        let mut exact = self.exact.load(Ordering::Acquire);
        let next = loop {
            let next = if restart {
                config.initial_limit as f64
            } else {
                f64::from_bits(exact).clamp(min as f64, max as f64)
            };
            match self.exact.compare_exchange_weak(
                exact,
                next.to_bits(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break next,
                Err(actual) => exact = actual,
            }
        };
        self.max_wait
            .store(time::nanos(config.max_wait), Ordering::Relaxed);
        self.queue.set(config.max_queue);
        self.publish(next as usize);
        *current = config;
        Ok(())
    }

    fn publish(&self, to: usize) {
        // Most samples move the exact limit by a fraction: its floor, what admission reads,
        // stays, and is not written again (a shared line, read by every admission).
        if self.limit.load(Ordering::Acquire) == to {
            return;
        }
        let from = self.limit.swap(to, Ordering::SeqCst);
        if to > from {
            self.wake(to - from);
        }
        if from != to {
            self.metrics.limit.set(to as f64);
            self.emitter.emit(|| LimitEvent::LimitChanged { from, to });
        }
    }

    fn rejected(&self, limit: &'static str) -> Overloaded {
        self.metrics.rejected.increment(1);
        self.emitter.emit(|| LimitEvent::Overloaded {
            kind: LimitKind::Adaptive,
            limit,
        });
        Overloaded::new(self.emitter.name().clone(), limit)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", self.emitter.name())
            .field("limit", &self.limit.load(Ordering::Relaxed))
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// One admitted call's place under the limit; dropping it frees the place.
///
/// Taken in `poll_ready`; the call's round trip is measured from `call` (the response
/// future holds its start), so time spent waiting for the inner service's readiness never
/// reads as backend latency.
#[derive(Debug)]
pub(crate) struct Slot {
    shared: Arc<Shared>,
    in_flight: usize,
}

impl Slot {
    /// The call that started at `started` finished with `outcome`: feed its sample to the
    /// algorithm (the clock is read here, once).
    #[inline]
    pub(crate) fn complete(self, started: Instant, outcome: Outcome) {
        if outcome == Outcome::Ignore {
            self.shared.on_ignored(started, self.in_flight);
            return;
        }
        let sample = Sample {
            rtt: Instant::now().saturating_duration_since(started),
            in_flight: self.in_flight,
            dropped: outcome.is_failure(),
        };
        self.shared.note_fast(started, &sample);
        self.shared.on_sample(started, &sample);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.shared.metrics.in_flight.add(-1.0);
        self.shared.wake(1);
    }
}

// ===== waiting =====

/// A place in the wait queue (wait mode): counted as waiting while it lives, from
/// `poll_ready` until the call is admitted, refused or dropped.
#[derive(Debug)]
pub(crate) struct QueueSlot {
    shared: Arc<Shared>,
}

impl QueueSlot {
    fn join(shared: &Arc<Shared>) -> Option<Self> {
        if !shared.queue.try_join(shared.limit.load(Ordering::Relaxed)) {
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
    /// A call waiting for a slot in its response future (boxed there: only waiting calls
    /// pay for it), with the readied inner service and the request.
    pub(crate) struct Wait<S, Req> {
        queued: Option<QueueSlot>,
        #[pin]
        notified: OwnedNotified,
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
    fn new(queued: QueueSlot, inner: S, req: Req) -> Self {
        let started = Instant::now();
        let (give_up, by_deadline) = crate::give_up_at(started, queued.shared.max_wait());
        Self {
            notified: Arc::clone(&queued.shared.notify).notified_owned(),
            queued: Some(queued),
            started,
            give_up: tokio::time::sleep_until(give_up),
            by_deadline,
            inner: Some(inner),
            req: Some(req),
        }
    }

    /// Ready with a slot once one is free, or with the refusal once the wait ends.
    pub(crate) fn poll_slot(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Slot, Overloaded>> {
        let mut this = self.project();
        let shared = match this.queued.as_ref() {
            Some(queued) => Arc::clone(&queued.shared),
            None => panic!("ResponseFuture polled after completion"),
        };
        loop {
            // Listen before looking, so that a slot freed in between wakes this call.
            this.notified.as_mut().enable();
            if let Some(slot) = shared.try_acquire() {
                *this.queued = None;
                shared.admitted(*this.started);
                shared.metrics.admitted.increment(1);
                return Poll::Ready(Ok(slot));
            }
            if this.notified.as_mut().poll(cx).is_ready() {
                // Woken, and another call took the slot first: listen again.
                this.notified
                    .set(Arc::clone(&shared.notify).notified_owned());
                continue;
            }
            if this.give_up.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            *this.queued = None;
            // A wake-up this call received and cannot use goes to the next waiter.
            shared.wake(1);
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

impl<S, Req> fmt::Debug for Wait<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("started", &self.started)
            .field("by_deadline", &self.by_deadline)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// A waiting call was admitted after waiting since `started`.
    fn admitted(&self, started: Instant) {
        if self.emitter.is_active() || self.metrics.wait.is_enabled() {
            let waited = started.elapsed();
            self.metrics.wait.record(waited.as_secs_f64());
            self.emitter.emit(|| LimitEvent::Admitted {
                kind: LimitKind::Adaptive,
                waited,
            });
        }
    }
}

// ===== AdaptiveLimit =====

/// A service whose calls in flight are limited by an adaptive limit; built by
/// [`AdaptiveLimitLayer`](super::AdaptiveLimitLayer).
///
/// `poll_ready` takes a slot if one is free, then readies the inner service. A slot taken
/// in `poll_ready` is freed if the service is dropped before `call`. The round trip the
/// algorithm sees is measured from the inner service's `call` to its response, never
/// including the wait for the inner service's readiness or for a slot.
///
/// When every slot is taken:
///
/// - **reject mode** (`max_wait` zero, the default), or a full queue: `poll_ready` returns
///   `Ready(Ok)` without readying the inner service and `call` fails with [`Overloaded`];
/// - **wait mode**: `poll_ready` takes a place in the queue and readies the inner service;
///   `call` moves the readied service and the request into the response future, which
///   waits for a slot (woken in arrival order as slots free or the limit grows), then calls
///   it. The wait is inside the caller's deadline: an outer timeout's future covers it, and
///   it gives up at that deadline ([`Deadline::current`](palisade_core::Deadline::current),
///   set while `call` runs) or after `max_wait`, whichever comes first, with
///   [`Overloaded`] (`"deadline"` or `"max wait"`). Hence `S: Clone`: the waiting call
///   takes the readied service and leaves a clone.
pub struct AdaptiveLimit<S, C> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
    /// `None`: not yet asked; `Some(Some(slot))`: holding a slot for the next call;
    /// `Some(None)`: none was free (the next call waits if `queued`, else is refused).
    readiness: Option<Option<Slot>>,
    /// Wait mode, every slot taken: the next call's place in the queue.
    queued: Option<QueueSlot>,
}

impl<S, C> AdaptiveLimit<S, C> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>, classifier: C) -> Self {
        Self {
            inner,
            shared,
            classifier,
            readiness: None,
            queued: None,
        }
    }

    /// A handle reading the limit's state.
    pub fn handle(&self) -> AdaptiveLimitHandle {
        AdaptiveLimitHandle::new(Arc::clone(&self.shared))
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

    /// `poll_ready` when no slot was free: in wait mode, take a place in the queue (once)
    /// and ready the inner service; otherwise the next call is refused.
    #[cold]
    #[inline(never)]
    fn poll_ready_full<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>>
    where
        S: Service<Req>,
    {
        if self.queued.is_none()
            && !self.shared.max_wait().is_zero()
            && let Some(queued) = QueueSlot::join(&self.shared)
        {
            match self.shared.try_acquire() {
                // A slot freed while this call joined the queue: take it.
                Some(slot) => self.readiness = Some(Some(slot)),
                None => self.queued = Some(queued),
            }
        }
        match (&self.readiness, &self.queued) {
            (Some(Some(_)), _) | (_, Some(_)) => self.inner.poll_ready(cx),
            // The call will be refused: do not reserve the inner service for it.
            _ => Poll::Ready(Ok(())),
        }
    }

    /// `call` for a call that waits for a slot (its boxed wait) or is refused. It returns
    /// only the small part, and `call` builds the response future in place: a future built
    /// here and returned would be copied whole on every call, waiting or not.
    #[cold]
    #[inline(never)]
    fn call_other<Req>(&mut self, req: Req) -> Result<Pin<Box<Wait<S, Req>>>, Overloaded>
    where
        S: Service<Req> + Clone,
    {
        match self.queued.take() {
            Some(queued) => {
                // The readied service goes with the waiting call; a clone stays here.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                Ok(Box::pin(Wait::new(queued, inner, req)))
            }
            None => {
                let limit = if self.shared.max_wait().is_zero() {
                    "max in-flight"
                } else {
                    "queue full"
                };
                Err(self.shared.rejected(limit))
            }
        }
    }
}

impl<S, C, Req> Service<Req> for AdaptiveLimit<S, C>
where
    S: Service<Req> + Clone,
    S::Error: From<Overloaded>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let slot = self
            .readiness
            .get_or_insert_with(|| self.shared.try_acquire());
        if slot.is_some() {
            return self.inner.poll_ready(cx);
        }
        self.poll_ready_full(cx)
    }

    // Always inline, like the breaker's: measured in the recommended stack (interleaved
    // against tower's), 1.21 → 1.11; left to the inliner, the attempt timeout's future was
    // built aside and copied in. Waiting and refusals go out of line (`call_other`).
    #[inline(always)]
    fn call(&mut self, req: Req) -> Self::Future {
        let readiness = self
            .readiness
            .take()
            .expect("AdaptiveLimit::call without poll_ready returning Ready first");
        match readiness {
            Some(slot) => {
                self.shared.metrics.admitted.increment(1);
                // The round trip starts now, not when the slot was taken in `poll_ready`:
                // inside a palisade timeout's `call`, its reading of the clock a moment ago.
                let started = deadline::now();
                let fut = self.inner.call(req);
                ResponseFuture::called(fut, slot, started, self.classifier.clone())
            }
            None => match self.call_other(req) {
                Ok(wait) => ResponseFuture::waiting(wait, self.classifier.clone()),
                Err(overloaded) => ResponseFuture::rejected(overloaded),
            },
        }
    }
}

impl<S: Clone, C: Clone> Clone for AdaptiveLimit<S, C> {
    /// A clone shares the limit but not readiness: it must be polled ready itself.
    fn clone(&self) -> Self {
        Self::from_parts(
            self.inner.clone(),
            Arc::clone(&self.shared),
            self.classifier.clone(),
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for AdaptiveLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}
