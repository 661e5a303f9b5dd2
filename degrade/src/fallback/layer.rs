//! The fallback layer.

use std::fmt;
use std::sync::Arc;

use palisade_core::DefaultClassifier;
use tower_layer::Layer;

use super::{Fallback, FallbackConfig, Shared};
use crate::Switch;

/// Answers from a fallback when the live call fails or is rejected; see the
/// [module docs](super).
///
/// All clones (and all services it builds) share one name, listeners, metrics and switch.
pub struct FallbackLayer<F, C = DefaultClassifier> {
    shared: Arc<Shared<F, C>>,
}

impl<F> FallbackLayer<F> {
    /// Fall back to `source` on what `config` triggers on; every `Err` is a failure.
    pub fn new(config: FallbackConfig, source: F) -> Self {
        Self::with_classifier(config, source, DefaultClassifier)
    }
}

impl<F, C> FallbackLayer<F, C> {
    /// Fall back to `source`, with `classifier` deciding which answers are failures (e.g. a
    /// `503` response).
    pub fn with_classifier(config: FallbackConfig, source: F, classifier: C) -> Self {
        Self {
            shared: Arc::new(Shared::new(config, source, classifier)),
        }
    }

    /// The degrade switch: put the layer into degraded mode (always fall back) and back.
    pub fn switch(&self) -> &Switch {
        &self.shared.switch
    }
}

impl<S, F, C> Layer<S> for FallbackLayer<F, C> {
    type Service = Fallback<S, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback::from_shared(inner, Arc::clone(&self.shared))
    }
}

impl<F, C> Clone for FallbackLayer<F, C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<F, C> fmt::Debug for FallbackLayer<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("name", &self.shared.name)
            .field("triggers", &self.shared.triggers)
            .finish_non_exhaustive()
    }
}
