//! The retry layer.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use palisade_core::{ConfigError, Emitter, Listeners, RejectionAware};
use tower_layer::Layer;

use crate::budget::RetryBudget;
use crate::config::{Hooks, RetryConfig, RetryLayerBuilder};
use crate::event::RetryEvent;
use crate::handle::RetryHandle;
use crate::policy::Cloned;
use crate::service::{Metrics, Retry, Shared};

/// Retries failed requests with backoff, within a budget and the request's deadline: see
/// [`Retry`].
///
/// Made from a validated [`RetryConfig`] with [`RetryLayer::new`] (or in one chain with
/// [`RetryLayer::builder`]); the code-only hooks are methods of the layer, the same names
/// as in every palisade crate: [`classifier`](Self::classifier),
/// [`retry_after`](Self::retry_after), [`clone_request`](Self::clone_request),
/// [`share_budget`](Self::share_budget), [`on_event`](Self::on_event).
///
/// The type parameters are the classifier `C` (each attempt's outcome: `Failure` is
/// retried, and it is what a token-bucket budget counts), the hint extractor `A` (server
/// `Retry-After`, a rate limiter's `retry_after`: an `Ignore`d result with a hint is retried
/// after it) and the request copier `K`; the defaults are palisade-core's
/// [`RejectionAware`] twice (see [`RetryAfter`](crate::RetryAfter) for the rule) and
/// [`Cloned`].
///
/// Every service the layer makes shares its budget, its listeners and its jitter sequence.
pub struct RetryLayer<C = RejectionAware, A = RejectionAware, K = Cloned> {
    core: Arc<Core>,
    classify: C,
    retry_after: A,
    clone_request: K,
}

/// What every service of one layer shares, whatever its hooks.
pub(crate) struct Core {
    /// The config and budget in effect; services copy them (no lock on the hot path) and
    /// copy again when `version` moves.
    current: RwLock<Current>,
    pub(crate) version: AtomicU64,
    /// `true` when the budget was handed in ([`RetryLayer::share_budget`]): an update of
    /// the config's budget does not replace it.
    shared_budget: bool,
    pub(crate) emitter: Emitter<RetryEvent>,
    pub(crate) metrics: Metrics,
    pub(crate) seeds: Arc<AtomicU64>,
}

#[derive(Clone)]
pub(crate) struct Current {
    pub(crate) config: RetryConfig,
    pub(crate) budget: Option<RetryBudget>,
}

impl Core {
    fn new(
        config: RetryConfig,
        budget: Option<RetryBudget>,
        listeners: Listeners<RetryEvent>,
    ) -> Self {
        let shared_budget = budget.is_some();
        let budget = budget.or_else(|| {
            config
                .budget()
                .build()
                .expect("a validated config's budget is valid")
        });
        Self {
            metrics: Metrics::register(config.name()),
            emitter: Emitter::new(config.name().clone(), listeners),
            current: RwLock::new(Current { config, budget }),
            version: AtomicU64::new(0),
            shared_budget,
            seeds: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The config and budget in effect, and the version they belong to.
    pub(crate) fn current(&self) -> (Current, u64) {
        let current = self.read();
        (current.clone(), self.version.load(Ordering::Acquire))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn config(&self) -> RetryConfig {
        self.read().config.clone()
    }

    pub(crate) fn budget(&self) -> Option<RetryBudget> {
        self.read().budget.clone()
    }

    pub(crate) fn update(&self, config: RetryConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        palisade_core::config::ensure_same_name("retry", current.config.name(), config.name())?;
        if !self.shared_budget && config.budget() != current.config.budget() {
            // A new kind or size of budget starts afresh: its balance is not comparable.
            current.budget = config
                .budget()
                .build()
                .expect("a validated config's budget is valid");
        }
        current.config = config;
        // Bumped under the lock: a service that reads the new version reads this config.
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

impl RetryLayer {
    /// The layer of a validated `config`, with the default hooks and a budget of its own
    /// (as the config says).
    pub fn new(config: RetryConfig) -> Self {
        Self::from_parts(config, Hooks::new())
    }

    /// A builder whose [`build`](RetryLayerBuilder::build) gives the layer: the data setters
    /// of [`RetryConfig::builder`] and the hooks, in one chain.
    pub fn builder() -> RetryLayerBuilder {
        RetryLayerBuilder::new()
    }
}

impl<C, A, K> RetryLayer<C, A, K> {
    pub(crate) fn from_parts(config: RetryConfig, hooks: Hooks<C, A, K>) -> Self {
        Self {
            core: Arc::new(Core::new(config, hooks.budget, hooks.listeners)),
            classify: hooks.classify,
            retry_after: hooks.retry_after,
            clone_request: hooks.clone_request,
        }
    }

    /// The config in effect.
    pub fn config(&self) -> RetryConfig {
        self.core.config()
    }

    /// The retry budget shared by every service of this layer: hand it to another layer
    /// ([`share_budget`](Self::share_budget)) to share it, or read
    /// [`available`](RetryBudget::available).
    pub fn budget(&self) -> Option<RetryBudget> {
        self.core.budget()
    }

    /// Judge each attempt's result with `classifier` (a `palisade_core::Classify`, e.g. a
    /// closure `|res: &Result<Res, E>| -> Outcome`): `Failure` is retried.
    pub fn classifier<C2>(self, classifier: C2) -> RetryLayer<C2, A, K> {
        RetryLayer {
            core: self.core,
            classify: classifier,
            retry_after: self.retry_after,
            clone_request: self.clone_request,
        }
    }

    /// Read "not before" hints (`Retry-After`, a rate limiter's `retry_after`) with
    /// `retry_after` (a [`RetryAfter`](crate::RetryAfter)): the next attempt waits at least
    /// that long.
    pub fn retry_after<A2>(self, retry_after: A2) -> RetryLayer<C, A2, K> {
        RetryLayer {
            core: self.core,
            classify: self.classify,
            retry_after,
            clone_request: self.clone_request,
        }
    }

    /// Copy requests for the next attempt with `clone_request` (a
    /// [`CloneRequest`](crate::CloneRequest), e.g. a closure `|req: &Req| -> Option<Req>`;
    /// `None`: this request is not retried). The default clones requests that are `Clone`.
    pub fn clone_request<K2>(self, clone_request: K2) -> RetryLayer<C, A, K2> {
        RetryLayer {
            core: self.core,
            classify: self.classify,
            retry_after: self.retry_after,
            clone_request,
        }
    }

    /// Share an existing budget (the same handle may go to several layers) instead of the
    /// config's own. Call it before taking a [`handle`](Self::handle) or making services.
    pub fn share_budget(self, budget: RetryBudget) -> Self {
        let core = Core {
            current: RwLock::new(Current {
                config: self.core.config(),
                budget: Some(budget),
            }),
            version: AtomicU64::new(0),
            shared_budget: true,
            emitter: self.core.emitter.clone(),
            metrics: self.core.metrics.clone(),
            seeds: Arc::clone(&self.core.seeds),
        };
        Self {
            core: Arc::new(core),
            ..self
        }
    }

    /// Call `listener` with every event of this layer (services and handles made before this
    /// call see the listener too).
    #[must_use]
    pub fn on_event(self, listener: impl Fn(&RetryEvent) + Send + Sync + 'static) -> Self {
        self.core.emitter.add_listener(listener);
        self
    }

    /// The handle reading this layer's config and budget.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle {
            core: Arc::clone(&self.core),
        }
    }
}

impl<C: Clone, A: Clone, K: Clone> Clone for RetryLayer<C, A, K> {
    fn clone(&self) -> Self {
        Self {
            core: Arc::clone(&self.core),
            classify: self.classify.clone(),
            retry_after: self.retry_after.clone(),
            clone_request: self.clone_request.clone(),
        }
    }
}

impl<C, A, K> fmt::Debug for RetryLayer<C, A, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("config", &self.core.config())
            .finish_non_exhaustive()
    }
}

impl<S: Clone, C: Clone, A: Clone, K: Clone> Layer<S> for RetryLayer<C, A, K> {
    type Service = Retry<S, C, A, K>;

    fn layer(&self, inner: S) -> Self::Service {
        let shared = Shared::build(
            &self.core,
            inner.clone(),
            self.classify.clone(),
            self.retry_after.clone(),
            self.clone_request.clone(),
        );
        Retry::from_shared(inner, Arc::new(shared))
    }
}
