//! The timeout layer's events.

use std::time::Duration;

use palisade_core::{Event, Name};

/// What a timeout layer reports to listeners and to `tracing` (target `palisade::timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutEvent {
    /// The call finished (successfully or not) before its timeout.
    Completed {
        /// How long the call took.
        elapsed: Duration,
    },
    /// The timeout elapsed; the inner future was dropped and the caller got `Elapsed`.
    Elapsed {
        /// The timeout that elapsed (the configured one, or the shorter time left before the
        /// request's deadline).
        timeout: Duration,
    },
}

impl Event for TimeoutEvent {
    const TARGET: &'static str = "palisade::timeout";

    #[inline]
    fn tracing_enabled() -> bool {
        tracing::enabled!(target: "palisade::timeout", tracing::Level::DEBUG)
    }

    fn trace(&self, name: &Name) {
        match self {
            TimeoutEvent::Completed { elapsed } => tracing::trace!(
                target: "palisade::timeout",
                name = %name,
                elapsed_ms = elapsed.as_secs_f64() * 1e3,
                "call completed in time"
            ),
            TimeoutEvent::Elapsed { timeout } => tracing::debug!(
                target: "palisade::timeout",
                name = %name,
                timeout_ms = timeout.as_secs_f64() * 1e3,
                "timeout elapsed; call cancelled"
            ),
        }
    }
}
