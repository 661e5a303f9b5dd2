//! A tiny consecutive-failure breaker around the round trips to Redis (this crate may not
//! depend on `palisade-circuit-breaker`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::time;
use tokio::time::Instant;

/// Opens after `threshold` consecutive failures; while open, no call reaches Redis until
/// `cooldown` has passed, then one call at a time probes (a probe claims the next
/// `probe_timeout`, so a probe whose caller went away never keeps the breaker open).
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    probe_timeout: Duration,
    failures: AtomicU32,
    origin: Instant,
    /// While open: no call before this instant (nanoseconds since `origin`).
    open_until: AtomicU64,
}

/// What a recorded outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    Opened,
    Closed,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration, probe_timeout: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            probe_timeout,
            failures: AtomicU32::new(0),
            origin: Instant::now(),
            open_until: AtomicU64::new(0),
        }
    }

    /// `true` while the breaker is open (Redis is not asked, except by probes).
    pub(crate) fn is_open(&self) -> bool {
        self.failures.load(Ordering::Acquire) >= self.threshold
    }

    /// May this call go to Redis? Closed: yes. Open: only one probe per cooldown.
    pub(crate) fn allow(&self, now: Instant) -> bool {
        if !self.is_open() {
            return true;
        }
        let until = self.open_until.load(Ordering::Acquire);
        let now_n = time::nanos_since(self.origin, now);
        if now_n < until {
            return false;
        }
        let next = time::nanos_since(self.origin, time::add(now, self.probe_timeout));
        self.open_until
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// When the next probe may go, if the breaker is open.
    pub(crate) fn next_probe(&self, now: Instant) -> Option<Duration> {
        if !self.is_open() {
            return None;
        }
        let until = self.origin + Duration::from_nanos(self.open_until.load(Ordering::Acquire));
        Some(until.saturating_duration_since(now))
    }

    pub(crate) fn success(&self) -> Transition {
        let before = self.failures.swap(0, Ordering::AcqRel);
        if before >= self.threshold {
            Transition::Closed
        } else {
            Transition::None
        }
    }

    pub(crate) fn failure(&self, now: Instant) -> Transition {
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if failures >= self.threshold {
            let until = time::nanos_since(self.origin, time::add(now, self.cooldown));
            self.open_until.store(until, Ordering::Release);
        }
        if failures == self.threshold {
            Transition::Opened
        } else {
            Transition::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_probes_and_closes() {
        let b = Breaker::new(2, Duration::from_secs(1), Duration::from_millis(50));
        let now = Instant::now();
        assert!(b.allow(now));
        assert_eq!(b.failure(now), Transition::None);
        assert!(b.allow(now));
        assert_eq!(b.failure(now), Transition::Opened);
        assert!(b.is_open());
        assert!(!b.allow(now));
        assert_eq!(b.next_probe(now), Some(Duration::from_secs(1)));
        let later = now + Duration::from_secs(1);
        // One probe at a time.
        assert!(b.allow(later));
        assert!(!b.allow(later));
        // A probe that vanished frees the next one after the probe timeout.
        assert!(b.allow(later + Duration::from_millis(50)));
        // A failed probe opens for another cooldown, without a second "opened".
        assert_eq!(b.failure(later), Transition::None);
        assert!(!b.allow(later + Duration::from_millis(999)));
        assert!(b.allow(later + Duration::from_secs(1)));
        assert_eq!(b.success(), Transition::Closed);
        assert!(!b.is_open());
        assert_eq!(b.next_probe(later), None);
        assert_eq!(b.success(), Transition::None);
    }
}
