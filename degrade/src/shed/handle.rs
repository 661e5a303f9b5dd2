//! The load shedder's handle.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{ConfigError, Name};

use super::{Shared, ShedConfig};
use crate::Switch;

/// A cloneable handle on a [`ShedLayer`](super::ShedLayer) and every service it built,
/// from [`ShedLayer::handle`](super::ShedLayer::handle): its name, its config, a validated
/// [`update`](Self::update) of its limits at run time, its degrade switch and a
/// [`snapshot`](Self::snapshot) of its load.
///
/// ```
/// use palisade_degrade::{ShedConfig, ShedLayer};
///
/// let layer = ShedLayer::new(ShedConfig::builder().name("api").max_in_flight(100).build().unwrap());
/// let handle = layer.handle();
/// let tighter = handle.config().to_builder().max_in_flight(20).build().unwrap();
/// handle.update(tighter).unwrap();
/// assert_eq!(handle.config().max_in_flight(), Some(20));
/// assert_eq!(handle.snapshot().in_flight, 0);
/// ```
#[derive(Clone)]
pub struct ShedHandle {
    shared: Arc<Shared>,
}

/// What a [`ShedHandle`] sees at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ShedSnapshot {
    /// Requests in flight through the shedder.
    pub in_flight: usize,
    /// The queueing delay estimate.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "palisade_core::config::duration::serialize")
    )]
    pub queue_delay: Duration,
    /// The switch is in degraded mode: everything below critical is shed.
    pub degraded: bool,
}

impl ShedHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The layer's name.
    pub fn name(&self) -> &Name {
        &self.shared.name
    }

    /// The config in force (its listeners are not part of it).
    pub fn config(&self) -> ShedConfig {
        self.shared.config()
    }

    /// Apply `config`'s limits (max in flight, target delay, thresholds) to every service
    /// of the layer, from the next admission on: requests already admitted keep their
    /// slot. Refused (and nothing changes) when `config` names another layer. The layer
    /// keeps its own overload signal, switch and listeners: `config`'s are not data.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "every handle's update takes its config by value"
    )]
    pub fn update(&self, config: ShedConfig) -> Result<(), ConfigError> {
        self.shared.update(&config)
    }

    /// The layer's degrade switch.
    pub fn switch(&self) -> &Switch {
        &self.shared.switch
    }

    /// The shedder's load and mode now.
    pub fn snapshot(&self) -> ShedSnapshot {
        ShedSnapshot {
            in_flight: self.shared.in_flight(),
            queue_delay: self.shared.queue_delay(),
            degraded: self.shared.switch.is_degraded(),
        }
    }
}

impl fmt::Debug for ShedHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShedHandle")
            .field("name", &self.shared.name)
            .field("snapshot", &self.snapshot())
            .finish()
    }
}
