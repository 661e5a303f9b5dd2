//! A lock-free window of recent latencies and a cached percentile of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::Duration;

use palisade_core::time;

/// The cached percentile when there is not enough data yet.
const UNKNOWN: u64 = u64::MAX;

/// The last `window` latencies in a ring of atomics. Recording is one `fetch_add` and one
/// store; the percentile is recomputed (one selection in a scratch buffer allocated once)
/// every `window / 16` recordings and cached, so reading it is one load. The recomputation
/// takes the scratch buffer with `try_lock` and skips its turn when another thread holds it:
/// no request ever waits for a lock, and none allocates.
pub(crate) struct Latencies {
    samples: Box<[AtomicU64]>,
    scratch: Mutex<Vec<u64>>,
    recorded: AtomicU64,
    cached: AtomicU64,
    percentile: f64,
    min_samples: u64,
    recompute_every: u64,
}

impl Latencies {
    pub(crate) fn new(window: usize, percentile: f64, min_samples: usize) -> Self {
        let samples = (0..window.max(1)).map(|_| AtomicU64::new(0)).collect();
        Self {
            samples,
            scratch: Mutex::new(Vec::with_capacity(window.max(1))),
            recorded: AtomicU64::new(0),
            cached: AtomicU64::new(UNKNOWN),
            percentile,
            min_samples: min_samples as u64,
            recompute_every: (window as u64 / 16).max(1),
        }
    }

    pub(crate) fn record(&self, latency: Duration) {
        // u64::MAX stands for "unknown"; a latency that long is "forever" anyway.
        let nanos = time::nanos(latency).min(u64::MAX - 1);
        let index = self.recorded.fetch_add(1, Ordering::AcqRel);
        let len = self.samples.len() as u64;
        self.samples[(index % len) as usize].store(nanos, Ordering::Release);
        let count = index + 1;
        if count >= self.min_samples
            && (count == self.min_samples || count.is_multiple_of(self.recompute_every))
        {
            self.recompute(count.min(len) as usize);
        }
    }

    fn recompute(&self, filled: usize) {
        let mut values = match self.scratch.try_lock() {
            Ok(values) => values,
            // The buffer holds no invariant a panic could break.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        values.clear();
        values.extend(
            self.samples[..filled]
                .iter()
                .map(|s| s.load(Ordering::Acquire)),
        );
        let rank = (self.percentile * filled as f64).ceil() as usize;
        let index = rank.clamp(1, filled) - 1;
        let (_, value, _) = values.select_nth_unstable(index);
        self.cached.store(*value, Ordering::Release);
    }

    /// The percentile of the window, once `min_samples` latencies were recorded.
    pub(crate) fn percentile(&self) -> Option<Duration> {
        match self.cached.load(Ordering::Acquire) {
            UNKNOWN => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_until_min_samples() {
        let l = Latencies::new(100, 0.9, 10);
        for ms in 1..10 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.percentile(), None);
        l.record(Duration::from_millis(10));
        assert_eq!(l.percentile(), Some(Duration::from_millis(9)));
    }

    #[test]
    fn the_window_forgets_old_latencies() {
        let l = Latencies::new(32, 0.5, 1);
        for _ in 0..32 {
            l.record(Duration::from_secs(10));
        }
        assert_eq!(l.percentile(), Some(Duration::from_secs(10)));
        for _ in 0..32 {
            l.record(Duration::from_millis(1));
        }
        assert_eq!(l.percentile(), Some(Duration::from_millis(1)));
    }
}
