//! The adaptive limit layer.

use std::sync::Arc;

use palisade_core::Listeners;
use tower_layer::Layer;

use super::config::AdaptiveLimitConfig;
use super::handle::AdaptiveLimitHandle;
use super::service::{AdaptiveLimit, Shared};
use super::signal::LatencyOnly;
use crate::event::LimitEvent;

/// Limits the calls in flight through every service it wraps to a limit that follows the
/// backend's capacity; all clones share one limit. Built by
/// [`AdaptiveLimitConfig::builder`].
///
/// Calls over the limit are rejected at once with
/// [`Overloaded`](palisade_core::Overloaded) (as Netflix's and Envoy's adaptive limiters
/// do): queueing would hide the very latency the algorithms measure. Put a retry with
/// backoff or a fallback outside it.
///
/// # What counts as a failure
///
/// By default results are judged by [`LatencyOnly`]: an answer is a latency sample and no
/// error feeds one (a fast error says nothing about load; a timed-out attempt is
/// ambiguous, a brown-out's slow calls are not overload; a rejection made locally by our
/// own layers is not the backend's load), so a caller's own limit below this one never
/// shrinks it. A backend that says "overloaded" (`503`, `429`) is a sharper signal: set a
/// classifier that returns `Failure` for it with
/// [`classifier`](AdaptiveLimitLayer::classifier).
#[derive(Debug, Clone)]
pub struct AdaptiveLimitLayer<C = LatencyOnly> {
    shared: Arc<Shared>,
    classifier: C,
}

impl AdaptiveLimitLayer {
    /// The layer of a validated `config`, with no listeners yet.
    pub fn new(config: AdaptiveLimitConfig) -> Self {
        Self::from_parts(config, Listeners::new())
    }

    /// A builder whose [`build`](crate::AdaptiveLimitConfigBuilder::build) gives the layer:
    /// the shortcut for `AdaptiveLimitLayer::new(AdaptiveLimitConfig::builder()…build()?)`.
    pub fn builder() -> super::config::AdaptiveLimitConfigBuilder<Self> {
        super::config::AdaptiveLimitConfigBuilder::new()
    }

    pub(crate) fn from_parts(
        config: AdaptiveLimitConfig,
        listeners: Listeners<LimitEvent>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared::new(config, listeners)),
            classifier: LatencyOnly,
        }
    }
}

impl<C> AdaptiveLimitLayer<C> {
    /// Call `listener` with every event of this layer (the state is shared: services and
    /// handles made before this call see the listener too).
    #[must_use]
    pub fn on_event(self, listener: impl Fn(&LimitEvent) + Send + Sync + 'static) -> Self {
        self.shared.emitter.add_listener(listener);
        self
    }

    /// Decide which results are failures (a decrease signal) with `classifier`; results
    /// classified `Ignore` feed no sample.
    pub fn classifier<C2>(self, classifier: C2) -> AdaptiveLimitLayer<C2> {
        AdaptiveLimitLayer {
            shared: self.shared,
            classifier,
        }
    }

    /// A handle reading the limit's state.
    pub fn handle(&self) -> AdaptiveLimitHandle {
        AdaptiveLimitHandle::new(Arc::clone(&self.shared))
    }
}

impl<S, C: Clone> Layer<S> for AdaptiveLimitLayer<C> {
    type Service = AdaptiveLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveLimit::from_parts(inner, Arc::clone(&self.shared), self.classifier.clone())
    }
}
