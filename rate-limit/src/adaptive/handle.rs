//! The adaptive limit's handle.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use palisade_core::{ConfigError, Name};

use super::AdaptiveLimitConfig;
use super::service::Shared;

/// Reads an adaptive limit's state; from
/// [`AdaptiveLimitLayer::handle`](super::AdaptiveLimitLayer::handle).
#[derive(Debug, Clone)]
pub struct AdaptiveLimitHandle {
    pub(crate) shared: Arc<Shared>,
}

impl AdaptiveLimitHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The limit's name.
    pub fn name(&self) -> &Name {
        self.shared.emitter.name()
    }

    /// The config in effect: the one the limit was built with, or the last one
    /// [`update`](Self::update) applied (the limit itself moves between its bounds).
    pub fn config(&self) -> AdaptiveLimitConfig {
        self.shared
            .config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Apply `config` to the running limit: new bounds `min_limit` and `max_limit` take
    /// effect at once (the current limit is clamped into them, and the algorithm keeps
    /// moving it from there); a changed `initial_limit` restarts the limit from it (a
    /// `LimitChanged` event says so); `max_wait` and `max_queue` apply to the calls that
    /// start waiting from then on. The algorithm and its parameters are fixed when the
    /// layer is built (its measurements belong to them), as is the name: a config that
    /// changes them, or an invalid one, is refused naming the field and changes nothing.
    ///
    /// ```
    /// use palisade_rate_limit::{AdaptiveLimitConfig, AdaptiveLimitLayer};
    ///
    /// let config = AdaptiveLimitConfig::builder().name("search").initial_limit(50).build().unwrap();
    /// let handle = AdaptiveLimitLayer::new(config).handle();
    /// handle.update(handle.config().to_builder().limits(1, 20).initial_limit(20).build().unwrap()).unwrap();
    /// assert_eq!(handle.limit(), 20);
    ///
    /// let renamed = handle.config().to_builder().name("other").build().unwrap();
    /// assert_eq!(handle.update(renamed).unwrap_err().field(), "name");
    /// assert_eq!(handle.config().max_limit(), 20, "a refused update changes nothing");
    /// ```
    #[allow(
        clippy::needless_pass_by_value,
        reason = "one signature for every handle"
    )]
    pub fn update(&self, config: AdaptiveLimitConfig) -> Result<(), ConfigError> {
        self.shared.update(config)
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.shared.limit.load(Ordering::Acquire)
    }

    /// Slots held now: calls in flight plus services readied but not yet called.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// Calls waiting for a slot now (wait mode).
    pub fn waiting(&self) -> usize {
        self.shared.queue.waiting()
    }
}
