//! The load shedding layer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::{AllDefault, Shared, Shed, ShedConfig};
use crate::Switch;

/// Sheds low-priority requests first under overload; see the [module docs](super).
///
/// All clones (and all services it builds) share one in-flight count and delay estimate.
pub struct ShedLayer<P = AllDefault> {
    shared: Arc<Shared>,
    priority: P,
}

impl ShedLayer {
    /// A shedder with the limits of `config`; every request has the default priority until
    /// [`ShedLayer::prioritize`] says otherwise.
    pub fn new(config: ShedConfig) -> Self {
        Self {
            shared: Arc::new(Shared::new(config)),
            priority: AllDefault,
        }
    }
}

impl<P> ShedLayer<P> {
    /// Tell each request's priority with `priority` (a closure `Fn(&Req) -> Priority` or
    /// any [`Prioritize`](super::Prioritize)).
    pub fn prioritize<Q>(self, priority: Q) -> ShedLayer<Q> {
        ShedLayer {
            shared: self.shared,
            priority,
        }
    }

    /// Call `listener` with every event of this layer (services made before this call see
    /// the listener too).
    #[must_use]
    pub fn on_event(self, listener: impl Fn(&crate::DegradeEvent) + Send + Sync + 'static) -> Self {
        self.shared.emitter.add_listener(listener);
        self
    }

    /// Requests in flight through this shedder (all clones).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// The queueing delay estimate.
    pub fn queue_delay(&self) -> Duration {
        self.shared.queue_delay()
    }

    /// A handle on this layer (and every service it built): its name, its config, its
    /// limits changed at run time, its switch, its load.
    pub fn handle(&self) -> super::ShedHandle {
        super::ShedHandle::new(Arc::clone(&self.shared))
    }

    /// The degrade switch: in degraded mode everything below critical is shed.
    pub fn switch(&self) -> &Switch {
        &self.shared.switch
    }
}

impl<S, P: Clone> Layer<S> for ShedLayer<P> {
    type Service = Shed<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed::from_shared(inner, self.priority.clone(), Arc::clone(&self.shared))
    }
}

impl<P: Clone> Clone for ShedLayer<P> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            priority: self.priority.clone(),
        }
    }
}

impl<P> fmt::Debug for ShedLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShedLayer")
            .field("name", &self.shared.name)
            .field("in_flight", &self.shared.in_flight())
            .finish_non_exhaustive()
    }
}
