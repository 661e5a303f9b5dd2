//! The throttle gate's handle.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::Name;
use palisade_core::throttle::Throttle;
use tokio::time::Instant;

use super::config::ThrottleConfig;
use super::state::Gate;

/// The gate's state at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSnapshot {
    /// Time left while closed; `None` when not closed.
    pub closed_for: Option<Duration>,
    /// Calls per interval while ramping back up; `None` when fully open.
    pub allowance: Option<u32>,
}

impl ThrottleSnapshot {
    /// `true` when the gate admits every call.
    pub fn is_open(&self) -> bool {
        self.closed_for.is_none() && self.allowance.is_none()
    }
}

/// Reads and controls a throttle gate; clones share it with every clone of the layer.
#[derive(Debug, Clone)]
pub struct ThrottleHandle {
    pub(crate) gate: Arc<Gate>,
}

impl ThrottleHandle {
    /// The layer's name.
    pub fn name(&self) -> &Name {
        self.gate.name()
    }

    /// The current config.
    pub fn config(&self) -> ThrottleConfig {
        self.gate.config()
    }

    /// Replace the config (validated; the name cannot change, the gate's state is kept).
    pub fn update(&self, config: ThrottleConfig) -> Result<(), palisade_core::ConfigError> {
        config.validate()?;
        palisade_core::config::ensure(
            config.name() == self.gate.name(),
            "throttle",
            "name",
            config.name().as_str(),
            format!("the layer's name, {}", self.gate.name()),
        )?;
        *self.gate.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// The gate's state now.
    pub fn snapshot(&self) -> ThrottleSnapshot {
        self.gate.snapshot(Instant::now())
    }

    /// Close the gate for `duration` from now, as an upstream hint would.
    pub fn throttle_for(&self, duration: Duration) {
        self.gate.throttle(Instant::now(), Throttle::For(duration));
    }

    /// Close the gate until `instant`, as an upstream hint would.
    pub fn throttle_until(&self, instant: Instant) {
        self.gate.throttle(Instant::now(), Throttle::Until(instant));
    }

    /// Open the gate fully at once.
    pub fn reopen(&self) {
        self.gate.reopen();
    }
}
