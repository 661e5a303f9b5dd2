//! Gradient: the limit follows the ratio of the no-load round trip to the measured one.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::time;

use super::Sample;

/// A gradient (Vegas-style) limit, as in Netflix's `GradientLimit` and Envoy's adaptive
/// concurrency: it tracks the no-load round trip time (the minimum over a recent window)
/// and scales the limit by `gradient = clamp(tolerance * min_rtt / rtt, 0.5, 1.0)`, adding
/// a queue allowance of `sqrt(limit)`:
///
/// `new = limit * gradient + sqrt(limit)`, smoothed: `limit + smoothing * (new - limit)`.
///
/// While the backend answers at its no-load speed the gradient is 1 and the limit grows by
/// the allowance; once queueing inflates the round trip beyond `tolerance` times the
/// minimum, the gradient drops below 1 and the limit shrinks. It settles near
/// `tolerance * capacity`. A failure multiplies the limit by 0.9, at most once per round
/// trip.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Gradient {
    pub(crate) tolerance: f64,
    pub(crate) smoothing: f64,
    pub(crate) min_rtt_window: u32,
}

impl Default for Gradient {
    fn default() -> Self {
        Self::new()
    }
}

/// The factor applied on a failure.
const BACKOFF: f64 = 0.9;

impl Gradient {
    /// The gradient algorithm with the defaults: tolerance 2.0, smoothing 0.2, a no-load
    /// window of 1000 samples.
    pub const fn new() -> Self {
        Self {
            tolerance: 2.0,
            smoothing: 0.2,
            min_rtt_window: 1000,
        }
    }

    /// How much slower than no-load the backend may answer before the limit shrinks.
    /// Default 2.0 (Netflix's `rttTolerance`): round trips vary, and a tighter tolerance
    /// mistakes noise for queueing. Valid: 1.0 to 100.0.
    #[must_use]
    pub const fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// How far each sample moves the limit toward its new value. Default 0.2 (Netflix's
    /// default): one slow call does not halve the limit. Valid: above 0.0, up to 1.0.
    #[must_use]
    pub const fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// The no-load round trip is the minimum over the last one to two windows of this many
    /// samples, so it follows a backend that became slower for good. Default 1000: long
    /// enough to include a quiet moment, short enough to forget in seconds at high rates.
    #[must_use]
    pub const fn min_rtt_window(mut self, samples: u32) -> Self {
        self.min_rtt_window = samples;
        self
    }
}

/// The gradient's running state: a two-bucket windowed minimum of the round trip, in
/// atomics (nanoseconds, `u64::MAX` for "no sample yet"), so a completing call updates it
/// without a lock.
#[derive(Debug)]
pub(crate) struct GradientState {
    current_min: AtomicU64,
    previous_min: AtomicU64,
    samples: AtomicU32,
}

impl Default for GradientState {
    fn default() -> Self {
        Self {
            current_min: AtomicU64::new(NONE),
            previous_min: AtomicU64::new(NONE),
            samples: AtomicU32::new(0),
        }
    }
}

/// No sample in a bucket yet.
const NONE: u64 = u64::MAX;

impl GradientState {
    /// Record `rtt` and return the no-load round trip: the minimum over the current and the
    /// previous window.
    pub(crate) fn min_rtt(&self, params: &Gradient, rtt: Duration) -> Duration {
        let n = self
            .samples
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if n >= params.min_rtt_window
            && self
                .samples
                .compare_exchange(n, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // The window rolls over: the current bucket becomes the previous one.
            let current = self.current_min.swap(NONE, Ordering::AcqRel);
            self.previous_min.store(current, Ordering::Release);
        }
        let rtt = time::nanos(rtt).min(NONE - 1);
        // Written only for a new minimum (rare once the window has samples): a read-only
        // check spares the shared line a write per call.
        let seen = self.current_min.load(Ordering::Acquire);
        let current = if rtt < seen {
            self.current_min.fetch_min(rtt, Ordering::AcqRel).min(rtt)
        } else {
            seen
        };
        let min = current.min(self.previous_min.load(Ordering::Acquire));
        Duration::from_nanos(min)
    }
}

impl Gradient {
    /// The next limit after `sample`, given the current `limit` and the no-load round trip;
    /// `None` for no change.
    pub(crate) fn update(
        &self,
        min_rtt: Duration,
        limit: f64,
        sample: &Sample,
        may_decrease: bool,
    ) -> Option<f64> {
        if sample.dropped {
            return may_decrease.then_some(limit * BACKOFF);
        }
        let rtt = sample.rtt.as_secs_f64().max(1e-9);
        let gradient = (self.tolerance * min_rtt.as_secs_f64() / rtt).clamp(0.5, 1.0);
        let target = limit * gradient + limit.sqrt();
        // Grow only when the limit is what holds calls back, not when the caller is idle.
        let in_use = (sample.in_flight as f64) * 2.0 >= limit;
        if target > limit && !in_use {
            return None;
        }
        Some(limit + self.smoothing * (target - limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rtt_ms: u64, in_flight: usize) -> Sample {
        Sample {
            rtt: Duration::from_millis(rtt_ms),
            in_flight,
            dropped: false,
        }
    }

    fn update(state: &GradientState, params: &Gradient, limit: f64, s: &Sample) -> Option<f64> {
        let min_rtt = state.min_rtt(params, s.rtt);
        params.update(min_rtt, limit, s, true)
    }

    #[test]
    fn grows_at_no_load_and_shrinks_when_queueing() {
        let params = Gradient::new();
        let state = GradientState::default();
        // No-load: the gradient is 1, the limit grows by smoothing * sqrt(limit).
        let grown = update(&state, &params, 16.0, &sample(10, 16)).unwrap();
        assert!((grown - 16.8).abs() < 1e-9, "{grown}");
        // Four times the no-load round trip: gradient 0.5, the limit shrinks.
        let shrunk = update(&state, &params, 16.0, &sample(40, 16)).unwrap();
        assert!(shrunk < 16.0, "{shrunk}");
        // Idle caller: no growth.
        assert_eq!(update(&state, &params, 16.0, &sample(10, 2)), None);
        // A failure backs off, unless the limit already decreased this round trip.
        let failed = Sample {
            dropped: true,
            ..sample(10, 16)
        };
        assert_eq!(
            params.update(Duration::from_millis(10), 10.0, &failed, true),
            Some(9.0)
        );
        assert_eq!(
            params.update(Duration::from_millis(10), 10.0, &failed, false),
            None
        );
    }

    #[test]
    fn forgets_an_old_minimum() {
        let params = Gradient::new().min_rtt_window(2);
        let state = GradientState::default();
        assert_eq!(
            state.min_rtt(&params, Duration::from_millis(5)),
            Duration::from_millis(5)
        );
        for _ in 0..4 {
            state.min_rtt(&params, Duration::from_millis(50));
        }
        assert_eq!(
            state.min_rtt(&params, Duration::from_millis(50)),
            Duration::from_millis(50)
        );
    }
}
