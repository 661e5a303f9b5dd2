//! The hedge layer and service.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::metrics::Counter;
use palisade_core::{Classify, ConfigError, Emitter, RejectionAware, time};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::config::{
    AllRequests, HedgeConfig, HedgeDelay, HedgeHooks, HedgeLayerBuilder, HedgeSettings, Hedgeable,
};
use super::future::ResponseFuture;
use super::latency::Latencies;
use crate::budget::RetryBudget;
use crate::event::HedgeEvent;
use crate::policy::{CloneRequest, Cloned};

/// The settings a handle's [`update`](HedgeHandle::update) changes at run time: read by
/// every service of the layer (plain atomics on the per-call path).
struct Live {
    /// The fixed delay in nanoseconds (saturating; unused for a percentile delay).
    delay_nanos: AtomicU64,
    max_hedges: AtomicU32,
    /// The config in effect.
    config: RwLock<HedgeConfig>,
}

impl Live {
    fn new(config: &HedgeConfig) -> Self {
        let live = Self {
            delay_nanos: AtomicU64::new(0),
            max_hedges: AtomicU32::new(0),
            config: RwLock::new(config.clone()),
        };
        live.store(config);
        live
    }

    fn store(&self, config: &HedgeConfig) {
        if let HedgeDelay::Fixed { delay } = config.delay {
            self.delay_nanos
                .store(time::nanos(delay), Ordering::Release);
        }
        self.max_hedges.store(config.max_hedges, Ordering::Release);
    }

    fn config(&self) -> HedgeConfig {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn fixed_delay(&self) -> Duration {
        time::from_nanos(self.delay_nanos.load(Ordering::Acquire))
    }

    /// Apply `config`: the fixed delay and `max_hedges` change; the kind of delay, a
    /// percentile's parameters and the budget are fixed when the layer is built.
    fn update(&self, config: HedgeConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let mut current = self.config.write().unwrap_or_else(PoisonError::into_inner);
        palisade_core::config::ensure_same_name("hedge", &current.name, &config.name)?;
        let same_delay_kind = match (current.delay, config.delay) {
            (HedgeDelay::Fixed { .. }, HedgeDelay::Fixed { .. }) => true,
            (a, b) => a == b,
        };
        palisade_core::config::ensure(
            same_delay_kind,
            "hedge",
            "delay",
            config.delay,
            "the kind of delay the layer was built with, and for a percentile its parameters \
             (a fixed delay's value and max_hedges change at run time)",
        )?;
        palisade_core::config::ensure(
            config.budget == current.budget,
            "hedge",
            "budget",
            &config.budget,
            "the budget the layer was built with (its services share it)",
        )?;
        self.store(&config);
        *current = config;
        Ok(())
    }
}

/// What every service of one layer shares, whatever its hooks.
pub(crate) struct HedgeCore {
    /// The config the layer was built with.
    config: HedgeConfig,
    live: Arc<Live>,
    budget: Option<RetryBudget>,
    emitter: Emitter<HedgeEvent>,
    hedges: Counter,
    wins: Counter,
    budget_rejected: Counter,
    latencies: Option<Arc<Latencies>>,
}

impl HedgeCore {
    fn new(
        config: HedgeConfig,
        budget: Option<RetryBudget>,
        listeners: palisade_core::Listeners<HedgeEvent>,
    ) -> Self {
        let name = &config.name;
        let latencies = match config.delay {
            HedgeDelay::Fixed { .. } => None,
            HedgeDelay::Percentile {
                percentile,
                window,
                min_samples,
            } => Some(Arc::new(Latencies::new(window, percentile, min_samples))),
        };
        let budget = budget.or_else(|| {
            config
                .budget
                .build()
                .expect("a validated config's budget is valid")
        });
        Self {
            hedges: Counter::register("palisade_retry_hedges_total", name, &[]),
            wins: Counter::register("palisade_retry_hedge_wins_total", name, &[]),
            budget_rejected: Counter::register(
                "palisade_retry_hedge_budget_rejected_total",
                name,
                &[],
            ),
            emitter: Emitter::new(name.clone(), listeners),
            latencies,
            budget,
            live: Arc::new(Live::new(&config)),
            config,
        }
    }
}

/// State shared by every clone of one service.
pub(crate) struct Shared<P, C, K> {
    pub(crate) config: HedgeSettings<P, C, K>,
    pub(crate) emitter: Emitter<HedgeEvent>,
    pub(crate) hedges: Counter,
    pub(crate) wins: Counter,
    pub(crate) budget_rejected: Counter,
    latencies: Option<Arc<Latencies>>,
    live: Arc<Live>,
}

impl<P, C, K> Shared<P, C, K> {
    fn new(core: &HedgeCore, hedgeable: P, classify: C, clone_request: K) -> Self {
        Self {
            config: HedgeSettings {
                name: core.config.name.clone(),
                delay: core.config.delay,
                budget: core.budget.clone(),
                hedgeable,
                classify,
                clone_request,
            },
            emitter: core.emitter.clone(),
            hedges: core.hedges.clone(),
            wins: core.wins.clone(),
            budget_rejected: core.budget_rejected.clone(),
            latencies: core.latencies.clone(),
            live: Arc::clone(&core.live),
        }
    }

    /// The most extra copies per request, as last updated.
    pub(crate) fn max_hedges(&self) -> u32 {
        self.live.max_hedges.load(Ordering::Acquire)
    }

    /// How long to wait before the next copy; `None` while the percentile is unknown.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.config.delay {
            HedgeDelay::Fixed { .. } => Some(self.live.fixed_delay()),
            HedgeDelay::Percentile { .. } => self.latencies.as_ref()?.percentile(),
        }
    }

    /// Feed the latency window with the answered request's latency.
    pub(crate) fn record_latency(&self, latency: Duration) {
        if let Some(latencies) = &self.latencies {
            latencies.record(latency);
        }
    }

    /// Whether the latency window wants a clock read for this request.
    fn tracks_latency(&self) -> bool {
        self.latencies.is_some()
    }
}

// ===== impl HedgeLayer =====

/// Wraps services in [`Hedge`].
///
/// Made from a validated [`HedgeConfig`] with [`HedgeLayer::new`] (or in one chain with
/// [`HedgeLayer::builder`]); the code-only hooks are methods of the layer:
/// [`hedgeable`](Self::hedgeable), [`classifier`](Self::classifier),
/// [`clone_request`](Self::clone_request), [`share_budget`](Self::share_budget),
/// [`on_event`](Self::on_event). Every service of the layer shares its budget, its
/// listeners and its latency window.
pub struct HedgeLayer<P = AllRequests, C = RejectionAware, K = Cloned> {
    core: Arc<HedgeCore>,
    hedgeable: P,
    classify: C,
    clone_request: K,
}

impl HedgeLayer {
    /// The layer of a validated `config`, with the default hooks.
    pub fn new(config: HedgeConfig) -> Self {
        Self::from_parts(config, HedgeHooks::new())
    }

    /// A builder whose [`build`](HedgeLayerBuilder::build) gives the layer.
    pub fn builder() -> HedgeLayerBuilder {
        HedgeLayerBuilder::new()
    }
}

impl<P, C, K> HedgeLayer<P, C, K> {
    pub(crate) fn from_parts(config: HedgeConfig, hooks: HedgeHooks<P, C, K>) -> Self {
        Self {
            core: Arc::new(HedgeCore::new(config, hooks.budget, hooks.listeners)),
            hedgeable: hooks.hedgeable,
            classify: hooks.classify,
            clone_request: hooks.clone_request,
        }
    }

    /// The config the layer was built with (the handle's
    /// [`config`](HedgeHandle::config) is the one in effect after an update).
    pub fn config(&self) -> &HedgeConfig {
        &self.core.config
    }

    /// The hedge budget, if any (shared by every service of the layer).
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.core.budget.as_ref()
    }

    /// Which requests may be hedged: a [`Hedgeable`], e.g. `|req: &Request| req.is_get()`
    /// (default: all).
    pub fn hedgeable<P2>(self, hedgeable: P2) -> HedgeLayer<P2, C, K> {
        HedgeLayer {
            core: self.core,
            hedgeable,
            classify: self.classify,
            clone_request: self.clone_request,
        }
    }

    /// How answers count for a token-bucket budget (default palisade-core's
    /// [`RejectionAware`]).
    pub fn classifier<C2>(self, classifier: C2) -> HedgeLayer<P, C2, K> {
        HedgeLayer {
            core: self.core,
            hedgeable: self.hedgeable,
            classify: classifier,
            clone_request: self.clone_request,
        }
    }

    /// How copies are made (default [`Cloned`]).
    pub fn clone_request<K2>(self, clone_request: K2) -> HedgeLayer<P, C, K2> {
        HedgeLayer {
            core: self.core,
            hedgeable: self.hedgeable,
            classify: self.classify,
            clone_request,
        }
    }

    /// Share a budget handle (e.g. with a retry layer, so retries and hedges together stay
    /// within one ratio) instead of the config's own.
    pub fn share_budget(self, budget: RetryBudget) -> Self {
        let core = HedgeCore {
            config: self.core.config.clone(),
            budget: Some(budget),
            live: Arc::clone(&self.core.live),
            emitter: self.core.emitter.clone(),
            hedges: self.core.hedges.clone(),
            wins: self.core.wins.clone(),
            budget_rejected: self.core.budget_rejected.clone(),
            latencies: self.core.latencies.clone(),
        };
        Self {
            core: Arc::new(core),
            ..self
        }
    }

    /// Call `listener` with every event of this layer (services made before this call see
    /// the listener too).
    #[must_use]
    pub fn on_event(self, listener: impl Fn(&HedgeEvent) + Send + Sync + 'static) -> Self {
        self.core.emitter.add_listener(listener);
        self
    }

    /// The handle reading this layer's config, budget and current delay.
    pub fn handle(&self) -> HedgeHandle {
        HedgeHandle {
            core: Arc::clone(&self.core),
        }
    }
}

impl<P: Clone, C: Clone, K: Clone> Clone for HedgeLayer<P, C, K> {
    fn clone(&self) -> Self {
        Self {
            core: Arc::clone(&self.core),
            hedgeable: self.hedgeable.clone(),
            classify: self.classify.clone(),
            clone_request: self.clone_request.clone(),
        }
    }
}

impl<P, C, K> fmt::Debug for HedgeLayer<P, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("config", &self.core.config)
            .finish_non_exhaustive()
    }
}

impl<S, P: Clone, C: Clone, K: Clone> Layer<S> for HedgeLayer<P, C, K> {
    type Service = Hedge<S, P, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge {
            inner,
            shared: Arc::new(Shared::new(
                &self.core,
                self.hedgeable.clone(),
                self.classify.clone(),
                self.clone_request.clone(),
            )),
        }
    }
}

/// Reads a hedge layer's config, budget and delay at run time; cloneable.
///
/// [`update`](Self::update) changes a fixed delay and `max_hedges` for every service of
/// the layer, from their next copy on.
#[derive(Clone)]
pub struct HedgeHandle {
    core: Arc<HedgeCore>,
}

impl HedgeHandle {
    /// The layer's name.
    pub fn name(&self) -> &palisade_core::Name {
        &self.core.config.name
    }

    /// The config the layer runs (the last one [`update`](Self::update) applied).
    pub fn config(&self) -> HedgeConfig {
        self.core.live.config()
    }

    /// Apply `config` to every service of the layer from their next request on: a fixed
    /// delay's value and `max_hedges` change. The kind of delay (fixed or percentile), a
    /// percentile's parameters (its latency window is the layer's history) and the budget
    /// (shared by every service) are fixed when the layer is built, as is the name: a config
    /// that changes them, or an invalid one, is refused naming the field and changes
    /// nothing.
    ///
    /// ```
    /// use palisade_retry::hedge::{HedgeConfig, HedgeLayer};
    /// use std::time::Duration;
    ///
    /// let layer = HedgeLayer::new(
    ///     HedgeConfig::builder().name("lookup").delay(Duration::from_millis(50)).build().unwrap(),
    /// );
    /// let handle = layer.handle();
    /// let faster = handle.config().to_builder().delay(Duration::from_millis(20)).build().unwrap();
    /// handle.update(faster).unwrap();
    /// assert_eq!(handle.current_delay(), Some(Duration::from_millis(20)));
    ///
    /// let renamed = handle.config().to_builder().name("other").build().unwrap();
    /// assert_eq!(handle.update(renamed).unwrap_err().field(), "name");
    /// ```
    #[allow(
        clippy::needless_pass_by_value,
        reason = "one signature for every handle"
    )]
    pub fn update(&self, config: HedgeConfig) -> Result<(), ConfigError> {
        self.core.live.update(config)
    }

    /// The budget, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.core.budget.as_ref()
    }

    /// The current hedge delay: the fixed one, or the latency percentile once known.
    pub fn current_delay(&self) -> Option<Duration> {
        match self.core.config.delay {
            HedgeDelay::Fixed { .. } => Some(self.core.live.fixed_delay()),
            HedgeDelay::Percentile { .. } => self.core.latencies.as_ref()?.percentile(),
        }
    }
}

impl fmt::Debug for HedgeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeHandle")
            .field("name", self.name())
            .finish_non_exhaustive()
    }
}

// ===== impl Hedge =====

/// Sends another copy of a slow, hedgeable request and answers with the first good
/// answer; the other copies are dropped (cancelled).
pub struct Hedge<S, P = AllRequests, C = RejectionAware, K = Cloned> {
    inner: S,
    shared: Arc<Shared<P, C, K>>,
}

impl<S, P, C, K> Hedge<S, P, C, K> {
    /// The current hedge delay: the fixed one, or the latency percentile once known.
    pub fn current_delay(&self) -> Option<Duration> {
        self.shared.delay()
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

impl<S: Clone, P, C, K> Clone for Hedge<S, P, C, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, P, C, K> fmt::Debug for Hedge<S, P, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .field("name", &self.shared.config.name)
            .finish_non_exhaustive()
    }
}

impl<S, Req, P, C, K> Service<Req> for Hedge<S, P, C, K>
where
    S: Service<Req> + Clone,
    P: Hedgeable<Req>,
    C: Classify<S::Response, S::Error>,
    K: CloneRequest<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, P, C, K>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        // One deposit per request, in the outermost layer holding the budget.
        let owns_budget = shared
            .config
            .budget
            .as_ref()
            .is_some_and(|b| b.begin_request());
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let hedge = if shared.config.hedgeable.is_hedgeable(&req) {
            shared
                .delay()
                .zip(shared.config.clone_request.clone_request(&req))
        } else {
            None
        };
        let started = (hedge.is_some() || shared.tracks_latency()).then(Instant::now);
        let future = {
            let _held = shared.config.budget.as_ref().map(RetryBudget::enter);
            inner.call(req)
        };
        ResponseFuture::new(
            future,
            inner,
            hedge,
            started,
            owns_budget,
            Arc::clone(shared),
        )
    }
}
