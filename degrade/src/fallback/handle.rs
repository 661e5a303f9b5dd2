//! The fallback layer's handle.

use std::fmt;
use std::sync::Arc;

use palisade_core::config::ensure_same_name;
use palisade_core::{ConfigError, Name};

use super::FallbackConfig;
use super::state::State;
use crate::{Switch, Triggers};

/// A cloneable handle on a [`FallbackLayer`](super::FallbackLayer) and every service it
/// built, from [`FallbackLayer::handle`](super::FallbackLayer::handle): its name, its
/// config, a validated [`update`](Self::update) of its triggers at run time, its degrade
/// switch and a [`snapshot`](Self::snapshot).
///
/// ```
/// use palisade_core::RejectionKind;
/// use palisade_degrade::fallback::Value;
/// use palisade_degrade::{FallbackConfig, FallbackLayer};
///
/// let layer = FallbackLayer::new(FallbackConfig::default(), Value::new(0u32));
/// let handle = layer.handle();
/// let quieter = handle
///     .config()
///     .to_builder()
///     .on_rejection(RejectionKind::RateLimited, false)
///     .build()
///     .unwrap();
/// handle.update(quieter).unwrap();
/// assert!(!handle.config().triggers().rate_limited);
/// handle.switch().degrade();
/// assert!(handle.snapshot().degraded);
/// ```
#[derive(Clone)]
pub struct FallbackHandle {
    state: Arc<State>,
}

/// What a [`FallbackHandle`] sees at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct FallbackSnapshot {
    /// The switch is in degraded mode: every call is answered by the fallback.
    pub degraded: bool,
    /// What triggers the fallback now.
    pub triggers: Triggers,
}

impl FallbackHandle {
    pub(crate) fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// The layer's name.
    pub fn name(&self) -> &Name {
        &self.state.name
    }

    /// The config in force: the name and the current triggers, with this layer's switch
    /// (listeners are not part of it).
    pub fn config(&self) -> FallbackConfig {
        FallbackConfig {
            name: self.state.name.clone(),
            triggers: self.state.triggers.load(),
            listeners: palisade_core::Listeners::new(),
            switch: self.state.switch.clone(),
        }
    }

    /// Apply `config`'s triggers to every service of the layer, from the next call on.
    /// Refused (and nothing changes) when `config` names another layer. The layer keeps
    /// its own switch and listeners: `config`'s are not data.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "every handle's update takes its config by value"
    )]
    pub fn update(&self, config: FallbackConfig) -> Result<(), ConfigError> {
        ensure_same_name("fallback", &self.state.name, &config.name)?;
        self.state.triggers.store(config.triggers);
        Ok(())
    }

    /// The layer's degrade switch.
    pub fn switch(&self) -> &Switch {
        &self.state.switch
    }

    /// The layer's mode and triggers now.
    pub fn snapshot(&self) -> FallbackSnapshot {
        FallbackSnapshot {
            degraded: self.state.switch.is_degraded(),
            triggers: self.state.triggers.load(),
        }
    }
}

impl fmt::Debug for FallbackHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackHandle")
            .field("name", &self.state.name)
            .field("snapshot", &self.snapshot())
            .finish()
    }
}
