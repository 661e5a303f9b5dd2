//! The throttle gate's config: plain, validated, serializable data.

use std::time::Duration;

use palisade_core::config::{ensure, ensure_name};
use palisade_core::{ConfigError, Name};

const LAYER: &str = "throttle";

/// What a call does while the gate is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ThrottleMode {
    /// Refuse at once with `RateLimited` and the exact time left (the default: a retry
    /// above takes it as its floor).
    Reject,
    /// Wait for the gate, at most `max_wait` and never past the caller's deadline; a call
    /// that cannot be admitted in time is refused at once.
    Wait {
        /// The longest a call waits (`Duration::MAX`: only the caller's deadline bounds it).
        #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
        max_wait: Duration,
    },
}

/// The config of a [`ThrottleLayer`](super::ThrottleLayer).
///
/// | field | default | allowed |
/// |---|---|---|
/// | `name` | `"throttle"` | non-empty |
/// | `mode` | `Reject` | `Reject` or `Wait { max_wait }` |
/// | `max_throttle` | 1 h | 1 ms to 7 days: a longer hint is capped to it |
/// | `ramp_limit` | 1024 | 1 to 1,000,000 calls per interval before the gate is fully open |
///
/// ```
/// use palisade_rate_limit::{ThrottleConfig, ThrottleMode};
/// use std::time::Duration;
///
/// let config = ThrottleConfig::builder()
///     .name("partner-api")
///     .wait(Duration::from_secs(5))
///     .max_throttle(Duration::from_secs(600))
///     .build()
///     .unwrap();
/// assert_eq!(config.mode(), ThrottleMode::Wait { max_wait: Duration::from_secs(5) });
/// assert!(ThrottleConfig::builder().ramp_limit(0).build().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "Raw", into = "Raw"))]
pub struct ThrottleConfig {
    name: Name,
    mode: ThrottleMode,
    max_throttle: Duration,
    ramp_limit: u32,
}

impl ThrottleConfig {
    /// A builder with the defaults above.
    pub fn builder() -> ThrottleConfigBuilder {
        ThrottleConfigBuilder {
            config: ThrottleConfig {
                name: Name::new("throttle"),
                mode: ThrottleMode::Reject,
                max_throttle: Duration::from_secs(3600),
                ramp_limit: 1024,
            },
        }
    }

    /// The layer's name (errors, events, metric labels).
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// What a call does while the gate is closed.
    pub fn mode(&self) -> ThrottleMode {
        self.mode
    }

    /// The longest throttle a hint can impose.
    pub fn max_throttle(&self) -> Duration {
        self.max_throttle
    }

    /// Calls per interval at which a recovering gate opens fully.
    pub fn ramp_limit(&self) -> u32 {
        self.ramp_limit
    }

    /// Check every field (the builder and deserializing call this).
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure_name(LAYER, &self.name)?;
        ensure(
            (Duration::from_millis(1)..=Duration::from_secs(7 * 86_400))
                .contains(&self.max_throttle),
            LAYER,
            "max_throttle",
            self.max_throttle,
            "1ms to 7 days",
        )?;
        ensure(
            (1..=1_000_000).contains(&self.ramp_limit),
            LAYER,
            "ramp_limit",
            self.ramp_limit,
            "1 to 1000000",
        )
    }
}

/// Builds a [`ThrottleConfig`]; `build()` validates.
#[derive(Debug, Clone)]
pub struct ThrottleConfigBuilder {
    config: ThrottleConfig,
}

impl ThrottleConfigBuilder {
    /// The layer's name.
    pub fn name(mut self, name: impl Into<Name>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Refuse calls at once while closed (the default).
    pub fn reject(mut self) -> Self {
        self.config.mode = ThrottleMode::Reject;
        self
    }

    /// Let calls wait for the gate, at most `max_wait` (`Duration::MAX`: until the caller's
    /// deadline) and never past the caller's deadline.
    pub fn wait(mut self, max_wait: Duration) -> Self {
        self.config.mode = ThrottleMode::Wait { max_wait };
        self
    }

    /// Cap on the throttle one hint can impose (default 1 h).
    pub fn max_throttle(mut self, max: Duration) -> Self {
        self.config.max_throttle = max;
        self
    }

    /// Calls per interval at which a recovering gate opens fully (default 1024).
    pub fn ramp_limit(mut self, calls: u32) -> Self {
        self.config.ramp_limit = calls;
        self
    }

    /// Validate and return the config.
    pub fn build(self) -> Result<ThrottleConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

/// The serialized form; deserializing validates through `TryFrom`.
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "default_name")]
    name: String,
    #[serde(default = "default_mode")]
    mode: ThrottleMode,
    #[serde(
        default = "default_max_throttle",
        with = "palisade_core::config::duration"
    )]
    max_throttle: Duration,
    #[serde(default = "default_ramp_limit")]
    ramp_limit: u32,
}

#[cfg(feature = "serde")]
fn default_name() -> String {
    "throttle".to_owned()
}
#[cfg(feature = "serde")]
fn default_mode() -> ThrottleMode {
    ThrottleMode::Reject
}
#[cfg(feature = "serde")]
fn default_max_throttle() -> Duration {
    Duration::from_secs(3600)
}
#[cfg(feature = "serde")]
fn default_ramp_limit() -> u32 {
    1024
}

#[cfg(feature = "serde")]
impl TryFrom<Raw> for ThrottleConfig {
    type Error = ConfigError;
    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        let config = ThrottleConfig {
            name: Name::new(raw.name),
            mode: raw.mode,
            max_throttle: raw.max_throttle,
            ramp_limit: raw.ramp_limit,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(feature = "serde")]
impl From<ThrottleConfig> for Raw {
    fn from(c: ThrottleConfig) -> Self {
        Raw {
            name: c.name.as_str().to_owned(),
            mode: c.mode,
            max_throttle: c.max_throttle,
            ramp_limit: c.ramp_limit,
        }
    }
}
