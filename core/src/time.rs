//! Saturating time arithmetic, shared by every layer so that no value a user can type panics.
//!
//! `Instant + Duration` panics on overflow, `Duration::as_nanos() as u64` silently wraps, and
//! a `Duration::MAX` timeout is a value users do type ("wait forever"). Every layer does its
//! time arithmetic through these helpers instead:
//!
//! - [`add`]: `instant + duration`, saturating at [`far_future`] (about 30 years ahead,
//!   tokio's own "never" for sleeps), so a `Duration::MAX` deadline or delay means "never".
//! - [`nanos`]: a duration as `u64` nanoseconds, saturating at `u64::MAX` (584 years).
//! - [`AtomicInstant`]: an instant in an atomic, as nanoseconds since an origin, for
//!   lock-free state (breaker windows, idle clocks).
//! - [`mix64`]: the seeded mixer behind every reproducible random stream.
//!
//! ```
//! use palisade_core::time;
//! use std::time::Duration;
//! use tokio::time::Instant;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let now = Instant::now();
//! // `now + Duration::MAX` would panic; this is "never", far in the future:
//! let never = time::add(now, Duration::MAX);
//! assert_eq!(never, time::far_future(now));
//! assert_eq!(time::nanos(Duration::MAX), u64::MAX);
//! assert_eq!(time::nanos(Duration::from_micros(3)), 3_000);
//! # }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How far ahead "never" is: about 30 years, as tokio's own far-future sleeps.
pub const FOREVER: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The instant that stands for "never" as seen from `now`.
#[inline]
pub fn far_future(now: Instant) -> Instant {
    now.checked_add(FOREVER).unwrap_or(now)
}

/// `instant + duration`, saturating at [`far_future`]`(instant)`: a duration longer than
/// about 30 years means "never".
#[inline]
pub fn add(instant: Instant, duration: Duration) -> Instant {
    if duration >= FOREVER {
        return far_future(instant);
    }
    instant
        .checked_add(duration)
        .unwrap_or_else(|| far_future(instant))
}

/// `true` when `duration` is long enough to mean "never" (at least [`FOREVER`]).
#[inline]
pub fn is_forever(duration: Duration) -> bool {
    duration >= FOREVER
}

/// A duration in nanoseconds, saturating at `u64::MAX`.
#[inline]
pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The inverse of [`nanos`] for a duration kept in an atomic: `u64::MAX` (what [`nanos`]
/// makes of anything from 584 years up) reads back as `Duration::MAX`, so "forever"
/// round-trips.
///
/// ```
/// use palisade_core::time::{from_nanos, nanos};
/// use std::time::Duration;
/// assert_eq!(from_nanos(nanos(Duration::MAX)), Duration::MAX);
/// assert_eq!(from_nanos(nanos(Duration::from_millis(3))), Duration::from_millis(3));
/// ```
#[inline]
pub fn from_nanos(nanos: u64) -> Duration {
    if nanos == u64::MAX {
        Duration::MAX
    } else {
        Duration::from_nanos(nanos)
    }
}

/// `duration × factor` for a finite, non-negative factor, saturating at `Duration::MAX`;
/// NaN or a negative factor gives zero.
pub fn mul_f64(duration: Duration, factor: f64) -> Duration {
    if factor.is_nan() || factor <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(duration.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// Nanoseconds from `origin` to `at` (zero if `at` is earlier), saturating at `u64::MAX`.
#[inline]
pub fn nanos_since(origin: Instant, at: Instant) -> u64 {
    nanos(at.saturating_duration_since(origin))
}

/// An [`Instant`] stored in an atomic as nanoseconds since an origin: lock-free shared
/// clocks for windows, idle timers and "open until".
///
/// ```
/// use palisade_core::time::AtomicInstant;
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let origin = Instant::now();
/// let last_used = AtomicInstant::new(origin);
/// last_used.store(origin + Duration::from_secs(2));
/// assert_eq!(last_used.load(), origin + Duration::from_secs(2));
/// # }
/// ```
#[derive(Debug)]
pub struct AtomicInstant {
    origin: Instant,
    nanos: AtomicU64,
}

impl AtomicInstant {
    /// An atomic instant holding `origin` (which is also its origin).
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            nanos: AtomicU64::new(0),
        }
    }

    /// The origin the nanoseconds count from.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// The stored instant.
    #[inline]
    pub fn load(&self) -> Instant {
        self.to_instant(self.nanos.load(Ordering::Acquire))
    }

    /// Store `at` (an instant before the origin is stored as the origin).
    #[inline]
    pub fn store(&self, at: Instant) {
        self.nanos.store(self.to_nanos(at), Ordering::Release);
    }

    /// Store `at` if it is later than the stored instant; returns the instant now stored.
    pub fn fetch_max(&self, at: Instant) -> Instant {
        let n = self.to_nanos(at);
        let prev = self.nanos.fetch_max(n, Ordering::AcqRel);
        self.to_instant(prev.max(n))
    }

    /// Nanoseconds since the origin for `at`, saturating.
    #[inline]
    pub fn to_nanos(&self, at: Instant) -> u64 {
        nanos_since(self.origin, at)
    }

    /// The instant `nanos` after the origin, saturating at "never".
    #[inline]
    pub fn to_instant(&self, nanos: u64) -> Instant {
        add(self.origin, Duration::from_nanos(nanos))
    }
}

/// SplitMix64's finaliser: spreads consecutive numbers over the whole `u64` range, so
/// `seed + n` gives independent-looking random streams for reproducible jitter and chaos.
///
/// ```
/// use palisade_core::time::mix64;
/// assert_ne!(mix64(1), mix64(2));
/// assert_eq!(mix64(7), mix64(7));
/// ```
#[inline]
pub fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test(start_paused = true)]
    async fn add_saturates_at_far_future() {
        let now = Instant::now();
        assert_eq!(add(now, Duration::MAX), far_future(now));
        assert_eq!(add(now, FOREVER), far_future(now));
        assert_eq!(
            add(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert!(is_forever(Duration::MAX));
        assert!(!is_forever(Duration::from_secs(86_400)));
    }

    #[test]
    fn mix64_is_splitmix64s_finaliser() {
        // SplitMix64's first output for seed 0 is the published 0xE220A8397B1DCDAF.
        assert_eq!(mix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(mix64(1), 0x910A_2DEC_8902_5CC1);
        assert_eq!(mix64(42), 0xBDD7_3226_2FEB_6E95);
        assert_eq!(mix64(1 << 63), 0x481E_C0A2_12A9_F3DB);
    }

    #[test]
    fn forever_is_about_thirty_years() {
        let year = 365 * 86_400;
        assert_eq!(FOREVER.as_secs(), 30 * year);
    }

    #[test]
    fn mul_f64_handles_the_edges() {
        let s = Duration::from_secs(1);
        assert_eq!(mul_f64(s, f64::NAN), Duration::ZERO);
        assert_eq!(mul_f64(s, -1.0), Duration::ZERO);
        assert_eq!(mul_f64(s, f64::INFINITY), Duration::MAX);
        assert_eq!(mul_f64(Duration::MAX, 2.0), Duration::MAX);
        assert_eq!(mul_f64(s, 1.5), Duration::from_millis(1500));
    }

    proptest! {
        #[test]
        fn add_never_panics_and_is_monotone(secs in any::<u64>(), nanos_part in 0u32..1_000_000_000) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("runtime");
            rt.block_on(async {
                let now = Instant::now();
                let d = Duration::new(secs, nanos_part);
                let at = add(now, d);
                prop_assert!(at >= now);
                prop_assert!(at <= far_future(now));
                if d < FOREVER {
                    prop_assert_eq!(at, now + d);
                }
                Ok(())
            })?;
        }

        #[test]
        fn nanos_saturates(secs in any::<u64>(), nanos_part in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos_part);
            let n = nanos(d);
            prop_assert_eq!(u128::from(n), d.as_nanos().min(u128::from(u64::MAX)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn atomic_instant_round_trips_and_keeps_the_max() {
        let origin = Instant::now();
        let a = AtomicInstant::new(origin);
        assert_eq!(a.load(), origin);
        let later = origin + Duration::from_millis(1500);
        a.store(later);
        assert_eq!(a.load(), later);
        assert_eq!(a.fetch_max(origin), later);
        let latest = origin + Duration::from_secs(9);
        assert_eq!(a.fetch_max(latest), latest);
        a.store(far_future(origin));
        assert!(a.load() >= origin + Duration::from_secs(86_400 * 365));
    }
}
