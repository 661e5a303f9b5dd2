//! The retry and hedge layers' events, delivered to listeners and to `tracing` on the
//! target `palisade::retry`.

use std::time::Duration;

use palisade_core::{Event, Name};

/// Why a retry layer stopped and returned the last attempt's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// `max_attempts` attempts were made.
    MaxAttempts,
    /// The next delay would have passed the request's deadline (an outer timeout's).
    Deadline,
    /// The next delay would have passed the layer's `max_elapsed`.
    MaxElapsed,
    /// A custom backoff schedule ran out of delays.
    ScheduleEnded,
    /// The request could not be copied for another attempt.
    NotCloneable,
    /// The result's hint (`retry_after`) was longer than the backoff's `max_delay`: retrying
    /// sooner would be refused again, waiting longer was not wanted.
    RetryAfterTooLong,
}

impl StopReason {
    /// A stable lower-case label (`"max_attempts"`), used in `tracing` fields.
    pub const fn as_str(self) -> &'static str {
        match self {
            StopReason::MaxAttempts => "max_attempts",
            StopReason::Deadline => "deadline",
            StopReason::MaxElapsed => "max_elapsed",
            StopReason::ScheduleEnded => "schedule_ended",
            StopReason::NotCloneable => "not_cloneable",
            StopReason::RetryAfterTooLong => "retry_after_too_long",
        }
    }
}

/// What a [`Retry`](crate::Retry) layer did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryEvent {
    /// Attempt number `attempt` (1 = the first try) failed; the next starts after `delay`.
    Retrying {
        /// The attempt that failed.
        attempt: u32,
        /// The wait before the next attempt (backoff, jitter and server hint applied).
        delay: Duration,
    },
    /// The layer gave up after `attempts` failed attempts and returned the last result.
    Exhausted {
        /// How many attempts were made.
        attempts: u32,
        /// Why no further attempt was made.
        reason: StopReason,
    },
    /// The retry budget refused a retry; the failed result was returned at once.
    BudgetExhausted {
        /// How many attempts were made.
        attempts: u32,
    },
}

impl Event for RetryEvent {
    const TARGET: &'static str = "palisade::retry";

    #[inline]
    fn tracing_enabled() -> bool {
        tracing::enabled!(target: "palisade::retry", tracing::Level::DEBUG)
    }

    fn trace(&self, name: &Name) {
        match self {
            RetryEvent::Retrying { attempt, delay } => tracing::debug!(
                target: "palisade::retry",
                name = %name,
                attempt,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "attempt failed; retrying"
            ),
            RetryEvent::Exhausted { attempts, reason } => tracing::debug!(
                target: "palisade::retry",
                name = %name,
                attempts,
                reason = reason.as_str(),
                "retries exhausted"
            ),
            RetryEvent::BudgetExhausted { attempts } => tracing::debug!(
                target: "palisade::retry",
                name = %name,
                attempts,
                "retry budget exhausted; not retrying"
            ),
        }
    }
}

/// What a [`Hedge`](crate::hedge::Hedge) layer did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HedgeEvent {
    /// The request had not answered after `after`; copy number `copy` (1 = the first
    /// hedge) was sent.
    Sent {
        /// Which copy was sent.
        copy: u32,
        /// How long after the request started.
        after: Duration,
    },
    /// A hedged copy answered first; the others were cancelled.
    Won {
        /// Which copy answered (1 = the first hedge).
        copy: u32,
    },
    /// The budget refused a hedge.
    BudgetExhausted,
}

impl Event for HedgeEvent {
    const TARGET: &'static str = "palisade::retry";

    #[inline]
    fn tracing_enabled() -> bool {
        tracing::enabled!(target: "palisade::retry", tracing::Level::DEBUG)
    }

    fn trace(&self, name: &Name) {
        match self {
            HedgeEvent::Sent { copy, after } => tracing::debug!(
                target: "palisade::retry",
                name = %name,
                copy,
                after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
                "hedge sent"
            ),
            HedgeEvent::Won { copy } => tracing::debug!(
                target: "palisade::retry",
                name = %name,
                copy,
                "hedge won"
            ),
            HedgeEvent::BudgetExhausted => tracing::debug!(
                target: "palisade::retry",
                name = %name,
                "hedge budget exhausted; not hedging"
            ),
        }
    }
}
