//! The adaptive limit service and its shared state.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{
    Classify, ConfigError, Emitter, Listeners, Outcome, Overloaded, config::ensure, deadline, time,
};
use tokio::time::Instant;
use tower_service::Service;

use super::Sample;
use super::config::{AdaptiveLimitConfig, Algorithm};
use super::future::ResponseFuture;
use super::gradient::GradientState;
use super::handle::AdaptiveLimitHandle;
use crate::event::{LimitEvent, LimitKind};
use crate::metrics::Metrics;

// ===== Shared =====

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
    origin: Instant,
    /// The bounds, changed at run time by [`AdaptiveLimitHandle::update`].
    min_limit: AtomicUsize,
    max_limit: AtomicUsize,
    pub(crate) emitter: Emitter<LimitEvent>,
    metrics: Metrics,
    /// The config in effect (the limit moves; the algorithm is fixed).
    pub(crate) config: RwLock<AdaptiveLimitConfig>,
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
            origin: Instant::now(),
            min_limit: AtomicUsize::new(config.min_limit),
            max_limit: AtomicUsize::new(config.max_limit),
            emitter: Emitter::new(config.name, listeners),
            metrics,
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
        let from = self.limit.swap(to, Ordering::AcqRel);
        if from != to {
            self.metrics.limit.set(to as f64);
            self.emitter.emit(|| LimitEvent::LimitChanged { from, to });
        }
    }

    fn rejected(&self) -> Overloaded {
        self.metrics.rejected.increment(1);
        let limit = "max in-flight";
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
            return;
        }
        let sample = Sample {
            rtt: Instant::now().saturating_duration_since(started),
            in_flight: self.in_flight,
            dropped: outcome.is_failure(),
        };
        self.shared.on_sample(started, &sample);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.shared.metrics.in_flight.add(-1.0);
    }
}

// ===== AdaptiveLimit =====

/// A service whose calls in flight are limited by an adaptive limit; built by
/// [`AdaptiveLimitLayer`](super::AdaptiveLimitLayer).
///
/// `poll_ready` takes a slot if one is free, then readies the inner service; if none is,
/// it returns `Ready(Ok)` without readying the inner service and `call` fails with
/// [`Overloaded`]. A slot taken in `poll_ready` is freed if the service is dropped before
/// `call`. The round trip the algorithm sees is measured from `call` to the response, never
/// including the wait for the inner service's readiness.
pub struct AdaptiveLimit<S, C> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
    readiness: Option<Option<Slot>>,
}

impl<S, C> AdaptiveLimit<S, C> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>, classifier: C) -> Self {
        Self {
            inner,
            shared,
            classifier,
            readiness: None,
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
}

impl<S, C, Req> Service<Req> for AdaptiveLimit<S, C>
where
    S: Service<Req>,
    S::Error: From<Overloaded>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let slot = self
            .readiness
            .get_or_insert_with(|| self.shared.try_acquire());
        match slot {
            // The call will be refused: do not reserve the inner service for it.
            None => Poll::Ready(Ok(())),
            Some(_) => self.inner.poll_ready(cx),
        }
    }

    // Always inline, like the breaker's: measured in the recommended stack (interleaved
    // against tower's), 1.21 → 1.11; left to the inliner, the attempt timeout's future was
    // built aside and copied in.
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
            None => ResponseFuture::rejected(self.shared.rejected()),
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
