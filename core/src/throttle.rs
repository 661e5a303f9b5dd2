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

/// What an upstream says is left of its quota for this client: `remaining` calls until the
/// quota resets, `reset` from when the result arrived (`RateLimit-Remaining: 40`,
/// `RateLimit-Reset: 20`).
///
/// A rate limiter following it (`palisade_rate_limit::RateLimitHandle::follow`) spreads
/// the `remaining` calls over `reset` for all its callers, never above its configured
/// rate, and sends nothing until the reset when nothing remains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Calls left until the reset.
    pub remaining: u64,
    /// How long until the quota resets.
    pub reset: Duration,
}

impl Quota {
    /// `remaining` calls left, the quota resetting in `reset`.
    pub const fn new(remaining: u64, reset: Duration) -> Self {
        Self { remaining, reset }
    }
}

/// Reads an upstream's advertised quota from a call's result.
///
/// Implemented for closures `Fn(&Result<Res, E>) -> Option<Quota>`; [`NoQuotaHint`] never
/// finds one. For HTTP, `palisade_http::quota_hint` reads the `RateLimit` headers.
///
/// ```
/// use palisade_core::throttle::{Quota, QuotaHint};
/// use std::time::Duration;
///
/// // A response with the quota's remaining calls and seconds to reset, as parsed headers.
/// struct Response { remaining: Option<u64>, reset: Option<u64> }
///
/// let hint = |res: &Result<Response, std::io::Error>| {
///     let r = res.as_ref().ok()?;
///     Some(Quota::new(r.remaining?, Duration::from_secs(r.reset?)))
/// };
/// let ok = Ok(Response { remaining: Some(40), reset: Some(20) });
/// assert_eq!(hint.quota(&ok), Some(Quota::new(40, Duration::from_secs(20))));
/// ```
pub trait QuotaHint<Res, E> {
    /// The quota the result advertises, if any.
    fn quota(&self, result: &Result<Res, E>) -> Option<Quota>;
}

impl<Res, E, F> QuotaHint<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Option<Quota>,
{
    #[inline]
    fn quota(&self, result: &Result<Res, E>) -> Option<Quota> {
        self(result)
    }
}

/// Finds no quota in any result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoQuotaHint;

impl<Res, E> QuotaHint<Res, E> for NoQuotaHint {
    #[inline]
    fn quota(&self, _: &Result<Res, E>) -> Option<Quota> {
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
        assert_eq!(NoQuotaHint.quota(&Ok::<u8, ()>(1)), None);
    }
}
