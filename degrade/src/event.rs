//! The degrade layers' events.

use std::time::Duration;

use palisade_core::{Event, Name, Priority};

use crate::Trigger;

/// What a degrade layer did, delivered to listeners registered with `.on_event(..)` on a
/// config builder and to `tracing` (target `palisade::degrade`, level DEBUG).
///
/// All three layers share this enum, so one listener can watch a whole degraded stage.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DegradeEvent {
    /// A fallback answered instead of the live path.
    FallbackServed {
        /// Why the live answer was replaced.
        trigger: Trigger,
    },
    /// The fallback itself failed; its error is returned with the original as its source.
    FallbackFailed {
        /// Why the fallback was asked.
        trigger: Trigger,
    },
    /// A stale cache entry answered.
    StaleServed {
        /// How old the entry was.
        age: Duration,
        /// Why the live answer was replaced.
        trigger: Trigger,
    },
    /// The live path failed and no entry was fresh enough to serve: the failure passes
    /// through.
    StaleMissed {
        /// Why a stale answer was wanted.
        trigger: Trigger,
    },
    /// A stale-while-revalidate refresh ran in the background.
    Revalidated {
        /// `true` when the refresh stored a new live answer.
        refreshed: bool,
    },
    /// A load shedder refused a request.
    Shed {
        /// The request's priority.
        priority: Priority,
        /// Which overload signal fired (`"max in-flight"`, `"queueing delay"`,
        /// `"overload signal"`, `"degraded mode"`).
        limit: &'static str,
    },
    /// The degrade switch was flipped.
    ModeSwitched {
        /// `true`: degraded mode (always fallback / serve stale / shed all but critical).
        degraded: bool,
    },
}

impl Event for DegradeEvent {
    const TARGET: &'static str = "palisade::degrade";

    fn tracing_enabled() -> bool {
        tracing::enabled!(target: "palisade::degrade", tracing::Level::DEBUG)
    }

    fn trace(&self, name: &Name) {
        match self {
            DegradeEvent::FallbackServed { trigger } => {
                tracing::debug!(target: "palisade::degrade", name = %name, trigger = trigger.as_str(), "fallback served");
            }
            DegradeEvent::FallbackFailed { trigger } => {
                tracing::debug!(target: "palisade::degrade", name = %name, trigger = trigger.as_str(), "fallback failed");
            }
            DegradeEvent::StaleServed { age, trigger } => {
                tracing::debug!(target: "palisade::degrade", name = %name, trigger = trigger.as_str(), age_s = age.as_secs_f64(), "stale answer served");
            }
            DegradeEvent::StaleMissed { trigger } => {
                tracing::debug!(target: "palisade::degrade", name = %name, trigger = trigger.as_str(), "no stale answer to serve");
            }
            DegradeEvent::Revalidated { refreshed } => {
                tracing::debug!(target: "palisade::degrade", name = %name, refreshed = *refreshed, "revalidated in the background");
            }
            DegradeEvent::Shed { priority, limit } => {
                tracing::debug!(target: "palisade::degrade", name = %name, priority = priority.as_str(), limit = *limit, "request shed");
            }
            DegradeEvent::ModeSwitched { degraded } => {
                tracing::debug!(target: "palisade::degrade", name = %name, degraded = *degraded, "degrade mode switched");
            }
        }
    }
}
