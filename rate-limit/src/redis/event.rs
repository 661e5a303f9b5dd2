//! The Redis rate limit's events and metrics.

use std::time::Duration;

use palisade_core::metrics::{Counter, Gauge, MetricDef, MetricKind};
use palisade_core::{Event, Name};

/// Who decides a Redis rate limit's calls right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Redis decides (the breaker is closed).
    Redis,
    /// Redis failed: a local limiter at `quota / expected_replicas` decides.
    FailOpen,
    /// Redis failed: every call is rejected.
    FailClosed,
}

impl Mode {
    /// `"redis"`, `"fail_open"` or `"fail_closed"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Redis => "redis",
            Mode::FailOpen => "fail_open",
            Mode::FailClosed => "fail_closed",
        }
    }

    /// The value of the [`MODE`] gauge: 0 Redis, 1 fail-open, 2 fail-closed.
    pub const fn as_gauge(self) -> f64 {
        match self {
            Mode::Redis => 0.0,
            Mode::FailOpen => 1.0,
            Mode::FailClosed => 2.0,
        }
    }
}

/// Where a decision was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decider {
    /// By the script in Redis (one round trip).
    Redis,
    /// On this replica from leased cells, or rejected because the last answer from Redis
    /// says the cells cannot conform yet: no round trip.
    Local,
    /// By the failure policy (Redis failed, timed out, or its breaker is open).
    Fallback,
}

impl Decider {
    /// `"redis"`, `"local"` or `"fallback"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Decider::Redis => "redis",
            Decider::Local => "local",
            Decider::Fallback => "fallback",
        }
    }
}

/// What a Redis rate limit did; to listeners registered with
/// [`on_event`](super::RedisRateLimitBuilder::on_event) and to `tracing` on the target
/// `palisade::rate_limit` (`DEBUG`; mode changes and Redis errors at `WARN`). No event is
/// built when nobody listens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisLimitEvent {
    /// A call was admitted after waiting `waited` (calls admitted at once emit nothing).
    Admitted {
        /// How long the call waited.
        waited: Duration,
        /// Who admitted it.
        by: Decider,
    },
    /// A call costing `cost` cells was refused; it may conform after `retry_after`.
    RateLimited {
        /// The cells the call would have consumed.
        cost: u32,
        /// How long until it may conform (`Duration::MAX`: never, it costs more than the
        /// burst).
        retry_after: Duration,
        /// Who refused it.
        by: Decider,
    },
    /// A round trip to Redis failed or timed out; the call was decided by the failure
    /// policy.
    RedisFailed {
        /// The error, or `"timed out"`.
        error: String,
    },
    /// The limit switched between Redis and its failure policy (the breaker opened, or a
    /// probe found Redis back).
    ModeChanged {
        /// The mode before.
        from: Mode,
        /// The mode now.
        to: Mode,
    },
}

impl Event for RedisLimitEvent {
    const TARGET: &'static str = "palisade::rate_limit";

    fn tracing_enabled() -> bool {
        tracing::enabled!(target: "palisade::rate_limit", tracing::Level::WARN)
    }

    fn trace(&self, name: &Name) {
        match self {
            RedisLimitEvent::Admitted { waited, by } => tracing::debug!(
                target: "palisade::rate_limit",
                name = %name, kind = "redis", by = by.as_str(),
                waited_ms = waited.as_secs_f64() * 1e3,
                "call admitted after waiting"
            ),
            RedisLimitEvent::RateLimited {
                cost,
                retry_after,
                by,
            } => tracing::debug!(
                target: "palisade::rate_limit",
                name = %name, kind = "redis", by = by.as_str(), cost,
                retry_after_ms = retry_after.as_secs_f64() * 1e3,
                "call rate limited"
            ),
            RedisLimitEvent::RedisFailed { error } => tracing::warn!(
                target: "palisade::rate_limit",
                name = %name, kind = "redis", error = %error,
                "redis round trip failed; decided by the failure policy"
            ),
            RedisLimitEvent::ModeChanged { from, to } => tracing::warn!(
                target: "palisade::rate_limit",
                name = %name, kind = "redis", from = from.as_str(), to = to.as_str(),
                "redis rate limit mode changed"
            ),
        }
    }
}

/// Who decides now: 0 Redis, 1 fail-open, 2 fail-closed (gauge).
pub const MODE: &str = "palisade_rate_limit_redis_mode";
/// Round trips to Redis (counter).
pub const ROUND_TRIPS: &str = "palisade_rate_limit_redis_round_trips_total";
/// Round trips that failed or timed out (counter).
pub const FAILURES: &str = "palisade_rate_limit_redis_failures_total";
/// Decisions made on this replica without a round trip: from a lease, or a certain
/// rejection (counter).
pub const LOCAL_DECISIONS: &str = "palisade_rate_limit_redis_local_decisions_total";

/// The metrics of a Redis rate limit (feature `metrics`), beside the crate's
/// [`ADMITTED`](crate::metrics::ADMITTED) and [`REJECTED`](crate::metrics::REJECTED)
/// with `kind="redis"`. Each carries the label `name`.
pub const REDIS_METRICS: &[MetricDef] = &[
    MetricDef::new(
        MODE,
        MetricKind::Gauge,
        "who decides: 0 redis, 1 fail-open, 2 fail-closed",
    ),
    MetricDef::new(ROUND_TRIPS, MetricKind::Counter, "round trips to redis"),
    MetricDef::new(
        FAILURES,
        MetricKind::Counter,
        "round trips to redis that failed or timed out",
    ),
    MetricDef::new(
        LOCAL_DECISIONS,
        MetricKind::Counter,
        "decisions made without a round trip (leases, certain rejections)",
    ),
];

const LABELS: palisade_core::metrics::Labels = &[("kind", "redis")];

/// The handles of one limiter.
#[derive(Debug, Clone, Default)]
pub(crate) struct RedisMetrics {
    pub(crate) admitted: Counter,
    pub(crate) rejected: Counter,
    pub(crate) mode: Gauge,
    pub(crate) round_trips: Counter,
    pub(crate) failures: Counter,
    pub(crate) local: Counter,
}

impl RedisMetrics {
    pub(crate) fn register(name: &Name) -> Self {
        Self {
            admitted: Counter::register(crate::metrics::ADMITTED, name, LABELS),
            rejected: Counter::register(crate::metrics::REJECTED, name, LABELS),
            mode: Gauge::register(MODE, name, &[]),
            round_trips: Counter::register(ROUND_TRIPS, name, &[]),
            failures: Counter::register(FAILURES, name, &[]),
            local: Counter::register(LOCAL_DECISIONS, name, &[]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_follow_the_scheme() {
        for def in REDIS_METRICS {
            assert!(def.follows_scheme(), "{def:?}");
        }
    }
}
