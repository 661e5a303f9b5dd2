//! What the retry layer asks about each request and result: is it worth retrying, did the
//! server say when, and how to get another copy of the request.

use std::time::Duration;

use palisade_core::{AsRejection, Rejection, RejectionAware};

/// Extracts a hint of when to try again (HTTP `Retry-After`, a rate limiter's `retry_after`)
/// from an attempt's result.
///
/// The retry layer retries a result its classifier calls `Failure`, and also one it calls
/// `Ignore` (not the backend's fault) that carries a hint: "not now, later". The next attempt
/// never starts before the hint; a hint that would pass the deadline or `max_elapsed`, or
/// (unless retrying is bounded by time alone, `until_deadline`) one longer than the
/// backoff's `max_delay`, ends retrying instead (retrying sooner would only be refused
/// again). `Success` is never retried, hint or not.
///
/// Implemented for closures `Fn(&Result<Res, E>) -> Option<Duration>`:
///
/// ```
/// use palisade_retry::RetryAfter;
/// use std::time::Duration;
///
/// // A response type carrying an HTTP status and a parsed Retry-After header.
/// struct Response { status: u16, retry_after: Option<u64> }
///
/// let hint = |res: &Result<Response, std::io::Error>| match res {
///     Ok(r) if r.status == 503 => r.retry_after.map(Duration::from_secs),
///     _ => None,
/// };
/// let busy = Ok(Response { status: 503, retry_after: Some(2) });
/// assert_eq!(hint.retry_after(&busy), Some(Duration::from_secs(2)));
/// ```
pub trait RetryAfter<Res, E> {
    /// The hinted delay before the next attempt, if the result carries one.
    fn retry_after(&self, result: &Result<Res, E>) -> Option<Duration>;
}

impl<Res, E, F> RetryAfter<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Option<Duration>,
{
    fn retry_after(&self, result: &Result<Res, E>) -> Option<Duration> {
        self(result)
    }
}

/// No server hints: the backoff alone decides the delays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoRetryAfter;

impl<Res, E> RetryAfter<Res, E> for NoRetryAfter {
    fn retry_after(&self, _: &Result<Res, E>) -> Option<Duration> {
        None
    }
}

/// The default hint: a rejection that means "not now" rather than "no". Implemented for
/// palisade-core's [`RejectionAware`] (which is also retry's default classifier), for errors
/// that are [`AsRejection`] (`BoxError`, `palisade_core::Error<E>`).
///
/// Retry's rule, with the defaults:
///
/// | result | core classifier | hint | retried? |
/// |---|---|---|---|
/// | `Ok(_)` | `Success` | | never |
/// | `Err`, not a rejection | `Failure` | | yes, after the backoff |
/// | [`Elapsed`](palisade_core::Elapsed) (an attempt timed out) | `Failure` | | yes, after the backoff |
/// | [`RateLimited`](palisade_core::RateLimited) | `Ignore` | its `retry_after` | yes, not before `retry_after` |
/// | [`Overloaded`](palisade_core::Overloaded) | `Ignore` | zero | yes, after the backoff, not paid from the budget (never sent) |
/// | a permanent `RateLimited` ([`is_permanent`](palisade_core::RateLimited::is_permanent)) | `Ignore` | | no: waiting cannot help |
/// | [`CircuitOpen`](palisade_core::CircuitOpen) | `Ignore` | its `retry_after` (when the next probe may go) | yes, not before it, not paid from the budget (never sent); a forced-open breaker (no `retry_after`): no |
/// | [`RetriesExhausted`](palisade_core::RetriesExhausted) (an inner retry gave up) | `Ignore` | | no: nested retries multiply load |
///
/// A local rejection is never the backend's fault, so it is `Ignore` for the outcome (a
/// token-bucket budget neither pays nor refills for it, as a breaker does not count it), and
/// yet a rate limit, an overload or an open circuit says "later", so it is retried after
/// its hint. A refusal that never sent the call (an open circuit, a full concurrency limit:
/// the classifier's [`never_sent`](palisade_core::Classify::never_sent), which
/// `RejectionAware` answers) adds no backend load when retried, so its retry
/// is not paid from the retry budget: the budget bounds backend calls per request, and every
/// backend call after a request's first still follows a paid retry of a backend failure.
/// Chosen by the incident scorecard: with open circuits retried after their hint, free,
/// the README's stack went from 0.37 req/s below no resilience to 0.42 above in the
/// flapping incident, and from 0.10 below to 0.16 above in the outage (averages of 16
/// seeds, `cargo run --release -p palisade-benches --example seeds`): a caller refused in
/// the last open interval of an outage gets through once the probe closes the breaker.
impl<Res, E: AsRejection> RetryAfter<Res, E> for RejectionAware {
    fn retry_after(&self, result: &Result<Res, E>) -> Option<Duration> {
        match result.as_ref().err()?.as_rejection()? {
            Rejection::RateLimited(r) if !r.is_permanent() => Some(r.retry_after()),
            Rejection::Overloaded(_) => Some(Duration::ZERO),
            Rejection::CircuitOpen(c) => c.retry_after(),
            _ => None,
        }
    }
}

/// Makes the copy of a request sent by the next attempt; `None` means "cannot be sent
/// again" and the layer returns the result it has.
///
/// [`Cloned`] (the default) uses `Clone`; for a request that is not `Clone` (a streaming
/// body that was buffered, a request with a one-shot channel), pass a closure
/// `Fn(&Req) -> Option<Req>`.
pub trait CloneRequest<Req> {
    /// A copy of `req` for another attempt, if one can be made.
    fn clone_request(&self, req: &Req) -> Option<Req>;
}

/// Copy requests with `Clone`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cloned;

impl<Req: Clone> CloneRequest<Req> for Cloned {
    #[inline]
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

impl<Req, F> CloneRequest<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    fn clone_request(&self, req: &Req) -> Option<Req> {
        self(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::{
        BoxError, CircuitOpen, Classify, Elapsed, Error, Name, Outcome, Overloaded, RateLimited,
        RetriesExhausted,
    };

    fn hint(err: BoxError) -> Option<Duration> {
        RejectionAware.retry_after(&Err::<(), _>(err))
    }

    #[test]
    fn only_rejections_that_mean_later_give_a_hint() {
        let n = Name::new("x");
        let s = Duration::from_secs(1);
        assert_eq!(hint("boom".into()), None);
        assert_eq!(hint(Elapsed::new(n.clone(), s).into()), None);
        assert_eq!(hint(RateLimited::new(n.clone(), s).into()), Some(s));
        assert_eq!(
            hint(Overloaded::new(n.clone(), "q").into()),
            Some(Duration::ZERO)
        );
        assert_eq!(
            hint(RateLimited::insufficient_capacity(n.clone(), 10, 5).into()),
            None
        );
        assert_eq!(hint(CircuitOpen::new(n.clone(), Some(s)).into()), Some(s));
        assert_eq!(
            hint(CircuitOpen::new(n.clone(), None).into()),
            None,
            "forced open"
        );
        assert_eq!(hint(RetriesExhausted::new(n, 3).into()), None);
        assert_eq!(RejectionAware.retry_after(&Ok::<_, BoxError>(())), None);
    }

    #[test]
    fn only_refusals_that_never_sent_the_call_are_free() {
        let n = Name::new("x");
        let s = Duration::from_secs(1);
        let sent = |err: BoxError| !Classify::<(), _>::never_sent(&RejectionAware, &Err(err));
        assert!(!sent(CircuitOpen::new(n.clone(), Some(s)).into()));
        assert!(!sent(Overloaded::new(n.clone(), "q").into()));
        // A rate limit may be the upstream's own (a 429 mapped to it): paid.
        assert!(sent(RateLimited::new(n.clone(), s).into()));
        assert!(sent(Elapsed::new(n.clone(), s).into()));
        assert!(sent("boom".into()));
        assert!(sent(RetriesExhausted::new(n.clone(), 3).into()));
        assert!(!RejectionAware.never_sent(&Ok::<_, BoxError>(())));
        let closure = |_: &Result<(), BoxError>| Outcome::Ignore;
        assert!(!closure.never_sent(&Err(BoxError::from(Overloaded::new(n, "q")))));
    }

    #[test]
    fn local_rejections_are_not_backend_failures() {
        let limited: Result<(), BoxError> =
            Err(RateLimited::new(Name::new("x"), Duration::from_secs(1)).into());
        assert_eq!(RejectionAware.classify(&limited), Outcome::Ignore);
    }

    #[test]
    fn rate_limits_give_their_hint() {
        let err: Error<std::io::Error> =
            RateLimited::new(Name::new("api"), Duration::from_secs(3)).into();
        let res: Result<(), _> = Err(err);
        assert_eq!(
            RejectionAware.retry_after(&res),
            Some(Duration::from_secs(3))
        );
        let res: Result<(), Error<std::io::Error>> = Err(Error::inner(std::io::Error::other("x")));
        assert_eq!(RejectionAware.retry_after(&res), None);
        assert_eq!(NoRetryAfter.retry_after(&Ok::<_, ()>(())), None);
    }
}
