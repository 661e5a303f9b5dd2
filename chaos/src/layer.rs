//! The chaos layer.

use std::fmt;
use std::sync::Arc;

use palisade_core::Emitter;
use tower_layer::Layer;

use crate::config::ChaosConfig;
use crate::handle::{ChaosHandle, Control};
use crate::service::{Chaos, Shared};

/// Wraps a service in [`Chaos`], which injects faults into its calls.
///
/// All services built by one layer (and all their clones) share one state: one on/off
/// switch, one set of rates, one RNG sequence, one schedule clock, controlled through
/// [`ChaosLayer::handle`]. The schedule's clock starts when the layer is created.
pub struct ChaosLayer<Req, Res, E> {
    shared: Arc<Shared<Req, Res, E>>,
    control: Arc<Control>,
}

impl<Req, Res, E> ChaosLayer<Req, Res, E> {
    /// A layer injecting faults as `config` says; the schedule starts now (tokio time).
    pub fn new(config: ChaosConfig<Req, Res, E>) -> Self {
        let ChaosConfig {
            settings,
            funcs,
            listeners,
        } = config;
        let emitter = Emitter::new(settings.name.clone(), listeners);
        let control = Control::new(
            settings.enabled,
            settings.rates.by_index(),
            settings.seed,
            emitter,
        );
        Self {
            shared: Arc::new(Shared::new(funcs, settings.latency, settings.schedule)),
            control: Arc::new(control),
        }
    }

    /// Call `listener` with every event of this layer (services and handles made before this
    /// call see the listener too).
    #[must_use]
    pub fn on_event(self, listener: impl Fn(&crate::ChaosEvent) + Send + Sync + 'static) -> Self {
        self.control.emitter.add_listener(listener);
        self
    }

    /// A handle to switch injection on and off, change rates and read counters.
    pub fn handle(&self) -> ChaosHandle {
        ChaosHandle::new(Arc::clone(&self.control))
    }
}

impl<Req, Res, E> Clone for ChaosLayer<Req, Res, E> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            control: Arc::clone(&self.control),
        }
    }
}

impl<Req, Res, E> fmt::Debug for ChaosLayer<Req, Res, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosLayer")
            .field("handle", &self.handle())
            .finish_non_exhaustive()
    }
}

impl<S, Req, Res, E> Layer<S> for ChaosLayer<Req, Res, E> {
    type Service = Chaos<S, Req, Res, E>;

    fn layer(&self, inner: S) -> Self::Service {
        Chaos::new(inner, Arc::clone(&self.shared), Arc::clone(&self.control))
    }
}
