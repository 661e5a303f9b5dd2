//! The run-time rate of a rate limit: a second GCRA ("the pace") in front of governor's,
//! in effect only while the rate is below the configured one.
//!
//! governor's quota is fixed when the limiter is built. To slow down at run time (an
//! operator's `set_rate`, an upstream's advertised quota) every admission first passes the
//! pace: a GCRA of our own whose emission interval is one atomic word. While the rate is
//! the configured one that word is zero and the pace costs one relaxed atomic load, so
//! the happy path stays governor's single compare-and-swap.
//!
//! The pace's burst covers the same time as the configured burst (`burst × period / cells`),
//! at least one cell: slowed to a hundredth, a limit with a burst of 100 admits bursts of 1.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::time;
use tokio::time::Instant;

/// No ramp step is due.
const NO_STEP: u64 = u64::MAX;
/// A ramp raises the rate in steps of `ramp / RAMP_STEPS` at most.
const RAMP_STEPS: u32 = 16;
/// The shortest time between two ramp steps.
const MIN_STEP: Duration = Duration::from_millis(1);

pub(crate) struct Pace {
    origin: Instant,
    /// The configured emission interval, ns: the fastest the pace ever goes.
    configured: u64,
    /// `burst × configured`, ns: the time the pace's burst covers.
    window: u64,
    ramp: Duration,
    /// The pace's emission interval, ns; 0 while the configured rate rules alone.
    interval: AtomicU64,
    /// The pace's GCRA state: its theoretical arrival time, ns since `origin`.
    tat: AtomicU64,
    /// When the next ramp step is due, ns since `origin`; [`NO_STEP`] when not ramping.
    next_step: AtomicU64,
    plan: Mutex<Plan>,
}

/// Where the rate is going (changed under the lock, rarely).
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// The rate set: `cells` per `period`.
    cells: u32,
    period: Duration,
    /// Its emission interval, ns (at least `configured`).
    target: u64,
    /// The rate in effect while ramping, cells per ns.
    rate: f64,
    /// When `rate` was last raised, ns since origin.
    last: u64,
}

/// What [`Pace::check`] took: the pace time to give back if the limiter behind it refuses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Taken(u64);

impl Pace {
    pub(crate) fn new(cells: u32, period: Duration, burst: u32, ramp: Duration) -> Self {
        let configured = time::nanos(period / cells.max(1)).max(1);
        Self {
            origin: Instant::now(),
            configured,
            window: configured.saturating_mul(u64::from(burst.max(1))),
            ramp,
            interval: AtomicU64::new(0),
            tat: AtomicU64::new(0),
            next_step: AtomicU64::new(NO_STEP),
            plan: Mutex::new(Plan {
                cells,
                period,
                target: configured,
                rate: 1.0 / configured as f64,
                last: 0,
            }),
        }
    }

    fn now(&self) -> u64 {
        time::nanos_since(self.origin, Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take `cells` cells of the pace if they conform now; otherwise take nothing and say
    /// when they would. Free (one atomic load) while the configured rate rules alone.
    #[inline]
    pub(crate) fn check(&self, cells: u32) -> Result<Taken, Instant> {
        let interval = self.interval.load(Ordering::Relaxed);
        if interval == 0 {
            return Ok(Taken(0));
        }
        self.check_paced(cells)
    }

    #[cold]
    fn check_paced(&self, cells: u32) -> Result<Taken, Instant> {
        let now = self.now();
        if now >= self.next_step.load(Ordering::Acquire) {
            self.step(now);
        }
        let interval = self.interval.load(Ordering::Relaxed);
        if interval == 0 {
            return Ok(Taken(0));
        }
        let cost = interval.saturating_mul(u64::from(cells));
        // A request costing more than the pace's burst still passes once the pace is idle.
        let limit = self.window.max(cost);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let next = tat.max(now).saturating_add(cost);
            if next - now > limit {
                return Err(time::add(self.origin, Duration::from_nanos(next - limit)));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(Taken(cost)),
                Err(actual) => tat = actual,
            }
        }
    }

    /// Give back what [`check`](Self::check) took (the limiter behind it refused).
    pub(crate) fn refund(&self, taken: Taken) {
        if taken.0 > 0 {
            let _ = self
                .tat
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                    Some(t.saturating_sub(taken.0))
                });
        }
    }

    /// The emission interval in effect now.
    pub(crate) fn interval(&self) -> Duration {
        let now = self.now();
        if now >= self.next_step.load(Ordering::Acquire) {
            self.step(now);
        }
        match self.interval.load(Ordering::Relaxed) {
            0 => Duration::from_nanos(self.configured),
            ns => Duration::from_nanos(ns),
        }
    }

    /// The rate set (`cells` per `period`) and whether the pace is still climbing to it.
    pub(crate) fn target(&self) -> (u32, Duration, bool) {
        let plan = *self.lock();
        let ramping = self.next_step.load(Ordering::Acquire) != NO_STEP;
        (plan.cells, plan.period, ramping)
    }

    /// Set the rate to one cell per `target` ns (`cells` per `period`, for reporting):
    /// lower at once; higher by the ramp.
    /// `true` when the rate set changed.
    pub(crate) fn set(&self, cells: u32, period: Duration, target: u64) -> bool {
        let target = target.max(self.configured);
        let now = self.now();
        let mut plan = self.lock();
        let changed = plan.target != target;
        let current = match self.interval.load(Ordering::Relaxed) {
            0 => self.configured,
            ns => ns,
        };
        plan.cells = cells;
        plan.period = period;
        plan.target = target;
        if target >= current || self.ramp.is_zero() {
            // Slower (or no ramp): at once.
            plan.rate = 1.0 / target as f64;
            plan.last = now;
            self.publish(target);
            self.next_step.store(NO_STEP, Ordering::Release);
            return changed;
        }
        // Faster: climb from the rate in effect. A ramp under way goes on from where it is
        // (a stream of hints does not restart it).
        if self.next_step.load(Ordering::Acquire) == NO_STEP {
            plan.rate = 1.0 / current as f64;
            plan.last = now;
            self.next_step
                .store(now.saturating_add(self.step_len()), Ordering::Release);
        }
        changed
    }

    /// Hold every admission until `until`: from then on, one cell per interval in effect.
    pub(crate) fn hold_until(&self, until: Instant) {
        let interval = time::nanos(self.interval());
        let until = time::nanos_since(self.origin, until);
        // A cell conforms when `tat + interval - window <= now`.
        let tat = until
            .saturating_add(self.window.max(interval))
            .saturating_sub(interval);
        self.tat.fetch_max(tat, Ordering::AcqRel);
        if self.interval.load(Ordering::Relaxed) == 0 {
            // The configured rate rules alone: pace at it, so the hold applies.
            let _plan = self.lock();
            if self.interval.load(Ordering::Relaxed) == 0 {
                self.interval.store(self.configured, Ordering::Relaxed);
                let expires = until.saturating_add(self.window);
                // Back to "configured rate alone" once the hold has passed: a step does it.
                self.next_step.fetch_min(expires.max(1), Ordering::AcqRel);
            }
        }
    }

    fn step_len(&self) -> u64 {
        time::nanos((self.ramp / RAMP_STEPS).max(MIN_STEP))
    }

    fn publish(&self, target: u64) {
        let value = if target <= self.configured { 0 } else { target };
        self.interval.store(value, Ordering::Relaxed);
    }

    /// Raise the rate along the ramp: the rate climbs by the configured rate per `ramp`, so
    /// from almost nothing back to the configured rate takes `ramp`.
    #[cold]
    fn step(&self, now: u64) {
        let Ok(mut plan) = self.plan.try_lock() else {
            return; // another caller is stepping
        };
        let due = self.next_step.load(Ordering::Acquire);
        if now < due {
            return;
        }
        let ramp = time::nanos(self.ramp).max(1) as f64;
        let slope = (1.0 / self.configured as f64) / ramp;
        let target_rate = 1.0 / plan.target as f64;
        let elapsed = now.saturating_sub(plan.last) as f64;
        plan.rate = (plan.rate + slope * elapsed).min(target_rate);
        plan.last = now;
        if plan.rate >= target_rate {
            self.publish(plan.target);
            self.next_step.store(NO_STEP, Ordering::Release);
        } else {
            let interval = (1.0 / plan.rate).min(u64::MAX as f64) as u64;
            self.publish(interval.max(plan.target));
            self.next_step
                .store(now.saturating_add(self.step_len()), Ordering::Release);
        }
    }
}

impl std::fmt::Debug for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pace")
            .field("interval", &self.interval.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn free_at_the_configured_rate() {
        let pace = Pace::new(100, Duration::from_secs(1), 100, Duration::from_secs(10));
        for _ in 0..1000 {
            assert!(pace.check(1).is_ok());
        }
        assert_eq!(pace.interval(), 10 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn slows_at_once_and_climbs_linearly() {
        let pace = Pace::new(100, Duration::from_secs(1), 1, Duration::from_secs(10));
        // 1 per second.
        pace.set(
            1,
            Duration::from_secs(1),
            time::nanos(Duration::from_secs(1)),
        );
        assert_eq!(pace.interval(), Duration::from_secs(1));
        assert!(pace.check(1).is_ok());
        let at = pace.check(1).unwrap_err();
        assert_eq!(at - Instant::now(), Duration::from_secs(1));
        // Back to the configured rate: it climbs by 100/s per 10 s, 10/s per second.
        pace.set(100, Duration::from_secs(1), time::nanos(10 * MS));
        assert_eq!(pace.interval(), Duration::from_secs(1), "no step back up");
        tokio::time::advance(Duration::from_secs(5)).await;
        // about 1 + 50 cells per second after 5 s
        let iv = pace.interval();
        assert!(iv > 19 * MS && iv < 21 * MS, "{iv:?}");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(pace.interval(), 10 * MS);
        assert_eq!(pace.interval.load(Ordering::Relaxed), 0, "free again");
    }

    #[tokio::test(start_paused = true)]
    async fn hold_blocks_until_then_paces() {
        let pace = Pace::new(10, Duration::from_secs(1), 10, Duration::from_secs(1));
        let until = Instant::now() + Duration::from_secs(3);
        pace.hold_until(until);
        assert_eq!(pace.check(1).unwrap_err(), until);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(pace.check(1).is_ok());
        assert_eq!(
            pace.check(1).unwrap_err(),
            Instant::now() + Duration::from_millis(100)
        );
    }
}
