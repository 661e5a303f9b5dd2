//! The concurrency limit layer.

use std::sync::Arc;

use palisade_core::Listeners;
use tower_layer::Layer;

use super::config::ConcurrencyLimitConfig;
use super::handle::ConcurrencyLimitHandle;
use super::service::{ConcurrencyLimit, Shared};
use crate::event::LimitEvent;

/// Limits the calls in flight through every service it wraps, together: all clones share
/// one pool of permits. Built by [`ConcurrencyLimitConfig::builder`].
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    shared: Arc<Shared>,
}

impl ConcurrencyLimitLayer {
    /// The layer of a validated `config`, with no listeners yet.
    pub fn new(config: ConcurrencyLimitConfig) -> Self {
        Self::from_parts(config, Listeners::new())
    }

    /// A builder whose [`build`](crate::ConcurrencyLimitConfigBuilder::build) gives the
    /// layer: the shortcut for
    /// `ConcurrencyLimitLayer::new(ConcurrencyLimitConfig::builder(n)…build()?)`.
    pub fn builder(max_in_flight: usize) -> super::config::ConcurrencyLimitConfigBuilder<Self> {
        super::config::ConcurrencyLimitConfigBuilder::new(max_in_flight)
    }

    /// Call `listener` with every event of this layer (the state is shared: services and
    /// handles made before this call see the listener too).
    #[must_use]
    pub fn on_event(self, listener: impl Fn(&LimitEvent) + Send + Sync + 'static) -> Self {
        self.shared.emitter.add_listener(listener);
        self
    }

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
