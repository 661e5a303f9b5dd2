//! The stale cache's handle.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use palisade_core::config::{ensure, ensure_same_name};
use palisade_core::{ConfigError, Listeners, Name};

use super::StaleConfig;
use super::service::Core;
use crate::Switch;

/// What a handle needs of a cache, whatever its key and value types.
pub(crate) trait View: Send + Sync {
    fn name(&self) -> &Name;
    fn config(&self) -> StaleConfig;
    fn apply(&self, config: &StaleConfig);
    fn switch(&self) -> &Switch;
    fn entries(&self) -> usize;
    fn forget_all(&self);
}

impl<KF, K, V> View for Core<KF, K, V>
where
    KF: Send + Sync,
    K: Hash + Eq + Clone + Send,
    V: Send + Sync,
{
    fn name(&self) -> &Name {
        &self.name
    }

    fn config(&self) -> StaleConfig {
        StaleConfig {
            name: self.name.clone(),
            capacity: self.capacity,
            max_staleness: self.max_staleness(),
            triggers: self.triggers.load(),
            listeners: Listeners::new(),
            switch: self.switch.clone(),
        }
    }

    fn apply(&self, config: &StaleConfig) {
        self.triggers.store(config.triggers);
        self.set_max_staleness(config.max_staleness);
    }

    fn switch(&self) -> &Switch {
        &self.switch
    }

    fn entries(&self) -> usize {
        self.len()
    }

    fn forget_all(&self) {
        self.clear();
    }
}

/// A cloneable handle on a [`StaleCacheLayer`](super::StaleCacheLayer) and every service
/// it built, from [`StaleCacheLayer::handle`](super::StaleCacheLayer::handle): its name,
/// its config, a validated [`update`](Self::update) of its triggers and staleness bound at
/// run time, its degrade switch, a [`snapshot`](Self::snapshot) and
/// [`clear`](Self::clear).
///
/// ```
/// use std::time::Duration;
/// use palisade_degrade::{StaleCacheLayer, StaleConfig};
///
/// let layer: StaleCacheLayer<_, u32, String> =
///     StaleCacheLayer::new(StaleConfig::default(), |id: &u32| *id);
/// let handle = layer.handle();
/// let longer = handle
///     .config()
///     .to_builder()
///     .max_staleness(Duration::from_secs(600))
///     .build()
///     .unwrap();
/// handle.update(longer).unwrap();
/// assert_eq!(handle.config().max_staleness(), Duration::from_secs(600));
/// assert_eq!(handle.snapshot().entries, 0);
/// ```
#[derive(Clone)]
pub struct StaleHandle {
    core: Arc<dyn View>,
}

/// What a [`StaleHandle`] sees at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct StaleSnapshot {
    /// Answers remembered.
    pub entries: usize,
    /// The switch is in degraded mode: answers come from the cache when it has one.
    pub degraded: bool,
}

impl StaleHandle {
    pub(crate) fn new(core: Arc<dyn View>) -> Self {
        Self { core }
    }

    /// The layer's name.
    pub fn name(&self) -> &Name {
        self.core.name()
    }

    /// The config in force, with this layer's switch (listeners are not part of it).
    pub fn config(&self) -> StaleConfig {
        self.core.config()
    }

    /// Apply `config`'s triggers and `max_staleness` to every service of the layer, from
    /// the next call on (a shorter bound hides older entries at once; a longer one serves
    /// entries still kept: a lookup drops an entry it finds too old). Refused, and nothing changes, when `config` names another
    /// layer or changes the capacity (the store is sized when the layer is built). The
    /// layer keeps its own switch and listeners: `config`'s are not data.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "every handle's update takes its config by value"
    )]
    pub fn update(&self, config: StaleConfig) -> Result<(), ConfigError> {
        let current = self.core.config();
        ensure_same_name("stale", &current.name, &config.name)?;
        ensure(
            config.capacity == current.capacity,
            "stale",
            "capacity",
            config.capacity,
            format!(
                "the layer's capacity {} (the store is sized when the layer is built)",
                current.capacity
            ),
        )?;
        self.core.apply(&config);
        Ok(())
    }

    /// The layer's degrade switch.
    pub fn switch(&self) -> &Switch {
        self.core.switch()
    }

    /// Forget every remembered answer.
    pub fn clear(&self) {
        self.core.forget_all();
    }

    /// The cache's size and mode now.
    pub fn snapshot(&self) -> StaleSnapshot {
        StaleSnapshot {
            entries: self.core.entries(),
            degraded: self.core.switch().is_degraded(),
        }
    }
}

impl fmt::Debug for StaleHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleHandle")
            .field("name", self.core.name())
            .field("snapshot", &self.snapshot())
            .finish()
    }
}
