//! What the retry layer asks about each request and result: is it worth retrying, did the
//! server say when, and how to get another copy of the request.

use std::time::Duration;

use palisade_core::{AsRejection, Classify, Outcome, Rejection};

/// Extracts a server's hint of when to try again (HTTP `Retry-After`, a rate limiter's
/// `retry_after`) from an attempt's result. The next delay is at least the hint, capped by
/// the backoff's `max_delay` and the deadline.
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

/// The default classifier and hint, aware of palisade's rejections in the error
/// (through [`AsRejection`], implemented for `BoxError` and `palisade_core::Error<E>`):
///
/// | result | retried? | hint |
/// |---|---|---|
/// | `Ok(_)` | never | |
/// | `Err`, not a rejection | yes | |
/// | [`Elapsed`](palisade_core::Elapsed) (an attempt timed out) | yes | |
/// | [`RateLimited`](palisade_core::RateLimited) | yes | its `retry_after` |
/// | [`Overloaded`](palisade_core::Overloaded) | yes (the budget and backoff pace it) | |
/// | [`CircuitOpen`](palisade_core::CircuitOpen) | no: the breaker would reject again | |
/// | [`RetriesExhausted`](palisade_core::RetriesExhausted) (an inner retry gave up) | no: nested retries multiply load | |
///
/// Services whose error type is not `AsRejection` pass their own classifier
/// (`palisade_core::DefaultClassifier` retries every `Err`) and [`NoRetryAfter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectionAware;

impl<Res, E: AsRejection> Classify<Res, E> for RejectionAware {
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        let Err(err) = result else {
            return Outcome::Success;
        };
        match err.as_rejection() {
            Some(Rejection::CircuitOpen(_) | Rejection::RetriesExhausted(_)) => Outcome::Ignore,
            _ => Outcome::Failure,
        }
    }
}

impl<Res, E: AsRejection> RetryAfter<Res, E> for RejectionAware {
    fn retry_after(&self, result: &Result<Res, E>) -> Option<Duration> {
        match result {
            Err(err) => match err.as_rejection()? {
                Rejection::RateLimited(r) => Some(r.retry_after()),
                _ => None,
            },
            Ok(_) => None,
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
        BoxError, CircuitOpen, Elapsed, Error, Name, Overloaded, RateLimited, RetriesExhausted,
    };

    fn outcome(err: BoxError) -> Outcome {
        RejectionAware.classify(&Err::<(), _>(err))
    }

    #[test]
    fn rejections_are_classified() {
        let n = Name::new("x");
        let s = Duration::from_secs(1);
        assert_eq!(outcome("boom".into()), Outcome::Failure);
        assert_eq!(outcome(Elapsed::new(n.clone(), s).into()), Outcome::Failure);
        assert_eq!(
            outcome(RateLimited::new(n.clone(), s).into()),
            Outcome::Failure
        );
        assert_eq!(
            outcome(Overloaded::new(n.clone(), "q").into()),
            Outcome::Failure
        );
        assert_eq!(
            outcome(CircuitOpen::new(n.clone(), Some(s)).into()),
            Outcome::Ignore
        );
        assert_eq!(outcome(RetriesExhausted::new(n, 3).into()), Outcome::Ignore);
        assert_eq!(
            RejectionAware.classify(&Ok::<_, BoxError>(())),
            Outcome::Success
        );
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
