//! The concurrency limit's handle.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use palisade_core::{ConfigError, Name};

use super::ConcurrencyLimitConfig;
use super::service::Shared;

/// Reads a concurrency limit's state; from [`ConcurrencyLimitLayer::handle`](super::ConcurrencyLimitLayer::handle).
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ConcurrencyLimitHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The limit's name.
    pub fn name(&self) -> &Name {
        self.shared.emitter.name()
    }

    /// The limit in effect.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::Acquire)
    }

    /// The config in effect.
    pub fn config(&self) -> ConcurrencyLimitConfig {
        self.shared.config()
    }

    /// Apply `config` from now on: the limit (as
    /// [`set_max_in_flight`](Self::set_max_in_flight)), the wait and the queue bound. The
    /// name is fixed when the layer is built; an invalid config or another name changes
    /// nothing.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "one signature for every handle"
    )]
    pub fn update(&self, config: ConcurrencyLimitConfig) -> Result<(), ConfigError> {
        self.shared.update(&config)
    }

    /// Change the limit at run time, for all clones. Raising it admits waiting calls at
    /// once; lowering it takes effect as calls in flight finish (none is cancelled).
    /// Refuses zero.
    pub fn set_max_in_flight(&self, max: usize) -> Result<(), ConfigError> {
        self.shared.set_max_in_flight(max)
    }

    /// Permits held now: calls in flight plus services readied but not yet called.
    pub fn in_flight(&self) -> usize {
        let shared = &self.shared;
        let issued =
            shared.max_in_flight.load(Ordering::Acquire) + shared.debt.load(Ordering::Acquire);
        issued.saturating_sub(shared.semaphore.available_permits())
    }

    /// Calls waiting for a permit now (services readied in wait mode with every permit
    /// taken, and calls waiting in their response futures).
    pub fn waiting(&self) -> usize {
        self.shared.queue.waiting()
    }
}
