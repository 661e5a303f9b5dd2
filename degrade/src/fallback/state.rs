//! The fallback layer's shared state: what the layer, its services and its handle share.

use std::sync::Arc;

use palisade_core::Emitter;
use palisade_core::Name;
use palisade_core::metrics::Counter;

use super::FallbackConfig;
use crate::config::AtomicTriggers;
use crate::metrics::{ByTrigger, mode_gauge};
use crate::{DegradeEvent, Switch};

/// State shared by a layer and all its services.
pub(crate) struct Shared<F> {
    pub(crate) state: Arc<State>,
    pub(crate) source: F,
}

/// The part of the shared state that does not depend on the fallback source: what a
/// [`FallbackHandle`](super::FallbackHandle) reads and changes.
pub(crate) struct State {
    pub(crate) name: Name,
    pub(crate) triggers: AtomicTriggers,
    pub(crate) emitter: Emitter<DegradeEvent>,
    pub(crate) served: ByTrigger,
    pub(crate) failed: Counter,
    pub(crate) switch: Switch,
}

impl<F> std::ops::Deref for Shared<F> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.state
    }
}

impl<F> Shared<F> {
    pub(crate) fn new(config: FallbackConfig, source: F) -> Self {
        let FallbackConfig {
            name,
            triggers,
            listeners,
            switch,
        } = config;
        let emitter = Emitter::new(name.clone(), listeners);
        switch.watch(emitter.clone(), mode_gauge(&name));
        Self {
            state: Arc::new(State {
                served: ByTrigger::register("palisade_degrade_fallback_total", &name),
                failed: Counter::register("palisade_degrade_fallback_failed_total", &name, &[]),
                name,
                triggers: AtomicTriggers::new(triggers),
                emitter,
                switch,
            }),
            source,
        }
    }
}
