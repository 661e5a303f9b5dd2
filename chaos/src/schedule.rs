//! Time windows: faults that happen on a schedule ("outage from t=30s to t=60s", "a latency
//! spike for 20s every 5 min").

use std::ops::Range;
use std::time::Duration;

use palisade_core::ConfigError;
use palisade_core::config::ensure;

use crate::fault::Fault;

/// A fault active during a window of time, measured from the layer's schedule start (when
/// the [`ChaosLayer`](crate::ChaosLayer) was created, or the last
/// [`ChaosHandle::restart_schedule`](crate::ChaosHandle::restart_schedule)), on tokio's clock.
///
/// While the window is active, each call suffers the fault with the window's probability
/// (default 1.0: every call). A window with a period repeats: it is active whenever
/// `(elapsed - from) % every < until - from`.
///
/// ```
/// use palisade_chaos::{Fault, Window};
/// use std::time::Duration;
///
/// let secs = Duration::from_secs;
/// // A full outage from t=30s to t=60s.
/// let outage = Window::new(Fault::Error, secs(30)..secs(60));
/// assert!(!outage.is_active(secs(29)));
/// assert!(outage.is_active(secs(30)));
/// assert!(!outage.is_active(secs(60)));
///
/// // Hangs for 20s every 5 minutes, starting at t=0, for one call in ten.
/// let spikes = Window::new(Fault::Hang, secs(0)..secs(20)).every(secs(300)).probability(0.1);
/// assert!(spikes.is_active(secs(310)));
/// assert!(!spikes.is_active(secs(330)));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Window {
    fault: Fault,
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
    from: Duration,
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
    until: Duration,
    #[cfg_attr(
        feature = "serde",
        serde(default, with = "palisade_core::config::duration::option")
    )]
    every: Option<Duration>,
    #[cfg_attr(feature = "serde", serde(default = "one"))]
    probability: f64,
}

#[cfg(feature = "serde")]
fn one() -> f64 {
    1.0
}

impl Window {
    /// `fault` hits every call from `span.start` to `span.end` (offsets from the schedule
    /// start).
    pub fn new(fault: Fault, span: Range<Duration>) -> Self {
        Self {
            fault,
            from: span.start,
            until: span.end,
            every: None,
            probability: 1.0,
        }
    }

    /// Repeat the window every `period` (which must be at least the window's length).
    #[must_use]
    pub fn every(mut self, period: Duration) -> Self {
        self.every = Some(period);
        self
    }

    /// Hit each call during the window with probability `p` (0.0 to 1.0) instead of always.
    #[must_use]
    pub fn probability(mut self, p: f64) -> Self {
        self.probability = p;
        self
    }

    /// The fault.
    pub fn fault(&self) -> &Fault {
        &self.fault
    }

    /// The window's span within its period.
    pub fn span(&self) -> Range<Duration> {
        self.from..self.until
    }

    /// The repeat period, if any.
    pub fn period(&self) -> Option<Duration> {
        self.every
    }

    /// The probability a call during the window suffers the fault.
    pub fn hit_probability(&self) -> f64 {
        self.probability
    }

    /// Whether the window is active `elapsed` after the schedule start.
    pub fn is_active(&self, elapsed: Duration) -> bool {
        let Some(since) = elapsed.checked_sub(self.from) else {
            return false;
        };
        let len = self.until - self.from;
        match self.every {
            Some(period) if !period.is_zero() => {
                Duration::from_nanos((since.as_nanos() % period.as_nanos()) as u64) < len
            }
            _ => since < len,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let (from, until) = (self.from, self.until);
        ensure(
            from < until,
            "chaos",
            "window",
            (from, until),
            "a window with from < until",
        )?;
        ensure(
            (0.0..=1.0).contains(&self.probability),
            "chaos",
            "window.probability",
            self.probability,
            "0.0 to 1.0",
        )?;
        if let Some(every) = self.every {
            ensure(
                every >= until - from && !every.is_zero(),
                "chaos",
                "window.every",
                every,
                "a period at least as long as the window",
            )?;
        }
        if let Fault::Latency(l) = &self.fault {
            l.validate("chaos", "window.fault")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_windows_are_refused() {
        let s = Duration::from_secs;
        assert!(Window::new(Fault::Error, s(5)..s(5)).validate().is_err());
        assert!(
            Window::new(Fault::Error, s(0)..s(5))
                .probability(1.5)
                .validate()
                .is_err()
        );
        assert!(
            Window::new(Fault::Error, s(0)..s(5))
                .every(s(4))
                .validate()
                .is_err()
        );
        assert!(
            Window::new(Fault::Error, s(0)..s(5))
                .every(s(5))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn periodic_window_repeats_from_its_start() {
        let s = Duration::from_secs;
        let w = Window::new(Fault::Hang, s(10)..s(12)).every(s(60));
        assert!(!w.is_active(s(9)));
        assert!(w.is_active(s(11)));
        assert!(!w.is_active(s(12)));
        assert!(w.is_active(s(70)));
        assert!(w.is_active(s(131)));
        assert!(!w.is_active(s(132)));
    }
}
