//! The timeout layer's handle.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade_core::{ConfigError, Name, time};

use crate::config::{TimeoutConfig, validate_timeout};
use crate::layer::Shared;

/// Reads and changes one timeout layer's configured timeout, for all its clones at once.
///
/// ```
/// use palisade_timeout::TimeoutLayer;
/// use std::time::Duration;
///
/// let layer = TimeoutLayer::builder().timeout(Duration::from_secs(1)).build().expect("a valid timeout");
/// let handle = layer.handle();
/// handle.set_timeout(Duration::from_millis(300)).expect("above zero");
/// assert_eq!(layer.handle().timeout(), Duration::from_millis(300));
/// assert!(handle.set_timeout(Duration::ZERO).is_err());
/// ```
#[derive(Clone)]
pub struct TimeoutHandle {
    pub(crate) shared: Arc<Shared>,
}

impl TimeoutHandle {
    /// The layer's name.
    pub fn name(&self) -> &Name {
        self.shared.name()
    }

    /// The configured timeout now in effect for new calls.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout()
    }

    /// The config now in effect (the name it was built with, the current timeout).
    pub fn config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .name(self.name().clone())
            .timeout(self.timeout())
            .build()
            .expect("a running layer's config is valid")
    }

    /// Apply `config` to calls made from now on (calls in flight keep theirs). The name is
    /// fixed when the layer is built: a config with another name is refused, as is an
    /// invalid one; nothing changes then.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "one signature for every handle"
    )]
    pub fn update(&self, config: TimeoutConfig) -> Result<(), ConfigError> {
        palisade_core::config::ensure_same_name("timeout", self.name(), config.name())?;
        self.set_timeout(config.timeout())
    }

    /// A snapshot of the layer's settings (the same as [`config`](Self::config): a timeout
    /// has no other state).
    pub fn snapshot(&self) -> TimeoutConfig {
        self.config()
    }

    /// Change the configured timeout for calls made from now on (calls in flight keep
    /// theirs). Refuses zero.
    pub fn set_timeout(&self, timeout: Duration) -> Result<(), ConfigError> {
        validate_timeout(timeout)?;
        self.shared
            .timeout_nanos
            .store(time::nanos(timeout), Ordering::Relaxed);
        Ok(())
    }
}

impl fmt::Debug for TimeoutHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutHandle")
            .field("name", self.name())
            .field("timeout", &self.timeout())
            .finish()
    }
}
