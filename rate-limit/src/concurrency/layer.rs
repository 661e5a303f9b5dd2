//! The concurrency limit layer.

use std::sync::Arc;

use palisade_core::Listeners;
use tower_layer::Layer;

use super::config::ConcurrencyLimitConfig;
use super::service::{ConcurrencyLimit, ConcurrencyLimitHandle, Shared};
use crate::event::LimitEvent;

/// Limits the calls in flight through every service it wraps, together: all clones share
/// one pool of permits. Built by [`ConcurrencyLimitConfig::builder`].
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    shared: Arc<Shared>,
}

impl ConcurrencyLimitLayer {
    pub(crate) fn from_parts(
        config: ConcurrencyLimitConfig,
        listeners: Listeners<LimitEvent>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared::new(config, listeners)),
        }
    }

    /// A handle reading the limit's state.
    pub fn handle(&self) -> ConcurrencyLimitHandle {
        ConcurrencyLimitHandle::new(Arc::clone(&self.shared))
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::from_shared(inner, Arc::clone(&self.shared))
    }
}
