//! The retry layer's handle.

use std::fmt;
use std::sync::Arc;

use palisade_core::{ConfigError, Name};

use crate::budget::RetryBudget;
use crate::config::RetryConfig;
use crate::layer::Core;

/// Reads and changes a retry layer's config at run time; cloneable, shared with the layer.
///
/// Each service carries a copy of the settings (no lock on the hot path) and takes the new
/// ones at its next call after an [`update`](Self::update); requests already retrying
/// finish with the settings they started with.
#[derive(Clone)]
pub struct RetryHandle {
    pub(crate) core: Arc<Core>,
}

impl RetryHandle {
    /// The layer's name.
    pub fn name(&self) -> &Name {
        self.core.emitter.name()
    }

    /// The config the layer runs.
    pub fn config(&self) -> RetryConfig {
        self.core.config()
    }

    /// The budget, if any (shared with the layer and every layer given the same budget).
    pub fn budget(&self) -> Option<RetryBudget> {
        self.core.budget()
    }

    /// A snapshot: the config and the retries the budget allows now (`None`: no budget).
    pub fn snapshot(&self) -> RetrySnapshot {
        RetrySnapshot {
            config: self.config(),
            budget_available: self.core.budget().as_ref().map(RetryBudget::available),
        }
    }

    /// Apply `config` from the next call of each service on: attempts, backoff, time
    /// limits, seed and (unless the layer shares a budget handed to it) the budget, which
    /// starts afresh when its parameters change. The name is fixed when the layer is built;
    /// an invalid config or another name changes nothing.
    pub fn update(&self, config: RetryConfig) -> Result<(), ConfigError> {
        self.core.update(config)
    }
}

impl fmt::Debug for RetryHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryHandle")
            .field("name", self.name())
            .finish_non_exhaustive()
    }
}

/// A retry layer's state at one moment.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RetrySnapshot {
    /// The config the layer runs.
    pub config: RetryConfig,
    /// Retries the budget allows now (`None`: no budget).
    pub budget_available: Option<f64>,
}
