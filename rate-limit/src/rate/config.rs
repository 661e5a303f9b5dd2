//! The rate limit's config (plain data) and builder.

use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;
use palisade_core::config::{ensure, ensure_name};
use palisade_core::{ConfigError, Listeners, Name, time};

use super::layer::RateLimitLayer;
use crate::event::LimitEvent;

const LAYER: &str = "rate_limit";

/// How long an idle key's state is kept before a keyed limiter drops it, by default: one
/// minute. Long enough that the sweep (O(keys) under the store's lock) is rare, short enough
/// that a burst of one-off keys (a scan, a bot) is forgotten quickly.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

/// The data of a rate limit's configuration: `cells` per `period` with a `burst`, in reject
/// or wait mode; what an operator sets in a file.
///
/// With the `serde` feature it loads from TOML, JSON or any serde format (only `cells` and
/// `period` are required; durations are written with a unit, `"250ms"`, `"2s"`: a bare
/// number is refused). Loading validates exactly as the builder does, so invalid data
/// never loads:
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use palisade_rate_limit::{RateLimitConfig, RateLimitLayer};
/// use std::time::Duration;
///
/// let config: RateLimitConfig = serde_json::from_str(
///     r#"{ "name": "search", "cells": 100, "period": "1s", "burst": 10, "max_wait": "50ms" }"#,
/// ).unwrap();
/// assert_eq!(config.emission_interval(), Duration::from_millis(10));
/// let layer = RateLimitLayer::new(config);
/// # let _ = layer;
///
/// let err = serde_json::from_str::<RateLimitConfig>(r#"{ "cells": 0, "period": "1s" }"#)
///     .unwrap_err();
/// assert!(err.to_string().contains("cells = 0"), "{err}");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RateLimitData"))]
pub struct RateLimitConfig {
    /// The layer's name, on errors, events and metrics. Default: `"rate_limit"`. Must not
    /// be empty.
    pub(crate) name: Name,
    /// Cells replenished per `period` (e.g. 100 per second). Required; 1 or more.
    pub(crate) cells: u32,
    /// The period in which `cells` cells are replenished. Required; at least 1ns per cell,
    /// and the whole burst must refill within [`MAX_REFILL`] (about 30 years; a longer
    /// "never" is refused, not rounded).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
    pub(crate) period: Duration,
    /// The most cells admitted at one instant. Default (`None`): `cells`, the whole
    /// period's quota (governor's convention), so "100 per second" admits 100 calls
    /// arriving together, and at most `burst + cells` in any window of one period. A request
    /// costing more than the burst could never conform and is refused (see
    /// [`Cost`](super::Cost)).
    pub(crate) burst: Option<u32>,
    /// Wait mode: how long a call that does not conform may wait for its cells (in arrival
    /// order), then it is rejected. Default zero: reject mode, the call fails at once with
    /// [`RateLimited`](palisade_core::RateLimited); a limiter should not add latency unless
    /// asked to. Any duration is valid: `Duration::MAX` waits as long as it takes, bounded
    /// only by the caller's deadline.
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
    pub(crate) max_wait: Duration,
    /// How often a keyed limiter drops the state of idle keys. Default
    /// [`DEFAULT_CLEANUP_INTERVAL`] (60s). Ignored by direct limiters. Above zero;
    /// `Duration::MAX` never sweeps.
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
    pub(crate) cleanup_interval: Duration,
    /// The most keys a keyed limiter keeps state for. Default [`DEFAULT_MAX_KEYS`]; 1 or
    /// more. A new key arriving when the store is full (after a sweep of idle keys) is
    /// limited as if it had just used its whole burst, so memory stays bounded under a
    /// flood of one-off keys. Ignored by direct limiters.
    pub(crate) max_keys: usize,
    /// How a rate lowered at run time (through the
    /// [`RateLimitHandle`](super::RateLimitHandle): `set_rate`, an upstream's quota) comes
    /// back up: the rate climbs linearly by the configured rate per `ramp`, so from almost
    /// nothing back to the configured rate takes `ramp` (from half of it, half of `ramp`).
    /// Lowering always takes effect at once. Default [`DEFAULT_RAMP`] (10 s). Zero raises
    /// at once; `Duration::MAX` never raises by itself (only a later lowering changes it).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
    pub(crate) ramp: Duration,
}

/// How long a rate lowered at run time takes to climb back to the configured rate, by
/// default: 10 seconds, long enough that an upstream recovering from a throttle sees the
/// load come back over a few of its own rate windows, short enough that a brief slowdown
/// costs little throughput.
pub const DEFAULT_RAMP: Duration = Duration::from_secs(10);

/// The most keys a keyed limiter keeps by default: one million, about 20 MB of `u64` keys
/// (see [`Keyed`](super::Keyed)): far above a service's real tenants or users, far below
/// what a scan of random keys could otherwise make it hold.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// The longest time a rate limit's burst may take to refill (`period / cells × burst`):
/// [`palisade_core::time::FOREVER`], about 30 years. Governor keeps its state in `u64`
/// nanoseconds; a longer period is refused rather than overflow it.
pub const MAX_REFILL: Duration = time::FOREVER;

/// What a file holds: validated into a [`RateLimitConfig`] on the way in.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitData {
    #[serde(default = "default_name")]
    name: Name,
    cells: u32,
    #[serde(with = "palisade_core::config::duration")]
    period: Duration,
    #[serde(default)]
    burst: Option<u32>,
    #[serde(default, with = "palisade_core::config::duration")]
    max_wait: Duration,
    #[serde(
        default = "default_cleanup_interval",
        with = "palisade_core::config::duration"
    )]
    cleanup_interval: Duration,
    #[serde(default = "default_max_keys")]
    max_keys: usize,
    #[serde(default = "default_ramp", with = "palisade_core::config::duration")]
    ramp: Duration,
}

#[cfg(feature = "serde")]
fn default_ramp() -> Duration {
    DEFAULT_RAMP
}

#[cfg(feature = "serde")]
fn default_max_keys() -> usize {
    DEFAULT_MAX_KEYS
}

#[cfg(feature = "serde")]
impl TryFrom<RateLimitData> for RateLimitConfig {
    type Error = ConfigError;

    fn try_from(d: RateLimitData) -> Result<Self, ConfigError> {
        let config = RateLimitConfig {
            name: d.name,
            cells: d.cells,
            period: d.period,
            burst: d.burst,
            max_wait: d.max_wait,
            cleanup_interval: d.cleanup_interval,
            max_keys: d.max_keys,
            ramp: d.ramp,
        };
        config.validate()?;
        Ok(config)
    }
}

fn default_name() -> Name {
    Name::from_static("rate_limit")
}

#[cfg(feature = "serde")]
fn default_cleanup_interval() -> Duration {
    DEFAULT_CLEANUP_INTERVAL
}

impl RateLimitConfig {
    /// A limit of `cells` per `period`, with the defaults for everything else (not
    /// validated: the builders and the loader validate).
    pub(crate) fn with_rate(cells: u32, period: Duration) -> Self {
        Self {
            name: default_name(),
            cells,
            period,
            burst: None,
            max_wait: Duration::ZERO,
            cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
            max_keys: DEFAULT_MAX_KEYS,
            ramp: DEFAULT_RAMP,
        }
    }

    /// A builder for a limit of `cells` per `period`; [`build`](RateLimitConfigBuilder::build)
    /// gives the validated config (see [`RateLimitLayer::builder`] for the shortcut to a
    /// layer).
    pub fn builder(cells: u32, period: Duration) -> RateLimitConfigBuilder {
        RateLimitConfigBuilder::new(cells, period)
    }

    /// A builder starting from this config, to change a field and build again.
    pub fn to_builder(&self) -> RateLimitConfigBuilder {
        RateLimitConfigBuilder {
            config: self.clone(),
            listeners: Listeners::new(),
            target: PhantomData,
        }
    }

    /// The layer's name, on errors, events and metrics.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Cells replenished per [`period`](Self::period).
    pub fn cells(&self) -> u32 {
        self.cells
    }

    /// The period in which [`cells`](Self::cells) cells are replenished.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The burst set (`None`: `cells`; see [`effective_burst`](Self::effective_burst)).
    pub fn burst(&self) -> Option<u32> {
        self.burst
    }

    /// How long a call may wait for its cells (zero: reject mode).
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// How often a keyed limiter drops the state of idle keys.
    pub fn cleanup_interval(&self) -> Duration {
        self.cleanup_interval
    }

    /// The most keys a keyed limiter keeps state for.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// How a rate lowered at run time climbs back (by the configured rate per `ramp`).
    pub fn ramp(&self) -> Duration {
        self.ramp
    }

    /// The burst in effect: [`burst`](Self::burst) or, by default, `cells`.
    pub fn effective_burst(&self) -> u32 {
        self.burst.unwrap_or(self.cells)
    }

    /// The time one cell takes to replenish: `period / cells`.
    pub fn emission_interval(&self) -> Duration {
        self.period / self.cells.max(1)
    }

    /// The governor quota this config describes (meaningful once validated).
    pub fn quota(&self) -> Quota {
        let burst = NonZeroU32::new(self.effective_burst()).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(self.emission_interval())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst)
    }

    /// Check every field.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        ensure_name(LAYER, &self.name)?;
        ensure(self.cells >= 1, LAYER, "cells", self.cells, "1 or more")?;
        ensure(
            !self.period.is_zero(),
            LAYER,
            "period",
            self.period,
            "a duration above zero",
        )?;
        ensure(
            !(self.period / self.cells).is_zero(),
            LAYER,
            "period",
            self.period,
            "at least 1ns per cell (period / cells)",
        )?;
        let interval = self.emission_interval();
        ensure(
            interval <= MAX_REFILL,
            LAYER,
            "period",
            self.period,
            format!(
                "at most {} per cell (period / cells), about 30 years",
                palisade_core::config::duration::format(MAX_REFILL)
            ),
        )?;
        let burst = self.effective_burst();
        ensure(burst >= 1, LAYER, "burst", burst, "1 or more")?;
        // The burst refills within MAX_REFILL (governor's u64 nanoseconds never overflow).
        let max_burst = time::nanos(MAX_REFILL) / time::nanos(interval).max(1);
        ensure(
            u64::from(burst) <= max_burst,
            LAYER,
            "burst",
            burst,
            format!(
                "1 to {max_burst} (the burst refills within about 30 years at one cell per {})",
                palisade_core::config::duration::format(interval)
            ),
        )?;
        ensure(
            self.max_keys >= 1,
            LAYER,
            "max_keys",
            self.max_keys,
            "1 or more",
        )?;
        ensure(
            !self.cleanup_interval.is_zero(),
            LAYER,
            "cleanup_interval",
            self.cleanup_interval,
            "a duration above zero",
        )
    }
}

/// Builds a [`RateLimitConfig`] (from [`RateLimitConfig::builder`]) or, as a shortcut, a
/// [`RateLimitLayer`] (from [`RateLimitLayer::builder`]); every setter has a documented
/// default.
///
/// ```
/// use palisade_rate_limit::{RateLimitConfig, RateLimitLayer};
/// use std::time::Duration;
///
/// // 100 calls per second, at most 10 at once, waiting up to 50ms for quota.
/// let layer = RateLimitLayer::builder(100, Duration::from_secs(1))
///     .name("search-api")
///     .burst(10)
///     .max_wait(Duration::from_millis(50))
///     .on_event(|event| println!("{event:?}"))
///     .build()
///     .expect("valid config");
/// # let _ = layer;
///
/// // Invalid values are refused, never panicked on.
/// let err = RateLimitConfig::builder(0, Duration::from_secs(1)).build().unwrap_err();
/// assert_eq!(err.field(), "cells");
/// ```
pub struct RateLimitConfigBuilder<T = RateLimitConfig> {
    config: RateLimitConfig,
    listeners: Listeners<LimitEvent>,
    target: PhantomData<fn() -> T>,
}

impl<T> RateLimitConfigBuilder<T> {
    pub(crate) fn new(cells: u32, period: Duration) -> Self {
        Self {
            config: RateLimitConfig::with_rate(cells, period),
            listeners: Listeners::new(),
            target: PhantomData,
        }
    }

    /// The layer's name (default `"rate_limit"`).
    #[must_use]
    pub fn name(mut self, name: impl Into<Name>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The most cells admitted at one instant (default: `cells`).
    #[must_use]
    pub fn burst(mut self, burst: u32) -> Self {
        self.config.burst = Some(burst);
        self
    }

    /// Wait mode: wait up to `max_wait` for quota, then reject (default zero: reject mode;
    /// `Duration::MAX`: as long as it takes, bounded only by the caller's deadline).
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.config.max_wait = max_wait;
        self
    }

    /// Reject mode (the default): a call that does not conform fails at once.
    #[must_use]
    pub fn reject(self) -> Self {
        self.max_wait(Duration::ZERO)
    }

    /// The most keys a keyed limiter keeps (default [`DEFAULT_MAX_KEYS`]).
    #[must_use]
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.config.max_keys = max_keys;
        self
    }

    /// How a rate lowered at run time climbs back: by the configured rate per `ramp`
    /// (default [`DEFAULT_RAMP`], 10 s; zero: at once). See [`RateLimitConfig::ramp`].
    #[must_use]
    pub fn ramp(mut self, ramp: Duration) -> Self {
        self.config.ramp = ramp;
        self
    }

    /// How often a keyed limiter drops idle keys (default 60s).
    #[must_use]
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.config.cleanup_interval = interval;
        self
    }
}

impl RateLimitConfigBuilder<RateLimitConfig> {
    /// Validate and give the config.
    pub fn build(self) -> Result<RateLimitConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

impl RateLimitConfigBuilder<RateLimitLayer> {
    /// Register a listener for the layer's [`LimitEvent`]s (the same as
    /// [`RateLimitLayer::on_event`]).
    #[must_use]
    pub fn on_event(mut self, listener: impl Fn(&LimitEvent) + Send + Sync + 'static) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Validate and build a direct layer: one quota shared by every call (make it keyed
    /// with [`RateLimitLayer::key_by`]).
    pub fn build(self) -> Result<RateLimitLayer, ConfigError> {
        self.config.validate()?;
        Ok(RateLimitLayer::direct(self.config, self.listeners))
    }
}

impl<T> fmt::Debug for RateLimitConfigBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitConfigBuilder")
            .field("config", &self.config)
            .field("listeners", &self.listeners)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = RateLimitConfig::with_rate(100, Duration::from_secs(1));
        c.validate().unwrap();
        assert_eq!(c.effective_burst(), 100);
        assert_eq!(c.max_wait, Duration::ZERO);
        assert_eq!(c.cleanup_interval, DEFAULT_CLEANUP_INTERVAL);
        assert_eq!(c.name.as_str(), "rate_limit");
        assert_eq!(c.quota().burst_size().get(), 100);
        assert_eq!(c.quota().replenish_interval(), Duration::from_millis(10));
    }

    #[test]
    fn refuses_bad_values() {
        let b = |cells, period| RateLimitConfig::builder(cells, period);
        let s = Duration::from_secs(1);
        assert_eq!(b(0, s).build().unwrap_err().field(), "cells");
        assert_eq!(b(1, Duration::ZERO).build().unwrap_err().field(), "period");
        assert_eq!(
            b(10, Duration::from_nanos(5)).build().unwrap_err().field(),
            "period"
        );
        assert_eq!(b(1, s).burst(0).build().unwrap_err().field(), "burst");
        assert_eq!(b(1, s).name("").build().unwrap_err().field(), "name");
        // "Never" periods are refused, not panicked on inside governor.
        assert_eq!(b(1, Duration::MAX).build().unwrap_err().field(), "period");
        let year = Duration::from_secs(365 * 86_400);
        assert_eq!(b(1, year).burst(100).build().unwrap_err().field(), "burst");
        assert!(b(1, year).burst(20).build().is_ok());
        assert!(b(u32::MAX, Duration::from_secs(5)).build().is_ok());
        let err = b(1, s)
            .cleanup_interval(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "cleanup_interval");
    }
}
