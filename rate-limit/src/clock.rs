//! A [`governor`] clock that reads tokio's time.
//!
//! governor's own clocks read the wall clock, so a limiter built on them ignores
//! `tokio::time::pause` and `advance`. [`TokioClock`] reads [`tokio::time::Instant::now`]
//! instead: on paused time, the limiter follows virtual time exactly, so tests and
//! simulations run hours of traffic in milliseconds, deterministically.
//!
//! ```
//! use governor::{Quota, RateLimiter};
//! use palisade_rate_limit::clock::TokioClock;
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let quota = Quota::per_second(NonZeroU32::new(1).unwrap());
//! let limiter = RateLimiter::direct_with_clock(quota, TokioClock::new());
//! assert!(limiter.check().is_ok());
//! assert!(limiter.check().is_err());
//! tokio::time::advance(Duration::from_secs(1)).await;
//! assert!(limiter.check().is_ok());
//! # }
//! ```

use std::ops::Add;
use std::time::Duration;

use governor::clock::{Clock, ReasonablyRealtime, Reference};
use governor::nanos::Nanos;

/// A [`governor`] clock reading [`tokio::time::Instant::now`], so paused tokio time drives
/// the limiter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokioClock;

impl TokioClock {
    /// The clock.
    pub const fn new() -> Self {
        Self
    }
}

/// A [`tokio::time::Instant`] as a governor clock reading.
///
/// A newtype because governor's [`Reference`] trait and tokio's `Instant` are both foreign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokioInstant(pub tokio::time::Instant);

impl TokioInstant {
    /// The tokio instant.
    pub const fn into_inner(self) -> tokio::time::Instant {
        self.0
    }
}

impl Add<Nanos> for TokioInstant {
    type Output = Self;

    #[inline]
    fn add(self, other: Nanos) -> Self {
        // Saturating at "never": no reading of governor's state can overflow the clock.
        Self(palisade_core::time::add(self.0, Duration::from(other)))
    }
}

impl Reference for TokioInstant {
    #[inline]
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    #[inline]
    fn saturating_sub(&self, duration: Nanos) -> Self {
        Self(self.0.checked_sub(duration.into()).unwrap_or(self.0))
    }
}

impl Clock for TokioClock {
    type Instant = TokioInstant;

    #[inline]
    fn now(&self) -> TokioInstant {
        TokioInstant(tokio::time::Instant::now())
    }
}

impl ReasonablyRealtime for TokioClock {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_time() {
        let clock = TokioClock::new();
        let t0 = clock.now();
        tokio::time::advance(Duration::from_millis(250)).await;
        let t1 = clock.now();
        assert_eq!(
            Duration::from(t1.duration_since(t0)),
            Duration::from_millis(250)
        );
        assert_eq!(t0.duration_since(t1), Nanos::from(Duration::ZERO));
        assert_eq!(t1.saturating_sub(Duration::from_millis(250).into()), t0);
        assert_eq!(t0 + Nanos::from(Duration::from_millis(250)), t1);
    }
}
