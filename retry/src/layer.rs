//! The retry layer.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use crate::budget::RetryBudget;
use crate::config::RetryConfig;
use palisade_core::RejectionAware;

use crate::policy::Cloned;
use crate::service::{Retry, Shared};

/// Wraps services in [`Retry`]. All services made by one layer (and all their clones)
/// share one budget, one set of metric handles and one seed sequence.
pub struct RetryLayer<C = RejectionAware, A = RejectionAware, K = Cloned> {
    shared: Arc<Shared<C, A, K>>,
}

impl<C, A, K> RetryLayer<C, A, K> {
    /// A layer from a validated config; registers the metric handles.
    pub fn new(config: RetryConfig<C, A, K>) -> Self {
        Self {
            shared: Arc::new(Shared::new(config)),
        }
    }

    /// The config the layer was built from.
    pub fn config(&self) -> &RetryConfig<C, A, K> {
        &self.shared.config
    }

    /// The retry budget shared by every service of this layer: hand it to another layer's
    /// builder (`.budget(handle)`) to share it, or read [`available`](RetryBudget::available).
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.shared.budget()
    }
}

impl<C, A, K> Clone for RetryLayer<C, A, K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C, A, K> fmt::Debug for RetryLayer<C, A, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<S, C, A, K> Layer<S> for RetryLayer<C, A, K> {
    type Service = Retry<S, C, A, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_shared(inner, Arc::clone(&self.shared))
    }
}
