//! AIMD: additive increase, multiplicative decrease.

use std::time::Duration;

use super::Sample;

/// Additive increase, multiplicative decrease, as in TCP congestion control and Netflix's
/// `AIMDLimit`: each success while the limit is in use adds `1 / limit` (about one per
/// round trip of a full window); a failure, or a latency above
/// [`latency_threshold`](Aimd::latency_threshold), multiplies the limit by
/// [`backoff_ratio`](Aimd::backoff_ratio), at most once per round trip (samples from calls
/// that started before the last decrease do not decrease it again).
///
/// A call whose result the classifier ignores (by default every error, a timed-out attempt
/// among them) gives no sample, with one exception: if it took longer than the threshold
/// and **no fast answer ended while it ran**, the backend as a whole is slow, and it is a
/// decrease like a slow answer. A timed-out attempt beside fast answers is a few slow calls
/// (a brown-out: the limit stays); timed-out attempts with nothing fast around them are an
/// overload's queue, where waiting for a slow *answer* would leave the limit up while every
/// attempt times out and the backend works through the abandoned ones (the scorecard's 2×
/// overload lost a second of goodput at its onset to this; with the rule, the README's
/// stack serves 74.0 req/s in the gradual recovery against 73.6 with no resilience, and
/// 84.6 against 84.2 in the overload: averages of 16 seeds, `cargo run --release -p
/// palisade-benches --example seeds`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Aimd {
    pub(crate) backoff_ratio: f64,
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
    pub(crate) latency_threshold: Duration,
}

impl Default for Aimd {
    fn default() -> Self {
        Self::new()
    }
}

impl Aimd {
    /// AIMD with the defaults: backoff ratio 0.8 and latency threshold 5s.
    pub const fn new() -> Self {
        Self {
            backoff_ratio: 0.8,
            latency_threshold: Duration::from_secs(5),
        }
    }

    /// The factor applied to the limit on a failure or slow call. Default 0.8, chosen by
    /// the incident scorecard (`cargo run --release -p palisade-benches --example
    /// candidates`): under the README's stack it served 84.3 req/s in the 2× overload and
    /// 73.4 in the gradual recovery, against 83.7 and 73.0 with Netflix's 0.9 and 82.2 and
    /// 72.4 with 0.95 (a gentler step leaves the backend's queue longer above the
    /// threshold); it applies at most once per round trip. Valid: 0.5 to 1.0 (exclusive).
    #[must_use]
    pub const fn backoff_ratio(mut self, ratio: f64) -> Self {
        self.backoff_ratio = ratio;
        self
    }

    /// A call slower than this counts as a sign of overload. Default 5s (Netflix's
    /// `AIMDLimit` timeout); set it to a small multiple of the backend's normal latency.
    #[must_use]
    pub const fn latency_threshold(mut self, threshold: Duration) -> Self {
        self.latency_threshold = threshold;
        self
    }

    /// The next limit after `sample`, given the current `limit`; `None` for no change.
    pub(crate) fn update(&self, limit: f64, sample: &Sample, may_decrease: bool) -> Option<f64> {
        if self.overloaded(sample) {
            return may_decrease.then_some(limit * self.backoff_ratio);
        }
        Self::in_use(limit, sample).then_some(limit + 1.0 / limit)
    }

    /// `true` when `sample` leaves `limit` as it is, whether or not it may decrease it: a
    /// fast success while the caller uses under half the limit (the common case of a limit
    /// with room to spare), decided without touching the shared decrease state.
    #[inline]
    pub(crate) fn steady(&self, limit: f64, sample: &Sample) -> bool {
        !self.overloaded(sample) && !Self::in_use(limit, sample)
    }

    /// A failure, or a call slower than the threshold: a sign of overload.
    #[inline]
    fn overloaded(&self, sample: &Sample) -> bool {
        sample.dropped || sample.rtt > self.latency_threshold
    }

    /// Grow only when the limit is what holds calls back, not when the caller is idle.
    #[inline]
    fn in_use(limit: f64, sample: &Sample) -> bool {
        (sample.in_flight as f64) * 2.0 >= limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rtt_ms: u64, in_flight: usize, dropped: bool) -> Sample {
        Sample {
            rtt: Duration::from_millis(rtt_ms),
            in_flight,
            dropped,
        }
    }

    #[test]
    fn increases_additively_and_decreases_multiplicatively() {
        let aimd = Aimd::new().latency_threshold(Duration::from_millis(100));
        assert_eq!(aimd.update(10.0, &sample(10, 10, false), true), Some(10.1));
        assert_eq!(aimd.update(10.0, &sample(10, 10, true), true), Some(8.0));
        assert_eq!(aimd.update(10.0, &sample(200, 10, false), true), Some(8.0));
        // Idle caller: no growth. Already decreased this round trip: no second decrease.
        assert_eq!(aimd.update(10.0, &sample(10, 2, false), true), None);
        assert_eq!(aimd.update(10.0, &sample(10, 10, true), false), None);
    }

    #[test]
    fn steady_exactly_when_no_update_would_change_the_limit() {
        let aimd = Aimd::new().latency_threshold(Duration::from_millis(100));
        for rtt in [0, 10, 100, 101, 200] {
            for in_flight in [1, 4, 5, 6, 10, 30] {
                for dropped in [false, true] {
                    let s = sample(rtt, in_flight, dropped);
                    let unchanged = aimd.update(10.0, &s, true).is_none()
                        && aimd.update(10.0, &s, false).is_none();
                    assert_eq!(aimd.steady(10.0, &s), unchanged, "{s:?}");
                }
            }
        }
    }
}
