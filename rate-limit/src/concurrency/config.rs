//! The concurrency limit's config (plain data) and builder.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use palisade_core::config::{ensure, ensure_name};
use palisade_core::{ConfigError, Listeners, Name};

use super::layer::ConcurrencyLimitLayer;
use crate::event::LimitEvent;

const LAYER: &str = "concurrency_limit";

/// The data of a concurrency limit's (bulkhead's) configuration: at most `max_in_flight`
/// calls at once; the others wait (up to `max_wait`, at most `max_queue` of them) or are
/// rejected.
///
/// With the `serde` feature it loads from data (durations with a unit, `"100ms"`); loading
/// validates exactly as the builder does:
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use palisade_rate_limit::{ConcurrencyLimitConfig, ConcurrencyLimitLayer};
///
/// let config: ConcurrencyLimitConfig =
///     serde_json::from_str(r#"{ "name": "db-pool", "max_in_flight": 32, "max_wait": "100ms" }"#)
///         .unwrap();
/// let layer = ConcurrencyLimitLayer::new(config);
/// assert_eq!(layer.handle().max_in_flight(), 32);
///
/// let err = serde_json::from_str::<ConcurrencyLimitConfig>(r#"{ "max_in_flight": 0 }"#)
///     .unwrap_err();
/// assert!(err.to_string().contains("max_in_flight = 0"), "{err}");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "ConcurrencyLimitData"))]
pub struct ConcurrencyLimitConfig {
    /// The layer's name, on errors, events and metrics. Default: `"concurrency_limit"`.
    /// Must not be empty.
    pub(crate) name: Name,
    /// The most calls in flight at once. Required; 1 or more.
    pub(crate) max_in_flight: usize,
    /// Wait mode: how long a call finding every permit taken may wait for one (in arrival
    /// order), then it is rejected with [`Overloaded`](palisade_core::Overloaded). Default
    /// zero: reject mode, a bulkhead sheds at once rather than queue silently. The wait
    /// happens in the response future, so it never outlasts the caller's deadline; any
    /// duration is valid, `Duration::MAX` waiting as long as the deadline allows.
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
    pub(crate) max_wait: Duration,
    /// The most calls waiting at once in wait mode; more are rejected at once. Default
    /// (`None`): `max_in_flight`, one waiting call per running one, so a waiter's wait is
    /// bounded by about one service time when calls take similar time.
    pub(crate) max_queue: Option<usize>,
}

/// What a file holds: validated into a [`ConcurrencyLimitConfig`] on the way in.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConcurrencyLimitData {
    #[serde(default = "default_name")]
    name: Name,
    max_in_flight: usize,
    #[serde(default, with = "palisade_core::config::duration")]
    max_wait: Duration,
    #[serde(default)]
    max_queue: Option<usize>,
}

#[cfg(feature = "serde")]
impl TryFrom<ConcurrencyLimitData> for ConcurrencyLimitConfig {
    type Error = ConfigError;

    fn try_from(d: ConcurrencyLimitData) -> Result<Self, ConfigError> {
        let config = ConcurrencyLimitConfig {
            name: d.name,
            max_in_flight: d.max_in_flight,
            max_wait: d.max_wait,
            max_queue: d.max_queue,
        };
        config.validate()?;
        Ok(config)
    }
}

fn default_name() -> Name {
    Name::from_static("concurrency_limit")
}

impl ConcurrencyLimitConfig {
    pub(crate) fn with_max(max_in_flight: usize) -> Self {
        Self {
            name: default_name(),
            max_in_flight,
            max_wait: Duration::ZERO,
            max_queue: None,
        }
    }

    /// Start a builder for at most `max_in_flight` calls at once;
    /// [`build`](ConcurrencyLimitConfigBuilder::build) gives the validated config (see
    /// [`ConcurrencyLimitLayer::builder`] for the shortcut to a layer).
    pub fn builder(max_in_flight: usize) -> ConcurrencyLimitConfigBuilder {
        ConcurrencyLimitConfigBuilder::new(max_in_flight)
    }

    /// A builder starting from this config, to change a field and build again.
    pub fn to_builder(&self) -> ConcurrencyLimitConfigBuilder {
        ConcurrencyLimitConfigBuilder {
            config: self.clone(),
            listeners: Listeners::new(),
            target: PhantomData,
        }
    }

    /// The layer's name, on errors, events and metrics.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// At most this many calls in flight.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// How long a call may wait for a permit (zero: refuse at once when full).
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The most callers that may wait (`None`: as many as `max_in_flight`).
    pub fn max_queue(&self) -> Option<usize> {
        self.max_queue
    }

    /// The queue bound in effect: `max_queue`, or `max_in_flight` when unset.
    pub fn effective_max_queue(&self) -> usize {
        self.max_queue.unwrap_or(self.max_in_flight)
    }

    /// Check every field.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        ensure_name(LAYER, &self.name)?;
        // tokio's semaphore holds at most `usize::MAX >> 3` permits.
        let max = tokio::sync::Semaphore::MAX_PERMITS;
        ensure(
            (1..=max).contains(&self.max_in_flight),
            LAYER,
            "max_in_flight",
            self.max_in_flight,
            format!("1 to {max}"),
        )
    }
}

/// Builds a [`ConcurrencyLimitConfig`] (from `ConcurrencyLimitConfig::builder`) or, as a shortcut, a [`ConcurrencyLimitLayer`] (from
/// `ConcurrencyLimitLayer::builder`); every setter has a documented default (see the
/// fields of [`ConcurrencyLimitConfig`]).
///
/// ```
/// use palisade_rate_limit::{ConcurrencyLimitConfig, ConcurrencyLimitLayer};
/// use std::time::Duration;
///
/// let layer = ConcurrencyLimitLayer::builder(32)
///     .name("db-pool")
///     .max_wait(Duration::from_millis(100))
///     .max_queue(64)
///     .build()
///     .expect("valid config");
/// assert_eq!(layer.handle().max_in_flight(), 32);
///
/// let err = ConcurrencyLimitConfig::builder(0).build().unwrap_err();
/// assert_eq!(err.field(), "max_in_flight");
/// ```
pub struct ConcurrencyLimitConfigBuilder<T = ConcurrencyLimitConfig> {
    config: ConcurrencyLimitConfig,
    listeners: Listeners<LimitEvent>,
    target: PhantomData<fn() -> T>,
}

impl<T> ConcurrencyLimitConfigBuilder<T> {
    pub(crate) fn new(max_in_flight: usize) -> Self {
        Self {
            config: ConcurrencyLimitConfig::with_max(max_in_flight),
            listeners: Listeners::new(),
            target: PhantomData,
        }
    }
    /// The layer's name (default `"concurrency_limit"`).
    #[must_use]
    pub fn name(mut self, name: impl Into<Name>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Wait mode: wait up to `max_wait` for a permit (default zero: reject mode;
    /// `Duration::MAX`: as long as the caller's deadline allows).
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.config.max_wait = max_wait;
        self
    }

    /// The most calls waiting at once (default: `max_in_flight`).
    #[must_use]
    pub fn max_queue(mut self, max_queue: usize) -> Self {
        self.config.max_queue = Some(max_queue);
        self
    }
}

impl ConcurrencyLimitConfigBuilder<ConcurrencyLimitConfig> {
    /// Validate and give the config.
    pub fn build(self) -> Result<ConcurrencyLimitConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

impl ConcurrencyLimitConfigBuilder<ConcurrencyLimitLayer> {
    /// Register a listener for the layer's events (the same as
    /// [`ConcurrencyLimitLayer::on_event`]).
    #[must_use]
    pub fn on_event(mut self, listener: impl Fn(&LimitEvent) + Send + Sync + 'static) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Validate and build the layer.
    pub fn build(self) -> Result<ConcurrencyLimitLayer, ConfigError> {
        self.config.validate()?;
        Ok(ConcurrencyLimitLayer::from_parts(
            self.config,
            self.listeners,
        ))
    }
}

impl<T> fmt::Debug for ConcurrencyLimitConfigBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitConfigBuilder")
            .field("config", &self.config)
            .field("listeners", &self.listeners)
            .finish()
    }
}
