//! The retry service.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use palisade_core::metrics::{Counter, Histogram};
use palisade_core::{Classify, Deadline, Emitter, time};
use tower_service::Service;

use crate::budget::RetryBudget;
use crate::config::{Hooks, RetryConfig, Settings};
use crate::event::RetryEvent;
use crate::future::ResponseFuture;
use crate::layer::Core;
use palisade_core::RejectionAware;

use crate::policy::{CloneRequest, Cloned, RetryAfter};

/// Retries failed requests with backoff, within a budget and the request's deadline.
///
/// Made by a [`RetryLayer`](crate::RetryLayer). Before each attempt the inner service is
/// driven to readiness; a result the classifier calls `Failure`, or calls `Ignore` but that
/// carries a hint ("not now": a rate limit, an overload), is retried after the backoff's next
/// delay (and not before the hint), unless the attempt limit, the deadline, `max_elapsed` or
/// the budget says stop; then the last attempt's result is returned unchanged.
///
/// A request's later attempts go to a clone of the service this layer wrapped (made when
/// the first retry is planned, then driven ready before each attempt), so a request
/// answered at its first attempt costs no clone of the services below. That clone is of
/// the service as it was wrapped (or as it was at the last config update): a change made
/// since through [`get_mut`](Retry::get_mut) reaches first attempts only.
///
/// # Refusals hold nothing below
///
/// A layer that refuses a call after its `poll_ready` readied the layers below it (a
/// circuit breaker over a concurrency limit, open) leaves their readiness (a limit's slot
/// or queue place) in the service the call was made on. So a retried refusal (an `Ignore`d
/// result with a hint, such as an open circuit's) drops the service it was made on before
/// the request waits, and the next attempt clones the layer's service again: a request
/// waiting to retry holds no slot. And while refusals are being retried (from the first
/// such retry until an attempt succeeds), a call hands the service it was made on to its
/// request and keeps a clone, so that a caller that keeps its clone of the service until
/// the answer (`svc.ready().await?.call(req).await`) does not keep a slot with it
/// either. Only the requests whose first attempt is refused before any refusal was
/// retried (the first ones after a layer below starts refusing) could leave that slot with
/// the caller's service until the caller drops it; a service used once per request and
/// dropped after `call` (tower's `oneshot`) never does, and palisade's circuit breaker,
/// open, does not drive the layers below it ready at all.
pub struct Retry<S, C = RejectionAware, A = RejectionAware, K = Cloned> {
    inner: S,
    shared: Arc<Shared<S, C, A, K>>,
}

/// State shared by every clone of one service.
pub(crate) struct Shared<S, C, A, K> {
    pub(crate) config: Settings<C, A, K>,
    /// The service a retried request clones for its later attempts (a mutex, not a
    /// read-write lock, so that a service that is `Send` but not `Sync` still makes a
    /// `Send` future; locked only to plan a retry).
    spare: Mutex<S>,
    /// The layer's core, and the version of its config these settings copy.
    core: Arc<Core>,
    version: u64,
    pub(crate) emitter: Emitter<RetryEvent>,
    pub(crate) metrics: Metrics,
    /// How many retried requests drew a jitter seed: the index into the seed sequence
    /// (shared by every service of the layer).
    seeds: Arc<AtomicU64>,
    /// A retry was planned for a refusal by a layer below since the last success: calls
    /// hand their readied service to their request ([`Retry`]'s docs say why).
    refusing: Refusing,
}

/// The "layers below refuse" flag, on a cache line of its own: it changes only when
/// refusals start or end, and must not make the config every call reads bounce between
/// cores when it does.
#[repr(align(64))]
#[derive(Default)]
pub(crate) struct Refusing(AtomicBool);

#[derive(Clone)]
pub(crate) struct Metrics {
    pub(crate) attempts: Counter,
    pub(crate) retries: Counter,
    pub(crate) exhausted: Counter,
    pub(crate) budget_rejected: Counter,
    pub(crate) attempts_per_request: Histogram,
}

// ===== impl Shared =====

impl Metrics {
    pub(crate) fn register(name: &palisade_core::Name) -> Self {
        Self {
            attempts: Counter::register("palisade_retry_attempts_total", name, &[]),
            retries: Counter::register("palisade_retry_retries_total", name, &[]),
            exhausted: Counter::register("palisade_retry_exhausted_total", name, &[]),
            budget_rejected: Counter::register("palisade_retry_budget_rejected_total", name, &[]),
            attempts_per_request: Histogram::register("palisade_retry_attempts", name, &[]),
        }
    }
}

impl<S, C, A, K> Shared<S, C, A, K> {
    pub(crate) fn build(
        core: &Arc<Core>,
        spare: S,
        classify: C,
        retry_after: A,
        clone_request: K,
    ) -> Self {
        let (current, version) = core.current();
        let hooks = Hooks {
            classify,
            retry_after,
            clone_request,
            budget: current.budget,
            listeners: palisade_core::Listeners::new(),
        };
        Self {
            config: Settings::new(current.config, hooks),
            spare: Mutex::new(spare),
            core: Arc::clone(core),
            version,
            emitter: core.emitter.clone(),
            metrics: core.metrics.clone(),
            seeds: Arc::clone(&core.seeds),
            refusing: Refusing::default(),
        }
    }

    /// `true` while the layers below refuse calls (read once per call).
    #[inline]
    fn is_refusing(&self) -> bool {
        self.refusing.0.load(Ordering::Relaxed)
    }

    /// A retry was planned for a refusal by a layer below.
    pub(crate) fn refused(&self) {
        if !self.is_refusing() {
            self.refusing.0.store(true, Ordering::Relaxed);
        }
    }

    /// An attempt succeeded: the layers below admit calls again (one read when nothing
    /// was refused).
    #[inline]
    pub(crate) fn succeeded(&self) {
        if self.is_refusing() {
            self.refusing.0.store(false, Ordering::Relaxed);
        }
    }

    /// `true` when the layer's config changed since these settings were copied.
    #[inline]
    fn is_stale(&self) -> bool {
        self.version != self.core.version.load(Ordering::Acquire)
    }

    /// A fresh jitter RNG for one request: random, or the next in the seeded sequence.
    pub(crate) fn rng(&self) -> fastrand::Rng {
        match self.config.seed {
            Some(seed) => {
                let n = self.seeds.fetch_add(1, Ordering::Relaxed);
                fastrand::Rng::with_seed(time::mix64(seed.wrapping_add(n)))
            }
            None => fastrand::Rng::new(),
        }
    }

    pub(crate) fn budget(&self) -> Option<&RetryBudget> {
        self.config.budget.as_ref()
    }

    /// A clone of the wrapped service for a retried request's later attempts (not ready:
    /// the retry drives it ready before each call).
    pub(crate) fn spare(&self) -> S
    where
        S: Clone,
    {
        self.spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

// ===== impl Retry =====

impl<S, C, A, K> Retry<S, C, A, K> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<S, C, A, K>>) -> Self {
        Self { inner, shared }
    }

    /// The config.
    pub fn config(&self) -> &RetryConfig {
        &self.shared.config.data
    }

    /// The retry budget, a handle shared with every clone (and with other layers given the
    /// same handle).
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.shared.budget()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone, A: Clone, K: Clone> Retry<S, C, A, K> {
    /// Copy the layer's config again after an update (out of line: it happens once per
    /// update, not per call); retries then clone this service as it is now.
    #[cold]
    #[inline(never)]
    fn refresh(&mut self) {
        let c = &self.shared.config;
        self.shared = Arc::new(Shared::build(
            &self.shared.core,
            self.inner.clone(),
            c.classify.clone(),
            c.retry_after.clone(),
            c.clone_request.clone(),
        ));
    }
}

impl<S: Clone, C, A, K> Clone for Retry<S, C, A, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, C, A, K> fmt::Debug for Retry<S, C, A, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("config", &self.shared.config.data)
            .finish()
    }
}

impl<S, Req, C, A, K> Service<Req> for Retry<S, C, A, K>
where
    S: Service<Req> + Clone,
    C: Classify<S::Response, S::Error> + Clone,
    A: RetryAfter<S::Response, S::Error> + Clone,
    K: CloneRequest<Req> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, C, A, K>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if self.shared.is_stale() {
            self.refresh();
        }
        if self.shared.is_refusing() {
            return self.call_handing_over(req);
        }
        // Call the service that was driven ready. A retry clones the layer's spare service
        // (through the shared state the future holds anyway), so the common request,
        // answered at its first attempt, neither clones nor carries the services below.
        start(&self.shared, &mut self.inner, req)
    }
}

/// Make the first attempt of `req` on `inner` (driven ready) and the request's future.
#[inline(always)]
fn start<S, Req, C, A, K>(
    shared: &Arc<Shared<S, C, A, K>>,
    inner: &mut S,
    req: Req,
) -> ResponseFuture<S, Req, C, A, K>
where
    S: Service<Req>,
    K: CloneRequest<Req>,
{
    let config = &shared.config;
    // The copy for a second attempt is made before the first consumes the request.
    let copy = if config.max_attempts > 1 {
        config.clone_request.clone_request(&req)
    } else {
        None
    };
    // One deposit per request, in the outermost layer holding the budget.
    let owns_budget = shared.budget().is_some_and(|b| b.begin_request());
    let started = config.max_elapsed.map(|_| palisade_core::deadline::now());
    let future = {
        let _held = shared.budget().map(RetryBudget::enter);
        inner.call(req)
    };
    ResponseFuture::new(
        future,
        copy,
        Arc::clone(shared),
        Deadline::current(),
        started,
        owns_budget,
    )
}

impl<S, C, A, K> Retry<S, C, A, K> {
    /// `call` while the layers below refuse calls: the readied service goes with the
    /// request (which drops it if the call is refused), a clone stays here (out of line: only
    /// while refusals last).
    #[cold]
    #[inline(never)]
    fn call_handing_over<Req>(&mut self, req: Req) -> ResponseFuture<S, Req, C, A, K>
    where
        S: Service<Req> + Clone,
        K: CloneRequest<Req>,
    {
        let clone = self.inner.clone();
        let mut readied = std::mem::replace(&mut self.inner, clone);
        let mut response = start(&self.shared, &mut readied, req);
        response.retry_on(readied);
        response
    }
}
