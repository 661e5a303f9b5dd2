//! The hedge layer and service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::metrics::Counter;
use palisade_core::{Classify, Emitter, RejectionAware};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::config::{AllRequests, HedgeConfig, HedgeDelay, Hedgeable};
use super::future::ResponseFuture;
use super::latency::Latencies;
use crate::budget::RetryBudget;
use crate::event::HedgeEvent;
use crate::policy::{CloneRequest, Cloned};

/// State shared by every clone of one hedge layer's services.
pub(crate) struct Shared<P, C, K> {
    pub(crate) config: HedgeConfig<P, C, K>,
    pub(crate) emitter: Emitter<HedgeEvent>,
    pub(crate) hedges: Counter,
    pub(crate) wins: Counter,
    pub(crate) budget_rejected: Counter,
    latencies: Option<Latencies>,
}

impl<P, C, K> Shared<P, C, K> {
    fn new(config: HedgeConfig<P, C, K>) -> Self {
        let name = &config.name;
        let latencies = match config.delay {
            HedgeDelay::Fixed { .. } => None,
            HedgeDelay::Percentile {
                percentile,
                window,
                min_samples,
            } => Some(Latencies::new(window, percentile, min_samples)),
        };
        Self {
            hedges: Counter::register("palisade_retry_hedges_total", name, &[]),
            wins: Counter::register("palisade_retry_hedge_wins_total", name, &[]),
            budget_rejected: Counter::register(
                "palisade_retry_hedge_budget_rejected_total",
                name,
                &[],
            ),
            emitter: Emitter::new(name.clone(), config.listeners.clone()),
            latencies,
            config,
        }
    }

    /// How long to wait before the next copy; `None` while the percentile is unknown.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.config.delay {
            HedgeDelay::Fixed { delay } => Some(delay),
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
pub struct HedgeLayer<P = AllRequests, C = RejectionAware, K = Cloned> {
    shared: Arc<Shared<P, C, K>>,
}

impl<P, C, K> HedgeLayer<P, C, K> {
    /// A layer from a validated config.
    pub fn new(config: HedgeConfig<P, C, K>) -> Self {
        Self {
            shared: Arc::new(Shared::new(config)),
        }
    }

    /// The config.
    pub fn config(&self) -> &HedgeConfig<P, C, K> {
        &self.shared.config
    }
}

impl<P, C, K> Clone for HedgeLayer<P, C, K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<P, C, K> fmt::Debug for HedgeLayer<P, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<S, P, C, K> Layer<S> for HedgeLayer<P, C, K> {
    type Service = Hedge<S, P, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge {
            inner,
            shared: Arc::clone(&self.shared),
        }
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
    /// Wrap `inner`.
    pub fn new(inner: S, config: HedgeConfig<P, C, K>) -> Self {
        Self {
            inner,
            shared: Arc::new(Shared::new(config)),
        }
    }

    /// The config.
    pub fn config(&self) -> &HedgeConfig<P, C, K> {
        &self.shared.config
    }

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
            .field("config", &self.shared.config)
            .finish()
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
