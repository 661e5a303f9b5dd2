//! The events of this crate's layers, on the `tracing` target `palisade::rate_limit`.

use std::time::Duration;

use palisade_core::{Event, Name};

/// Which layer of this crate emitted an event or a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// A [`RateLimitLayer`](crate::RateLimitLayer) (direct or keyed GCRA).
    Rate,
    /// A [`ConcurrencyLimitLayer`](crate::ConcurrencyLimitLayer).
    Concurrency,
    /// An [`AdaptiveLimitLayer`](crate::AdaptiveLimitLayer).
    Adaptive,
}

impl LimitKind {
    /// The kind as a metric label value (`"rate"`, `"concurrency"`, `"adaptive"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            LimitKind::Rate => "rate",
            LimitKind::Concurrency => "concurrency",
            LimitKind::Adaptive => "adaptive",
        }
    }
}

/// What a limit did with a call.
///
/// Listeners are registered on the config builders (`.on_event(|e: &LimitEvent| ...)`); the
/// events also go to `tracing` on the target `palisade::rate_limit` at `DEBUG` with the
/// fields `name`, `kind` and the variant's own fields. No event is built when nobody
/// listens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitEvent {
    /// A call was admitted after waiting `waited` for quota or a permit (calls admitted
    /// without waiting emit nothing: that is the happy path).
    Admitted {
        /// The layer kind.
        kind: LimitKind,
        /// How long the call waited.
        waited: Duration,
    },
    /// A rate limit refused a call costing `cost` cells; it may conform after `retry_after`.
    RateLimited {
        /// The cells the call would have consumed.
        cost: u32,
        /// How long until the call would conform; `Duration::MAX` when its cost exceeds the
        /// burst, so it never would.
        retry_after: Duration,
    },
    /// A concurrency or adaptive limit refused a call (`limit` says which limit was hit:
    /// `"max in-flight"`, `"queue full"`, `"max wait"`).
    Overloaded {
        /// The layer kind.
        kind: LimitKind,
        /// Which limit was hit.
        limit: &'static str,
    },
    /// A rate limit's rate was set at run time (through its
    /// [`RateLimitHandle`](crate::RateLimitHandle) or an upstream's quota) to `cells` per
    /// `period`: lower at once, higher by its ramp.
    RateSet {
        /// Cells per period.
        cells: u32,
        /// The period.
        period: Duration,
    },
    /// An adaptive limit moved from `from` to `to` concurrent calls.
    LimitChanged {
        /// The previous limit.
        from: usize,
        /// The new limit.
        to: usize,
    },
}

impl Event for LimitEvent {
    const TARGET: &'static str = "palisade::rate_limit";

    #[inline]
    fn tracing_enabled() -> bool {
        tracing::enabled!(target: "palisade::rate_limit", tracing::Level::DEBUG)
    }

    fn trace(&self, name: &Name) {
        match self {
            LimitEvent::Admitted { kind, waited } => tracing::debug!(
                target: "palisade::rate_limit",
                name = %name, kind = kind.as_str(), waited_ms = waited.as_secs_f64() * 1e3,
                "call admitted after waiting"
            ),
            LimitEvent::RateLimited { cost, retry_after } => tracing::debug!(
                target: "palisade::rate_limit",
                name = %name, kind = "rate", cost, retry_after_ms = retry_after.as_secs_f64() * 1e3,
                "call rate limited"
            ),
            LimitEvent::Overloaded { kind, limit } => tracing::debug!(
                target: "palisade::rate_limit",
                name = %name, kind = kind.as_str(), limit,
                "call refused: overloaded"
            ),
            LimitEvent::RateSet { cells, period } => tracing::debug!(
                target: "palisade::rate_limit",
                name = %name, kind = "rate", cells, period_ms = period.as_secs_f64() * 1e3,
                "rate set"
            ),
            LimitEvent::LimitChanged { from, to } => tracing::debug!(
                target: "palisade::rate_limit",
                name = %name, kind = "adaptive", from, to,
                "concurrency limit changed"
            ),
        }
    }
}
