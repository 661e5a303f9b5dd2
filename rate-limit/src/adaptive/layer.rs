//! The adaptive limit layer.

use std::sync::Arc;

use palisade_core::{DefaultClassifier, Listeners};
use tower_layer::Layer;

use super::config::AdaptiveLimitConfig;
use super::service::{AdaptiveLimit, AdaptiveLimitHandle, Shared};
use crate::event::LimitEvent;

/// Limits the calls in flight through every service it wraps to a limit that follows the
/// backend's capacity; all clones share one limit. Built by
/// [`AdaptiveLimitConfig::builder`].
///
/// Calls over the limit are rejected at once with
/// [`Overloaded`](palisade_core::Overloaded) (as Netflix's and Envoy's adaptive limiters
/// do): queueing would hide the very latency the algorithms measure. Put a retry with
/// backoff or a fallback outside it.
#[derive(Debug, Clone)]
pub struct AdaptiveLimitLayer<C = DefaultClassifier> {
    shared: Arc<Shared>,
    classifier: C,
}

impl AdaptiveLimitLayer {
    pub(crate) fn from_parts(
        config: AdaptiveLimitConfig,
        listeners: Listeners<LimitEvent>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared::new(config, listeners)),
            classifier: DefaultClassifier,
        }
    }
}

impl<C> AdaptiveLimitLayer<C> {
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
