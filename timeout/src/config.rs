//! Configuration of a timeout layer.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use palisade_core::config::{ensure, ensure_name};
use palisade_core::{ConfigError, Listeners, Name};

use crate::event::TimeoutEvent;
use crate::layer::TimeoutLayer;

/// The data of a timeout layer's configuration: what an operator sets in a file.
///
/// With the `serde` feature it loads from TOML, JSON or any serde format; durations are
/// written with a unit (`"250ms"`, `"2s"`; a bare number is refused), and loading
/// validates, exactly as [`TimeoutConfigBuilder::build`] does, so a file with a zero timeout or an
/// empty name never loads:
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use palisade_timeout::{TimeoutConfig, TimeoutLayer};
/// use std::time::Duration;
///
/// let config: TimeoutConfig =
///     serde_json::from_str(r#"{ "name": "orders-db", "timeout": "1.5s" }"#).unwrap();
/// assert_eq!(config.timeout(), Duration::from_millis(1500));
/// let layer = TimeoutLayer::new(config);
/// assert_eq!(layer.handle().timeout(), Duration::from_millis(1500));
///
/// let err = serde_json::from_str::<TimeoutConfig>(r#"{ "timeout": "0s" }"#).unwrap_err();
/// assert!(err.to_string().contains("timeout = 0ns"), "{err}");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "TimeoutData"))]
pub struct TimeoutConfig {
    /// The layer's name, on errors, events and metrics. Default: `"timeout"`. Must not be
    /// empty.
    pub(crate) name: Name,
    /// How long a call may take. Default: 10 s, a ceiling for a remote call that still
    /// frees a stuck caller well before a typical 30 s load-balancer or client timeout.
    /// Must be above zero (a zero timeout would fail every call). `Duration::MAX` (or
    /// anything beyond about 30 years) means "no timeout of this layer's own": an outer
    /// deadline still holds.
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
    pub(crate) timeout: Duration,
}

/// What a file holds: validated into a [`TimeoutConfig`] on the way in.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutData {
    #[serde(default = "default_name")]
    name: Name,
    #[serde(default = "default_timeout", with = "palisade_core::config::duration")]
    timeout: Duration,
}

#[cfg(feature = "serde")]
impl TryFrom<TimeoutData> for TimeoutConfig {
    type Error = ConfigError;

    fn try_from(data: TimeoutData) -> Result<Self, ConfigError> {
        let config = TimeoutConfig {
            name: data.name,
            timeout: data.timeout,
        };
        config.validate()?;
        Ok(config)
    }
}

fn default_name() -> Name {
    Name::from_static("timeout")
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// The default timeout (see [`TimeoutConfig::timeout`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            name: default_name(),
            timeout: default_timeout(),
        }
    }
}

impl TimeoutConfig {
    /// Start a builder with the defaults; [`build`](TimeoutConfigBuilder::build) gives the
    /// validated config (see [`TimeoutLayer::builder`] for the shortcut to a layer).
    pub fn builder() -> TimeoutConfigBuilder {
        TimeoutConfigBuilder::new()
    }

    /// A builder starting from this config, to change a field and build again.
    pub fn to_builder(&self) -> TimeoutConfigBuilder {
        TimeoutConfigBuilder {
            config: self.clone(),
            listeners: Listeners::new(),
            target: PhantomData,
        }
    }

    /// The layer's name, on errors, events and metrics.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// How long a call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        ensure_name("timeout", &self.name)?;
        validate_timeout(self.timeout)
    }
}

pub(crate) fn validate_timeout(timeout: Duration) -> Result<(), ConfigError> {
    ensure(
        !timeout.is_zero(),
        "timeout",
        "timeout",
        timeout,
        "a duration above zero",
    )
}

/// Builds a [`TimeoutConfig`] (from [`TimeoutConfig::builder`]) or, as a shortcut, a
/// [`TimeoutLayer`] (from [`TimeoutLayer::builder`]); every setter has a documented default,
/// and `build` validates.
///
/// ```
/// use palisade_timeout::{TimeoutConfig, TimeoutLayer};
/// use std::time::Duration;
///
/// // Config as data, then the layer and its code-only hooks.
/// let config = TimeoutConfig::builder()
///     .name("orders-db")
///     .timeout(Duration::from_millis(800))
///     .build()
///     .expect("valid config");
/// let layer = TimeoutLayer::new(config).on_event(|event| println!("{event:?}"));
/// # let _ = layer;
///
/// // The same in one chain.
/// let layer = TimeoutLayer::builder()
///     .name("orders-db")
///     .timeout(Duration::from_millis(800))
///     .on_event(|event| println!("{event:?}"))
///     .build()
///     .expect("valid config");
/// # let _ = layer;
///
/// let err = TimeoutConfig::builder().timeout(Duration::ZERO).build().unwrap_err();
/// assert_eq!(err.field(), "timeout");
/// let err = TimeoutConfig::builder().name("").build().unwrap_err();
/// assert_eq!(err.field(), "name");
/// ```
pub struct TimeoutConfigBuilder<T = TimeoutConfig> {
    config: TimeoutConfig,
    listeners: Listeners<TimeoutEvent>,
    target: PhantomData<fn() -> T>,
}

impl<T> TimeoutConfigBuilder<T> {
    pub(crate) fn new() -> Self {
        Self {
            config: TimeoutConfig::default(),
            listeners: Listeners::new(),
            target: PhantomData,
        }
    }

    /// The layer's name (default `"timeout"`).
    #[must_use]
    pub fn name(mut self, name: impl Into<Name>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The fixed timeout (default 10 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }
}

impl TimeoutConfigBuilder<TimeoutConfig> {
    /// Validate and give the config.
    pub fn build(self) -> Result<TimeoutConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

impl TimeoutConfigBuilder<TimeoutLayer> {
    /// Register a listener for the layer's events (the same as
    /// [`TimeoutLayer::on_event`]).
    #[must_use]
    pub fn on_event(mut self, listener: impl Fn(&TimeoutEvent) + Send + Sync + 'static) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Validate and build the layer.
    pub fn build(self) -> Result<TimeoutLayer, ConfigError> {
        self.config.validate()?;
        Ok(TimeoutLayer::from_parts(
            self.config,
            self.listeners,
            crate::layer::Fixed,
        ))
    }
}

impl<T> fmt::Debug for TimeoutConfigBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutConfigBuilder")
            .field("config", &self.config)
            .field("listeners", &self.listeners)
            .finish()
    }
}
