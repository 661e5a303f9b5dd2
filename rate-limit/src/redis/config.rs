//! The Redis rate limit's config (plain data) and builder.

use std::fmt;
use std::time::Duration;

use palisade_core::config::{ensure, ensure_name};
use palisade_core::{ConfigError, Listeners, Name};

use super::conn::{Conn, RedisConnection};
use super::event::RedisLimitEvent;
use super::layer::RedisRateLimitLayer;
use super::limiter::RedisLimiter;
use crate::RateLimitConfig;

pub(crate) const LAYER: &str = "redis_rate_limit";

/// The longest [`call_timeout`](RedisRateLimitConfig::call_timeout) or
/// [`breaker_cooldown`](RedisRateLimitConfig::breaker_cooldown) accepted: one minute. A
/// decision that may wait longer on Redis is a caller hanging on Redis.
pub const MAX_REDIS_WAIT: Duration = Duration::from_secs(60);

/// What a Redis rate limit decides while Redis is unreachable, slow, or its breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum FailurePolicy {
    /// Decide locally, with a limiter on this replica at `quota / expected_replicas`
    /// (cells and burst divided, at least 1): the fleet as a whole stays near its quota
    /// as long as `expected_replicas` is right. The default: an outage of the limiter's
    /// store should not become an outage of the service.
    #[default]
    FailOpen,
    /// Reject every call with [`RateLimited`](palisade_core::RateLimited) (retry after the
    /// breaker's next probe): for quotas that must never be exceeded (billing, a partner's
    /// hard limit).
    FailClosed,
}

impl FailurePolicy {
    /// `"fail_open"` or `"fail_closed"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::FailOpen => "fail_open",
            FailurePolicy::FailClosed => "fail_closed",
        }
    }
}

/// The data of a fleet-wide rate limit kept in Redis: the local limiter's fields
/// (`name`, `cells`, `period`, `burst`, `max_wait`, same names, same meaning) plus how to
/// talk to Redis. A [`RateLimitConfig`] becomes one with [`From`], so moving a limit from one
/// machine to a fleet is a config change.
///
/// With the `serde` feature it loads from data like the local config:
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use palisade_rate_limit::redis::{FailurePolicy, RedisRateLimitConfig};
/// use std::time::Duration;
///
/// let config: RedisRateLimitConfig = serde_json::from_str(r#"{
///     "name": "partner-api", "cells": 1000, "period": "1s",
///     "lease_cells": 10, "expected_replicas": 4, "failure": "fail_closed"
/// }"#).unwrap();
/// config.validate().unwrap();
/// assert_eq!(config.failure, FailurePolicy::FailClosed);
/// // The documented worst case: quota + burst in any period, plus the leases.
/// assert_eq!(config.lease_slack(), 4 * 9);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct RedisRateLimitConfig {
    /// The limit's name, on errors, events and metrics, and in its Redis keys
    /// (`palisade:rl:{<name>}:<key>`): replicas with the same name share one quota. Not
    /// empty; no `{` or `}` (the name is the keys' Cluster hash tag). Default
    /// `"rate_limit"`.
    #[cfg_attr(feature = "serde", serde(default = "default_name"))]
    pub name: Name,
    /// Cells replenished per `period`, for the whole fleet. Required; 1 or more.
    pub cells: u32,
    /// The period in which `cells` cells are replenished. Required; at least 1µs per cell
    /// (Redis's clock counts microseconds).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
    pub period: Duration,
    /// The most cells admitted at one instant, fleet-wide. Default (`None`): `cells`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub burst: Option<u32>,
    /// Wait mode: how long a call that does not conform may wait for its cells. Default
    /// zero: reject mode. The round trip to Redis itself is bounded by `call_timeout`, not
    /// by this.
    #[cfg_attr(
        feature = "serde",
        serde(default, with = "palisade_core::config::duration")
    )]
    pub max_wait: Duration,
    /// The most cells one replica reserves per key in one round trip (a lease), then
    /// admits locally without asking Redis. Default 1: no leases, one round trip per
    /// decision, exact. Each replica holds at most `lease_cells - 1` unused cells per key,
    /// so the fleet may admit up to `expected_replicas × (lease_cells − 1)` more than the
    /// quota in a period ([`lease_slack`](Self::lease_slack)). 1 to `burst`.
    #[cfg_attr(feature = "serde", serde(default = "default_lease_cells"))]
    pub lease_cells: u32,
    /// How long leased cells stay usable, and the window over which a replica measures
    /// its recent rate to size its next lease (it asks for the cells it used in the last
    /// `lease_ttl`, at most `lease_cells`). Unused cells are dropped when it ends (they were
    /// counted in Redis: under-admission, never over). Default 100ms; above zero, at most
    /// one period.
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "default_lease_ttl",
            with = "palisade_core::config::duration"
        )
    )]
    pub lease_ttl: Duration,
    /// Every round trip to Redis gives up after this long (or at the request's deadline,
    /// if earlier) and the call is decided by the failure policy. Default 50ms; above zero,
    /// at most [`MAX_REDIS_WAIT`].
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "default_call_timeout",
            with = "palisade_core::config::duration"
        )
    )]
    pub call_timeout: Duration,
    /// What to decide while Redis fails. Default [`FailurePolicy::FailOpen`].
    #[cfg_attr(feature = "serde", serde(default))]
    pub failure: FailurePolicy,
    /// How many replicas share the quota: the fail-open limiter runs at
    /// `quota / expected_replicas`, and [`lease_slack`](Self::lease_slack) counts them.
    /// Default 1; 1 or more.
    #[cfg_attr(feature = "serde", serde(default = "default_one"))]
    pub expected_replicas: u32,
    /// Consecutive failed round trips (errors or timeouts) that open the breaker: while
    /// open, calls are decided by the failure policy without touching Redis. Default 3;
    /// 1 or more.
    #[cfg_attr(feature = "serde", serde(default = "default_breaker_failures"))]
    pub breaker_failures: u32,
    /// How long the breaker stays open before one call probes Redis again (a success
    /// closes it, a failure opens it for another cooldown). Default 1s; above zero, at most
    /// [`MAX_REDIS_WAIT`].
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "default_breaker_cooldown",
            with = "palisade_core::config::duration"
        )
    )]
    pub breaker_cooldown: Duration,
}

fn default_name() -> Name {
    Name::from_static("rate_limit")
}
#[cfg(feature = "serde")]
fn default_lease_cells() -> u32 {
    1
}
#[cfg(feature = "serde")]
fn default_lease_ttl() -> Duration {
    DEFAULT_LEASE_TTL
}
#[cfg(feature = "serde")]
fn default_call_timeout() -> Duration {
    DEFAULT_CALL_TIMEOUT
}
#[cfg(feature = "serde")]
fn default_one() -> u32 {
    1
}
#[cfg(feature = "serde")]
fn default_breaker_failures() -> u32 {
    DEFAULT_BREAKER_FAILURES
}
#[cfg(feature = "serde")]
fn default_breaker_cooldown() -> Duration {
    DEFAULT_BREAKER_COOLDOWN
}

const DEFAULT_LEASE_TTL: Duration = Duration::from_millis(100);
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(50);
const DEFAULT_BREAKER_FAILURES: u32 = 3;
const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(1);

impl From<RateLimitConfig> for RedisRateLimitConfig {
    /// The same limit (name, cells, period, burst, max wait), fleet-wide, with the Redis
    /// defaults.
    fn from(local: RateLimitConfig) -> Self {
        Self {
            name: local.name,
            cells: local.cells,
            period: local.period,
            burst: local.burst,
            max_wait: local.max_wait,
            ..Self::new(1, Duration::from_secs(1))
        }
    }
}

impl RedisRateLimitConfig {
    /// A fleet-wide limit of `cells` per `period`, with the defaults for everything else.
    pub fn new(cells: u32, period: Duration) -> Self {
        Self {
            name: default_name(),
            cells,
            period,
            burst: None,
            max_wait: Duration::ZERO,
            lease_cells: 1,
            lease_ttl: DEFAULT_LEASE_TTL,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            failure: FailurePolicy::FailOpen,
            expected_replicas: 1,
            breaker_failures: DEFAULT_BREAKER_FAILURES,
            breaker_cooldown: DEFAULT_BREAKER_COOLDOWN,
        }
    }

    /// A builder for a fleet-wide limit of `cells` per `period`.
    pub fn builder(cells: u32, period: Duration) -> RedisRateLimitBuilder {
        RedisRateLimitBuilder {
            config: Self::new(cells, period),
            listeners: Listeners::new(),
        }
    }

    /// The burst in effect: [`burst`](Self::burst) or, by default, `cells`.
    pub fn effective_burst(&self) -> u32 {
        self.burst.unwrap_or(self.cells)
    }

    /// The time one cell takes to replenish: `period / cells`.
    pub fn emission_interval(&self) -> Duration {
        self.period / self.cells.max(1)
    }

    /// The most cells the leases can add to the fleet's admissions in any window, on top
    /// of the GCRA's own bound (`burst + cells` per period, as the local limiter):
    /// `expected_replicas × (lease_cells − 1)`, per key. Zero without leases.
    pub fn lease_slack(&self) -> u64 {
        u64::from(self.expected_replicas) * u64::from(self.lease_cells.saturating_sub(1))
    }

    /// The local limit that decides on this replica in fail-open mode: `cells` and `burst`
    /// divided by `expected_replicas` (at least 1 each), same period.
    pub fn fallback_config(&self) -> RateLimitConfig {
        let replicas = self.expected_replicas.max(1);
        let mut local = RateLimitConfig::with_rate((self.cells / replicas).max(1), self.period);
        local.name = self.name.clone();
        local.burst = Some((self.effective_burst() / replicas).max(1));
        local
    }

    /// Check every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure_name(LAYER, &self.name)?;
        ensure(
            !self.name.as_str().contains(['{', '}']),
            LAYER,
            "name",
            self.name.as_str(),
            "a name without '{' or '}' (it is the Redis Cluster hash tag of the keys)",
        )?;
        ensure(self.cells >= 1, LAYER, "cells", self.cells, "1 or more")?;
        ensure(
            !self.period.is_zero(),
            LAYER,
            "period",
            self.period,
            "a duration above zero",
        )?;
        ensure(
            self.emission_interval() >= Duration::from_micros(1),
            LAYER,
            "period",
            self.period,
            "at least 1us per cell (period / cells): Redis time counts microseconds",
        )?;
        ensure(
            self.period <= Duration::from_secs(86_400 * 365),
            LAYER,
            "period",
            self.period,
            "at most one year",
        )?;
        let burst = self.effective_burst();
        ensure(burst >= 1, LAYER, "burst", burst, "1 or more")?;
        ensure(
            (1..=burst).contains(&self.lease_cells),
            LAYER,
            "lease_cells",
            self.lease_cells,
            format!("1 to the burst ({burst})"),
        )?;
        ensure(
            !self.lease_ttl.is_zero() && self.lease_ttl <= self.period,
            LAYER,
            "lease_ttl",
            self.lease_ttl,
            format!("above zero and at most the period ({:?})", self.period),
        )?;
        ensure(
            !self.call_timeout.is_zero() && self.call_timeout <= MAX_REDIS_WAIT,
            LAYER,
            "call_timeout",
            self.call_timeout,
            "above zero and at most 60s",
        )?;
        ensure(
            self.expected_replicas >= 1,
            LAYER,
            "expected_replicas",
            self.expected_replicas,
            "1 or more",
        )?;
        ensure(
            self.breaker_failures >= 1,
            LAYER,
            "breaker_failures",
            self.breaker_failures,
            "1 or more",
        )?;
        ensure(
            !self.breaker_cooldown.is_zero() && self.breaker_cooldown <= MAX_REDIS_WAIT,
            LAYER,
            "breaker_cooldown",
            self.breaker_cooldown,
            "above zero and at most 60s",
        )
    }
}

/// Builds a [`RedisRateLimitLayer`]: the local [`RateLimitConfigBuilder`](crate::RateLimitConfigBuilder)'s
/// setters (same names), the Redis ones, and `build(conn)` taking the connection (then
/// [`key_by`](RedisRateLimitLayer::key_by) for one quota per key).
///
/// ```
/// use palisade_rate_limit::redis::{FailurePolicy, RedisRateLimitConfig};
/// use std::time::Duration;
///
/// let builder = RedisRateLimitConfig::builder(100, Duration::from_secs(1))
///     .name("partner-api")
///     .lease_cells(5)
///     .expected_replicas(4)
///     .call_timeout(Duration::from_millis(20))
///     .failure(FailurePolicy::FailClosed);
/// assert_eq!(builder.config().lease_slack(), 16);
///
/// // Invalid values are refused, naming the field and the range.
/// let err = RedisRateLimitConfig::builder(100, Duration::from_secs(1))
///     .lease_cells(500)
///     .config()
///     .validate()
///     .unwrap_err();
/// assert_eq!(err.field(), "lease_cells");
/// ```
pub struct RedisRateLimitBuilder {
    config: RedisRateLimitConfig,
    listeners: Listeners<RedisLimitEvent>,
}

impl RedisRateLimitBuilder {
    /// The limit's name (default `"rate_limit"`); replicas with the same name share a quota.
    #[must_use]
    pub fn name(mut self, name: impl Into<Name>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The most cells admitted at one instant, fleet-wide (default: `cells`).
    #[must_use]
    pub fn burst(mut self, burst: u32) -> Self {
        self.config.burst = Some(burst);
        self
    }

    /// Wait mode: wait up to `max_wait` for quota, then reject (default zero: reject mode).
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

    /// Reserve up to `cells` cells per round trip (default 1: no leases).
    #[must_use]
    pub fn lease_cells(mut self, cells: u32) -> Self {
        self.config.lease_cells = cells;
        self
    }

    /// How long leased cells stay usable (default 100ms).
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.config.lease_ttl = ttl;
        self
    }

    /// The timeout of every round trip to Redis (default 50ms).
    #[must_use]
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// What to decide while Redis fails (default fail-open).
    #[must_use]
    pub fn failure(mut self, policy: FailurePolicy) -> Self {
        self.config.failure = policy;
        self
    }

    /// How many replicas share the quota (default 1).
    #[must_use]
    pub fn expected_replicas(mut self, replicas: u32) -> Self {
        self.config.expected_replicas = replicas;
        self
    }

    /// Consecutive failures that open the breaker (default 3).
    #[must_use]
    pub fn breaker_failures(mut self, failures: u32) -> Self {
        self.config.breaker_failures = failures;
        self
    }

    /// How long the breaker stays open before probing (default 1s).
    #[must_use]
    pub fn breaker_cooldown(mut self, cooldown: Duration) -> Self {
        self.config.breaker_cooldown = cooldown;
        self
    }

    /// Register a listener for the limit's [`RedisLimitEvent`]s.
    #[must_use]
    pub fn on_event(mut self, listener: impl Fn(&RedisLimitEvent) + Send + Sync + 'static) -> Self {
        self.listeners.push(listener);
        self
    }

    /// The config built so far (not yet validated).
    pub fn config(&self) -> &RedisRateLimitConfig {
        &self.config
    }

    /// A builder holding `config` as it is, with no listeners.
    pub(crate) fn from_config(config: RedisRateLimitConfig) -> Self {
        Self {
            config,
            listeners: Listeners::new(),
        }
    }

    /// Validate and build the shared limiter alone (no layer): for code that is not a tower
    /// service, and for several layers sharing one limiter.
    pub fn limiter(self, conn: impl RedisConnection) -> Result<RedisLimiter, ConfigError> {
        self.config.validate()?;
        Ok(RedisLimiter::new(
            self.config,
            self.listeners,
            Conn::new(conn),
        ))
    }

    /// Validate and build a direct layer: one fleet-wide quota shared by every call.
    pub fn build(self, conn: impl RedisConnection) -> Result<RedisRateLimitLayer, ConfigError> {
        Ok(RedisRateLimitLayer::direct(self.limiter(conn)?))
    }
}

impl fmt::Debug for RedisRateLimitBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimitBuilder")
            .field("config", &self.config)
            .field("listeners", &self.listeners)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_from_local() {
        let c = RedisRateLimitConfig::new(100, Duration::from_secs(1));
        c.validate().unwrap();
        assert_eq!(c.lease_slack(), 0);
        assert_eq!(c.failure, FailurePolicy::FailOpen);
        let local = RateLimitConfig::builder(10, Duration::from_secs(2));
        let _ = local;
        let mut l = RateLimitConfig::with_rate(10, Duration::from_secs(2));
        l.name = Name::new("x");
        l.burst = Some(4);
        l.max_wait = Duration::from_millis(5);
        let r = RedisRateLimitConfig::from(l);
        assert_eq!(
            (r.name.as_str(), r.cells, r.period, r.burst, r.max_wait),
            (
                "x",
                10,
                Duration::from_secs(2),
                Some(4),
                Duration::from_millis(5)
            )
        );
    }

    #[test]
    fn fallback_divides_the_quota() {
        let mut c = RedisRateLimitConfig::new(100, Duration::from_secs(1));
        c.burst = Some(10);
        c.expected_replicas = 4;
        let f = c.fallback_config();
        assert_eq!((f.cells, f.burst), (25, Some(2)));
        c.expected_replicas = 1000;
        let f = c.fallback_config();
        assert_eq!((f.cells, f.burst), (1, Some(1)));
        f.validate().unwrap();
    }

    #[test]
    fn refuses_bad_values_naming_the_field() {
        let s = Duration::from_secs(1);
        let field = |c: RedisRateLimitConfig| c.validate().unwrap_err().field();
        let base = || RedisRateLimitConfig::new(10, s);
        assert_eq!(field(RedisRateLimitConfig::new(0, s)), "cells");
        assert_eq!(
            field(RedisRateLimitConfig::new(1, Duration::ZERO)),
            "period"
        );
        assert_eq!(
            field(RedisRateLimitConfig::new(10, Duration::from_nanos(9_999))),
            "period"
        );
        assert_eq!(field(RedisRateLimitConfig::new(1, Duration::MAX)), "period");
        let with = |f: fn(&mut RedisRateLimitConfig)| {
            let mut c = base();
            f(&mut c);
            field(c)
        };
        assert_eq!(with(|c| c.name = Name::new(String::new())), "name");
        assert_eq!(with(|c| c.name = Name::new("a{b}")), "name");
        assert_eq!(with(|c| c.burst = Some(0)), "burst");
        assert_eq!(with(|c| c.lease_cells = 0), "lease_cells");
        assert_eq!(with(|c| c.lease_cells = 11), "lease_cells");
        assert_eq!(with(|c| c.lease_ttl = Duration::ZERO), "lease_ttl");
        assert_eq!(with(|c| c.lease_ttl = Duration::MAX), "lease_ttl");
        assert_eq!(with(|c| c.call_timeout = Duration::ZERO), "call_timeout");
        assert_eq!(with(|c| c.call_timeout = Duration::MAX), "call_timeout");
        assert_eq!(with(|c| c.expected_replicas = 0), "expected_replicas");
        assert_eq!(with(|c| c.breaker_failures = 0), "breaker_failures");
        assert_eq!(
            with(|c| c.breaker_cooldown = Duration::MAX),
            "breaker_cooldown"
        );
        let err = {
            let mut c = base();
            c.lease_cells = 11;
            c.validate().unwrap_err()
        };
        assert!(err.to_string().contains("1 to the burst (10)"), "{err}");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_round_trip() {
        let mut c = RedisRateLimitConfig::new(10, Duration::from_millis(1500));
        c.lease_cells = 3;
        c.failure = FailurePolicy::FailClosed;
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"fail_closed\""), "{json}");
        let back: RedisRateLimitConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let bare = serde_json::from_str::<RedisRateLimitConfig>(r#"{"cells": 1, "period": 250}"#);
        assert!(bare.is_err());
    }
}
