//! Shared outcome classification: "was this call a failure?"

/// What one call's result means to a resilience layer.
///
/// Retry retries `Failure`s, the circuit breaker counts them, degrade falls back on them and
/// the metrics label them. `Ignore` is for results that say nothing about the backend's
/// health (a client-side validation error, a cancelled call): the breaker does not count
/// them, retry does not retry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed in a way that reflects on the backend.
    Failure,
    /// The call's result is not evidence either way.
    Ignore,
}

impl Outcome {
    /// `true` for [`Outcome::Failure`].
    pub const fn is_failure(self) -> bool {
        matches!(self, Outcome::Failure)
    }

    /// `true` for [`Outcome::Success`].
    pub const fn is_success(self) -> bool {
        matches!(self, Outcome::Success)
    }
}

/// Turns a call's `&Result<Res, E>` into an [`Outcome`].
///
/// Implemented for every closure `Fn(&Result<Res, E>) -> Outcome`, so an HTTP user can count
/// a `503` response as a failure and a `400` as a success (the backend is healthy; the
/// request was wrong):
///
/// ```
/// use palisade_core::{Classify, Outcome};
///
/// let by_status = |res: &Result<u16, std::io::Error>| match res {
///     Ok(status) if *status >= 500 => Outcome::Failure,
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::Failure,
/// };
/// assert_eq!(by_status.classify(&Ok(503)), Outcome::Failure);
/// assert_eq!(by_status.classify(&Ok(400)), Outcome::Success);
/// ```
pub trait Classify<Res, E> {
    /// Classify one result.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;

    /// `true` when `result` is a refusal by a layer of this process that never sent the
    /// call (an open circuit, a full concurrency limit:
    /// [`Rejection::never_sent`](crate::Rejection::never_sent)): the retry layer retries it
    /// without paying from its retry budget, since it adds no backend load. Default
    /// `false` (a closure classifier's retries are all paid); [`RejectionAware`] and the
    /// HTTP classifiers of `palisade-http` answer from the rejection.
    #[inline]
    fn never_sent(&self, result: &Result<Res, E>) -> bool {
        let _ = result;
        false
    }
}

impl<Res, E, F> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Outcome,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self(result)
    }
}

/// The default classifier: every `Err` is a failure, every `Ok` a success.
///
/// ```
/// use palisade_core::{Classify, DefaultClassifier, Outcome};
///
/// assert_eq!(DefaultClassifier.classify(&Ok::<_, ()>(1)), Outcome::Success);
/// assert_eq!(DefaultClassifier.classify(&Err::<u8, _>(())), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultClassifier;

impl<Res, E> Classify<Res, E> for DefaultClassifier {
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// The default classifier of every palisade layer that judges a backend's health (circuit
/// breaker, adaptive limit, fallback's classifier, retry budgets that record outcomes):
/// aware of palisade's own rejections in the error, through
/// [`AsRejection`](crate::AsRejection) (implemented for [`BoxError`](crate::BoxError) and
/// [`Error<E>`](crate::Error)).
///
/// | result | outcome | why |
/// |---|---|---|
/// | `Ok(_)` | `Success` | |
/// | `Err`, not a rejection | `Failure` | the backend failed |
/// | [`Elapsed`](crate::Elapsed) | `Failure` | an attempt timed out: the backend was too slow |
/// | [`RateLimited`](crate::RateLimited), [`Overloaded`](crate::Overloaded), [`CircuitOpen`](crate::CircuitOpen), [`RetriesExhausted`](crate::RetriesExhausted) | `Ignore` | made locally by our own layers: the backend was never asked |
///
/// The rule it enforces: **a caller's own limit can never open its breaker.** A burst over a
/// rate limit placed under the breaker (the recommended order) yields `RateLimited`
/// rejections, which are evidence of the caller's load, not of the backend's health.
///
/// ```
/// use palisade_core::{BoxError, Classify, Name, Outcome, RateLimited, RejectionAware, Elapsed};
/// use std::time::Duration;
///
/// let limited: Result<(), BoxError> =
///     Err(RateLimited::new(Name::new("api"), Duration::from_secs(1)).into());
/// assert_eq!(RejectionAware.classify(&limited), Outcome::Ignore);
///
/// let timed_out: Result<(), BoxError> =
///     Err(Elapsed::new(Name::new("attempt"), Duration::from_secs(1)).into());
/// assert_eq!(RejectionAware.classify(&timed_out), Outcome::Failure);
///
/// let failed: Result<(), BoxError> = Err("connection reset".into());
/// assert_eq!(RejectionAware.classify(&failed), Outcome::Failure);
/// assert_eq!(RejectionAware.classify(&Ok::<(), BoxError>(())), Outcome::Success);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectionAware;

impl<Res, E: crate::AsRejection> Classify<Res, E> for RejectionAware {
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        let Err(err) = result else {
            return Outcome::Success;
        };
        match err.as_rejection() {
            None | Some(crate::Rejection::Elapsed(_)) => Outcome::Failure,
            Some(_) => Outcome::Ignore,
        }
    }

    fn never_sent(&self, result: &Result<Res, E>) -> bool {
        result
            .as_ref()
            .err()
            .and_then(crate::AsRejection::as_rejection)
            .is_some_and(|r| r.never_sent())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        BoxError, CircuitOpen, Elapsed, Error, Name, Overloaded, RateLimited, RetriesExhausted,
    };
    use std::time::Duration;

    #[test]
    fn local_rejections_are_ignored_in_both_error_styles() {
        let name = || Name::new("x");
        let locals: Vec<BoxError> = vec![
            RateLimited::new(name(), Duration::from_secs(1)).into(),
            Overloaded::new(name(), "full").into(),
            CircuitOpen::new(name(), None).into(),
            RetriesExhausted::new(name(), 3).into(),
        ];
        for e in locals {
            let msg = e.to_string();
            assert_eq!(
                RejectionAware.classify(&Err::<(), _>(e)),
                Outcome::Ignore,
                "{msg}"
            );
        }
        let typed: Result<(), Error<std::io::Error>> = Err(Overloaded::new(name(), "full").into());
        assert_eq!(RejectionAware.classify(&typed), Outcome::Ignore);
        let typed: Result<(), Error<std::io::Error>> =
            Err(Elapsed::new(name(), Duration::from_secs(1)).into());
        assert_eq!(RejectionAware.classify(&typed), Outcome::Failure);
        let typed: Result<(), Error<std::io::Error>> =
            Err(Error::Inner(std::io::Error::other("down")));
        assert_eq!(RejectionAware.classify(&typed), Outcome::Failure);
    }
}
