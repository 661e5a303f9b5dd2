//! Upstream throttling hints: "slow down, not before T".
//!
//! Third-party APIs say when they are throttling: HTTP `429`/`503` with `Retry-After`, gRPC
//! `RESOURCE_EXHAUSTED`, `RateLimit-Reset`. A [`ThrottleHint`] reads such a hint from a
//! call's result, so a whole client can obey it: the throttle gate
//! (`palisade_rate_limit::ThrottleLayer`) stops every caller that shares it until the hinted
//! instant, retries take the hint as their floor, and nobody keeps sending into the throttle.
//!
//! A hint is about the *upstream*; palisade's own local rejections (a `RateLimited` from a
//! limiter of ours) are never hints, or one limiter would throttle itself forever.
//!
//! ```
//! use palisade_core::throttle::{Throttle, ThrottleHint};
//! use std::time::Duration;
//!
//! // A response type with a status and a parsed Retry-After (seconds).
//! struct Response { status: u16, retry_after: Option<u64> }
//!
//! let hint = |res: &Result<Response, std::io::Error>| match res {
//!     Ok(r) if r.status == 429 || r.status == 503 => {
//!         Some(Throttle::For(Duration::from_secs(r.retry_after.unwrap_or(1))))
//!     }
//!     _ => None,
//! };
//! let throttled = Ok(Response { status: 429, retry_after: Some(30) });
//! assert_eq!(hint.throttle(&throttled), Some(Throttle::For(Duration::from_secs(30))));
//! assert_eq!(hint.throttle(&Ok(Response { status: 200, retry_after: None })), None);
//! ```

use std::time::Duration;

use tokio::time::Instant;

/// An upstream's request to send nothing more for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Throttle {
    /// Throttled for this long from when the result arrived (`Retry-After: 30`).
    For(Duration),
    /// Throttled until this instant (`Retry-After: <HTTP-date>`, `RateLimit-Reset`).
    Until(Instant),
}

impl Throttle {
    /// The instant the throttle ends, as seen from `now` (saturating: a `Duration::MAX`
    /// hint means "far in the future", never a panic).
    pub fn until(self, now: Instant) -> Instant {
        match self {
            Throttle::For(d) => crate::time::add(now, d),
            Throttle::Until(at) => at,
        }
    }

    /// How long the throttle lasts from `now` (zero once it has ended).
    pub fn remaining(self, now: Instant) -> Duration {
        self.until(now).saturating_duration_since(now)
    }
}

/// Reads an upstream's throttle hint from a call's result.
///
/// Implemented for closures `Fn(&Result<Res, E>) -> Option<Throttle>`; [`NoThrottleHint`]
/// never finds one.
pub trait ThrottleHint<Res, E> {
    /// The hint the result carries, if any.
    fn throttle(&self, result: &Result<Res, E>) -> Option<Throttle>;
}

impl<Res, E, F> ThrottleHint<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Option<Throttle>,
{
    #[inline]
    fn throttle(&self, result: &Result<Res, E>) -> Option<Throttle> {
        self(result)
    }
}

/// Finds no hint in any result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoThrottleHint;

impl<Res, E> ThrottleHint<Res, E> for NoThrottleHint {
    #[inline]
    fn throttle(&self, _: &Result<Res, E>) -> Option<Throttle> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn hints_saturate() {
        let now = Instant::now();
        assert_eq!(
            Throttle::For(Duration::from_secs(2)).until(now),
            now + Duration::from_secs(2)
        );
        assert_eq!(
            Throttle::For(Duration::MAX).until(now),
            crate::time::far_future(now)
        );
        let past = Throttle::Until(now);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(past.remaining(Instant::now()), Duration::ZERO);
        assert_eq!(NoThrottleHint.throttle(&Ok::<u8, ()>(1)), None);
    }
}
